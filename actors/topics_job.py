"""``raysign topics``: spectral LDA (Anandkumar et al. JMLR 2014) on the NYT corpus.

    raysign topics --k 20 --alpha0 1.0 --chunks 4

Whitening (top-k eigenpairs of M2 by matrix-vector products) runs on the driver; the whitened
third moment is accumulated over document chunks as Ray tasks (additive sums, combined exactly).
Results in ``runs/topics/<timestamp>/``: config.json, metrics.jsonl, topics.json, topics.csv.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from raysign.config import check_range
from raysign.data import default_data_dir, require_file
from raysign.results import RunDir
from raysign.topics.estimator import METHODS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--k", type=int, default=20, help="number of topics")
    p.add_argument("--alpha0", type=float, default=1.0, help="Dirichlet concentration sum")
    p.add_argument("--method", default="power", choices=METHODS,
                   help="decomposition of the whitened tensor")
    p.add_argument("--refine-steps", type=int, default=0,
                   help="variational EM steps after the spectral fit (on the driver)")
    p.add_argument("--chunks", type=int, default=4, help="document chunks (Ray tasks)")
    p.add_argument("--heldout", type=float, default=0.1, help="held-out document fraction")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top", type=int, default=10, help="top words printed per topic")
    p.add_argument("--out", default="runs", help="results root")
    p.add_argument("--address", default=None, help="Ray address (default: local)")


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


def run(args: argparse.Namespace) -> int:
    from raysign.actors.cluster import connect
    from raysign.topics.corpus import load_ldac, load_vocab, split_heldout
    from raysign.topics.estimator import TensorLDA
    from raysign.topics.metrics import coherence, completion_perplexity
    from raysign.topics.moments import whitening

    try:  # fails before the corpus is read and Ray starts
        est = TensorLDA(args.k, args.alpha0, method=args.method, seed=args.seed,
                        refine_steps=args.refine_steps)
        check_range("chunks", args.chunks, 1, None)
        check_range("heldout", args.heldout, 0.0, 1.0, low_open=True, high_open=True)
        check_range("top", args.top, 1, None)
    except ValueError as err:
        raise SystemExit(f"raysign topics: invalid configuration: {err}") from None
    d = default_data_dir() / "topics"
    vocab = load_vocab(require_file(d / "nyt.tokens", "NYT vocabulary"))
    X, dropped = load_ldac(require_file(d / "nyt.ldac", "NYT corpus"), n_words=len(vocab))
    train, held = split_heldout(X, args.heldout, args.seed)
    run_dir = RunDir.create(args.out, "topics")
    run_dir.write_json("config.json", {**vars(args), "docs": X.shape[0], "dropped": dropped})
    connect(args.address, None)
    t0 = time.perf_counter()
    W, _, _ = whitening(train, args.alpha0, args.k, seed=args.seed)
    T = ray_third_moment(train, W, args.alpha0, args.chunks)
    est.set_from_tensor(W, T, *est.decompose(T)).refine(train, args.refine_steps)
    fit_s = time.perf_counter() - t0
    umass, npmi = coherence(est.components_, train)
    # The same held-out score as the rank sweep and the benchmark (document completion).
    rec = {"k": args.k, "alpha0": args.alpha0, "method": args.method,
           "refine_steps": args.refine_steps, "fit_s": fit_s, "umass": umass, "npmi": npmi,
           "heldout_perplexity": completion_perplexity(est.components_, est.alpha_, held)}
    run_dir.log(rec)
    topics = []
    for i, t in enumerate(est.components_):
        top = [vocab[j] for j in np.argsort(t)[::-1][:args.top]]
        topics.append({"topic": i, "alpha": float(est.alpha_[i]), "words": " ".join(top)})
        print(f"{i:3d} a={est.alpha_[i]:.3f} {' '.join(top)}")
    run_dir.write_json("topics.json", {"topics": topics, **rec})
    run_dir.write_csv("topics.csv", topics)
    print(rec)
    print(f"results in {run_dir.path}")
    return 0
