"""Rank sweep for spectral LDA on NYT: number of topics k and alpha0, scored on held-out
perplexity by document completion (lower is better; NPMI/UMass coherence reported too).

    raysign sweep lda_rank --quick --num-cpus 2   # k in {5, 10}, alpha0 = 1
    raysign sweep lda_rank --num-cpus 2           # k in {5, 10, 20, 30, 40} x alpha0 in {0.1, 1, 2}
"""
from __future__ import annotations

from ray import tune

DESCRIPTION = "spectral LDA on NYT: k and alpha0 by held-out perplexity"
METRIC = "heldout_perplexity"
MODE = "min"


def param_space(quick: bool) -> dict:
    if quick:
        return {"k": tune.grid_search([5, 10]), "alpha0": tune.grid_search([1.0])}
    return {"k": tune.grid_search([5, 10, 20, 30, 40]),
            "alpha0": tune.grid_search([0.1, 1.0, 2.0])}


def trial_resources(cpus: float, gpus: float) -> dict:
    return {"cpu": 1}


def trainable(config: dict) -> None:
    from raysign.data import default_data_dir
    from raysign.topics.corpus import load_ldac, load_vocab, split_heldout
    from raysign.topics.estimator import TensorLDA
    from raysign.topics.metrics import coherence, completion_perplexity

    d = default_data_dir() / "topics"
    X, _ = load_ldac(d / "nyt.ldac", n_words=len(load_vocab(d / "nyt.tokens")))
    train, held = split_heldout(X, 0.1, 0)
    est = TensorLDA(int(config["k"]), float(config["alpha0"])).fit(train)
    umass, npmi = coherence(est.components_, train)
    tune.report({"heldout_perplexity": completion_perplexity(est.components_, est.alpha_, held),
                 "umass": umass, "npmi": npmi})
