"""``raysign topics`` and ``scripts/run_topics.py``: spectral LDA (Anandkumar et al. JMLR 2014)
on the NYT corpus, or on the user's own with ``--input`` (``raysign.topics.corpus`` formats).

    raysign topics --k 20 --alpha0 1.0 --chunks 4
    raysign topics --input my_texts/ --k 10 --min-df 2 --transform new_texts.csv

Whitening (top-k eigenpairs of M2 by matrix-vector products) runs on the driver; the whitened
third moment is accumulated over document chunks as Ray tasks (additive sums, combined exactly).
With ``--chunks 1`` the one chunk is summed in this process and Ray is neither started nor
imported. Results in ``runs/topics/<timestamp>/``: config.json, metrics.jsonl, topics.json,
topics.csv, topic_words.png, topic_word.csv, doc_topics.csv (every input document's topic
proportions), new_doc_topics.csv (``--transform``) and vocab.txt (``raysign.topics.report``).
The fit uses the documents of 3 or more words, less the ``--heldout`` fraction scored by
held-out perplexity. ``--results-dir`` and ``--data-dir``
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
from raysign.topics.corpus import Corpus, CorpusError

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
    "input": "your corpus instead of NYT: a folder of text files, a .csv/.tsv with a text "
             "column, an LDA-C file (.ldac/.dat) or a scipy sparse .npz, the last two with a "
             "vocabulary file",
    "vocab": "vocabulary of an .ldac/.dat/.npz corpus, one word per line ('' = vocab.txt beside "
             "it)",
    "text_col": "the text column of a .csv/.tsv corpus",
    "stop_words": "CountVectorizer stop words: english or none",
    "min_df": "keep words in at least this many documents (>= 1) or this fraction (< 1)",
    "max_df": "keep words in at most this fraction of documents (<= 1) or this many (> 1)",
    "max_features": "keep the most frequent words only (0 = all)",
    "transform": "new documents (same formats) whose topic proportions are written to "
                 "new_doc_topics.csv, counted on the fitted vocabulary",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, TopicsConfig, _HELP)
    # The former name of --results-dir.
    parser.add_argument("--out", dest="results_dir", default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)
    # The name scikit-learn users reach for.
    parser.add_argument("--holdout", dest="heldout", type=float, default=argparse.SUPPRESS,
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


def read_documents(config: TopicsConfig) -> tuple[Corpus, int, Corpus | None]:
    """(the corpus, documents dropped on reading, the ``transform`` documents or None): the
    user's ``input``, else NYT (a URI ``data_dir``'s ``topics/`` copied to this node first)."""
    from raysign.topics.corpus import load_nyt

    if config.input:
        corpus, dropped = config.read_corpus(), 0
    else:
        X, vocab, dropped = load_nyt(local_data_dir(config.data_dir, ["topics"]))
        corpus = Corpus(X, vocab, [str(i) for i in range(X.shape[0])])
    new = (config.read_corpus(config.transform, vocabulary=corpus.vocab) if config.transform
           else None)
    return corpus, dropped, new


def run(args: argparse.Namespace) -> int:
    from raysign.results import RunDir
    from raysign.topics.corpus import check_fit_size, fit_documents, split_heldout
    from raysign.topics.metrics import heldout_scores
    from raysign.topics.moments import whitening
    from raysign.topics.report import (
        format_scores,
        format_topics,
        write_doc_topics,
        write_report,
        write_topic_word_table,
    )

    try:  # fails before the corpus is read and Ray starts
        config = config_from_args(TopicsConfig, args)
    except ConfigError as err:
        raise SystemExit(f"raysign topics: invalid configuration: {err}") from None
    try:  # the data's problems, before any fitting and before Ray starts
        corpus, dropped, new = read_documents(config)
        used = fit_documents(corpus.counts)
        train, held = split_heldout(corpus.counts[used], config.heldout, config.seed)
        check_fit_size(train.shape[0], train.shape[1], config.k, config.input or "NYT")
    except (CorpusError, OSError) as err:
        raise SystemExit(f"raysign topics: {err}") from None
    est = config.estimator()
    run_dir = RunDir.create(config.results_dir, "topics")
    run_dir.write_json("config.json", to_dict(config))
    t0 = time.perf_counter()
    W, _, _ = whitening(train, config.alpha0, config.k, seed=config.seed)
    T = third_moment(train, W, config.alpha0, config.chunks, args.address)
    est.set_from_tensor(W, T, *est.decompose(T)).refine(train, config.refine_steps)
    fit_s = time.perf_counter() - t0
    # The same held-out score as the rank sweep and the benchmark (document completion).
    record = {"k": config.k, "alpha0": config.alpha0, "method": config.method,
              "refine_steps": config.refine_steps, "input": config.input or "nyt",
              "docs": corpus.counts.shape[0], "words": corpus.counts.shape[1],
              "train_docs": train.shape[0], "heldout_docs": held.shape[0],
              "dropped": dropped + corpus.counts.shape[0] - len(used),
              "fit_s": fit_s, **heldout_scores(est.components_, est.alpha_, train, held)}
    run_dir.log(record)
    rows = write_report(run_dir, est.components_, est.alpha_, corpus.vocab, record, config.top)
    write_topic_word_table(run_dir.file("topic_word.csv"), est.components_, corpus.vocab)
    run_dir.file("vocab.txt").write_text("\n".join(corpus.vocab) + "\n")
    write_doc_topics(run_dir.file("doc_topics.csv"), corpus.names, est.transform(corpus.counts))
    if new is not None:
        write_doc_topics(run_dir.file("new_doc_topics.csv"), new.names, est.transform(new.counts))
    run_dir.close()
    print(format_topics(rows))
    print(format_scores(record))
    print(f"results: {run_dir.location}")
    print(json.dumps(record))
    return 0
