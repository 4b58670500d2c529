"""The benchmark's capped sklearn VB is sklearn's own fit, one pass at a time."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from sklearn.decomposition import LatentDirichletAllocation

from raysign.topics.synthetic import make_lda_corpus

_SPEC = importlib.util.spec_from_file_location(
    "bench_topics", Path(__file__).resolve().parents[1] / "scripts" / "bench_topics.py")
bench_topics = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench_topics)


def _corpus():
    k = 4
    X, _, _ = make_lda_corpus(300, 60, k, np.full(k, 1.0 / k), 30, seed=3)
    return X, k


@pytest.mark.parametrize("method", ["batch", "online"])
def test_pass_by_pass_vb_equals_sklearn_fit_after_every_pass(method):
    X, k = _corpus()
    steps = list(bench_topics.sklearn_iterations(X, k, seed=5, method=method, max_iter=4))
    assert [i for i, _, _, _ in steps] == [1, 2, 3, 4]
    for i, _, _, topics in steps:
        lda = LatentDirichletAllocation(k, doc_topic_prior=1.0 / k, learning_method=method,
                                        random_state=5, n_jobs=1, max_iter=i).fit(X)
        np.testing.assert_allclose(topics, lda.components_ / lda.components_.sum(1, keepdims=True),
                                   rtol=1e-10, atol=1e-14)


def test_capped_batch_stops_before_an_iteration_that_would_pass_the_cap():
    X, k = _corpus()
    steps = list(bench_topics.sklearn_iterations(X, k, 5, "batch", max_iter=50, cap_s=0.0))
    assert len(steps) == 1
    steps = list(bench_topics.sklearn_iterations(X, k, 5, "batch", max_iter=50, cap_s=1e9))
    assert len(steps) == 50
    assert np.all(np.diff([wall for _, wall, _, _ in steps]) > 0)
    assert np.all(np.diff([cpu for _, _, cpu, _ in steps]) >= 0)
