"""TensorLDA: spectral LDA estimator with scikit-learn's shape (Anandkumar et al. 2014, Thm 3.5).

T = sum_i lam_i v_i^3, lam_i = 2/(a0+2) sqrt(a0(a0+1)/alpha_i); mu_i = (a0+2)/2 lam_i (W^T)^+ v_i,
alpha_i = 4 a0 (a0+1) / ((a0+2)^2 lam_i^2).
With refine_steps > 0 the spectral topics start a few variational EM steps (`refine.py`).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from raysign.topics.decompose import cp_als, power_method, tl_power_method
from raysign.topics.moments import whitened_third_moment, whitening
from raysign.topics.refine import e_step, variational_em

METHODS = ("power", "tl-power", "als")


def simplex_rows(B: np.ndarray) -> np.ndarray:
    """Clip negatives and renormalise each row to sum 1."""
    B = np.clip(B, 0.0, None)
    s = B.sum(1, keepdims=True)
    s[s == 0] = 1.0
    return B / s


class TensorLDA:
    """Spectral LDA. components_ [k, V] rows on simplex, alpha_ [k].

    method: "power" (numpy robust power method, numpy Generator), "tl-power" (TensorLy's
    symmetric power iteration) or "als" (TensorLy parafac with restarts); the TensorLy paths run
    on `backend` ("numpy" or "pytorch"). refine_steps variational EM steps (refine_inner
    E-step iterations each) follow the spectral fit; spectral_components_ keeps the topics
    before refinement.
    """

    def __init__(self, n_topics: int, alpha0: float = 1.0, method: str = "power",
                 n_restarts: int = 10, n_iter: int = 100, seed: int = 0,
                 backend: str = "numpy", refine_steps: int = 0, refine_inner: int = 10):
        if n_topics < 1:
            raise ValueError(f"n_topics={n_topics} must be >= 1")
        if alpha0 <= 0:
            raise ValueError(f"alpha0={alpha0} must be > 0")
        if method not in METHODS:
            raise ValueError(f"method={method!r} must be one of {METHODS}")
        if refine_steps < 0 or refine_inner < 1:
            raise ValueError(f"refine_steps={refine_steps} must be >= 0 and "
                             f"refine_inner={refine_inner} >= 1")
        self.n_topics, self.alpha0, self.method = n_topics, alpha0, method
        self.n_restarts, self.n_iter, self.seed, self.backend = n_restarts, n_iter, seed, backend
        self.refine_steps, self.refine_inner = refine_steps, refine_inner

    def fit(self, X: sp.spmatrix) -> TensorLDA:
        X = sp.csr_matrix(X)
        n = np.asarray(X.sum(1)).ravel()
        X = X[n >= 3]
        k, a0 = self.n_topics, self.alpha0
        if X.shape[0] < k or X.shape[1] <= k:
            raise ValueError(f"X has {X.shape[0]} documents of 3 or more words and "
                             f"{X.shape[1]} words; n_topics={k} needs at least {k} such "
                             f"documents and more than {k} words")
        W, _, _ = whitening(X, a0, k, seed=self.seed)
        T = whitened_third_moment(X, W, a0)
        self.set_from_tensor(W, T, *self.decompose(T))
        return self.refine(X, self.refine_steps)

    def decompose(self, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """T [k, k, k] ~ sum_i lam_i v_i^3 by ``method``: (lam [k], V [k, k] columns v_i)."""
        k = self.n_topics
        if self.method == "power":
            return power_method(T, k, np.random.default_rng(self.seed), self.n_restarts,
                                self.n_iter)
        if self.method == "tl-power":
            return tl_power_method(T, k, self.seed, self.n_restarts, self.n_iter,
                                   backend=self.backend)
        return cp_als(T, k, random_state=self.seed, n_restarts=self.n_restarts,
                      backend=self.backend)

    def refine(self, X: sp.spmatrix, n_steps: int) -> TensorLDA:
        """n_steps variational EM steps on X from the current topics (alpha_ kept)."""
        if n_steps > 0:
            self.components_, _ = variational_em(sp.csr_matrix(X), self.components_,
                                                 self.alpha_, n_steps, self.refine_inner)
        return self

    def set_from_tensor(self, W: np.ndarray, T: np.ndarray, lam: np.ndarray,
                        V: np.ndarray) -> TensorLDA:
        """Recover topics/alpha from the decomposition T ~ sum lam_i v_i^3 (V columns)."""
        a0 = self.alpha0
        mu = np.linalg.pinv(W.T) @ V * ((a0 + 2) / 2 * lam)  # [V, k]
        self.alpha_ = 4 * a0 * (a0 + 1) / ((a0 + 2) ** 2 * lam ** 2)
        self.components_ = simplex_rows(mu.T)
        self.spectral_components_ = self.components_
        self.whitener_, self.tensor_ = W, T
        return self

    def transform(self, X: sp.spmatrix, n_iter: int = 50) -> np.ndarray:
        """Document-topic proportions [D, k]: normalised variational gamma (refine.e_step)."""
        gamma, _ = e_step(sp.csr_matrix(X), self.components_, self.alpha_, n_iter=n_iter)
        return gamma / gamma.sum(1, keepdims=True)
