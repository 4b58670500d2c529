"""Chunked moment accumulation (Ray tasks) equals the single-process whitened M3."""
import json

import numpy as np
import pytest

from raysign.actors.topics_job import ray_third_moment
from raysign.topics.estimator import TensorLDA
from raysign.topics.metrics import match_topics, topic_error
from raysign.topics.moments import whitened_third_moment, whitening
from raysign.topics.synthetic import make_lda_corpus


def test_ray_chunks_equal_single_process(ray_session):
    X, _, _ = make_lda_corpus(900, 40, 3, 0.3, doc_len=20, seed=1)
    W, _, _ = whitening(X, 0.9, 3)
    ref = whitened_third_moment(X, W, 0.9)
    np.testing.assert_allclose(ray_third_moment(X, W, 0.9, 3), ref, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("method", ["power", "tl-power", "als"])
def test_ray_job_path_gives_the_topics_of_the_single_process_fit(ray_session, method):
    """The job's steps (driver whitening, Ray-summed M3, TensorLDA.decompose) reproduce
    TensorLDA.fit on the same documents for every decomposition method."""
    k, a0 = 3, 0.9
    X, B, _ = make_lda_corpus(900, 40, k, 0.3, doc_len=20, seed=1)
    kw = dict(method=method, seed=4, n_restarts=3, n_iter=50)
    ref = TensorLDA(k, a0, **kw).fit(X)
    est = TensorLDA(k, a0, **kw)
    W, _, _ = whitening(X, a0, k, seed=4)
    T = ray_third_moment(X, W, a0, 3)
    est.set_from_tensor(W, T, *est.decompose(T))
    p = match_topics(est.components_, ref.components_)  # ALS restarts may tie up to ordering
    np.testing.assert_allclose(est.components_[p], ref.components_, atol=1e-6)
    np.testing.assert_allclose(est.alpha_[p], ref.alpha_, rtol=1e-6)
    assert topic_error(est.components_, B) < 0.2  # and both are the real topics


def test_job_with_ray_chunks_writes_the_record_of_the_one_chunk_run(ray_session, tmp_path,
                                                                     data_dir):
    """``raysign topics --chunks 3`` (Ray tasks) and ``--chunks 1`` (in process) fit the same
    topics on NYT: the same table and scores."""
    from raysign import cli
    from raysign.results import read_jsonl

    runs = {}
    for chunks in (1, 3):
        out = tmp_path / str(chunks)
        assert cli.main(["topics", "--k", "4", "--chunks", str(chunks), "--out", str(out),
                         "--data-dir", str(data_dir)]) == 0
        runs[chunks] = next((out / "topics").iterdir())
    one, ray = (read_jsonl(runs[c] / "metrics.jsonl")[0] for c in (1, 3))
    for name in ("heldout_perplexity", "umass", "npmi"):
        np.testing.assert_allclose(ray[name], one[name], rtol=1e-8)
    tables = [json.loads((runs[c] / "topics.json").read_text())["topics"] for c in (1, 3)]
    assert [t["words"] for t in tables[1]] == [t["words"] for t in tables[0]]
    np.testing.assert_allclose([t["alpha"] for t in tables[1]], [t["alpha"] for t in tables[0]],
                               rtol=1e-8)
