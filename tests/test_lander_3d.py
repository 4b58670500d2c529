"""Neural Lander on the 3-D point mass: the vertical residual, the controller and the tasks,
each against an independent reference (closed form or the 1-D model)."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import raysign.lander  # noqa: F401  (registers the environments)
from raysign.lander import ENV_3D_ID
from raysign.lander.config import LanderConfig
from raysign.lander.controllers import TrackingController3D
from raysign.lander.env import GRAVITY, GroundEffectModel
from raysign.lander.episodes3d import make_controllers_3d, run_episode_3d
from raysign.lander.report import summarise_3d
from raysign.lander.tasks import task_setup_3d

MASS = 1.47


def test_vertical_residual_of_the_3d_env_is_the_1d_ground_effect_and_drag():
    env = gym.make(ENV_3D_ID).unwrapped
    truth = GroundEffectModel()
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = np.array([*rng.uniform(-1, 1, 2), rng.uniform(0.0, 1.0)])
        v, force = rng.uniform(-1, 1, 3), np.array([*rng.uniform(-3, 3, 2), rng.uniform(5, 25)])
        out = env.residual_force(p, v, force)
        assert out[2] == pytest.approx(truth(p[2], v[2], force[2]), rel=1e-12, abs=1e-12)
        np.testing.assert_allclose(out[:2], -0.05 * v[:2] * np.abs(v[:2]), rtol=1e-12)


def test_3d_baseline_is_the_clipped_pd_law_on_every_axis():
    controller = TrackingController3D(kp=4.0, kd=4.0)
    p, v = np.array([0.3, -0.2, 1.0]), np.array([0.1, 0.0, -0.5])
    ref = (np.array([0.0, 0.0, 0.8]), np.array([0.0, 0.1, -0.4]), np.array([0.2, 0.0, 0.3]))
    force, info = controller(p, v, ref)
    expected = [MASS * (0.2 - 4 * 0.3 - 4 * 0.1), MASS * (0.0 + 4 * 0.2 - 4 * (-0.1)),
                MASS * (GRAVITY + 0.3 - 4 * 0.2 - 4 * (-0.1))]
    np.testing.assert_allclose(force, expected, rtol=1e-12)
    assert info.iterations == 0
    # A far-away target saturates the lateral force at 0.5 m g and the thrust at [0, 2 m g].
    force, _ = controller(np.array([50.0, -50.0, 50.0]), np.zeros(3), (np.zeros(3),) * 3)
    np.testing.assert_allclose(force, [-0.5 * MASS * GRAVITY, 0.5 * MASS * GRAVITY, 0.0])


def test_3d_oracle_solves_the_implicit_thrust_equation_and_cancels_lateral_drag():
    controller = make_controllers_3d({"oracle": None}, LanderConfig())["oracle"]
    truth = GroundEffectModel()
    p, v = np.array([0.1, 0.2, 0.04]), np.array([0.3, -0.4, -0.2])
    ref = (np.array([0.0, 0.0, 0.05]), np.zeros(3), np.zeros(3))
    force, info = controller(p, v, ref)
    desired = MASS * (np.array([0, 0, GRAVITY]) - 4.0 * (p - ref[0]) - 4.0 * v)
    # F_z + f_a(z, v_z, F_z) = desired_z; the lateral force adds back the drag c_d v|v|.
    assert force[2] + truth(p[2], v[2], force[2]) == pytest.approx(desired[2], abs=1e-5)
    np.testing.assert_allclose(force[:2], desired[:2] + 0.05 * v[:2] * np.abs(v[:2]),
                               rtol=1e-12)
    assert info.converged and 0.0 < info.contraction < 0.2


@pytest.mark.parametrize("task,height,duration", [("landing", 0.0, 5.0),
                                                  ("hover_10cm", 0.1, 3.0)])
def test_3d_reference_goes_from_the_offset_start_to_the_target_at_rest(task, height, duration):
    start, reference, target = task_setup_3d(task, np.random.default_rng(3))
    assert target == height
    assert np.all(np.abs(start[:2]) <= 0.5) and np.any(np.abs(start[:2]) > 0.0)
    p, v, a = reference(0.0)
    np.testing.assert_allclose(p, start)
    np.testing.assert_allclose(v, 0.0, atol=1e-12)
    p, v, a = reference(duration)
    np.testing.assert_allclose(p, [0.0, 0.0, height])
    assert np.all(v == 0.0) and np.all(a == 0.0)


def test_3d_hover_baseline_sits_at_the_ground_effect_equilibrium_and_oracle_removes_it():
    controllers = make_controllers_3d({"baseline": None, "oracle": None}, LanderConfig())
    base = run_episode_3d(controllers["baseline"], "hover_5cm", seed=0)
    oracle = run_episode_3d(controllers["oracle"], "hover_5cm", seed=0)
    # Equilibrium of the vertical PD loop: m kp e = f_a(0.05 + e, 0, m (g - kp e)).
    e = base["final_mean_abs_z_error"]
    truth = GroundEffectModel()
    assert MASS * 4.0 * e == pytest.approx(truth(0.05 + e, 0.0, MASS * (GRAVITY - 4.0 * e)),
                                           rel=0.1)
    assert oracle["final_mean_abs_z_error"] < 0.1 * e
    # The lateral offset of up to 0.7 m is removed by both (noise-limited, millimetres).
    assert base["final_mean_lateral_error"] < 0.005
    assert oracle["final_mean_lateral_error"] < 0.005
    assert math.isnan(base["touchdown_speed"]) and oracle["fp_all_converged"]


def test_3d_landing_with_the_oracle_touches_down_softly():
    oracle = make_controllers_3d({"oracle": None}, LanderConfig())["oracle"]
    out = run_episode_3d(oracle, "landing", seed=1)
    assert 5.0 <= out["time_to_touchdown"] <= 10.0
    assert 0.0 < out["touchdown_speed"] < 0.05
    assert out["final_max_abs_z_error"] < 0.01


def test_summarise_3d_averages_and_maximises_the_lateral_error_over_seeds():
    rows = []
    for seed, (lat_mean, lat_max) in enumerate([(0.1, 0.3), (0.2, 0.5), (0.6, 0.7)]):
        rows.append({"task": "hover_5cm", "controller": "neural", "seed": seed,
                     "final_mean_abs_z_error": 0.01 * seed, "final_max_abs_z_error": 0.02,
                     "final_mean_lateral_error": lat_mean, "final_max_lateral_error": lat_max,
                     "touchdown_speed": math.nan, "time_to_touchdown": math.nan,
                     "fp_iterations_mean": 3.0, "fp_iterations_max": 5,
                     "fp_max_contraction": 0.1, "fp_all_converged": True})
    (row,) = summarise_3d(rows)
    assert row["final_mean_lateral_error"] == pytest.approx(0.3)
    assert row["final_max_lateral_error"] == 0.7
    assert row["final_mean_abs_z_error"] == pytest.approx(0.01)
    assert row["touchdowns"] == 0
