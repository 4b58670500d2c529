"""Label aggregation: majority vote, weighted majority vote, one-coin and full Dawid-Skene EM.

Dawid & Skene, "Maximum likelihood estimation of observer error-rates using the EM algorithm",
Applied Statistics 28(1), 1979. Worker ``w`` has a confusion matrix ``errors[w, l, c] =
P(worker says l | true label c)`` (columns sum to one) and classes have a prior ``priors[c]``.

- E-step: ``log q[i, c] = log priors[c] + sum_{(i, w, l)} log errors[w, l, c]``, normalised per
  item (Dawid & Skene eq. 2.5).
- M-step: ``errors[w, l, c] ∝ alpha + sum_{(i, w, l)} q[i, c]`` and
  ``priors[c] ∝ prior_alpha + sum_i q[i, c]`` (eq. 2.3-2.4 with Dirichlet pseudo-counts).

Smoothing: ``alpha`` (default 0.01) and ``prior_alpha`` (default 1.0) are the pseudo-counts of a
Dirichlet(1 + alpha) prior on every column of every confusion matrix and a Dirichlet(1 +
prior_alpha) prior on the class prior, i.e. EM computes the MAP estimate. They keep workers
seen on a single class from getting exact zeros (``log 0``). Initialisation: the posteriors are
the majority-vote vote fractions (as in Dawid & Skene sec. 3 and crowd-kit). Convergence: EM
stops when the MAP objective per annotation (log-likelihood of the observed labels plus the log
prior) improves by less than ``tol``, or after ``n_iter`` iterations.

The one-coin model (Karger, Oh & Shah 2011; crowd-kit's ``OneCoinDawidSkene``) keeps one
accuracy ``p_w`` per worker: ``errors[w, l, c] = p_w`` if ``l == c`` else ``(1 - p_w) / (K - 1)``.

Vectorisation: all sums over annotations are products with the sparse matrix ``C`` [W K, N],
``C[w K + l, i] = #annotations (i, w, l)``: the M-step is ``C @ q`` and the E-step is
``C.T @ log(errors)``. ``C.T`` is stored row-major (CSR by item): the E-step reads the small
[W K, K] table of log-confusions and writes the posteriors in order, and the M-step (its CSC
view) reads the posteriors in order and accumulates into the small table of counts, which was
2-8x faster than the other layout on 1M annotations. No Python loop over items, workers or
annotations.

The classes follow crowd-kit's shape: ``fit(annotations)`` returns ``self``, ``fit_predict``
returns the labels, ``fit_predict_proba`` the posteriors; learned quantities are attributes
ending in ``_``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from raysign.config import check_range
from raysign.crowd.annotations import Annotations


def vote_fractions(annotations: Annotations, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-item share of (weighted) votes per class, float64 [N, K]; uniform without votes."""
    counts = annotations.vote_counts(weights)
    totals = counts.sum(axis=1, keepdims=True)
    uniform = np.full_like(counts, 1.0 / annotations.n_classes)
    return np.divide(counts, totals, out=uniform, where=totals > 0)


def argmax_random_ties(scores: np.ndarray, seed: int = 0) -> np.ndarray:
    """Row-wise argmax of ``scores`` [N, K], ties broken uniformly at random, int64 [N]."""
    best = scores.max(axis=1, keepdims=True)
    tied = np.isclose(scores, best, rtol=1e-12, atol=1e-12)
    noise = np.random.default_rng(seed).random(scores.shape)
    return np.argmax(np.where(tied, noise + 1.0, 0.0), axis=1).astype(np.int64)


def item_matrix(annotations: Annotations) -> sp.csr_matrix:
    """``C.T`` [N, W K] as CSR: ``[i, w K + l]`` = number of labels ``l`` by worker ``w`` on
    item ``i``."""
    k = annotations.n_classes
    cols = annotations.workers * k + annotations.labels
    shape = (annotations.n_items, annotations.n_workers * k)
    ones = np.ones(len(annotations), dtype=np.float64)
    return sp.csr_matrix((ones, (annotations.items, cols)), shape=shape)


def confusion_counts(by_item: sp.csr_matrix, probas: np.ndarray) -> np.ndarray:
    """Expected counts ``sum_{(i, w, l)} q[i, c]``, float64 [W, K, K] indexed [w, l, c]."""
    k = probas.shape[1]
    return np.asarray(by_item.T @ probas).reshape(-1, k, k)


