"""What a spectral LDA run shows: the top words of every topic and the fit's scores.

``topics.csv`` / ``topics.json`` hold one row per topic (index, Dirichlet weight alpha_i, top
words); ``topic_word.csv`` the whole topic-word table (one row per word, its probability in
every topic); ``doc_topics.csv`` one row per document (its name, its topic proportions);
``topic_words.png`` draws each topic as a bar chart of its most probable words, so that
a reader can judge the topics at a glance; the scores (UMass and NPMI coherence, held-out
perplexity by document completion, ``raysign.topics.metrics.heldout_scores``) go in one line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from raysign.results import RunDir

FIGURE_WORDS = 8  # bars per topic in topic_words.png
FIGURE_COLUMNS = 5


def top_words(components: np.ndarray, vocab: Sequence[str], n: int) -> list[list[str]]:
    """The ``n`` most probable words of every topic (rows of ``components`` [k, V])."""
    return [[vocab[j] for j in np.argsort(topic)[::-1][:n]] for topic in components]


def topic_table(components: np.ndarray, alpha: np.ndarray, vocab: Sequence[str],
                n: int) -> list[dict]:
    """One row per topic: ``{"topic": i, "alpha": alpha_i, "words": "w1 w2 ..."}``."""
    return [{"topic": i, "alpha": float(alpha[i]), "words": " ".join(words)}
            for i, words in enumerate(top_words(components, vocab, n))]


def format_topics(rows: list[dict]) -> str:
    """The topic table as lines ``  i a=alpha_i w1 w2 ...``."""
    return "\n".join(f"{r['topic']:3d} a={r['alpha']:.3f} {r['words']}" for r in rows)


def format_scores(record: dict) -> str:
    """One line: held-out perplexity, coherence and fit time of a run's record."""
    return (f"held-out perplexity {record['heldout_perplexity']:.1f} (document completion), "
            f"UMass {record['umass']:.3f}, NPMI {record['npmi']:.3f}, "
            f"fit {record['fit_s']:.1f} s (k={record['k']}, alpha0={record['alpha0']}, "
            f"{record['method']}, {record['refine_steps']} EM steps)")


def topic_words_figure(components: np.ndarray, alpha: np.ndarray, vocab: Sequence[str],
                       n_words: int = FIGURE_WORDS):
    """A matplotlib Figure with one horizontal bar chart per topic: its ``n_words`` most
    probable words and their probabilities, the most probable on top; the panel title gives
    the topic and alpha_i. Panels beyond the k topics are hidden."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = components.shape[0]
    cols = min(k, FIGURE_COLUMNS)
    rows = math.ceil(k / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, (0.25 * n_words + 0.6) * rows),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= k:
            ax.axis("off")
            continue
        order = np.argsort(components[i])[::-1][:n_words]
        ax.barh(range(len(order)), components[i, order], color="tab:blue")
        ax.set_yticks(range(len(order)), [vocab[j] for j in order], fontsize=7)
        ax.invert_yaxis()
        ax.tick_params(axis="x", labelsize=6)
        ax.set_title(f"topic {i}, alpha {alpha[i]:.3f}", fontsize=8)
    fig.suptitle("top words per topic (probability)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_topic_words(components: np.ndarray, alpha: np.ndarray, vocab: Sequence[str],
                     path: str | Path, n_words: int = FIGURE_WORDS) -> Path:
    """``topic_words_figure`` saved as a PNG at ``path``."""
    import matplotlib.pyplot as plt

    fig = topic_words_figure(components, alpha, vocab, n_words)
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(run_dir: RunDir, components: np.ndarray, alpha: np.ndarray,
                 vocab: Sequence[str], record: dict, n_words: int) -> list[dict]:
    """topics.json (the topic table and the record), topics.csv and topic_words.png in
    ``run_dir``; returns the topic table."""
    rows = topic_table(components, alpha, vocab, n_words)
    run_dir.write_json("topics.json", {"topics": rows, **record})
    run_dir.write_csv("topics.csv", rows)
    plot_topic_words(components, alpha, vocab, run_dir.file("topic_words.png"))
    return rows


def write_topic_word_table(path: str | Path, components: np.ndarray,
                           vocab: Sequence[str]) -> Path:
    """CSV ``word, topic_0, ..., topic_{k-1}``: p(word | topic), one row per word of
    ``vocab`` in its order (columns of ``components`` [k, V])."""
    import pandas as pd

    frame = pd.DataFrame(np.asarray(components).T,
                         columns=[f"topic_{i}" for i in range(components.shape[0])])
    frame.insert(0, "word", list(vocab))
    frame.to_csv(path, index=False)
    return Path(path)


def write_doc_topics(path: str | Path, names: Sequence[str], theta: np.ndarray) -> Path:
    """CSV ``document, topic_0, ..., topic_{k-1}``: the topic proportions ``theta`` [D, k] of
    every document (rows sum to 1), ``names`` [D] in the corpus's order."""
    import pandas as pd

    frame = pd.DataFrame(theta, columns=[f"topic_{i}" for i in range(theta.shape[1])])
    frame.insert(0, "document", list(names))
    frame.to_csv(path, index=False)
    return Path(path)
