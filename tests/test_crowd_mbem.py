"""MBEM pieces against their definitions (Khetan et al., ICLR 2018, Algorithm 1), and the
`raysign crowd` job / crowd sweep end to end on tiny settings."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from raysign.config import ConfigError
from raysign.crowd.annotations import Annotations
from raysign.crowd.config import CrowdConfig
from raysign.crowd.mbem import (
    ClassifierTraining,
    confusions_from_predictions,
    expected_agreement,
    mbem,
    posteriors_from_confusions,
    weighted_cross_entropy,
)
from raysign.crowd.report import budget_table
from raysign.crowd.simulate import hammer_spammer_confusions, simulate_annotations


def test_weighted_loss_is_cross_entropy_for_one_hot_and_mixture_for_soft_targets():
    torch.manual_seed(0)
    logits = torch.randn(6, 4)
    labels = torch.tensor([0, 3, 1, 1, 2, 0])
    one_hot = torch.nn.functional.one_hot(labels, 4).float()
    expected = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.allclose(weighted_cross_entropy(logits, one_hot), expected)
    soft = torch.softmax(torch.randn(6, 4), 1)
    mixture = sum(soft[:, c] * torch.nn.functional.cross_entropy(
        logits, torch.full((6,), c), reduction="none") for c in range(4)).mean()
    assert torch.allclose(weighted_cross_entropy(logits, soft), mixture)


def test_confusion_mle_counts_labels_against_predicted_classes():
    rng = np.random.default_rng(0)
    a = Annotations(rng.integers(0, 30, 200), rng.integers(0, 5, 200), rng.integers(0, 3, 200),
                    30, 5, 3)
    predicted = rng.integers(0, 3, 30)
    errors, priors = confusions_from_predictions(a, predicted, alpha=0.0)
    counts = np.zeros((5, 3, 3))
    for i, w, label in zip(a.items, a.workers, a.labels, strict=True):
        counts[w, label, predicted[i]] += 1
    with np.errstate(invalid="ignore"):
        reference = counts / counts.sum(axis=1, keepdims=True)
    seen = ~np.isnan(reference)
    np.testing.assert_allclose(errors[seen], reference[seen])
    np.testing.assert_allclose(priors, (np.bincount(predicted, minlength=3) + 1) / 33)
    # posterior of one item = prior times the product of its workers' confusion rows
    q = posteriors_from_confusions(a, errors + 0.1, priors)
    rows = a.items == 0
    manual = priors * np.prod((errors + 0.1)[a.workers[rows], a.labels[rows], :], axis=0)
    np.testing.assert_allclose(q[0], manual / manual.sum())


def test_expected_agreement_ignores_flat_posteriors():
    flat = np.full((4, 5), 0.2)
    assert expected_agreement(np.array([0, 1, 2, 3]), flat) == pytest.approx(0.2)
    assert expected_agreement(np.array([4, 4, 4, 4]), flat) == pytest.approx(0.2)
    sharp = np.eye(5)[[1, 2, 3, 4]]
    assert expected_agreement(np.array([1, 2, 0, 4]), sharp) == pytest.approx(0.75)


def _blobs(n, k, rng):
    """Separable synthetic 'images': class means on random directions plus noise."""
    means = rng.normal(0, 1, (k, 784)).astype(np.float32)
    y = rng.integers(0, k, n)
    x = means[y] + rng.normal(0, 1.5, (n, 784)).astype(np.float32)
    return x.reshape(n, 1, 28, 28), y


def test_mbem_tells_hammers_from_spammers_with_one_label_per_item():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    k, n = 4, 1200
    x, y = _blobs(n, k, rng)
    confusions = hammer_spammer_confusions(8, k, 0.5, rng)
    hammer = np.all(confusions == np.eye(k), axis=(1, 2))
    annotations = simulate_annotations(y, 1, confusions, rng)
    order = rng.permutation(n)
    result = mbem(annotations, x, np.sort(order[200:]), np.sort(order[:200]),
                  ClassifierTraining(hidden=32, epochs=3), rounds=1, seed=0, truth=y)
    diag = np.einsum("wcc->w", result.errors) / k
    assert diag[hammer].min() > diag[~hammer].max() + 0.3
    by_hammer = hammer[annotations.workers]
    # hammer-labelled items get confident, correct posteriors; spammer-labelled ones flat ones
    assert np.mean(result.probas[by_hammer].argmax(1) == y[by_hammer]) > 0.95
    assert result.probas[~by_hammer].max(1).mean() < result.probas[by_hammer].max(1).mean() - 0.3
    assert [r["round"] for r in result.rounds] == [0, 1]


@pytest.mark.parametrize("field,value", [("redundancy", 0), ("quality", 1.5),
                                         ("method", "glad"), ("budget", 10**7),
                                         ("model", "rnn")])
def test_crowd_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        CrowdConfig(**{field: value})


def test_budget_table_finds_best_redundancy_per_method():
    rows = [{"budget": 100, "quality": 0.3, "method": m, "redundancy": r, "seed": s,
             "config/budget": 100, "test_accuracy": acc + 0.01 * s}
            for m, accs in {"mv": {1: 0.5, 3: 0.6}, "mbem": {1: 0.7, 3: 0.6}}.items()
            for r, acc in accs.items() for s in range(2)]
    table = budget_table(pd.DataFrame(rows))
    best = dict(zip(table["method"], table["best_r"], strict=False))
    assert best == {"mv": 3, "mbem": 1}
    assert table["trials"].tolist() == [2, 2, 2, 2]


@pytest.mark.slow
def test_crowd_job_and_budget_sweep_write_tables_and_figures(ray_session, data_dir, tmp_path,
                                                             one_torch_thread):
    from raysign.actors.crowd_job import budget_report, compare
    from raysign.actors.sweep import run_sweep
    from raysign.crowd.experiment import run_crowd_trial

    base = CrowdConfig(budget=300, redundancy=1, n_workers=10, quality=0.5, epochs=1,
                       hidden=16, rounds=1, test_size=500, data_dir=str(data_dir))
    out = compare(base, ["mv", "mbem"], 1, results_dir=str(tmp_path))
    assert [r["method"] for r in out["table"]] == ["mv", "mbem"]
    for name in ("config.json", "metrics.jsonl", "summary.csv", "test_accuracy.png"):
        assert list((tmp_path / "crowd").glob(f"*/{name}")), name
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in out["results"])
    summary = run_sweep("crowd", quick=True, results_root=tmp_path)
    assert not summary["errors"]
    # Every trial's final report, read with plain json from Ray Tune's own result files.
    trials = [json.loads(f.read_text().splitlines()[-1])
              for f in sorted(Path(summary["run_dir"]).glob("tune/*/*/result.json"))]
    assert trials and summary["num_trials"] == len(trials)
    best = max(trials, key=lambda t: t["test_accuracy"])
    assert summary["best_result"]["test_accuracy"] == best["test_accuracy"]

    # The budget table: mean accuracy per (quality, method, r) and the best r, recomputed here.
    report = budget_report(summary["run_dir"] + "/results.csv")
    assert Path(report["figure"]).is_file()
    accuracies = defaultdict(list)
    for t in trials:
        accuracies[(t["quality"], t["method"], t["redundancy"])].append(t["test_accuracy"])
    table = {(r.quality, r.method, r.redundancy): r for r in report["table"].itertuples()}
    assert set(table) == set(accuracies)
    for key, values in accuracies.items():
        assert table[key].trials == len(values)
        assert table[key].test_accuracy_mean == pytest.approx(np.mean(values))
        best_r = max(sorted(r for (q, m, r) in accuracies if (q, m) == key[:2]),
                     key=lambda r: np.mean(accuracies[(*key[:2], r)]))
        assert table[key].best_r == best_r

    # The best trial run again here, outside Ray, gives the same test accuracy.
    fields = {k: v for k, v in best["config"].items() if k in CrowdConfig.__dataclass_fields__}
    assert run_crowd_trial(CrowdConfig(**fields))["test_accuracy"] == best["test_accuracy"]


def test_crowd_command_rejects_bad_config_before_ray_and_aggregates_real_sets(tmp_path,
                                                                               data_dir):
    from raysign.cli import main

    with pytest.raises(SystemExit, match="quality=2.0"):
        main(["crowd", "train", "--quality", "2"])
    assert main(["crowd", "aggregate", "--datasets", "temp", "--data-dir", str(data_dir),
                 "--results-dir", str(tmp_path)]) == 0
    table = pd.read_csv(next((tmp_path / "crowd-aggregate").glob("*/accuracy.csv")))
    assert table["method"].tolist() == ["mv", "wmv", "one_coin", "ds"]
    assert table["accuracy"].between(0.9, 1.0).all()  # TEMP is an easy set (Snow et al.)


# ``ray`` made unimportable: ``import ray`` anywhere in the command raises ImportError.
WITHOUT_RAY = ("import sys; sys.modules['ray'] = None; from raysign.cli import main; "
               "sys.exit(main(sys.argv[1:]))")


def raysign_without_ray(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_RAY, *args], capture_output=True,
                          text=True, timeout=600)


def test_crowd_aggregate_and_report_run_without_ray(tmp_path, data_dir):
    from raysign.crowd.aggregate import DawidSkene
    from raysign.crowd.annotations import load_crowd

    done = raysign_without_ray("crowd", "aggregate", "--datasets", "temp", "--data-dir",
                               str(data_dir), "--results-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(next((tmp_path / "crowd-aggregate").glob("*/accuracy.csv")))
    temp = load_crowd("temp", str(data_dir))
    ds = temp.accuracy(DawidSkene().fit_predict(temp.annotations))
    assert table.set_index("method").loc["ds", "accuracy"] == pytest.approx(ds)

    rows = [{"budget": 100, "quality": 0.3, "method": m, "redundancy": r, "seed": s,
             "test_accuracy": acc + 0.01 * s}
            for m, accs in {"mv": {1: 0.5, 3: 0.6}, "mbem": {1: 0.7, 3: 0.6}}.items()
            for r, acc in accs.items() for s in range(2)]
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    done = raysign_without_ray("crowd", "report", str(tmp_path / "results.csv"))
    assert done.returncode == 0, done.stderr
    budget = pd.read_csv(tmp_path / "budget_table.csv")
    assert dict(zip(budget["method"], budget["best_r"], strict=False)) == {"mv": 3, "mbem": 1}
    assert (tmp_path / "accuracy_vs_redundancy.png").is_file()
    # ...whereas the commands that use Ray do need it.
    done = raysign_without_ray("crowd", "budget", "--results-dir", str(tmp_path))
    assert done.returncode != 0 and "import of ray halted" in done.stderr

