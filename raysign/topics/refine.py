"""Variational EM for LDA started from the spectral solution (Blei, Ng, Jordan, JMLR 2003,
Sec. 5.3; the sparse E-step as in Hoffman, Blei, Bach, NIPS 2010, Alg. 1).

E-step per document d, with E_dk = exp(E[log theta_dk]) = exp(psi(gamma_dk) - psi(sum_j gamma_dj)):
    phi_norm_dw = sum_k E_dk B_kw                      (only on the non-zeros c_dw > 0)
    gamma_dk    = alpha_k + E_dk sum_w c_dw B_kw / phi_norm_dw
M-step (point estimate of the topics, Blei et al. eq. 9, plus a small pseudo-count eta):
    B_kw  proportional to  eta + B_kw sum_d E_dk c_dw / phi_norm_dw.
Every pass touches each non-zero of the CSR matrix k times: cost O(nnz k) per inner iteration.
Alpha stays at the spectral estimate (the moments identify it; updating it by Newton steps is
not needed for the topics).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.special import digamma


def _expected_theta(gamma: np.ndarray) -> np.ndarray:
    return np.exp(digamma(gamma) - digamma(gamma.sum(1, keepdims=True)))


def e_step(X: sp.csr_matrix, topics: np.ndarray, alpha: np.ndarray,
           gamma: np.ndarray | None = None, n_iter: int = 50, tol: float = 1e-3,
           chunk: int = 4096, sufficient_stats: bool = False
           ) -> tuple[np.ndarray, np.ndarray | None]:
    """Variational document-topic posteriors.

    X [D, V] counts (CSR), topics [k, V] rows on the simplex, alpha [k] > 0, gamma [D, k]
    warm start (default alpha + n_d / k). Iterates per chunk until the mean absolute change of
    gamma is below tol or n_iter. Returns (gamma [D, k], sstats [k, V] or None), where
    sstats_kw = B_kw sum_d E_dk c_dw / phi_norm_dw is the M-step numerator.
    """
    X = sp.csr_matrix(X, dtype=float)
    D = X.shape[0]
    k = topics.shape[0]
    BT = np.ascontiguousarray(topics.T) + 1e-100  # [V, k]; zero columns would divide by 0
    if gamma is None:
        gamma = np.tile(alpha, (D, 1)) + np.asarray(X.sum(1)) / k
    gamma = np.array(gamma, dtype=float)
    sstats = np.zeros_like(BT) if sufficient_stats else None
    for lo in range(0, D, chunk):
        Xc = X[lo:lo + chunk]
        rows = np.repeat(np.arange(Xc.shape[0]), np.diff(Xc.indptr))
        Bw = BT[Xc.indices]  # [nnz_c, k]
        g = gamma[lo:lo + chunk]
        for _ in range(n_iter):
            e = _expected_theta(g)
            ratio = Xc.data / np.einsum("nk,nk->n", e[rows], Bw)
            R = sp.csr_matrix((ratio, Xc.indices, Xc.indptr), shape=Xc.shape)
            g_new = alpha + e * np.asarray(R @ BT)
            change = np.abs(g_new - g).mean()
            g = g_new
            if change < tol:
                break
        gamma[lo:lo + chunk] = g
        if sstats is not None:
            e = _expected_theta(g)
            ratio = Xc.data / np.einsum("nk,nk->n", e[rows], Bw)
            R = sp.csr_matrix((ratio, Xc.indices, Xc.indptr), shape=Xc.shape)
            sstats += np.asarray(R.T @ e)  # [V, k]
    if sstats is not None:
        sstats = (sstats * BT).T
    return gamma, sstats


def variational_em(X: sp.csr_matrix, topics: np.ndarray, alpha: np.ndarray, n_steps: int,
                   n_inner: int = 10, eta: float = 1e-3
                   ) -> tuple[np.ndarray, np.ndarray]:
    """n_steps of variational EM from `topics` [k, V]; gamma warm-started between steps.

    Returns (topics [k, V] rows on the simplex, gamma [D, k] of the last E-step).
    """
    if n_steps < 0:
        raise ValueError(f"n_steps={n_steps} must be >= 0")
    B = np.asarray(topics, dtype=float)
    gamma = None
    for _ in range(n_steps):
        gamma, sstats = e_step(X, B, alpha, gamma, n_iter=n_inner, sufficient_stats=True)
        B = sstats + eta
        B /= B.sum(1, keepdims=True)
    return B, gamma
