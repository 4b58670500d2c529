"""Chunked moment accumulation (Ray tasks) equals the single-process whitened M3."""
import numpy as np

from actors.topics_job import ray_third_moment
from raysign.topics.moments import whitened_third_moment, whitening
from raysign.topics.synthetic import make_lda_corpus


def test_ray_chunks_equal_single_process(ray_session):
    X, _, _ = make_lda_corpus(900, 40, 3, 0.3, doc_len=20, seed=1)
    W, _, _ = whitening(X, 0.9, 3)
    ref = whitened_third_moment(X, W, 0.9)
    np.testing.assert_allclose(ray_third_moment(X, W, 0.9, 3), ref, rtol=1e-10, atol=1e-14)
