"""Model-Bootstrapped EM (MBEM): Khetan, Lipton & Anandkumar, "Learning from noisy
singly-labeled data", ICLR 2018, Algorithm 1.

Given annotations of the training items and their features:

1. Start from the majority-vote posterior ``q[i, c]`` (vote fractions).
2. For ``t = 1..T``:
   a. train a classifier ``f`` with the posterior-weighted loss
      ``sum_i sum_c q[i, c] * CE(f(x_i), c)`` (sec. 3, eq. 4);
   b. predict ``t_i = argmax f(x_i)`` on every annotated item;
   c. estimate every worker's confusion matrix and the class prior by maximum likelihood
      taking ``t`` as the true labels (eq. 5: ``pi_w[l, c] = #{w says l, t_i = c} /
      #{w labelled i, t_i = c}``, plus ``alpha`` pseudo-counts);
   d. recompute ``q[i, c] ∝ prior[c] prod_{(i, w, l)} pi_w[l, c]`` (eq. 6).
3. Train the final classifier on the last ``q``.

Class prior in step 2d: by default (``prior="labels"``) the class frequencies of the crowd
labels, not of the model's predictions (``prior="predicted"``, the paper's MLE). A model that
under-predicts a hard class (Fashion-MNIST's "shirt") skews the predicted prior, every
spammer-labelled item's posterior (proportional to the prior) inherits the skew, and the next
model learns it more strongly: at r = 1, 20% hammers, B = 12,000, the predicted prior (0.05 for
"shirt") gave 0.75 test accuracy after one round against 0.80 with the label frequencies.

Differences from the authors' reference code: model selection uses crowd-labelled validation
items only (the epoch whose predictions agree most with the validation items' current
posterior mode), never the test set, and the loop runs ``T`` rounds (the code runs one).
Baselines of the paper's sec. 5 share the same trainer: majority-vote labels, Dawid-Skene
posteriors, and the true labels (oracle).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from raysign.config import check_choice, check_range
from raysign.crowd.aggregate import (
    e_step,
    item_matrix,
    m_step,
    vote_fractions,
)
from raysign.crowd.annotations import Annotations

CLASSIFIERS = ("mlp", "cnn")


@dataclass(frozen=True)
class ClassifierTraining:
    """Classifier training: a one-hidden-layer MLP (``hidden`` units) or a small CNN."""

    model: str = "mlp"
    hidden: int = 256
    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        check_choice("model", self.model, CLASSIFIERS)
        check_range("hidden", self.hidden, 1)
        check_range("epochs", self.epochs, 1)
        check_range("batch_size", self.batch_size, 1)
        check_range("lr", self.lr, 0.0, low_open=True)
        check_range("weight_decay", self.weight_decay, 0.0)


def make_classifier(settings: ClassifierTraining, n_classes: int,
                    input_shape: tuple[int, ...] = (1, 28, 28)) -> nn.Module:
    """An MLP (flattened input)-hidden-K, or a two-conv CNN for [B, C, H, W] images
    (``input_shape`` is one item's shape: (C, H, W) for the CNN, any shape for the MLP)."""
    if settings.model == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), settings.hidden),
                             nn.ReLU(), nn.Linear(settings.hidden, n_classes))
    if len(input_shape) != 3 or min(input_shape[1:]) < 4:
        raise ValueError(f"model='cnn' needs images [C, H, W] with H, W >= 4, got one item of "
                         f"shape {tuple(input_shape)} (use model='mlp' for flat features)")
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Conv2d(channels, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(32 * (height // 4) * (width // 4), settings.hidden), nn.ReLU(),
        nn.Linear(settings.hidden, n_classes))


def weighted_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Posterior-weighted loss ``mean_i sum_c q[i, c] (-log softmax(f(x_i))_c)``;
    logits and targets [B, K]."""
    return -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()


@torch.no_grad()
def predict_proba(model: nn.Module, images: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    """Softmax outputs float64 [N, K] of ``model`` on float32 ``images`` [N, ...]."""
    device = next(model.parameters()).device
    model.eval()
    out = [torch.softmax(model(torch.from_numpy(images[s:s + batch_size]).to(device)), 1).cpu()
           for s in range(0, len(images), batch_size)]
    return torch.cat(out).double().numpy()


@dataclass
class TrainedModel:
    """A classifier and its training record (one entry per epoch)."""

    model: nn.Module
    best_epoch: int
    val_agreement: float
    history: list[dict[str, float]] = field(default_factory=list)


def expected_agreement(predicted: np.ndarray, targets: np.ndarray) -> float:
    """Mean posterior probability of the predicted labels, ``mean_i q[i, pred_i]``: the
    expected accuracy if the true labels follow ``targets`` [V, K]. Unlike agreement with the
    posterior mode, an item with a flat posterior (a spammer's label) favours no class."""
    if len(targets) == 0:
        return 0.0
    return float(np.mean(targets[np.arange(len(targets)), predicted]))


def train_classifier(images: np.ndarray, targets: np.ndarray, val_images: np.ndarray,
                     val_targets: np.ndarray, settings: ClassifierTraining, seed: int,
                     eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
                     ) -> TrainedModel:
    """Train on soft ``targets`` [N, K]; keep the epoch with the highest expected agreement
    with the crowd-derived posteriors ``val_targets`` [V, K] of the validation images (no test
    data involved). ``eval_fn`` (e.g. test accuracy) is only logged in ``history``."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(seed)
    model = make_classifier(settings, targets.shape[1], images.shape[1:]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr,
                                 weight_decay=settings.weight_decay)
    x = torch.from_numpy(images).to(device)
    q = torch.from_numpy(np.asarray(targets, dtype=np.float32)).to(device)
    generator = torch.Generator().manual_seed(seed)
    best = TrainedModel(model, -1, -1.0)
    best_state = None
    for epoch in range(settings.epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator).to(device)
        total = 0.0
        for start in range(0, len(x), settings.batch_size):
            batch = order[start:start + settings.batch_size]
            loss = weighted_cross_entropy(model(x[batch]), q[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        agreement = expected_agreement(predict_proba(model, val_images).argmax(1), val_targets)
        record = {"epoch": epoch + 1, "train_loss": total / max(len(x), 1),
                  "val_agreement": agreement, **(eval_fn(model) if eval_fn else {})}
        best.history.append(record)
        if agreement > best.val_agreement:
            best.best_epoch, best.val_agreement = epoch + 1, agreement
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    return best


def confusions_from_predictions(annotations: Annotations, predicted: np.ndarray,
                                alpha: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """MLE of confusions [W, K, K] and prior [K] taking ``predicted`` [N] as the true labels
    (MBEM step 2c, i.e. the Dawid-Skene M-step with one-hot posteriors)."""
    one_hot = np.eye(annotations.n_classes)[predicted]
    return m_step(item_matrix(annotations), one_hot, alpha, prior_alpha=1.0)


def posteriors_from_confusions(annotations: Annotations, errors: np.ndarray,
                               priors: np.ndarray) -> np.ndarray:
    """Posterior [N, K] of the true labels given confusions and prior (MBEM step 2d)."""
    return e_step(item_matrix(annotations), errors, priors)[0]


@dataclass
class MBEMResult:
    """Final classifier, the posteriors it was trained on, estimated confusions, and one
    record per round."""

    model: TrainedModel
    probas: np.ndarray
    errors: np.ndarray
    priors: np.ndarray
    rounds: list[dict[str, float]]


PRIORS = ("labels", "predicted")


def mbem(annotations: Annotations, images: np.ndarray, train: np.ndarray, val: np.ndarray,
         settings: ClassifierTraining, rounds: int = 2, alpha: float = 0.01, seed: int = 0,
         prior: str = "labels", truth: np.ndarray | None = None,
         eval_fn: Callable[[nn.Module], dict[str, float]] | None = None) -> MBEMResult:
    """Algorithm 1 (module docstring). ``images`` float32 [N, ...] are the annotated items
    (images [N, C, H, W] for the CNN, any shape for the MLP);
    ``train`` / ``val`` index them. ``truth`` [N], when given, is used only to log how
    accurate the posterior modes are."""
    check_range("rounds", rounds, 0)
    if prior not in PRIORS:
        raise ValueError(f"prior={prior!r} is not one of {list(PRIORS)}")
    q = vote_fractions(annotations)
    label_prior = (np.bincount(annotations.labels, minlength=annotations.n_classes) + 1.0)
    label_prior /= label_prior.sum()
    errors = priors = None
    log: list[dict[str, float]] = []
    for t in range(rounds + 1):
        trained = train_classifier(images[train], q[train], images[val], q[val],
                                   settings, seed + t, eval_fn)
        record = {"round": t, "best_epoch": trained.best_epoch,
                  "val_agreement": trained.val_agreement}
        if truth is not None:
            record["posterior_accuracy"] = float(np.mean(q.argmax(1) == truth))
        if eval_fn is not None:
            record.update(eval_fn(trained.model))
        log.append(record)
        if t == rounds:
            break
        predicted = predict_proba(trained.model, images).argmax(1)
        errors, priors = confusions_from_predictions(annotations, predicted, alpha)
        if prior == "labels":
            priors = label_prior
        q = posteriors_from_confusions(annotations, errors, priors)
    return MBEMResult(trained, q, errors, priors, log)
