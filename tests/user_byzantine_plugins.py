"""A researcher's own attacks and aggregator, as tests/test_user_byzantine.py and
docs/byzantine.md ("Your own attack or aggregator") plug them in by import path."""

from __future__ import annotations

import numpy as np
import torch


def flip_top_k(v: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per worker: negate the 3 largest-magnitude coordinates of the worker's own message
    (a new tensor: ``v`` is the worker's momentum and must not change)."""
    out = v.clone()
    top = torch.topk(v.abs(), k=min(3, v.numel())).indices
    out[top] = -out[top]
    return out


def shifted_mean(honest: np.ndarray, own: np.ndarray, rng: np.random.Generator, *,
                 num_byzantine: int = 0) -> np.ndarray:
    """Crafted: the honest mean moved against itself by ``num_byzantine`` honest spreads."""
    spread = honest.std(axis=0) if honest.shape[0] > 1 else np.zeros_like(own)
    return (honest.mean(axis=0) - num_byzantine * spread).astype(np.float32)


def lower_median(values: np.ndarray) -> np.ndarray:
    """Aggregator: per coordinate, the lower of the two middle values (the median for odd n)."""
    return np.sort(values, axis=0)[(values.shape[0] - 1) // 2]


def wrong_shape(values: np.ndarray) -> np.ndarray:
    """A broken aggregator: returns every row."""
    return values


def three_arguments_wrong_dtype(honest: np.ndarray, own: np.ndarray,
                                rng: np.random.Generator) -> np.ndarray:
    """A broken crafted attack: float64."""
    return honest.mean(axis=0, dtype=np.float64)


NOT_CALLABLE = 3
