"""Spectral LDA vs scikit-learn LatentDirichletAllocation (online, batch) and gensim LdaModel.

    python scripts/bench_topics.py --part synthetic --docs 50000 --words 2000 --k 20 --seeds 3
    python scripts/bench_topics.py --part nyt --k 20

Run with OMP_NUM_THREADS=1 (and the same for MKL/OpenBLAS) so that every method gets one core.

synthetic: LDA corpora with known topics (alpha_i = 1/k, topic-word Dirichlet 0.1, 50 words per
document); per seed wall time, Hungarian-matched L1 topic error and alpha relative error, the
speed-up over sklearn online VB, and the tensor method's topic error on the first --grow
documents. nyt: the NYT corpus (10% of documents held out) - wall time, UMass/NPMI coherence of
the top 10 words on the training documents, held-out perplexity by document completion (one
evaluator, `completion_perplexity`, for all methods), top words of every topic printed and saved.

Settings (every method is told the true / same document-topic prior alpha_i = 1/k, alpha0 = 1):
tensor = TensorLDA power method, 10 restarts x 100 iterations; tensor+EM adds --refine-steps
variational EM steps of --refine-inner E-step iterations. sklearn online/batch = library
defaults (max_iter=10, batch_size=128, learning_offset=10, topic_word_prior=1/k, n_jobs=1).
gensim = LdaModel defaults (passes=1, iterations=50, chunksize=2000, eta=1/k). Topics of the
peers are their normalised topic-word matrices. Every fit reports wall and CPU seconds (on a
shared machine the CPU seconds are the comparable cost). --seed-list runs chosen seeds (one
process per seed in parallel); --online-cap-s / --batch-cap-s run sklearn one pass at a time
under a wall-time cap, logging topic error after every pass. Rows are written as each method
finishes, to runs/bench_topics/<timestamp>/ (under --out).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import LatentDirichletAllocation
from sklearn.utils import gen_batches

from raysign.config import ConfigError, to_dict
from raysign.topics.config import TopicsConfig
from raysign.topics.metrics import alpha_error, heldout_scores, topic_error
from raysign.topics.report import top_words
from raysign.topics.synthetic import make_lda_corpus


def fit_tensor(X: sp.csr_matrix, config: TopicsConfig, seed: int, refine_steps: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """raysign's TensorLDA as ``config`` builds it, with this ``seed`` and ``refine_steps``."""
    est = dataclasses.replace(config, seed=seed, refine_steps=refine_steps).estimator().fit(X)
    return est.components_, est.alpha_


def fit_sklearn(X: sp.csr_matrix, k: int, seed: int, method: str
                ) -> tuple[np.ndarray, np.ndarray]:
    lda = LatentDirichletAllocation(k, doc_topic_prior=1.0 / k, learning_method=method,
                                    random_state=seed, n_jobs=1).fit(X)
    return lda.components_ / lda.components_.sum(1, keepdims=True), np.full(k, 1.0 / k)


def sklearn_iterations(X: sp.csr_matrix, k: int, seed: int, method: str, max_iter: int = 10,
                       cap_s: float = float("inf")):
    """sklearn VB (``method`` "batch" or "online") one pass over the documents at a time: the
    same updates and random draws as ``LatentDirichletAllocation(learning_method=method).fit``
    (its own ``_em_step`` on the same mini-batches), so that a run stopped by a wall-time cap
    still reports how far it got. Yields (pass, wall seconds of EM so far, CPU seconds of EM
    so far, normalised k x V topics); stops after ``max_iter`` passes or when the next pass, at
    the mean wall time per pass so far, would end past ``cap_s``. Unlike ``fit`` it skips the
    final E-step that only computes the training bound ``bound_``."""
    lda = LatentDirichletAllocation(k, doc_topic_prior=1.0 / k, learning_method=method,
                                    random_state=seed, n_jobs=1, max_iter=max_iter)
    X = lda._check_non_neg_array(X, reset_n_features=True, whom="sklearn_iterations")
    lda._init_latent_vars(X.shape[1], dtype=X.dtype)
    n = X.shape[0]
    batches = [slice(0, n)] if method == "batch" else list(gen_batches(n, lda.batch_size))
    spent = cpu = 0.0
    for i in range(1, max_iter + 1):
        t, c = time.perf_counter(), time.process_time()
        for rows in batches:
            lda._em_step(X[rows], total_samples=n, batch_update=method == "batch")
        spent += time.perf_counter() - t
        cpu += time.process_time() - c
        yield i, spent, cpu, lda.components_ / lda.components_.sum(1, keepdims=True)
        if spent + spent / i > cap_s:
            return


