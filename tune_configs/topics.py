"""Rank sweep for spectral LDA on NYT or on the user's corpus: number of topics k and alpha0,
scored on held-out perplexity by document completion (lower is better; NPMI/UMass coherence
reported too).

    raysign sweep topics --quick --num-cpus 2   # k in {5, 10}, alpha0 = 1
    raysign sweep topics --num-cpus 2           # k in {5, 10, 20, 30, 40} x alpha0 in {0.1, 1, 2}
    raysign sweep topics --set input=corpus.csv --set min_df=2    # the user's corpus
    python -m raysign.tune_configs.topics [--quick] [--input PATH]   # one process, no Ray

Every ``TopicsConfig`` field a trial's config holds (``raysign sweep --set FIELD=VALUE``: the
corpus ``input``, ``vocab``, ``text_col``, ``stop_words``, ``min_df``, ``max_df``, ...) is the
trial's; each trial reads the corpus itself.
"""
from __future__ import annotations

import argparse
import itertools
import json
from typing import Any

from raysign.config import config_from_mapping
from raysign.topics.config import TopicsConfig

DESCRIPTION = "spectral LDA on NYT or --set input=PATH: k and alpha0 by held-out perplexity"
METRIC = "heldout_perplexity"
MODE = "min"
GRID = {"k": [5, 10, 20, 30, 40], "alpha0": [0.1, 1.0, 2.0]}
QUICK_GRID = {"k": [5, 10], "alpha0": [1.0]}
PATH_FIELDS = ("input", "vocab", "transform", "data_dir")


def check_fixed(fixed: dict[str, Any]) -> None:
    """``raysign sweep topics --set input=...``: the corpus options are validated once on the
    driver (a missing file, an unknown format, a bad option) before any trial starts."""
    config_from_mapping(TopicsConfig, {"k": 2, **fixed})


def param_space(quick: bool) -> dict:
    from ray import tune

    return {name: tune.grid_search(values)
            for name, values in (QUICK_GRID if quick else GRID).items()}


def trial_resources(cpus: float, gpus: float) -> dict:
    return {"cpu": 1}


def evaluate(config: TopicsConfig) -> dict:
    """Fit ``config``'s TensorLDA on the training documents of its corpus (``input``, else NYT;
    the documents of 3 or more words but the held-out fraction, 10% by default); score the
    held-out documents and the topics."""
    from raysign.topics.corpus import check_fit_size, fit_documents, load_nyt, split_heldout
    from raysign.topics.metrics import heldout_scores

    X = config.read_corpus().counts if config.input else load_nyt(config.data_dir)[0]
    train, held = split_heldout(X[fit_documents(X)], config.heldout, config.seed)
    check_fit_size(train.shape[0], train.shape[1], config.k, config.input or "NYT")
    est = config.estimator().fit(train)
    return heldout_scores(est.components_, est.alpha_, train, held)


def trainable(config: dict) -> None:
    from ray import tune

    tune.report(evaluate(config_from_mapping(TopicsConfig, config)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--input", default="", help="the corpus (default: NYT)")
    options = parser.parse_args()
    grid = QUICK_GRID if options.quick else GRID
    results = []
    for k, a0 in itertools.product(grid["k"], grid["alpha0"]):
        config = TopicsConfig(k=k, alpha0=a0, input=options.input)
        results.append({"k": k, "alpha0": a0, **evaluate(config)})
        print(json.dumps(results[-1]), flush=True)
    best = min(results, key=lambda r: r[METRIC])
    print(f"best {METRIC}={best[METRIC]:.1f} with k={best['k']} alpha0={best['alpha0']}")
