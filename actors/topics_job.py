"""``raysign topics`` and ``scripts/run_topics.py``: spectral LDA (Anandkumar et al. JMLR 2014)
on the NYT corpus.

    raysign topics --k 20 --alpha0 1.0 --chunks 4

Whitening (top-k eigenpairs of M2 by matrix-vector products) runs on the driver; the whitened
third moment is accumulated over document chunks as Ray tasks (additive sums, combined exactly).
With ``--chunks 1`` the one chunk is summed in this process and Ray is neither started nor
imported. Results in ``runs/topics/<timestamp>/``: config.json, metrics.jsonl, topics.json,
topics.csv, topic_words.png (``raysign.topics.report``). ``--results-dir`` and ``--data-dir``
take a path or a URI (``raysign.storage``); the driver reads the corpus (a URI's ``topics/`` is
copied once into this node's cache, before Ray starts) and sends the chunks to the tasks.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from raysign.config import ConfigError, add_config_arguments, config_from_args, to_dict
from raysign.data import local_data_dir
from raysign.topics.config import TopicsConfig

_HELP = {
    "k": "number of topics",
    "alpha0": "Dirichlet concentration sum",
    "method": "decomposition of the whitened tensor: power, tl-power or als",
    "refine_steps": "variational EM steps after the spectral fit (on the driver)",
    "refine_inner": "E-step iterations per EM step",
    "chunks": "document chunks of the third moment (Ray tasks; 1 = in this process, no Ray)",
    "heldout": "held-out document fraction",
    "seed": "seed of the held-out split, the whitening and the decomposition",
    "top": "top words printed and saved per topic",
    "data_dir": "folder holding topics/nyt.ldac and topics/nyt.tokens, a path or a URI such "
                "as s3://bucket/data ('' = $RAYSIGN_DATA, else ../shared/data)",
    "results_dir": "root folder for results: a path, or a URI such as s3://bucket/runs (in a "
                   "Ray job: storage every node reaches)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, TopicsConfig, _HELP)
    # The former name of --results-dir.
    parser.add_argument("--out", dest="results_dir", default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)
    parser.add_argument("--address", default=None,
                        help="join: auto or host:port (default: $RAY_ADDRESS, else a private Ray)")


def ray_third_moment(X, W, alpha0: float, n_chunks: int) -> np.ndarray:
    """M3(W, W, W) summed over document chunks by Ray tasks (caller has Ray initialised)."""
    import ray

    from raysign.topics.moments import combine_third_moment, third_moment_sums

    task = ray.remote(third_moment_sums)
    bounds = np.linspace(0, X.shape[0], n_chunks + 1).astype(int)
    W_ref = ray.put(W)
    pairs = [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    parts = ray.get([task.remote(X[a:b], W_ref) for a, b in pairs])
    return combine_third_moment(parts, W, alpha0)


def third_moment(X, W, alpha0: float, n_chunks: int, address: str | None) -> np.ndarray:
    """M3(W, W, W): one chunk in this process, or ``n_chunks`` Ray tasks on the cluster at
    ``address`` (joined or started here)."""
    from raysign.topics.moments import combine_third_moment, third_moment_sums

    if n_chunks == 1:
        return combine_third_moment([third_moment_sums(X, W)], W, alpha0)
    from raysign.actors.cluster import connect

    connect(address, None)
    return ray_third_moment(X, W, alpha0, n_chunks)


def run(args: argparse.Namespace) -> int:
    from raysign.results import RunDir
    from raysign.topics.corpus import load_nyt, split_heldout
    from raysign.topics.metrics import heldout_scores
    from raysign.topics.moments import whitening
    from raysign.topics.report import format_scores, format_topics, write_report

    try:  # fails before the corpus is read and Ray starts
        config = config_from_args(TopicsConfig, args)
        X, vocab, dropped = load_nyt(local_data_dir(config.data_dir, ["topics"]))
    except (ConfigError, OSError) as err:
        raise SystemExit(f"raysign topics: invalid configuration: {err}") from None
    est = config.estimator()
    train, held = split_heldout(X, config.heldout, config.seed)
    run_dir = RunDir.create(config.results_dir, "topics")
    run_dir.write_json("config.json", to_dict(config))
    t0 = time.perf_counter()
    W, _, _ = whitening(train, config.alpha0, config.k, seed=config.seed)
    T = third_moment(train, W, config.alpha0, config.chunks, args.address)
    est.set_from_tensor(W, T, *est.decompose(T)).refine(train, config.refine_steps)
    fit_s = time.perf_counter() - t0
    # The same held-out score as the rank sweep and the benchmark (document completion).
    record = {"k": config.k, "alpha0": config.alpha0, "method": config.method,
              "refine_steps": config.refine_steps, "docs": X.shape[0], "dropped": dropped,
              "fit_s": fit_s, **heldout_scores(est.components_, est.alpha_, train, held)}
    run_dir.log(record)
    rows = write_report(run_dir, est.components_, est.alpha_, vocab, record, config.top)
    run_dir.close()
    print(format_topics(rows))
    print(format_scores(record))
    print(f"results: {run_dir.location}")
    print(json.dumps(record))
    return 0
