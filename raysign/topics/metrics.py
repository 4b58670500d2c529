"""Topic metrics: Hungarian-matched L1 topic error, alpha error, UMass/NPMI coherence
(Mimno et al. 2011; Bouma 2009), perplexity for given theta, and held-out perplexity by
document completion (Wallach et al. 2009, Sec. 5.1) with one variational evaluator for any
method's (topics, alpha)."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment


def match_topics(est: np.ndarray, true: np.ndarray) -> np.ndarray:
    """perm with est[perm[i]] matched to true[i] minimising L1."""
    cost = np.abs(true[:, None, :] - est[None, :, :]).sum(-1)
    r, c = linear_sum_assignment(cost)
    return c[np.argsort(r)]


def topic_error(est: np.ndarray, true: np.ndarray) -> float:
    """Mean L1 distance between matched topic rows [k, V]."""
    p = match_topics(est, true)
    return float(np.abs(est[p] - true).sum(1).mean())


def alpha_error(est_alpha, est_topics, true_alpha, true_topics) -> float:
    """Relative L2 error of matched alpha."""
    p = match_topics(est_topics, true_topics)
    return float(np.linalg.norm(est_alpha[p] - true_alpha) / np.linalg.norm(true_alpha))


def coherence(topics: np.ndarray, X: sp.spmatrix, top_n: int = 10) -> tuple[float, float]:
    """Mean (UMass, NPMI) over topics from document co-occurrence of top_n words."""
    Xb = (sp.csc_matrix(X) > 0).astype(float)
    D = Xb.shape[0]
    um, npmi = [], []
    for t in topics:
        top = np.argsort(t)[::-1][:top_n]
        S = Xb[:, top]
        co = np.asarray((S.T @ S).todense())
        df = np.diag(co)
        for i in range(1, len(top)):
            for j in range(i):
                um.append(np.log((co[i, j] + 1) / max(df[j], 1)))
                pij = co[i, j] / D
                if pij == 0:
                    npmi.append(-1.0)
                    continue
                pmi = np.log(pij / (df[i] / D * df[j] / D))
                npmi.append(pmi / -np.log(pij))
    return float(np.mean(um)), float(np.mean(npmi))


def perplexity(topics: np.ndarray, theta: np.ndarray, X: sp.spmatrix) -> float:
    """exp(-sum log p(w) / N) with p(w|d) = theta_d . topics[:, w]."""
    Xc = sp.coo_matrix(X)
    p = np.einsum("nk,kn->n", theta[Xc.row], topics[:, Xc.col])
    return float(np.exp(-(Xc.data * np.log(np.maximum(p, 1e-300))).sum() / Xc.data.sum()))


def completion_perplexity(topics: np.ndarray, alpha: np.ndarray, X: sp.spmatrix,
                          seed: int = 0, n_iter: int = 100, smooth: float = 1e-4) -> float:
    """Held-out perplexity by document completion.

    Each held-out document's tokens are split at random in two halves (binomial thinning);
    theta is inferred from the first half (variational E-step with the method's topics [k, V]
    and alpha [k]), and the second half is scored. The same split for every method, and the
    same smoothing: every topic is mixed with the uniform distribution at weight `smooth`, so
    that a word a method gives probability 0 costs a finite amount.
    """
    from raysign.topics.refine import e_step

    X = sp.csr_matrix(X)
    rng = np.random.default_rng(seed)
    first = X.copy()
    first.data = rng.binomial(X.data.astype(np.int64), 0.5).astype(float)
    second = X.astype(float) - first
    first.eliminate_zeros()
    second.eliminate_zeros()
    topics = np.asarray(topics, dtype=float)
    topics = (1 - smooth) * topics / topics.sum(1, keepdims=True) + smooth / topics.shape[1]
    gamma, _ = e_step(first, topics, np.asarray(alpha, dtype=float), n_iter=n_iter)
    return perplexity(topics, gamma / gamma.sum(1, keepdims=True), second)


def heldout_scores(topics: np.ndarray, alpha: np.ndarray, train: sp.spmatrix,
                   heldout: sp.spmatrix) -> dict[str, float]:
    """The scores of one fit used by the job, the sweep and the benchmark: UMass and NPMI
    coherence of the top 10 words on the training documents, and held-out perplexity by
    document completion."""
    umass, npmi = coherence(topics, train)
    return {"umass": umass, "npmi": npmi,
            "heldout_perplexity": completion_perplexity(topics, alpha, heldout)}
