"""Moments of LDA (Anandkumar et al. JMLR 2014, Sec. 3, Theorem 3.5), from sparse counts.

M2 = E[x1 x2^T] - a0/(a0+1) M1 M1^T;
M3 = E[x1 x2 x3] - a0/(a0+2) (E[x1 x2 M1] + perms) + 2 a0^2/((a0+1)(a0+2)) M1^3.
Per-document unbiased pair/triple estimators from counts c with length n:
pairs (c c^T - diag c)/(n(n-1)); triples (c^3 - sum_i c_i (e_i e_i c + perms) + 2 sum_i c_i e_i^3)
/(n(n-1)(n-2)). The whitened M3(W, W, W) is formed from P = X W, never V^3.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator, eigsh


def _lengths(X: sp.csr_matrix) -> np.ndarray:
    n = np.asarray(X.sum(1)).ravel().astype(float)
    if n.min() < 3:
        raise ValueError(f"documents need >= 3 words, found length {n.min()}")
    return n


def first_moment(X: sp.csr_matrix) -> np.ndarray:
    """M1 [V] = mean over documents of c / n."""
    n = _lengths(X)
    return np.asarray(X.T @ (1.0 / n)).ravel() / X.shape[0]


def second_moment_operator(X: sp.csr_matrix, alpha0: float) -> LinearOperator:
    """M2 as a symmetric LinearOperator [V, V] (matrix-vector products only)."""
    X = sp.csr_matrix(X, dtype=float)
    n = _lengths(X)
    D, V = X.shape
    s2 = 1.0 / (n * (n - 1)) / D
    diag = np.asarray(X.T @ s2).ravel()
    m1 = first_moment(X)
    a = alpha0 / (alpha0 + 1.0)

    def mv(v):
        v = np.asarray(v, dtype=float)
        vv = v.reshape(V, -1)
        out = X.T @ (s2[:, None] * (X @ vv)) - diag[:, None] * vv - a * np.outer(m1, m1 @ vv)
        return out.reshape(v.shape) if v.ndim == 1 else out

    return LinearOperator((V, V), matvec=mv, matmat=mv, rmatvec=mv, dtype=float)


def second_moment_dense(X: sp.csr_matrix, alpha0: float) -> np.ndarray:
    """M2 [V, V] dense (small V only, for checks)."""
    return second_moment_operator(X, alpha0) @ np.eye(X.shape[1])


def whitening(X: sp.csr_matrix, alpha0: float, k: int, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W [V, k] with W^T M2 W = I from top-k eigenpairs of M2. Returns (W, evals, evecs)."""
    op = second_moment_operator(X, alpha0)
    v0 = np.random.default_rng(seed).standard_normal(X.shape[1])
    evals, evecs = eigsh(op, k=k, which="LA", v0=v0)
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    if evals.min() <= 0:
        raise ValueError(f"M2 has non-positive top-{k} eigenvalue {evals.min():.3g}; lower k")
    return evecs / np.sqrt(evals), evals, evecs


def whitened_third_moment(X: sp.csr_matrix, W: np.ndarray, alpha0: float,
                          chunk: int = 4096) -> np.ndarray:
    """T = M3(W, W, W) [k, k, k], cost O(nnz k + D k^3 + V k^3)."""
    X = sp.csr_matrix(X, dtype=float)
    n = _lengths(X)
    D = X.shape[0]
    k = W.shape[1]
    s3 = 1.0 / (n * (n - 1) * (n - 2)) / D
    s2 = 1.0 / (n * (n - 1)) / D
    P = np.asarray(X @ W)  # [D, k]
    m = W.T @ first_moment(X)
    E3 = np.zeros((k, k, k))
    for i in range(0, D, chunk):
        Pc, sc = P[i:i + chunk], s3[i:i + chunk]
        E3 += np.einsum("d,da,db,dc->abc", sc, Pc, Pc, Pc, optimize=True)
    Q = np.asarray(X.T @ (s3[:, None] * P))  # [V, k] = sum_d s_d c_di p_d
    A = np.einsum("ia,ib,ic->abc", W, W, Q, optimize=True)
    E3 -= A + A.transpose(0, 2, 1) + A.transpose(2, 1, 0)
    r = np.asarray(X.T @ s3).ravel()
    E3 += 2 * np.einsum("i,ia,ib,ic->abc", r, W, W, W, optimize=True)
    E2 = P.T @ (s2[:, None] * P) - W.T @ (np.asarray(X.T @ s2).ravel()[:, None] * W)
    B = np.einsum("ab,c->abc", E2, m)
    a3 = alpha0 / (alpha0 + 2.0)
    b3 = 2 * alpha0 ** 2 / ((alpha0 + 1.0) * (alpha0 + 2.0))
    return E3 - a3 * (B + B.transpose(0, 2, 1) + B.transpose(2, 1, 0)) \
        + b3 * np.einsum("a,b,c->abc", m, m, m)


def third_moment_sums(X: sp.csr_matrix, W: np.ndarray) -> dict[str, np.ndarray | int]:
    """Additive per-chunk sums (D, e1 [V], e2w [k, k], e3w [k, k, k]) for chunked accumulation."""
    X = sp.csr_matrix(X, dtype=float)
    n = _lengths(X)
    s1, s2, s3 = 1.0 / n, 1.0 / (n * (n - 1)), 1.0 / (n * (n - 1) * (n - 2))
    P = np.asarray(X @ W)
    e3 = np.einsum("d,da,db,dc->abc", s3, P, P, P, optimize=True)
    Q = np.asarray(X.T @ (s3[:, None] * P))
    A = np.einsum("ia,ib,ic->abc", W, W, Q, optimize=True)
    e3 -= A + A.transpose(0, 2, 1) + A.transpose(2, 1, 0)
    e3 += 2 * np.einsum("i,ia,ib,ic->abc", np.asarray(X.T @ s3).ravel(), W, W, W, optimize=True)
    e2 = P.T @ (s2[:, None] * P) - W.T @ (np.asarray(X.T @ s2).ravel()[:, None] * W)
    return {"D": X.shape[0], "e1": np.asarray(X.T @ s1).ravel(), "e2w": e2, "e3w": e3}


def combine_third_moment(parts: list[dict], W: np.ndarray, alpha0: float) -> np.ndarray:
    """Sum chunk statistics and apply the alpha0 corrections: M3(W, W, W) [k, k, k]."""
    D = sum(p["D"] for p in parts)
    m = W.T @ (sum(p["e1"] for p in parts) / D)
    E2 = sum(p["e2w"] for p in parts) / D
    E3 = sum(p["e3w"] for p in parts) / D
    B = np.einsum("ab,c->abc", E2, m)
    a3 = alpha0 / (alpha0 + 2.0)
    b3 = 2 * alpha0 ** 2 / ((alpha0 + 1.0) * (alpha0 + 2.0))
    return E3 - a3 * (B + B.transpose(0, 2, 1) + B.transpose(2, 1, 0)) \
        + b3 * np.einsum("a,b,c->abc", m, m, m)
