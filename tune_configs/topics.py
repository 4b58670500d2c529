"""Rank sweep for spectral LDA on NYT: number of topics k and alpha0, scored on held-out
perplexity by document completion (lower is better; NPMI/UMass coherence reported too).

    raysign sweep topics --quick --num-cpus 2   # k in {5, 10}, alpha0 = 1
    raysign sweep topics --num-cpus 2           # k in {5, 10, 20, 30, 40} x alpha0 in {0.1, 1, 2}
    python -m raysign.tune_configs.topics [--quick]     # the same grid in one process, without Ray
"""
from __future__ import annotations

import itertools
import json
import sys

from ray import tune

DESCRIPTION = "spectral LDA on NYT: k and alpha0 by held-out perplexity"
METRIC = "heldout_perplexity"
MODE = "min"
GRID = {"k": [5, 10, 20, 30, 40], "alpha0": [0.1, 1.0, 2.0]}
QUICK_GRID = {"k": [5, 10], "alpha0": [1.0]}


def param_space(quick: bool) -> dict:
    return {name: tune.grid_search(values)
            for name, values in (QUICK_GRID if quick else GRID).items()}


def trial_resources(cpus: float, gpus: float) -> dict:
    return {"cpu": 1}


def evaluate(k: int, alpha0: float) -> dict:
    """Fit TensorLDA(k, alpha0) on 90% of NYT; score the held-out 10% and the topics."""
    from raysign.data import default_data_dir
    from raysign.topics.corpus import load_ldac, load_vocab, split_heldout
    from raysign.topics.estimator import TensorLDA
    from raysign.topics.metrics import coherence, completion_perplexity

    d = default_data_dir() / "topics"
    X, _ = load_ldac(d / "nyt.ldac", n_words=len(load_vocab(d / "nyt.tokens")))
    train, held = split_heldout(X, 0.1, 0)
    est = TensorLDA(k, alpha0).fit(train)
    umass, npmi = coherence(est.components_, train)
    return {"heldout_perplexity": completion_perplexity(est.components_, est.alpha_, held),
            "umass": umass, "npmi": npmi}


def trainable(config: dict) -> None:
    tune.report(evaluate(int(config["k"]), float(config["alpha0"])))


if __name__ == "__main__":
    grid = QUICK_GRID if "--quick" in sys.argv else GRID
    results = []
    for k, a0 in itertools.product(grid["k"], grid["alpha0"]):
        results.append({"k": k, "alpha0": a0, **evaluate(k, a0)})
        print(json.dumps(results[-1]), flush=True)
    best = min(results, key=lambda r: r[METRIC])
    print(f"best {METRIC}={best[METRIC]:.1f} with k={best['k']} alpha0={best['alpha0']}")
