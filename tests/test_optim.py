"""Signum / signSGD / EF-signSGD against plain numpy re-statements of the papers' updates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raysign.optim import Signum


def numpy_sign(u):
    return np.where(u < 0, -1.0, 1.0)


def run_optimizer(grads, x0, **kwargs):
    p = torch.nn.Parameter(torch.tensor(x0, dtype=torch.float64))
    opt = Signum([p], **kwargs)
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return p.detach().numpy()


@pytest.mark.parametrize("beta,wd,scaled", [(0.0, 0.0, False), (0.9, 0.0, False),
                                            (0.9, 0.01, False), (0.5, 0.1, True)])
def test_signum_matches_algorithm_1(beta, wd, scaled):
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((20, 13))
    grads[3, :4] = 0.0  # zeros take sign +1
    x0 = rng.standard_normal(13)
    lr = 0.05
    x, m = x0.copy(), np.zeros(13)
    for g in grads:
        m = beta * m + (1 - beta) * g if beta else g
        step = numpy_sign(m) * (np.abs(m).mean() if scaled else 1.0)
        x = x - lr * (step + wd * x)
    np.testing.assert_allclose(run_optimizer(grads, x0, lr=lr, momentum=beta, weight_decay=wd,
                                             scaled=scaled), x, rtol=1e-12, atol=1e-12)


def test_error_feedback_matches_karimireddy_algorithm_1():
    rng = np.random.default_rng(1)
    grads = rng.standard_normal((30, 9))
    x0 = rng.standard_normal(9)
    lr = 0.1
    x, e = x0.copy(), np.zeros(9)
    for g in grads:
        p = lr * g + e
        delta = np.abs(p).mean() * numpy_sign(p)
        x = x - delta
        e = p - delta
    np.testing.assert_allclose(run_optimizer(grads, x0, lr=lr, momentum=0.0,
                                             error_feedback=True), x, rtol=1e-12, atol=1e-12)


def test_signsgd_minimises_a_quadratic():
    target = torch.linspace(-1, 1, 50)
    p = torch.nn.Parameter(torch.zeros(50))
    opt = Signum([p], lr=0.01, momentum=0.9)
    for _ in range(400):
        opt.zero_grad()
        ((p - target) ** 2).sum().backward()
        opt.step()
    assert float((p - target).abs().max()) < 0.05


@pytest.mark.parametrize("kwargs,field", [({"lr": 0.0}, "lr"), ({"momentum": 1.0}, "momentum"),
                                          ({"weight_decay": -1.0}, "weight_decay")])
def test_signum_rejects_bad_hyperparameters(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Signum([torch.nn.Parameter(torch.zeros(1))], **kwargs)
