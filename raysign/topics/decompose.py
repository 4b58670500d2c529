"""Orthogonal decomposition of the whitened k x k x k tensor (Anandkumar et al. 2014, Alg. 1:
robust tensor power method with deflation), TensorLy's own symmetric power iteration, and a
CP/ALS path through TensorLy's parafac.

TensorLy's power iteration draws its starting vectors from numpy's *global* generator
(``np.random.random_sample``); `tl_power_method` seeds that generator for the call and puts the
caller's state back afterwards, so a fit depends on its seed only.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


def power_method(T: np.ndarray, k: int, rng: np.random.Generator, n_restarts: int = 10,
                 n_iter: int = 100, tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Returns (lambdas [k], vectors [k, k] as columns) of T ~ sum l_i v_i^3."""
    T = np.array(T, dtype=float)
    lams, vecs = [], []
    for _ in range(k):
        best, best_val = None, -np.inf
        for _ in range(n_restarts):
            v = rng.standard_normal(T.shape[0])
            v /= np.linalg.norm(v)
            for _ in range(n_iter):
                w = np.einsum("abc,b,c->a", T, v, v)
                w /= np.linalg.norm(w)
                done = np.linalg.norm(w - v) < tol
                v = w
                if done:
                    break
            val = np.einsum("abc,a,b,c->", T, v, v, v)
            if val > best_val:
                best, best_val = v, val
        v = best
        for _ in range(n_iter):
            w = np.einsum("abc,b,c->a", T, v, v)
            v = w / np.linalg.norm(w)
        lam = float(np.einsum("abc,a,b,c->", T, v, v, v))
        lams.append(lam)
        vecs.append(v)
        T = T - lam * np.einsum("a,b,c->abc", v, v, v)
    return np.array(lams), np.stack(vecs, axis=1)


def cp_als(T, k: int, random_state: int = 0, n_restarts: int = 5, n_iter: int = 200,
           tol: float = 1e-10, backend: str = "numpy") -> tuple[np.ndarray, np.ndarray]:
    """Symmetric CP of T with tensorly.decomposition.parafac; best-fit restart kept."""
    import tensorly as tl
    from tensorly.decomposition import parafac

    old = tl.get_backend()
    tl.set_backend(backend)
    try:
        Tt = tl.tensor(np.asarray(T, dtype=np.float64))
        best, best_err = None, np.inf
        for r in range(n_restarts):
            cp = parafac(Tt, rank=k, n_iter_max=n_iter, tol=tol, init="random",
                         random_state=random_state + r, normalize_factors=True)
            err = float(tl.to_numpy(tl.norm(Tt - tl.cp_to_tensor(cp))))
            if err < best_err:
                best, best_err = cp, err
        V = tl.to_numpy(best.factors[0]).astype(float)
    finally:
        tl.set_backend(old)
    V = V / np.linalg.norm(V, axis=0, keepdims=True)
    T = np.asarray(T, dtype=float)
    lams = np.einsum("abc,ai,bi,ci->i", T, V, V, V)
    V = V * np.sign(lams)
    return np.abs(lams), V


@contextmanager
def seeded_global_numpy(seed: int) -> Iterator[None]:
    """Seed numpy's global generator inside the block; restore the caller's state after it."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


def tl_power_method(T, k: int, seed: int = 0, n_restarts: int = 10, n_iter: int = 100,
                    backend: str = "numpy") -> tuple[np.ndarray, np.ndarray]:
    """tensorly's symmetric_parafac_power_iteration on `backend`, reproducible for a seed.

    Returns (lambdas [k], vectors [k, k] as columns) as numpy arrays.
    """
    import tensorly as tl
    from tensorly.decomposition import symmetric_parafac_power_iteration

    old = tl.get_backend()
    tl.set_backend(backend)
    try:
        with seeded_global_numpy(seed):
            lam, V = symmetric_parafac_power_iteration(
                tl.tensor(np.asarray(T, dtype=np.float64)), rank=k, n_repeat=n_restarts,
                n_iteration=n_iter)
        lam, V = tl.to_numpy(lam).astype(float), tl.to_numpy(V).astype(float)
    finally:
        tl.set_backend(old)
    return lam, V
