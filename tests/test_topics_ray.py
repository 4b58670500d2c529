"""Chunked moment accumulation (Ray tasks) equals the single-process whitened M3."""
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
