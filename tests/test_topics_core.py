"""Spectral LDA: moments vs brute-force dense tensors, synthetic recovery, backend agreement."""
import itertools

import numpy as np
import pytest
import scipy.sparse as sp

from raysign.topics.corpus import split_heldout
from raysign.topics.estimator import TensorLDA
from raysign.topics.metrics import (
    alpha_error,
    completion_perplexity,
    match_topics,
    perplexity,
    topic_error,
)
from raysign.topics.moments import (
    first_moment,
    second_moment_dense,
    whitened_third_moment,
    whitening,
)
from raysign.topics.refine import e_step
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


@pytest.mark.parametrize("method", ["als", "tl-power"])
def test_numpy_and_torch_backends_agree(method):
    import tensorly as tl

    X, B, _ = make_lda_corpus(3000, 80, 4, 0.25, doc_len=40, seed=5)
    before = tl.get_backend()
    kw = dict(alpha0=1.0, method=method, n_restarts=2, n_iter=30)
    a = TensorLDA(4, backend="numpy", **kw).fit(X)
    b = TensorLDA(4, backend="pytorch", **kw).fit(X)
    assert tl.get_backend() == before
    p = match_topics(b.components_, a.components_)  # parafac may order components differently
    np.testing.assert_allclose(b.components_[p], a.components_, atol=1e-6)
    np.testing.assert_allclose(b.alpha_[p], a.alpha_, rtol=1e-6)
    assert topic_error(a.components_, B) < 0.15  # and both are the real topics


@pytest.mark.parametrize("method", ["power", "tl-power", "als"])
def test_seeded_fit_is_reproducible_whatever_the_global_numpy_state(method):
    X, _, _ = make_lda_corpus(1000, 50, 3, 0.3, doc_len=30, seed=4)
    kw = dict(method=method, seed=7, n_restarts=2, n_iter=30)
    np.random.seed(123)
    a = TensorLDA(3, **kw).fit(X).components_
    np.random.seed(999)
    np.random.random_sample(17)
    state = np.random.get_state()
    b = TensorLDA(3, **kw).fit(X).components_
    np.testing.assert_array_equal(a, b)
    after = np.random.get_state()  # the caller's global stream is left where it was
    np.testing.assert_array_equal(after[1], state[1])
    assert after[2] == state[2]


def _e_step_reference(X, B, alpha, n_iter):
    """Per-document, per-word loops of Blei et al. (2003) Fig. 6 with counts as weights."""
    from scipy.special import digamma

    X = X.toarray()
    out = []
    for c in X:
        w = np.nonzero(c)[0]
        g = alpha + c.sum() / len(alpha)
        for _ in range(n_iter):
            e = np.exp(digamma(g) - digamma(g.sum()))
            phi = e[:, None] * B[:, w]
            phi /= phi.sum(0, keepdims=True)
            g = alpha + phi @ c[w]
        out.append(g)
    return np.array(out)


def test_e_step_matches_per_document_reference():
    X, B, a = make_lda_corpus(40, 30, 3, 0.4, doc_len=25, seed=6)
    gamma, sstats = e_step(X, B, a, n_iter=15, tol=0.0, chunk=7, sufficient_stats=True)
    np.testing.assert_allclose(gamma, _e_step_reference(X, B, a, 15), rtol=1e-10)
    # sstats_kw = sum_d c_dw phi_dkw at the final gamma: total mass equals the token count
    np.testing.assert_allclose(sstats.sum(), X.sum(), rtol=1e-10)


def test_refinement_never_increases_heldout_perplexity_and_lowers_topic_error():
    X, B, _ = make_lda_corpus(3000, 200, 5, 0.2, doc_len=40, seed=0)
    train, held = split_heldout(X, 0.2, 0)
    errs, perps = [], []
    for steps in (0, 1, 2, 4):
        est = TensorLDA(5, alpha0=1.0, refine_steps=steps).fit(train)
        errs.append(topic_error(est.components_, B))
        perps.append(perplexity(est.components_, est.transform(held), held))
        if steps:
            assert topic_error(est.spectral_components_, B) == pytest.approx(errs[0])
    assert all(b <= a for a, b in zip(perps, perps[1:], strict=False)), perps
    assert errs[-1] < 0.9 * errs[0], errs


def test_completion_perplexity_single_topic_closed_form_and_ranks_true_topics_first():
    X, B, a = make_lda_corpus(400, 60, 4, 0.3, doc_len=40, seed=8)
    X = sp.csr_matrix(X)
    # k = 1: theta is 1 whatever the first half says; score the documented binomial split
    unigram = np.asarray(X.sum(0)).ravel() + 1.0
    unigram /= unigram.sum()
    second = X.data - np.random.default_rng(3).binomial(X.data, 0.5)
    expected = np.exp(-(second * np.log(unigram[X.indices])).sum() / second.sum())
    got = completion_perplexity(unigram[None], np.ones(1), X, seed=3, smooth=0.0)
    assert got == pytest.approx(expected, rel=1e-10)
    true = completion_perplexity(B, a, X)
    wrong = completion_perplexity(B[:, np.random.default_rng(0).permutation(60)], a, X)
    assert true < completion_perplexity(unigram[None], np.ones(1), X) < wrong
