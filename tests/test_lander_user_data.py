"""The Neural Lander residual on a user's own flight logs (issue #19, item 4): the residual
target from a CSV, its checks, the learned ground-effect curve, the TorchScript export loaded
without raysign, ``raysign lander fit`` and the docs' example as written.

References are written here: the nominal model ``a = T / m - g`` by hand, the Cheeseman-Bennett
curve of raysign's environment from its closed form (``ratio = 1 / (1 - (R / 4z)^2)``, R = 0.3 m,
``R / 4z`` clamped at 0.8, gain such that the lift at touchdown is 12% of the weight), spectral
norms from numpy's SVD, and the exported module run by a separate Python that never imports
raysign.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from raysign.cli import main
from raysign.config import ConfigError
from raysign.lander import fitting
from raysign.lander.env import GroundEffectModel
from raysign.lander.export import export_residual
from raysign.lander.fitting import fit_residual_from_logs
from raysign.lander.logs import (
    FlightLogConfig,
    read_flight_logs,
    residual_samples,
    simulated_flight_logs,
)
from raysign.lander.residual import FeatureScales, ResidualNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DOCS = Path(__file__).resolve().parents[1] / "docs" / "lander.md"
MASS, G = 1.47, 9.81


def env_curve(heights: np.ndarray) -> np.ndarray:
    """raysign's environment's ground effect ``f_a / m`` at rest and thrust ``m g``, from its
    closed form (docs/lander.md, "The environment")."""
    radius, clamp = 0.3, 0.8

    def ratio(z: np.ndarray) -> np.ndarray:
        x = radius / (4.0 * np.maximum(z, radius / (4.0 * clamp)))
        return 1.0 / (1.0 - x * x)

    gain = 0.12 / (ratio(np.array(0.0)) - 1.0)
    return gain * (ratio(np.asarray(heights)) - 1.0) * G


def small_logs(rows: int = 40, seed: int = 0) -> pd.DataFrame:
    """A hand-made log: heights in (0, 0.15) m, the nominal model plus a known residual."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.01, 0.15, rows)
    thrust = rng.uniform(12.0, 16.0, rows)
    return pd.DataFrame({"height": z, "velocity": rng.normal(0, 0.2, rows), "thrust": thrust,
                         "acceleration": thrust / MASS - G + 0.5 * np.exp(-z / 0.05)})


def test_residual_target_is_the_simulators_force_over_mass():
    logs = simulated_flight_logs(flights=1, duration=2.0, seed=3, accel_noise_std=0.0)
    data = residual_samples(logs, FlightLogConfig(near_ground_height=5.0, min_near_ground=1))
    truth = GroundEffectModel(MASS)(data["z"], data["v"], data["thrust"]) / MASS
    assert len(data["z"]) == len(logs) > 150
    np.testing.assert_allclose(data["residual"], truth, atol=1e-9)


def test_residual_target_uses_the_given_mass_and_gravity_and_drops_ground_rows():
    logs = small_logs()
    logs.loc[[3, 7], "height"] = 0.0  # on the ground
    mass, gravity = 0.8, 9.80665
    logs["acceleration"] = logs["thrust"] / mass - gravity + 0.25 * logs["velocity"]
    data = residual_samples(logs, FlightLogConfig(mass=mass, gravity=gravity,
                                                  min_near_ground=30))
    airborne = logs["height"] > 0
    assert len(data["z"]) == 38
    np.testing.assert_allclose(data["residual"], 0.25 * logs["velocity"][airborne], atol=1e-12)


def _write(tmp_path: Path, logs: pd.DataFrame) -> Path:
    path = tmp_path / "flights.csv"
    logs.to_csv(path, index=False)
    return path


def _bad(kind: str, tmp_path: Path) -> tuple[pd.DataFrame | Path, dict, list[str]]:
    """(logs or a path, config fields, fragments the message must contain)."""
    logs = small_logs()
    if kind == "missing file":
        return tmp_path / "nope.csv", {}, ["nope.csv", "cannot be read", "height, velocity"]
    if kind == "empty file":
        (tmp_path / "empty.csv").write_text("")
        return tmp_path / "empty.csv", {}, ["empty.csv", "cannot be read"]
    if kind == "misspelled column":
        return logs.rename(columns={"height": "heigth"}), {}, [
            "no column 'height'", "did you mean 'heigth'", "--height-col"]
    if kind == "misspelled option":
        return logs, {"accel_col": "acceleraton"}, [
            "no column 'acceleraton'", "did you mean 'acceleration'"]
    if kind == "NaN":
        logs.loc[5, "velocity"] = np.nan
        return logs, {}, ["'velocity'", "1 NaN", "row 5"]
    if kind == "non-numeric":
        logs["thrust"] = logs["thrust"].astype(object)
        logs.loc[2, "thrust"] = "12,5"
        return logs, {}, ["'thrust'", "'12,5'", "row 2"]
    if kind == "negative height":
        logs.loc[9, "height"] = -0.02
        return logs, {}, ["'height'", "-0.02", "row 9", ">= 0"]
    if kind == "negative thrust":
        logs.loc[4, "thrust"] = -1.0
        return logs, {}, ["'thrust'", "-1.0", "row 4", ">= 0"]
    if kind == "too few near the ground":
        logs["height"] = logs["height"] + 0.3
        logs.loc[:4, "height"] = 0.1
        return logs, {"min_near_ground": 20}, ["only 5 of 40", "0.2 m", "min_near_ground=20"]
    raise AssertionError(kind)


