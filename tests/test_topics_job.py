"""``raysign topics --chunks 1`` runs without Ray, writes a config.json that rebuilds its
TopicsConfig, and fits the topics the sweep's single-process ``evaluate`` fits; the report
module's tables and figure."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from raysign import cli
from raysign.config import config_from_args
from raysign.results import read_jsonl
from raysign.topics.config import TopicsConfig
from raysign.topics.report import (
    format_topics,
    plot_topic_words,
    top_words,
    topic_table,
    topic_words_figure,
)

ROOT = Path(__file__).resolve().parents[1]
# Any "import ray" in the child fails with ImportError.
WITHOUT_RAY = ("import sys; sys.modules['ray'] = None; from raysign.cli import main; "
               "sys.exit(main(sys.argv[1:]))")


@pytest.fixture(scope="module")
def in_process_run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("topics")
    argv = ["topics", "--chunks", "1", "--k", "4", "--top", "6", "--seed", "2",
            "--refine-steps", "1", "--refine-inner", "3", "--out", str(out),
            "--data-dir", str(data_dir)]
    result = subprocess.run([sys.executable, "-c", WITHOUT_RAY, *argv], capture_output=True,
                            text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    run_dir = next((out / "topics").iterdir())
    return argv, result.stdout, run_dir


def test_one_chunk_runs_with_ray_unimportable_and_config_json_round_trips(in_process_run):
    argv, _, run_dir = in_process_run
    expected = config_from_args(TopicsConfig, cli.build_parser(argv).parse_args(argv))
    written = json.loads((run_dir / "config.json").read_text())
    assert TopicsConfig(**written) == expected
    assert (expected.k, expected.seed, expected.refine_steps) == (4, 2, 1)


def test_job_writes_the_topic_table_figure_and_the_sweep_evaluators_scores(in_process_run):
    from raysign.tune_configs.topics import evaluate

    argv, stdout, run_dir = in_process_run
    config = TopicsConfig(**json.loads((run_dir / "config.json").read_text()))
    [record] = read_jsonl(run_dir / "metrics.jsonl")
    assert json.loads(stdout.strip().splitlines()[-1]) == record
    # The job sums M3 by chunks (moments.third_moment_sums); the sweep fits TensorLDA in one
    # piece (moments.whitened_third_moment): the same topics, so the same scores.
    reference = evaluate(config)
    for name in ("heldout_perplexity", "umass", "npmi"):
        np.testing.assert_allclose(record[name], reference[name], rtol=1e-6)
    with open(run_dir / "topics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["topic"]) for r in rows] == [0, 1, 2, 3]
    assert all(len(r["words"].split()) == 6 for r in rows)
    assert json.loads((run_dir / "topics.json").read_text())["topics"][0]["words"] == \
        rows[0]["words"]
    assert (run_dir / "topic_words.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_top_words_are_the_most_probable_in_order():
    vocab = ["a", "b", "c", "d"]
    components = np.array([[0.1, 0.4, 0.2, 0.3], [0.7, 0.0, 0.2, 0.1]])
    assert top_words(components, vocab, 3) == [["b", "d", "c"], ["a", "c", "d"]]
    rows = topic_table(components, np.array([0.25, 0.5]), vocab, 2)
    assert rows == [{"topic": 0, "alpha": 0.25, "words": "b d"},
                    {"topic": 1, "alpha": 0.5, "words": "a c"}]
    assert format_topics(rows).splitlines() == ["  0 a=0.250 b d", "  1 a=0.500 a c"]


def test_topic_figure_draws_each_topics_top_words_as_bars(tmp_path):
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    components = rng.dirichlet(np.ones(30), size=7)
    vocab = [f"w{i}" for i in range(30)]
    fig = topic_words_figure(components, np.full(7, 0.1), vocab, n_words=5)
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 7 and len(fig.axes) == 10  # 2 rows x 5 columns, 3 hidden
    for i, ax in enumerate(panels):
        ranked = sorted(range(30), key=lambda j: -components[i, j])[:5]
        np.testing.assert_allclose([bar.get_width() for bar in ax.patches],
                                   components[i, ranked])
        assert [t.get_text() for t in ax.get_yticklabels()] == [vocab[j] for j in ranked]
        assert ax.get_title() == f"topic {i}, alpha 0.100"
    plt.close(fig)
    path = plot_topic_words(components, np.full(7, 0.1), vocab, tmp_path / "t.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
