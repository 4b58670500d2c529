"""TensorLDA: spectral LDA estimator with scikit-learn's shape (Anandkumar et al. 2014, Thm 3.5).

T = sum_i lam_i v_i^3, lam_i = 2/(a0+2) sqrt(a0(a0+1)/alpha_i); mu_i = (a0+2)/2 lam_i (W^T)^+ v_i,
alpha_i = 4 a0 (a0+1) / ((a0+2)^2 lam_i^2).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from raysign.topics.decompose import cp_als, power_method
from raysign.topics.moments import whitened_third_moment, whitening


def simplex_rows(B: np.ndarray) -> np.ndarray:
    """Clip negatives and renormalise each row to sum 1."""
    B = np.clip(B, 0.0, None)
    s = B.sum(1, keepdims=True)
    s[s == 0] = 1.0
    return B / s


class TensorLDA:
    """Spectral LDA. components_ [k, V] rows on simplex, alpha_ [k]."""

    def __init__(self, n_topics: int, alpha0: float = 1.0, method: str = "power",
                 n_restarts: int = 10, n_iter: int = 100, seed: int = 0,
                 backend: str = "numpy"):
        if n_topics < 1:
            raise ValueError(f"n_topics={n_topics} must be >= 1")
        if alpha0 <= 0:
            raise ValueError(f"alpha0={alpha0} must be > 0")
        if method not in ("power", "als"):
            raise ValueError(f"method={method!r} must be 'power' or 'als'")
        self.n_topics, self.alpha0, self.method = n_topics, alpha0, method
        self.n_restarts, self.n_iter, self.seed, self.backend = n_restarts, n_iter, seed, backend

    def fit(self, X: sp.spmatrix) -> TensorLDA:
        X = sp.csr_matrix(X)
        n = np.asarray(X.sum(1)).ravel()
        X = X[n >= 3]
        k, a0 = self.n_topics, self.alpha0
        W, _, _ = whitening(X, a0, k, seed=self.seed)
        T = whitened_third_moment(X, W, a0)
        if self.method == "power":
            lam, V = power_method(T, k, np.random.default_rng(self.seed), self.n_restarts,
                                  self.n_iter)
        else:
            lam, V = cp_als(T, k, random_state=self.seed, n_restarts=self.n_restarts,
                            backend=self.backend)
        return self.set_from_tensor(W, T, lam, V)

    def set_from_tensor(self, W: np.ndarray, T: np.ndarray, lam: np.ndarray,
                        V: np.ndarray) -> TensorLDA:
        """Recover topics/alpha from the decomposition T ~ sum lam_i v_i^3 (V columns)."""
        a0 = self.alpha0
        mu = np.linalg.pinv(W.T) @ V * ((a0 + 2) / 2 * lam)  # [V, k]
        self.alpha_ = 4 * a0 * (a0 + 1) / ((a0 + 2) ** 2 * lam ** 2)
        self.components_ = simplex_rows(mu.T)
        self.whitener_, self.tensor_ = W, T
        return self

    def transform(self, X: sp.spmatrix, n_iter: int = 50) -> np.ndarray:
        """Document-topic proportions [D, k] by variational fixed-point iterations."""
        from scipy.special import digamma

        X = sp.csr_matrix(X, dtype=float)
        B = self.components_ + 1e-12
        D = X.shape[0]
        gamma = np.tile(self.alpha_, (D, 1)) + np.asarray(X.sum(1)) / self.n_topics
        Xc = X.tocoo()
        for _ in range(n_iter):
            e = np.exp(digamma(gamma) - digamma(gamma.sum(1, keepdims=True)))  # [D, k]
            phi_den = np.einsum("nk,kn->n", e[Xc.row], B[:, Xc.col])
            w = sp.csr_matrix((Xc.data / phi_den, (Xc.row, Xc.col)), shape=X.shape)
            gamma = self.alpha_ + e * np.asarray(w @ B.T)
        return gamma / gamma.sum(1, keepdims=True)