BAD = ["missing file", "empty file", "misspelled column", "misspelled option", "NaN",
       "non-numeric", "negative height", "negative thrust", "too few near the ground"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_flight_logs_stop_with_one_line_before_any_training(kind, tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(fitting, "train_residual", no_training)
    logs, fields, fragments = _bad(kind, tmp_path)
    before = logs.copy() if isinstance(logs, pd.DataFrame) else None
    with pytest.raises(ConfigError) as err:
        frame = read_flight_logs(logs) if isinstance(logs, Path) else logs
        fit_residual_from_logs(frame, **fields)
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    if before is not None:
        pd.testing.assert_frame_equal(logs, before)


def test_fit_leaves_the_users_dataframe_unchanged():
    logs = small_logs(rows=300).set_index(pd.RangeIndex(100, 400))
    logs["height"] = logs["height"].astype(np.float32)
    before = logs.copy()
    fit = fit_residual_from_logs(logs, width=8, steps=3, batch_size=16)
    pd.testing.assert_frame_equal(logs, before)
    assert fit.report["samples"] == 300


def test_cli_fit_writes_the_curve_the_figure_and_the_export(tmp_path, capsys):
    logs = tmp_path / "flights.csv"
    assert main(["lander", "logs", "--out", str(logs), "--flights", "2"]) == 0
    assert main(["lander", "fit", "--logs", str(logs), "--steps", "20", "--width", "8",
                 "--gamma", "2", "--min-near-ground", "50", "--true-curve", "raysign",
                 "--results-dir", str(tmp_path / "runs")]) == 0
    printed = capsys.readouterr().out
    run_dir = Path(re.search(r"results: (\S+)", printed).group(1))
    for name in ("fit.json", "curve.csv", "ground_effect.png", "residual.pt", "residual.json",
                 "config.json"):
        assert (run_dir / name).is_file(), name
    report = json.loads((run_dir / "fit.json").read_text())
    assert report["lipschitz_product"] <= 2.0 * (1 + 1e-6)
    assert f"{report['lipschitz_product']:.4f}" in printed
    curve = pd.read_csv(run_dir / "curve.csv")
    np.testing.assert_allclose(curve["true"], env_curve(curve["height"]))
    assert report["curve_rmse"] == pytest.approx(
        np.sqrt(np.mean((curve["residual"] - curve["true"]) ** 2)))
    assert report["samples"] == len(pd.read_csv(logs))


def test_cli_fit_names_the_misspelled_column_and_writes_nothing(tmp_path):
    logs = _write(tmp_path, small_logs().rename(columns={"thrust": "Thrust"}))
    with pytest.raises(SystemExit) as stop:
        main(["lander", "fit", "--logs", str(logs), "--results-dir", str(tmp_path / "runs")])
    message = str(stop.value.code)
    assert message.startswith("raysign lander fit: flight logs ")
    assert "no column 'thrust'" in message and "did you mean 'Thrust'" in message
    assert "\n" not in message and not (tmp_path / "runs").exists()


def _docs_block(marker: str) -> str:
    blocks = re.findall(rf"<!-- {marker} -->\s*```python\n(.*?)```", DOCS.read_text(),
                        flags=re.DOTALL)
    assert len(blocks) == 1, marker
    return blocks[0]


# Run after the docs' loading example in the same plain Python: the export on inputs from a
# file, and the spectral norms of the weights it holds.
PLAIN_TORCH_CHECK = r"""
import sys
import numpy as np
x = torch.from_numpy(np.load("x.npy"))
np.save("y.npy", residual(x).detach().numpy())
weights = [p.detach().double().numpy() for n, p in residual.named_parameters()
           if n.endswith("weight")]
print(float(np.prod([np.linalg.svd(w, compute_uv=False)[0] for w in weights])))
print(any(name.startswith("raysign") for name in sys.modules))
"""


def test_docs_on_your_own_data_examples_run_as_written(tmp_path, monkeypatch, capsys):
    """The Python example fits and exports; the loading example, in a Python that never imports
    raysign (isolated mode, no PYTHONPATH), gives raysign's outputs and the stored bound."""
    assert DOCS.read_text().startswith("# Neural Lander\n\n## On your own data\n")
    simulated_flight_logs(flights=3, duration=10.0, seed=2).to_csv(tmp_path / "flights.csv",
                                                                    index=False)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_docs_block("lander-own-data"), str(DOCS), "exec"), namespace)
    bound = float(capsys.readouterr().out.splitlines()[-1])
    fit = namespace["fit"]
    net = fit.net
    assert bound == fit.report["lipschitz_product"] <= 4.0 * (1 + 1e-6)
    norms = [np.linalg.svd(w.detach().double().numpy(), compute_uv=False)[0]
             for w in net.effective_weights()]
    assert bound == pytest.approx(np.prod(norms), rel=1e-6)
    # The learned curve against the environment's, 0 to 50 cm (an untrained one is far off).
    heights = fit.curve["height"].to_numpy()
    np.testing.assert_allclose(heights, np.arange(51) * 0.01, atol=1e-9)
    truth = env_curve(heights)
    assert np.sqrt(np.mean((fit.curve["residual"] - truth) ** 2)) < 0.15
    assert np.sqrt(np.mean(truth**2)) > 0.5
    metadata = json.loads((tmp_path / "residual.json").read_text())
    assert metadata["lipschitz_product"] == bound
    rng = np.random.default_rng(0)
    raw = np.stack([rng.uniform(0, 1, 64), rng.normal(0, 1, 64), rng.uniform(5, 25, 64)], 1)
    np.save(tmp_path / "x.npy", raw.astype(np.float32))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-I", "-c",
                           _docs_block("lander-own-data-load") + PLAIN_TORCH_CHECK],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                          check=True)
    lines = done.stdout.splitlines()
    assert lines[-1] == "False"  # raysign was never imported
    assert float(lines[-2]) == pytest.approx(bound, rel=1e-6)  # numpy SVD of the held weights
    assert float(lines[-3]) == bound  # the bound stored inside the archive, as printed
    # The learned lift at 5 cm against the environment's (1.18 m/s^2 there).
    at_5cm = float(re.search(r"tensor\(\[(\S+?)\]", done.stdout).group(1))
    assert at_5cm == pytest.approx(float(env_curve(np.array(0.05))), abs=0.3)
    with torch.no_grad():
        expected = net(torch.as_tensor(net.scales.features(*raw.T))).numpy()
    exported = np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(exported, expected, rtol=1e-5, atol=1e-6)
    # The bound in physical units holds for the exported function on random pairs.
    ratios = (np.abs(exported[:32].astype(float) - exported[32:])
              / np.linalg.norm(raw[:32] - raw[32:], axis=1))
    assert ratios.max() <= metadata["lipschitz_inputs"]