def m_step(by_item: sp.csr_matrix, probas: np.ndarray, alpha: float,
           prior_alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """MAP confusion matrices [W, K, K] (columns sum to 1) and class prior [K] from posteriors
    ``probas`` [N, K] (Dawid & Skene eq. 2.3-2.4 plus pseudo-counts); ``by_item`` is
    ``item_matrix``."""
    counts = confusion_counts(by_item, probas) + alpha
    totals = counts.sum(axis=1, keepdims=True)
    errors = np.divide(counts, totals, out=np.full_like(counts, 1.0 / counts.shape[1]),
                       where=totals > 0)
    prior_counts = np.ones(len(probas)) @ probas + prior_alpha
    return errors, prior_counts / prior_counts.sum()


def e_step(by_item: sp.csr_matrix, errors: np.ndarray,
           priors: np.ndarray) -> tuple[np.ndarray, float]:
    """Posteriors [N, K] of the true labels and the log-likelihood of the observed labels
    (Dawid & Skene eq. 2.5), computed in log space; ``by_item`` is ``item_matrix``."""
    k = priors.shape[0]
    log_errors = np.log(np.maximum(errors, 1e-300)).reshape(-1, k)
    log_joint = np.log(np.maximum(priors, 1e-300))[None, :] + np.asarray(by_item @ log_errors)
    # Row max and row sum over the K classes: numpy reduces short rows slowly, so the max runs
    # on the [K, N] transpose and the sum is a matrix-vector product (same values).
    top = np.ascontiguousarray(log_joint.T).max(axis=0)[:, None]
    scaled = np.exp(log_joint - top)
    norm = (scaled @ np.ones(k))[:, None]
    return scaled / norm, float(np.sum(np.log(norm)) + np.sum(top))


def _log_prior(errors: np.ndarray, priors: np.ndarray, alpha: float,
               prior_alpha: float) -> float:
    return float(alpha * np.log(np.maximum(errors, 1e-300)).sum()
                 + prior_alpha * np.log(np.maximum(priors, 1e-300)).sum())


def one_coin_errors(accuracy: np.ndarray, n_classes: int) -> np.ndarray:
    """One-coin confusion matrices [W, K, K] from per-worker accuracies [W]."""
    off = (1.0 - accuracy) / (n_classes - 1)
    eye = np.eye(n_classes)[None]
    return eye * accuracy[:, None, None] + (1.0 - eye) * off[:, None, None]


@dataclass
class MajorityVote:
    """Majority vote; ``probas_`` [N, K] are vote fractions, ties in ``labels_`` are broken
    uniformly at random with ``seed``."""

    seed: int = 0

    def fit(self, annotations: Annotations) -> MajorityVote:
        self.probas_ = vote_fractions(annotations)
        self.labels_ = argmax_random_ties(self.probas_, self.seed)
        return self

    def fit_predict_proba(self, annotations: Annotations) -> np.ndarray:
        return self.fit(annotations).probas_

    def fit_predict(self, annotations: Annotations) -> np.ndarray:
        return self.fit(annotations).labels_


@dataclass
class WeightedMajorityVote:
    """Majority vote with worker weights. Without ``weights``, each worker's weight is its
    agreement with the plain majority vote (crowd-kit's ``Wawa``); ``skills_`` [W] holds the
    weights used."""

    weights: np.ndarray | None = None
    seed: int = 0

    def fit(self, annotations: Annotations) -> WeightedMajorityVote:
        if self.weights is None:
            mv = argmax_random_ties(vote_fractions(annotations), self.seed)
            agree = (mv[annotations.items] == annotations.labels).astype(np.float64)
            n = annotations.labels_per_worker()
            skills = np.bincount(annotations.workers, agree, minlength=annotations.n_workers)
            self.skills_ = np.divide(skills, n, out=np.zeros_like(skills), where=n > 0)
        else:
            self.skills_ = np.asarray(self.weights, dtype=np.float64)
            if self.skills_.shape != (annotations.n_workers,):
                raise ValueError(f"weights shape {self.skills_.shape} != "
                                 f"({annotations.n_workers},) workers")
        self.probas_ = vote_fractions(annotations, self.skills_)
        self.labels_ = argmax_random_ties(self.probas_, self.seed)
        return self

    def fit_predict_proba(self, annotations: Annotations) -> np.ndarray:
        return self.fit(annotations).probas_

    def fit_predict(self, annotations: Annotations) -> np.ndarray:
        return self.fit(annotations).labels_


@dataclass
class DawidSkene:
    """Full-confusion Dawid-Skene EM (see the module docstring).

    Attributes after ``fit``: ``probas_`` [N, K] posteriors, ``labels_`` [N], ``errors_``
    [W, K, K] confusion matrices indexed [worker, observed label, true label], ``priors_`` [K],
    ``loss_history_`` (MAP objective per annotation, one per E-step), ``n_iter_``.
    """

    n_iter: int = 100
    tol: float = 1e-6
    alpha: float = 0.01
    prior_alpha: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_range("n_iter", self.n_iter, 1)
        check_range("tol", self.tol, 0.0)
        check_range("alpha", self.alpha, 0.0)
        check_range("prior_alpha", self.prior_alpha, 0.0)

    def _m_step(self, matrix: sp.csr_matrix, annotations: Annotations,
                probas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return m_step(matrix, probas, self.alpha, self.prior_alpha)

    def _penalty(self, errors: np.ndarray, priors: np.ndarray) -> float:
        return _log_prior(errors, priors, self.alpha, self.prior_alpha)

    def fit(self, annotations: Annotations, init_probas: np.ndarray | None = None) -> DawidSkene:
        """Run EM from ``init_probas`` [N, K] (default: majority-vote fractions)."""
        matrix = item_matrix(annotations)
        probas = vote_fractions(annotations) if init_probas is None else init_probas
        errors, priors = self._m_step(matrix, annotations, probas)
        history: list[float] = []
        scale = max(len(annotations), 1)
        for iteration in range(self.n_iter):
            probas, log_lik = e_step(matrix, errors, priors)
            objective = log_lik + self._penalty(errors, priors)
            history.append(objective / scale)
            converged = len(history) > 1 and history[-1] - history[-2] < self.tol
            if converged or iteration == self.n_iter - 1:
                break  # probas_ stay the posteriors under the returned errors_ / priors_
            errors, priors = self._m_step(matrix, annotations, probas)
        self.probas_, self.errors_, self.priors_ = probas, errors, priors
        self.loss_history_, self.n_iter_ = history, len(history)
        self.labels_ = argmax_random_ties(probas, self.seed)
        return self

    def fit_predict_proba(self, annotations: Annotations) -> np.ndarray:
        return self.fit(annotations).probas_

    def fit_predict(self, annotations: Annotations) -> np.ndarray:
        return self.fit(annotations).labels_


@dataclass
class OneCoinDawidSkene(DawidSkene):
    """Dawid-Skene EM with one accuracy per worker; ``skills_`` [W] holds the accuracies and
    ``errors_`` the implied confusion matrices. ``alpha`` adds pseudo-counts to both the
    correct and the wrong answers of every worker."""

    def _m_step(self, matrix: sp.csr_matrix, annotations: Annotations,
                probas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        agree = probas[annotations.items, annotations.labels]
        correct = np.bincount(annotations.workers, agree, minlength=annotations.n_workers)
        n = annotations.labels_per_worker().astype(np.float64)
        self.skills_ = (correct + self.alpha) / (n + 2 * self.alpha) if self.alpha > 0 else \
            np.divide(correct, n, out=np.full_like(n, 0.5), where=n > 0)
        prior_counts = probas.sum(axis=0) + self.prior_alpha
        return one_coin_errors(self.skills_, annotations.n_classes), \
            prior_counts / prior_counts.sum()

    def _penalty(self, errors: np.ndarray, priors: np.ndarray) -> float:
        p = np.clip(self.skills_, 1e-300, 1.0)
        q = np.clip(1.0 - self.skills_, 1e-300, 1.0)
        return float(self.alpha * (np.log(p).sum() + np.log(q).sum())
                     + self.prior_alpha * np.log(np.maximum(priors, 1e-300)).sum())


AGGREGATORS = {
    "mv": MajorityVote,
    "wmv": WeightedMajorityVote,
    "one_coin": OneCoinDawidSkene,
    "ds": DawidSkene,
}
