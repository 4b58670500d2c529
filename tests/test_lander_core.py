"""Neural Lander: the environments, the ground-effect model, the spectrally normalised residual
and the controllers, each against an independent reference."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import raysign.lander  # noqa: F401  (registers the environments)
from raysign.lander import ENV_3D_ID, ENV_ID
from raysign.lander.collect import CollectConfig, collect_flights
from raysign.lander.controllers import TrackingController, min_jerk, solve_fixed_point
from raysign.lander.env import GRAVITY, GroundEffectModel, ground_effect_ratio
from raysign.lander.episodes import descent_metrics, run_episode
from raysign.lander.fitting import ground_effect_cancellation, noise_floor_error
from raysign.lander.report import plot_touchdown, summarise
from raysign.lander.residual import ResidualNet, ResidualTraining, train_residual
from raysign.lander.stats import ORACLE_MARGIN, compare_by_seed, oracle_bound, touchdown_comparison
from raysign.lander.tasks import LAND_SPEED, check_task, descend_below_ground, land_speed

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("env_id", [ENV_ID, ENV_3D_ID])
def test_env_passes_gymnasium_check_env_and_renders_rgb(env_id):
    env = gym.make(env_id, render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped, skip_render_check=False)
    env.reset(seed=1)
    env.step(env.action_space.sample())
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3


@pytest.mark.parametrize("env_id", [ENV_ID, ENV_3D_ID])
def test_seeded_episodes_are_bit_identical(env_id):
    def episode(seed):
        env = gym.make(env_id)
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        out = [obs]
        for _ in range(300):
            obs, *_ = env.step(env.action_space.sample())
            out.append(obs)
        return np.stack(out)

    a, b, c = episode(3), episode(3), episode(4)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_ground_effect_matches_cheeseman_bennett_closed_form():
    radius, clamp = 0.3, 0.8
    z = np.linspace(0.2, 2.0, 7)
    expected = 1.0 / (1.0 - (radius / (4.0 * z)) ** 2)
    np.testing.assert_allclose(ground_effect_ratio(z, radius, clamp), expected, rtol=1e-12)
    # Below the clamp height R / (4 clamp) the ratio is constant at 1 / (1 - clamp^2).
    low = np.array([0.0, 0.01, radius / (4 * clamp)])
    np.testing.assert_allclose(ground_effect_ratio(low, radius, clamp), 1 / (1 - clamp**2))
    model = GroundEffectModel(mass=1.47, rotor_radius=radius, ground_effect_clamp=clamp,
                              touchdown_lift_fraction=0.12, drag_coefficient=0.0)
    weight = 1.47 * GRAVITY
    assert model(0.0, 0.0, weight) == pytest.approx(0.12 * weight)
    # Above the clamp: gain * (closed form - 1) * T, with the gain fixed by the touchdown lift.
    gain = 0.12 / (1 / (1 - clamp**2) - 1)
    np.testing.assert_allclose(model(z, 0.0, weight), gain * (expected - 1) * weight)


def test_env_step_follows_nominal_physics_plus_residual():
    env = gym.make(ENV_ID, accel_noise_std=0.0).unwrapped
    env.reset(seed=0, options={"z0": 0.15, "v0": -0.2, "thrust0": 12.0})
    env.step(np.array([15.0], dtype=np.float32))
    alpha = 1 - np.exp(-0.01 / 0.05)
    thrust = 12.0 + alpha * (15.0 - 12.0)
    truth = GroundEffectModel()
    accel = (thrust + truth(0.15, -0.2, thrust)) / 1.47 - GRAVITY
    v = -0.2 + 0.01 * accel
    np.testing.assert_allclose(env.state, [0.15 + 0.01 * v, v, thrust], rtol=1e-12)


def test_ground_is_inelastic():
    env = gym.make(ENV_ID, accel_noise_std=0.0).unwrapped
    env.reset(seed=0, options={"z0": 0.001, "v0": -1.0})
    _, _, _, _, info = env.step(np.array([0.0], dtype=np.float32))
    assert info["touchdown"] and info["touchdown_speed"] > 1.0
    assert env.state[0] == 0.0 and env.state[1] == 0.0
    _, _, _, _, info = env.step(np.array([0.0], dtype=np.float32))
    assert env.state[0] == 0.0 and not info["touchdown"]


def test_spectral_normalisation_bounds_the_measured_lipschitz_product_by_gamma():
    torch.manual_seed(0)
    gamma = 2.5
    net = ResidualNet(width=32, depth=4, gamma=gamma)
    x = torch.randn(512, 3) * 3
    y = torch.sin(3 * x).sum(1) * 10  # a steep target pushes the weights against the bound
    train_residual(net, x.numpy(), y.numpy(), ResidualTraining(steps=200, lr=1e-2), device="cpu")
    product = np.prod([np.linalg.svd(w.detach().double().numpy(), compute_uv=False)[0]
                       for w in net.effective_weights()])
    assert net.lipschitz_product() == pytest.approx(product, rel=1e-6)
    assert product <= gamma * (1 + 1e-6)  # float32 rounding of W / sigma only
    assert product > 0.5 * gamma  # the bound is active, not trivially satisfied
    # Empirical difference quotients never exceed the certified bound.
    with torch.no_grad():
        a, b = torch.randn(2000, 3) * 3, torch.randn(2000, 3) * 3
        ratio = (net(a) - net(b)).abs() / (a - b).norm(dim=1)
    assert float(ratio.max()) <= product
    # The unnormalised variant trained the same way exceeds gamma (the constraint matters).
    free = ResidualNet(width=32, depth=4, gamma=None)
    torch.manual_seed(0)
    train_residual(free, x.numpy(), y.numpy(), ResidualTraining(steps=200, lr=1e-2), device="cpu")
    assert free.lipschitz_product() > gamma


def test_numpy_residual_matches_torch_forward():
    net = ResidualNet(width=16, depth=3, gamma=3.0)
    z, v, t = np.array([0.05, 0.4]), np.array([-0.3, 0.2]), np.array([13.0, 15.0])
    with torch.no_grad():
        expected = net(torch.as_tensor(net.scales.features(z, v, t))).numpy() * 1.47
    fast = net.to_numpy()
    np.testing.assert_allclose([fast(*args) for args in zip(z, v, t, strict=True)], expected,
                               rtol=1e-5, atol=1e-6)


def test_fixed_point_solves_the_implicit_equation_and_reports_contraction():
    # T = F - c T has the solution F / (1 + c); the iteration contracts at rate c.
    thrust, info = solve_fixed_point(lambda t: 20.0 - 0.3 * t, 0.0, 0.0, 100.0, tol=1e-12)
    assert thrust == pytest.approx(20.0 / 1.3, rel=1e-10)
    assert info.converged and info.contraction == pytest.approx(0.3, rel=1e-3)
    _, diverging = solve_fixed_point(lambda t: 20.0 - 1.5 * t, 5.0, -1e9, 1e9, max_iter=20)
    assert not diverging.converged and diverging.contraction > 1.0


def test_baseline_hovers_above_its_target_in_ground_effect_and_oracle_cancels_it():
    # Without the residual the PD equilibrium is where k_p * e balances the extra lift.
    base = run_episode(TrackingController(name="baseline"), "hover_5cm", seed=0)
    oracle = run_episode(TrackingController(GroundEffectModel(), name="oracle"), "hover_5cm",
                         seed=0)
    truth = GroundEffectModel()
    e = base["final_mean_abs_z_error"]
    # Equilibrium check: m kp e = f_a(0.05 + e, 0, T) with T = m (g - kp e).
    thrust = 1.47 * (GRAVITY - 4.0 * e)
    assert 1.47 * 4.0 * e == pytest.approx(truth(0.05 + e, 0.0, thrust), rel=0.1)
    assert oracle["final_mean_abs_z_error"] < 0.1 * e
    assert oracle["fp_all_converged"] and oracle["fp_max_contraction"] < 0.2


def test_min_jerk_reference_starts_and_ends_at_rest():
    ref = min_jerk(1.5, 0.0, 5.0)
    assert ref(0.0) == pytest.approx((1.5, 0.0, 0.0))
    assert ref(5.0) == (0.0, 0.0, 0.0)
    h = 1e-5
    assert (ref(2.0 + h)[0] - ref(2.0 - h)[0]) / (2 * h) == pytest.approx(ref(2.0)[1], rel=1e-6)


def test_collected_residual_labels_match_the_true_residual_up_to_noise():
    data = collect_flights(CollectConfig(flights=1, duration=3.0, accel_noise_std=0.05), seed=0)
    truth = GroundEffectModel()(data["z"], data["v"], data["thrust"]) / 1.47
    error = data["residual"] - truth
    assert len(error) > 200
    assert abs(error.mean()) < 0.02 and error.std() == pytest.approx(0.05, rel=0.15)
    assert data["z"].min() > 0.0


def test_3d_env_hovers_with_a_pd_force_controller():
    env = gym.make(ENV_3D_ID, accel_noise_std=0.0).unwrapped
    env.reset(seed=0, options={"position": (0.3, -0.2, 1.0)})
    for _ in range(800):
        p, v = env.position, env.velocity
        force = 1.47 * (np.array([0, 0, GRAVITY]) - 4.0 * (p - [0, 0, 1.0]) - 4.0 * v)
        env.step(force.astype(np.float32))
    np.testing.assert_allclose(env.position, [0.0, 0.0, 1.0], atol=0.01)


def test_fit_residual_is_reproducible_for_a_seed_and_differs_across_seeds():
    from raysign.lander.config import LanderConfig
    from raysign.lander.fitting import fit_residual

    data = collect_flights(CollectConfig(flights=1, duration=2.0), seed=0)

    def weights(seed):
        config = LanderConfig(width=8, steps=20, seed=seed)
        net, _ = fit_residual(data, config, gamma=2.0)
        return np.concatenate([w.detach().numpy().ravel() for w in net.effective_weights()])

    first, again, other = weights(0), weights(0), weights(1)
    assert first.tobytes() == again.tobytes()
    assert not np.allclose(first, other)


def test_descent_metrics_read_the_speed_at_the_reference_end_the_lowest_point_and_airtime():
    heights = np.array([0.5, 0.3, 0.2, 0.25, 0.0])
    velocities = np.array([-1.0, -2.0, -0.5, 0.3, -0.1])
    # Descent ends at t = 0.03 s, after the third step (index 2).
    out = descent_metrics(heights, velocities, dt=0.01, descent_s=0.03, touchdown_time=0.05)
    assert out == {"descent_end_speed": 0.5, "min_height": 0.0, "airborne_s": 0.05}
    never = descent_metrics(heights[:4], velocities[:4], 0.01, 0.03, float("nan"))
    assert never["airborne_s"] == pytest.approx(0.04) and never["min_height"] == 0.2
    assert np.isnan(descent_metrics(heights, velocities, 0.01, 1.0, 0.05)["descent_end_speed"])


def test_baseline_landing_never_touches_down_and_its_descent_speed_matches_the_trajectory():
    out = run_episode(TrackingController(name="baseline"), "landing", seed=2, record=True)
    assert np.isnan(out["touchdown_speed"]) and out["airborne_s"] == pytest.approx(10.0)
    z = out["trajectory"]["z"]
    # Semi-implicit Euler: z_k = z_{k-1} + v_k dt, so the speed after step 500 (t = 5 s) is
    # the height difference of steps 499 and 500 over dt.
    assert out["descent_end_speed"] == pytest.approx(-(z[499] - z[498]) / 0.01, abs=1e-9)
    assert out["min_height"] == pytest.approx(z.min())
    # Ground effect holds it well above the ground; it dips below its final equilibrium
    # height (the PD equilibrium, see the hover test above) before settling.
    assert 0.05 < out["min_height"] < out["final_mean_abs_z_error"]
    table = summarise([out, run_episode(TrackingController(name="baseline"), "landing", 3)])
    assert table[0]["touchdowns"] == 0 and table[0]["airborne_s_mean"] == pytest.approx(10.0)


def test_compare_by_seed_pairs_the_same_seeds_of_two_controllers_per_task():
    neural = {0: 0.010, 1: 0.020, 2: 0.030, 3: 0.5}
    oracle = {2: 0.026, 0: 0.011, 1: 0.022}  # seed 3 missing: left out of the pairs
    rows = ([{"task": "hover_10cm", "controller": "neural", "seed": s,
              "final_mean_abs_z_error": e} for s, e in neural.items()]
            + [{"task": "hover_10cm", "controller": "oracle", "seed": s,
                "final_mean_abs_z_error": e} for s, e in oracle.items()])
    (row,) = compare_by_seed(rows, "neural", "oracle")
    d = np.array([0.001, 0.002, -0.004])
    assert row["seeds"] == 3 and row["diff_positive"] == 2
    assert row["diff_mean"] == pytest.approx(d.mean())
    assert row["diff_std"] == pytest.approx(d.std(ddof=1))
    assert row["first_mean"] == pytest.approx(0.02)


MASS = 1.47


def test_ground_effect_cancellation_against_the_closed_form_derivative():
    truth = GroundEffectModel()
    exact, none = (ground_effect_cancellation(fn, [0.10, 0.20])
                   for fn in (truth, lambda z, v, t: 0.0))
    for h, perfect, zero in zip((0.10, 0.20), exact, none, strict=True):
        x = 0.3 / (4 * h)
        ratio = 1 / (1 - x * x)
        thrust = MASS * GRAVITY / (1 + truth.gain * (ratio - 1))
        assert perfect["hover_thrust"] == pytest.approx(thrust)
        # d ratio / dz = -2 x^2 / (z (1 - x^2)^2)
        stiffness = truth.gain * thrust * 2 * x * x / (h * (1 - x * x) ** 2) / MASS
        assert perfect["true_stiffness"] == pytest.approx(stiffness, rel=5e-3)
        assert perfect["residual_error"] == 0.0 and perfect["leftover_stiffness"] == 0.0
        assert zero["leftover_stiffness"] == pytest.approx(stiffness, rel=5e-3)
        assert zero["residual_error"] == pytest.approx(-truth(h, 0.0, thrust) / MASS)


def test_noise_floor_error_is_the_folded_normal_mean_of_the_stationary_pd_error():
    # No bias: sigma^2 = q / (2 kd kp) with q = std^2 dt, E|e| = sigma sqrt(2 / pi).
    sigma = np.sqrt(0.05**2 * 0.01 / (2 * 4.0 * 4.0))
    assert noise_floor_error(4.0, 4.0, 0.05, 0.01) == pytest.approx(sigma * np.sqrt(2 / np.pi))
    # Extra stiffness and a bias: compare with a sample of |N(mu, sigma^2)|.
    k = 4.0 + 5.0
    mu, sigma = -0.02 / k, np.sqrt(0.05**2 * 0.01 / (2 * 4.0 * k))
    sample = np.abs(np.random.default_rng(0).normal(mu, sigma, 1_000_000))
    assert noise_floor_error(4.0, 4.0, 0.05, 0.01, 5.0, 0.02) == pytest.approx(sample.mean(),
                                                                               rel=3e-3)


def test_pd_noise_floor_matches_the_oracle_hover_far_from_the_ground():
    # At 20 cm the oracle cancels the residual; its error is the PD loop's noise floor
    # (the motor lag, ignored by the formula, makes it slightly larger).
    oracle = TrackingController(GroundEffectModel(), name="oracle")
    errors = [run_episode(oracle, "hover_20cm", seed)["final_mean_abs_z_error"]
              for seed in range(6)]
    assert np.mean(errors) == pytest.approx(noise_floor_error(4.0, 4.0, 0.05, 0.01), rel=0.4)


def test_descend_reference_is_smooth_and_settles_at_the_land_speed():
    ref = descend_below_ground(1.5, 5.0, 0.3, ramp_s=1.0)
    times = np.arange(0.0, 9.0, 1e-3)
    z, v, a = (np.array(x) for x in zip(*(ref(t) for t in times), strict=True))
    # Velocity and acceleration are the derivatives of the position (central differences).
    assert np.allclose(np.gradient(z, times)[1:-1], v[1:-1], atol=1e-5)
    assert np.allclose(np.gradient(v, times)[1:-1], a[1:-1], atol=2e-3)
    # The landing reference up to 5 s, then below the ground at 0.3 m/s after the 1 s ramp,
    # having lost 0.15 m (half the ramp at full speed) by the ramp's end.
    landing = min_jerk(1.5, 0.0, 5.0)
    assert all(np.allclose(ref(t), landing(t)) for t in (0.0, 2.5, 5.0))
    assert ref(6.0)[0] == pytest.approx(-0.15)
    assert ref(8.0) == pytest.approx((-0.15 - 0.6, -0.3, 0.0))


def test_task_names_parse_and_bad_ones_name_the_valid_forms():
    assert land_speed("landing_descend") == LAND_SPEED
    assert land_speed("landing_descend_10cms") == pytest.approx(0.1)
    assert check_task("hover_7cm") == "hover_7cm"
    assert check_task("hover_7.5cm") == "hover_7.5cm"
    for bad in ("landing_descend_0cms", "landing_descend_fastcms", "takeoff",
                "landing_descend_infcms", "landing_descend_nancms", "landing_descend_ 10cms",
                "landing_descend_1_0cms", "hover_-5cm", "hover_infcm", "hover_60cm"):
        with pytest.raises(ValueError, match="landing_descend_<N>cms"):
            check_task(bad)


def test_every_controller_touches_down_when_the_reference_keeps_descending():
    """In ``landing`` the baseline never touches down (ground effect holds it up); with the
    land-mode descent it does, once its reference is far enough below the ground, while the
    oracle touches down within about a centimetre of the reference reaching the ground."""
    for name, residual in (("baseline", None), ("oracle", GroundEffectModel())):
        out = run_episode(TrackingController(residual, name=name), "landing_descend", seed=3)
        assert out["touchdown_speed"] > 0 and 5.0 < out["time_to_touchdown"] < 7.0
        if name == "baseline":
            assert out["touchdown_reference_height"] < -0.1
        else:
            assert -0.02 < out["touchdown_reference_height"] <= 0.0


def _speed_rows(task, speeds):
    return [{"task": task, "controller": c, "seed": s, "touchdown_speed": v}
            for c, by_seed in speeds.items() for s, v in by_seed.items()]


def test_touchdown_comparison_is_a_paired_non_inferiority_test():
    from scipy import stats

    base = {0: 0.20, 1: 0.21, 2: 0.19, 3: 0.22}
    softer = {0: 0.07, 1: 0.09, 2: 0.05, 3: 0.08}
    (row,) = touchdown_comparison(_speed_rows("landing_descend",
                                              {"baseline": base, "neural": softer}))
    d = np.array([softer[s] - base[s] for s in range(4)])
    high = d.mean() + stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert row["diff_ci_high"] == pytest.approx(high) and row["no_worse"] is True
    harder = {s: 1.2 * v for s, v in base.items()}  # 20% harder than the baseline: > margin
    (row,) = touchdown_comparison(_speed_rows("landing_descend",
                                              {"baseline": base, "neural": harder}))
    assert row["no_worse"] is False
    never = {s: float("nan") for s in base}
    (row,) = touchdown_comparison(_speed_rows("landing", {"baseline": never, "neural": softer}))
    assert row["no_worse"] is None and row["first_touchdowns"] == 0
    (row,) = touchdown_comparison(_speed_rows("landing", {"baseline": base, "neural": never}))
    assert row["no_worse"] is False


def test_touchdown_decision_at_the_margin_with_partial_touchdowns_and_equal_speeds():
    base = {s: 0.2 + 0.01 * s for s in range(6)}
    for ratio, expected in ((1.05, True), (1.15, False)):  # margin: +10% of the baseline mean
        (row,) = touchdown_comparison(_speed_rows(
            "landing_descend", {"baseline": base, "neural": {s: ratio * v
                                                              for s, v in base.items()}}))
        assert row["no_worse"] is expected
    (row,) = touchdown_comparison(_speed_rows("landing_descend",
                                              {"baseline": base, "neural": dict(base)}))
    assert row["no_worse"] is True and row["diff_mean"] == 0.0  # d = 0 everywhere: [0, 0]
    missed = {**base, 2: float("nan")}
    for speeds in ({"baseline": base, "neural": missed}, {"baseline": missed, "neural": base}):
        (row,) = touchdown_comparison(_speed_rows("landing_descend", speeds))
        assert row["no_worse"] is False
    (row,) = touchdown_comparison(_speed_rows("landing_descend",
                                              {"baseline": {0: 0.2}, "neural": {0: 0.1}}))
    assert row["no_worse"] is None  # one seed: no interval, no decision


def test_oracle_bound_holds_up_to_the_margin_and_leaves_descend_tasks_out():
    rng = np.random.default_rng(0)
    neural = 1e-3 + 1e-5 * rng.standard_normal(20)
    rows = []
    for task, shift in (("hover_20cm", 0.5 * ORACLE_MARGIN), ("hover_5cm", 3 * ORACLE_MARGIN),
                        ("landing_descend", 0.0)):
        for s in range(20):
            rows += [{"task": task, "controller": "neural", "seed": s,
                      "final_mean_abs_z_error": neural[s]},
                     {"task": task, "controller": "oracle", "seed": s,
                      "final_mean_abs_z_error": neural[s] + shift + 1e-6 * (s % 3)}]
    out = {r["task"]: r for r in oracle_bound(rows)}
    assert set(out) == {"hover_20cm", "hover_5cm"}
    assert out["hover_20cm"]["bound_holds"] and not out["hover_20cm"]["strictly_below"]
    assert not out["hover_5cm"]["bound_holds"]
    same = [{"task": "hover_20cm", "controller": c, "seed": s, "final_mean_abs_z_error": 1e-3}
            for c in ("neural", "oracle") for s in range(3)]
    (row,) = oracle_bound(same)
    assert row["bound_holds"] is True and row["strictly_below"] is False
    (row,) = oracle_bound(same[:1] + same[3:4])
    assert row["bound_holds"] is None


def test_summary_leaves_out_the_final_window_of_descend_tasks_and_averages_where_they_touched():
    rows = [{"task": "landing_descend", "controller": "baseline", "seed": s,
             "final_mean_abs_z_error": 1.0, "final_max_abs_z_error": 1.3,
             "touchdown_speed": v, "time_to_touchdown": 6.0, "touchdown_reference_height": h,
             "fp_iterations_mean": 0.0, "fp_iterations_max": 0, "fp_max_contraction": 0.0,
             "fp_all_converged": True}
            for s, v, h in ((0, 0.2, -0.16), (1, 0.22, -0.18))]
    (row,) = summarise(rows)
    assert np.isnan(row["final_mean_abs_z_error"]) and np.isnan(row["final_max_abs_z_error"])
    assert row["touchdown_speed_mean"] == pytest.approx(0.21)
    assert row["touchdown_reference_mean"] == pytest.approx(-0.17)


def test_touchdown_figure_is_written(tmp_path):
    rows = _speed_rows("landing_descend", {"baseline": {0: 0.2, 1: 0.21},
                                           "neural": {0: 0.07, 1: 0.08}})
    rows += _speed_rows("landing", {"baseline": {0: float("nan"), 1: float("nan")},
                                    "neural": {0: 0.003, 1: float("nan")}})
    plot_touchdown(rows, str(tmp_path / "t.png"))
    assert (tmp_path / "t.png").stat().st_size > 10_000