def test_export_bakes_in_the_normalised_weights_and_the_bound(tmp_path):
    """With weights far above the bound, the archive holds the normalised ones (loaded with
    plain ``torch.jit.load`` here) and gives raysign's outputs."""
    torch.manual_seed(0)
    net = ResidualNet(width=16, depth=3, gamma=2.0, scales=FeatureScales(mass=0.9))
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.mul_(6.0)
    rng = np.random.default_rng(1)
    raw = np.stack([rng.uniform(0, 1, 16), rng.normal(0, 1, 16), rng.uniform(5, 15, 16)], 1)
    with torch.no_grad():
        expected = net(torch.as_tensor(net.scales.features(*raw.T))).numpy()
    metadata = export_residual(net, tmp_path / "res.pt")
    extra = {"lipschitz.json": ""}
    module = torch.jit.load(str(tmp_path / "res.pt"), _extra_files=extra)
    np.testing.assert_allclose(module(torch.tensor(raw, dtype=torch.float32)).detach().numpy(),
                               expected, rtol=1e-5, atol=1e-6)
    norms = [np.linalg.svd(p.detach().double().numpy(), compute_uv=False)[0]
             for n, p in module.named_parameters() if n.endswith("weight")]
    np.testing.assert_allclose(norms, 2.0 ** (1 / 3), rtol=1e-5)
    assert json.loads(extra["lipschitz.json"]) == metadata
    assert metadata == json.loads((tmp_path / "res.json").read_text())
    assert metadata["lipschitz_product"] == pytest.approx(2.0, rel=1e-5)
