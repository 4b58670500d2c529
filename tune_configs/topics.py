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

from raysign.topics.config import TopicsConfig

DESCRIPTION = "spectral LDA on NYT: k and alpha0 by held-out perplexity"
METRIC = "heldout_perplexity"
MODE = "min"
GRID = {"k": [5, 10, 20, 30, 40], "alpha0": [0.1, 1.0, 2.0]}
QUICK_GRID = {"k": [5, 10], "alpha0": [1.0]}


def param_space(quick: bool) -> dict:
    from ray import tune

    return {name: tune.grid_search(values)
            for name, values in (QUICK_GRID if quick else GRID).items()}


def trial_resources(cpus: float, gpus: float) -> dict:
    return {"cpu": 1}


def evaluate(config: TopicsConfig) -> dict:
    """Fit ``config``'s TensorLDA on the training documents of NYT (all but the held-out
    fraction, 10% by default); score the held-out documents and the topics."""
    from raysign.topics.corpus import load_nyt, split_heldout
    from raysign.topics.metrics import heldout_scores

    X, _, _ = load_nyt(config.data_dir)
    train, held = split_heldout(X, config.heldout, config.seed)
    est = config.estimator().fit(train)
    return heldout_scores(est.components_, est.alpha_, train, held)


def trainable(config: dict) -> None:
    from ray import tune

    tune.report(evaluate(TopicsConfig(k=int(config["k"]), alpha0=float(config["alpha0"]))))


if __name__ == "__main__":
    grid = QUICK_GRID if "--quick" in sys.argv else GRID
    results = []
    for k, a0 in itertools.product(grid["k"], grid["alpha0"]):
        results.append({"k": k, "alpha0": a0, **evaluate(TopicsConfig(k=k, alpha0=a0))})
        print(json.dumps(results[-1]), flush=True)
    best = min(results, key=lambda r: r[METRIC])
    print(f"best {METRIC}={best[METRIC]:.1f} with k={best['k']} alpha0={best['alpha0']}")
