"""Spectral LDA vs scikit-learn LatentDirichletAllocation (online, batch) on synthetic LDA.

    python scripts/bench_topics.py --docs 3000 --words 300 --k 10 --seeds 1

Prints wall time, Hungarian-matched L1 topic error, alpha error and the time ratio vs online VB.
The issue's full configuration is --docs 50000 --words 2000 --k 20 --seeds 3 (gensim not run).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.decomposition import LatentDirichletAllocation

from raysign.topics.estimator import TensorLDA
from raysign.topics.metrics import alpha_error, topic_error
from raysign.topics.synthetic import make_lda_corpus


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--docs", type=int, default=3000)
    p.add_argument("--words", type=int, default=300)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--doc-len", type=int, default=50)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--max-iter", type=int, default=10)
    a = p.parse_args()
    for seed in range(a.seeds):
        alpha = np.full(a.k, 1.0 / a.k)
        X, B, _ = make_lda_corpus(a.docs, a.words, a.k, alpha, a.doc_len, seed=seed)
        rows = {}
        t = time.perf_counter()
        est = TensorLDA(a.k, alpha0=1.0, seed=seed).fit(X)
        rows["tensor-power"] = (time.perf_counter() - t, topic_error(est.components_, B),
                                alpha_error(est.alpha_, est.components_, alpha, B))
        for method in ("online", "batch"):
            t = time.perf_counter()
            lda = LatentDirichletAllocation(a.k, doc_topic_prior=1.0 / a.k,
                                            learning_method=method, max_iter=a.max_iter,
                                            random_state=seed, n_jobs=1).fit(X)
            comp = lda.components_ / lda.components_.sum(1, keepdims=True)
            rows[f"sklearn-{method}"] = (time.perf_counter() - t, topic_error(comp, B), np.nan)
        base = rows["sklearn-online"][0]
        for name, (s, te, ae) in rows.items():
            print(f"seed={seed} {name:15s} time={s:7.2f}s topic_L1={te:.3f} alpha_err={ae:.3f} "
                  f"speedup_vs_online={base / s:6.1f}x")


if __name__ == "__main__":
    main()