def fit_gensim(X: sp.csr_matrix, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from gensim.matutils import Sparse2Corpus
    from gensim.models import LdaModel

    corpus = Sparse2Corpus(X, documents_columns=False)
    alpha = np.full(k, 1.0 / k)
    lda = LdaModel(corpus, num_topics=k, id2word={i: str(i) for i in range(X.shape[1])},
                   alpha=alpha, random_state=seed)
    return lda.get_topics(), alpha


def tensor_config(a: argparse.Namespace) -> TopicsConfig:
    """The TopicsConfig of the tensor methods: k, alpha0 = 1, --refine-inner E-step iterations
    per EM step (seed and EM steps are set per fit)."""
    return TopicsConfig(k=a.k, alpha0=1.0, seed=a.seed, refine_steps=a.refine_steps,
                        refine_inner=a.refine_inner)


def methods(a: argparse.Namespace) -> dict:
    """The selected methods (--methods name prefixes) as fit(X, seed) -> (topics, alpha),
    the quick ones first so that a run stopped early has them."""
    config = tensor_config(a)
    every = {
        "tensor": lambda X, s: fit_tensor(X, config, s, 0),
        f"tensor+EM{a.refine_steps}": lambda X, s: fit_tensor(X, config, s, a.refine_steps),
        "gensim": lambda X, s: fit_gensim(X, a.k, s),
        "sklearn-online": lambda X, s: fit_sklearn(X, a.k, s, "online"),
        "sklearn-batch": lambda X, s: fit_sklearn(X, a.k, s, "batch"),
    }
    prefixes = tuple(a.methods.split(","))
    return {name: fit for name, fit in every.items() if name.startswith(prefixes)}


def timed(fn, *args):
    """(wall seconds, CPU seconds of this process, fn(*args)): on a shared machine the CPU
    seconds are the load-independent cost (one thread per method, OMP_NUM_THREADS=1)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn(*args)
    return time.perf_counter() - t, time.process_time() - c, out


def capped_sklearn(X: sp.csr_matrix, B: np.ndarray, a: argparse.Namespace, seed: int,
                   method: str, cap_s: float, out: Path) -> dict:
    """sklearn ``method`` VB under the wall-time cap ``cap_s``: topic error after every pass
    appended to sklearn-<method>_progress.jsonl; the row of the last pass reached."""
    row = {}
    for i, spent, cpu, topics in sklearn_iterations(X, a.k, seed, method, cap_s=cap_s):
        row = {"seed": seed, "method": f"sklearn-{method}", "docs": a.docs, "time_s": spent,
               "cpu_s": cpu, "topic_l1": topic_error(topics, B), "alpha_err": None,
               "iterations": i, "finished": i == 10, "cap_s": cap_s}
        with open(out / f"sklearn-{method}_progress.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    return row


def synthetic(a: argparse.Namespace, out: Path) -> None:
    rows = []
    alpha = np.full(a.k, 1.0 / a.k)
    for seed in a.seed_list or range(a.seeds):
        X, B, _ = make_lda_corpus(a.docs, a.words, a.k, alpha, a.doc_len, seed=seed)
        for name, fit in methods(a).items():
            if seed >= a.peer_seeds and not name.startswith("tensor"):
                continue
            cap_s = {"sklearn-batch": a.batch_cap_s, "sklearn-online": a.online_cap_s}.get(name)
            if cap_s:
                rows.append(capped_sklearn(X, B, a, seed, name.split("-")[1], cap_s, out))
            else:
                s, cpu, (topics, est_alpha) = timed(fit, X, seed)
                ae = (alpha_error(est_alpha, topics, alpha, B) if name.startswith("tensor")
                      else None)
                rows.append({"seed": seed, "method": name, "docs": a.docs, "time_s": s,
                             "cpu_s": cpu,
                             "topic_l1": topic_error(topics, B), "alpha_err": ae})
            print(json.dumps(rows[-1]), flush=True)
            (out / "synthetic.json").write_text(json.dumps(rows, indent=1))
        for D in a.grow:
            if D < a.docs:
                s, cpu, (topics, est_alpha) = timed(fit_tensor, X[:D], tensor_config(a),
                                                    seed, 0)
                rows.append({"seed": seed, "method": "tensor", "docs": D, "time_s": s,
                             "cpu_s": cpu,
                             "topic_l1": topic_error(topics, B),
                             "alpha_err": alpha_error(est_alpha, topics, alpha, B)})
                print(json.dumps(rows[-1]), flush=True)
        (out / "synthetic.json").write_text(json.dumps(rows, indent=1))
    print("\nmethod            docs   time_s          topic_L1        alpha_err  speedup_vs_online")
    full = [r for r in rows if r["docs"] == a.docs]
    base = np.mean([r["time_s"] for r in full if r["method"] == "sklearn-online"] or [np.nan])
    for name in dict.fromkeys(r["method"] for r in rows):
        for D in sorted({r["docs"] for r in rows if r["method"] == name}):
            sel = [r for r in rows if r["method"] == name and r["docs"] == D]
            t = [r["time_s"] for r in sel]
            e = [r["topic_l1"] for r in sel]
            ae = [r["alpha_err"] for r in sel if r["alpha_err"] is not None]
            ae_s = f"{np.mean(ae):.3f}+-{np.std(ae):.3f}" if ae else "-"
            sp_s = f"{base / np.mean(t):.1f}x" if D == a.docs else "-"
            print(f"{name:16s} {D:6d} {np.mean(t):7.2f}+-{np.std(t):5.2f} "
                  f"{np.mean(e):.3f}+-{np.std(e):.3f}  {ae_s:13s} {sp_s}")


def nyt(a: argparse.Namespace, out: Path) -> None:
    from raysign.topics.corpus import load_nyt, split_heldout

    X, vocab, dropped = load_nyt(tensor_config(a).data_dir)
    train, held = split_heldout(X, 0.1, 0)
    print(f"NYT: {X.shape[0]} docs ({dropped} dropped), V={X.shape[1]}, train {train.shape[0]},"
          f" held out {held.shape[0]}, k={a.k}")
    rows, words = [], {}
    for name, fit in methods(a).items():
        s, cpu, (topics, est_alpha) = timed(fit, train, a.seed)
        rows.append({"method": name, "time_s": s, "cpu_s": cpu,
                     **heldout_scores(topics, est_alpha, train, held)})
        words[name] = [" ".join(w) for w in top_words(topics, vocab, 10)]
        print(json.dumps(rows[-1]), flush=True)
        for i, w in enumerate(words[name]):
            print(f"  {name} {i:2d}: {w}")
        (out / "nyt.json").write_text(json.dumps({"rows": rows, "top_words": words}, indent=1))
    print("\nmethod            time_s   UMass    NPMI   heldout_perplexity")
    for r in rows:
        print(f"{r['method']:16s} {r['time_s']:7.2f} {r['umass']:7.3f} {r['npmi']:7.3f} "
              f"{r['heldout_perplexity']:9.1f}")


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=["synthetic", "nyt", "all"], default="all")
    p.add_argument("--docs", type=int, default=50000)
    p.add_argument("--words", type=int, default=2000)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--doc-len", type=int, default=50)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed-list", type=int_list, default=None,
                   help="run exactly these seeds (e.g. 1,2) instead of range(--seeds)")
    p.add_argument("--batch-cap-s", type=float, default=None,
                   help="wall-time cap (s) of sklearn batch: run it one EM iteration at a "
                        "time and stop before an iteration that would end past the cap")
    p.add_argument("--online-cap-s", type=float, default=None,
                   help="the same for sklearn online VB (one pass over the documents at a time)")
    p.add_argument("--peer-seeds", type=int, default=3,
                   help="the peers run on the first this many seeds only (tensor on all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the NYT fits")
    p.add_argument("--grow", type=int_list,
                   default=[5000, 20000], help="tensor-method document counts below --docs")
    p.add_argument("--refine-steps", type=int, default=3)
    p.add_argument("--refine-inner", type=int, default=10)
    p.add_argument("--methods", default="tensor,sklearn-online,sklearn-batch,gensim",
                   help="comma-separated name prefixes of the methods to run")
    p.add_argument("--out", default="runs")
    a = p.parse_args()
    try:  # the tensor methods' settings, validated before any corpus is built
        config = tensor_config(a)
    except ConfigError as err:
        p.error(str(err))
    out = Path(a.out) / "bench_topics" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({**vars(a), "tensor": to_dict(config)},
                                                indent=1))
    if a.part in ("synthetic", "all"):
        synthetic(a, out)
    if a.part in ("nyt", "all"):
        nyt(a, out)
    print(f"results in {out}")


if __name__ == "__main__":
    main()
