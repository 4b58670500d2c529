"""Spectral LDA on a corpus raysign has never used, through the command line and through Python,
with scikit-learn's LatentDirichletAllocation on the same matrix in the same run.

The corpus: the docstrings of this Python's standard library (every module, class and function
docstring of 20 or more words, read with ``ast`` from the ``.py`` files under
``sysconfig.get_paths()["stdlib"]``, test folders and site-packages left out). It ships with
every Python and needs no download. Every 20th docstring (by its position in the sorted list) is
kept aside as the ``--transform`` documents; the rest go to ``docstrings.csv`` (columns
``name``, ``text``).

1. CLI: ``python -m raysign.cli topics --input docstrings.csv --transform new_docstrings.csv
   --k K --min-df 5 --max-df 0.5 --chunks 1 --refine-steps R`` in a subprocess (its wall time
   includes Python's start and the imports).
2. Python: ``read_corpus`` with the same options, the documents of 3 or more words, the same
   held-out split (10%, seed 0), ``TensorLDA(k, alpha0=1, refine_steps=R).fit(train)``.
3. scikit-learn: ``LatentDirichletAllocation(k, doc_topic_prior=1/k, learning_method="batch",
   random_state=0)`` on the same ``train`` matrix (library defaults otherwise: 10 passes,
   topic_word_prior 1/k), scored by the same ``heldout_scores`` with alpha_i = 1/k.

    OMP_NUM_THREADS=1 python scripts/bench_topics_user_data.py --k 20 --refine-steps 3

Prints one row per fit (UMass, NPMI, held-out perplexity, wall and CPU seconds of the fit) and
the top words; writes them to ``<out>/bench_topics_user_data.json``.
"""
from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.decomposition import LatentDirichletAllocation

from raysign.topics.corpus import fit_documents, read_corpus, split_heldout
from raysign.topics.estimator import TensorLDA
from raysign.topics.metrics import heldout_scores
from raysign.topics.report import top_words

ROOT = Path(__file__).resolve().parents[1]
MIN_WORDS = 20  # a docstring shorter than this is a one-liner, not a document


def stdlib_docstrings() -> list[tuple[str, str]]:
    """(module.qualified_name, docstring) of every docstring of >= MIN_WORDS words in the
    standard library's .py files (tests and site-packages left out), sorted by name."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for file in sorted(lib.rglob("*.py")):
        parts = file.relative_to(lib).parts
        if {"site-packages", "test", "tests", "idle_test"} & set(parts):
            continue
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        module = ".".join(parts)[:-3]
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                 ast.AsyncFunctionDef)):
                text = ast.get_docstring(node)
                if text and len(text.split()) >= MIN_WORDS:
                    name = module if isinstance(node, ast.Module) else f"{module}.{node.name}"
                    docs.append((f"{name}:{getattr(node, 'lineno', 0)}", text))
    return sorted(docs)


def timed(fn, *args):
    t, c = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - t, time.process_time() - c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--refine-steps", type=int, default=3)
    parser.add_argument("--min-df", type=float, default=5)
    parser.add_argument("--max-df", type=float, default=0.5)
    parser.add_argument("--out", default="runs/bench_topics_user_data")
    a = parser.parse_args()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    docs = stdlib_docstrings()
    corpus = [d for i, d in enumerate(docs) if i % 20]
    new = [d for i, d in enumerate(docs) if i % 20 == 0]
    pd.DataFrame(corpus, columns=["name", "text"]).to_csv(out / "docstrings.csv", index=False)
    pd.DataFrame(new, columns=["name", "text"]).to_csv(out / "new_docstrings.csv", index=False)
    print(f"Python {sys.version.split()[0]} stdlib docstrings: {len(corpus)} documents, "
          f"{len(new)} kept for --transform, {sum(len(t.split()) for _, t in docs)} words")

    options = ["--k", str(a.k), "--min-df", f"{a.min_df:g}", "--max-df", f"{a.max_df:g}",
               "--refine-steps", str(a.refine_steps)]
    command = [sys.executable, "-m", "raysign.cli", "topics", "--input",
               str(out / "docstrings.csv"), "--transform", str(out / "new_docstrings.csv"),
               "--chunks", "1", "--results-dir", str(out / "runs"), *options]
    print("$", " ".join(command))
    t = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=True)
    cli_wall = time.perf_counter() - t
    cli = json.loads(done.stdout.strip().splitlines()[-1])
    rows = [{"run": "raysign topics (CLI)", "fit_s": cli["fit_s"], "fit_cpu_s": float("nan"),
             "process_s": cli_wall, **{m: cli[m] for m in ("umass", "npmi",
                                                             "heldout_perplexity")}}]

    X, vocab = read_corpus(out / "docstrings.csv", min_df=a.min_df, max_df=a.max_df)
    train, held = split_heldout(X[fit_documents(X)], 0.1, seed=0)
    print(f"matrix: {X.shape[0]} documents x {X.shape[1]} words, {X.sum()} tokens; train "
          f"{train.shape[0]}, held out {held.shape[0]}, k={a.k}")
    assert (cli["docs"], cli["words"], cli["train_docs"]) == (X.shape[0], X.shape[1],
                                                              train.shape[0])
    lda, wall, cpu = timed(TensorLDA(a.k, alpha0=1.0, refine_steps=a.refine_steps).fit, train)
    rows.append({"run": "TensorLDA (Python)", "fit_s": wall, "fit_cpu_s": cpu, "process_s": wall,
                 **heldout_scores(lda.components_, lda.alpha_, train, held)})
    words = {"TensorLDA": [" ".join(w) for w in top_words(lda.components_, vocab, 8)]}

    peer = LatentDirichletAllocation(a.k, doc_topic_prior=1.0 / a.k, learning_method="batch",
                                     random_state=0, n_jobs=1)
    peer, wall, cpu = timed(peer.fit, train)
    topics = peer.components_ / peer.components_.sum(1, keepdims=True)
    rows.append({"run": "sklearn LDA batch", "fit_s": wall, "fit_cpu_s": cpu, "process_s": wall,
                 **heldout_scores(topics, np.full(a.k, 1.0 / a.k), train, held)})
    words["sklearn"] = [" ".join(w) for w in top_words(topics, vocab, 8)]

    print(f"\n{'run':22s} {'UMass':>7s} {'NPMI':>7s} {'perplexity':>10s} {'fit_s':>7s} "
          f"{'fit_cpu_s':>9s} {'process_s':>9s}")
    for r in rows:
        print(f"{r['run']:22s} {r['umass']:7.3f} {r['npmi']:7.3f} "
              f"{r['heldout_perplexity']:10.1f} {r['fit_s']:7.2f} {r['fit_cpu_s']:9.2f} "
              f"{r['process_s']:9.2f}")
    for name, lines in words.items():
        print(f"\n{name} top words:")
        for i, line in enumerate(lines):
            print(f"  {i:2d} {line}")
    (out / "bench_topics_user_data.json").write_text(json.dumps(
        {"rows": rows, "top_words": words, "cli_record": cli, "options": vars(a)}, indent=1))


if __name__ == "__main__":
    main()
