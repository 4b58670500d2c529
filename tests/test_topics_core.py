"""Spectral LDA: moments vs brute-force dense tensors, synthetic recovery, backend agreement."""
import itertools

import numpy as np
import pytest
import scipy.sparse as sp

from raysign.topics.estimator import TensorLDA
from raysign.topics.metrics import alpha_error, perplexity, topic_error
from raysign.topics.moments import (
    first_moment,
    second_moment_dense,
    whitened_third_moment,
    whitening,
)
from raysign.topics.synthetic import make_lda_corpus


def _brute(X, a0):
    """Dense M1, M2, M3 by enumerating ordered distinct word-token pairs/triples."""
    X = X.toarray()
    D, V = X.shape
    E1, E2, E3 = np.zeros(V), np.zeros((V, V)), np.zeros((V, V, V))
    for c in X:
        toks = np.repeat(np.arange(V), c)
        n = len(toks)
        E1 += np.bincount(toks, minlength=V) / n
        for i, j in itertools.permutations(range(n), 2):
            E2[toks[i], toks[j]] += 1.0 / (n * (n - 1))
        for i, j, k in itertools.permutations(range(n), 3):
            E3[toks[i], toks[j], toks[k]] += 1.0 / (n * (n - 1) * (n - 2))
    E1, E2, E3 = E1 / D, E2 / D, E3 / D
    M2 = E2 - a0 / (a0 + 1) * np.outer(E1, E1)
    B = np.einsum("ab,c->abc", E2, E1)
    M3 = (E3 - a0 / (a0 + 2) * (B + B.transpose(0, 2, 1) + B.transpose(2, 1, 0))
          + 2 * a0**2 / ((a0 + 1) * (a0 + 2)) * np.einsum("a,b,c->abc", E1, E1, E1))
    return E1, M2, M3


def test_moments_match_brute_force():
    rng = np.random.default_rng(1)
    X = sp.csr_matrix(rng.multinomial(6, np.full(7, 1 / 7), size=12) * 1)
    a0 = 0.7
    E1, M2, M3 = _brute(X, a0)
    np.testing.assert_allclose(first_moment(X), E1, atol=1e-12)
    np.testing.assert_allclose(second_moment_dense(X, a0), M2, atol=1e-12)
    W, _, _ = whitening(X, a0, 3)
    np.testing.assert_allclose(W.T @ M2 @ W, np.eye(3), atol=1e-8)
    Tref = np.einsum("ijk,ia,jb,kc->abc", M3, W, W, W)
    np.testing.assert_allclose(whitened_third_moment(X, W, a0, chunk=5), Tref, atol=1e-9)


def test_whitened_tensor_matches_population_form():
    """Whitened M3 ~ sum_i lam_i v_i^3 with v_i = sqrt(a_i/(a0(a0+1))) W^T mu_i (Thm 3.5)."""
    X, B, a = make_lda_corpus(20000, 30, 3, 0.3, doc_len=30, seed=2)
    a0 = a.sum()
    W, _, _ = whitening(X, a0, 3)
    V = np.sqrt(a / (a0 * (a0 + 1))) * (W.T @ B.T)  # [k, k] columns v_i
    np.testing.assert_allclose(V.T @ V, np.eye(3), atol=0.05)
    lam = 2 / (a0 + 2) * np.sqrt(a0 * (a0 + 1) / a)
    Tpop = np.einsum("i,ai,bi,ci->abc", lam, V, V, V)
    T = whitened_third_moment(X, W, a0)
    assert np.linalg.norm(T - Tpop) / np.linalg.norm(Tpop) < 0.1


@pytest.mark.parametrize("method", ["power", "als"])
def test_recovers_synthetic_topics(method):
    X, B, a = make_lda_corpus(4000, 100, 5, 0.2, doc_len=50, seed=0)
    est = TensorLDA(5, alpha0=1.0, method=method, n_restarts=3).fit(X)
    np.testing.assert_allclose(est.components_.sum(1), 1.0)
    assert est.components_.min() >= 0
    assert topic_error(est.components_, B) < 0.1  # mean matched L1 over rows (max 2)
    assert alpha_error(est.alpha_, est.components_, a, B) < 0.1
    theta = est.transform(X[:200])
    np.testing.assert_allclose(theta.sum(1), 1.0)
    uniform = np.full_like(est.components_, 1.0 / X.shape[1])
    assert perplexity(est.components_, theta, X[:200]) < perplexity(uniform, theta, X[:200])


def test_topic_error_falls_with_more_documents():
    errs = []
    for D in (500, 8000):
        X, B, _ = make_lda_corpus(D, 100, 5, 0.2, doc_len=50, seed=3)
        errs.append(topic_error(TensorLDA(5, alpha0=1.0).fit(X).components_, B))
    assert errs[1] < errs[0]


def test_numpy_and_torch_backends_agree():
    import tensorly as tl

    X, B, _ = make_lda_corpus(3000, 80, 4, 0.25, doc_len=40, seed=5)
    before = tl.get_backend()
    a = TensorLDA(4, alpha0=1.0, method="als", n_restarts=2, backend="numpy").fit(X)
    b = TensorLDA(4, alpha0=1.0, method="als", n_restarts=2, backend="pytorch").fit(X)
    assert tl.get_backend() == before
    assert topic_error(b.components_, a.components_) < 1e-4


def test_seeded_power_method_is_reproducible():
    X, _, _ = make_lda_corpus(1000, 50, 3, 0.3, doc_len=30, seed=4)
    a = TensorLDA(3, seed=7).fit(X).components_
    b = TensorLDA(3, seed=7).fit(X).components_
    np.testing.assert_array_equal(a, b)
