"""Overlap of the vote with the backward pass (issue #21 item 1, ``SignSGDConfig.overlap``).

The overlapped round must be the sequential round bit for bit: the same messages, votes and
parameters after every step. A non-finite gradient abstains per shard when overlapping (the
other shards are sent before it is known); the cases that cannot keep the sequential
semantics fall back to it."""

from __future__ import annotations

import numpy as np
import pytest
import ray
import torch

from raysign import wire
from raysign.actors.worker import overlap_fallback
from raysign.config import ConfigError
from raysign.signs import shard_bounds
from raysign.signsgd.config import SignSGDConfig
from raysign.signsgd.models import build_model
from raysign.signsgd.replica import Replica

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.xdist_group("overlap-started-trainer")]

STEPS = 3


def tiny(tmp_path, **overrides) -> SignSGDConfig:
    fields = dict(dataset="mnist", model="mlp", train_subset=256, test_subset=32,
                  batch_size=16, lr=0.002, momentum=0.9, weight_decay=1e-3, num_workers=2,
                  vote_shards=3, max_steps=STEPS, results_dir=str(tmp_path)) | overrides
    return SignSGDConfig(**fields)


def test_slices_are_handed_out_during_backward_last_first_with_the_plain_gradient(tmp_path):
    config = tiny(tmp_path, model="cnn")
    rng = np.random.default_rng(0)
    x = rng.random((32, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 32)
    replica = Replica(config, 0, x, y)
    bounds = shard_bounds(replica.d, 4)
    first = replica.params[0]  # the first layer: its gradient is the last to be computed
    handed: list[tuple[int, torch.Tensor, bool]] = []
    grad, loss = replica.gradient_in_slices(
        bounds, lambda s, g: handed.append((s, g.clone(), first.grad is None)))

    # Reference: the same model, the same batch, a plain backward, gradients concatenated.
    torch.manual_seed(config.seed)
    model = build_model("cnn")
    batch = replica._order[:config.batch_size]
    out = torch.nn.functional.cross_entropy(model(torch.from_numpy(x[batch])),
                                            torch.from_numpy(y[batch]))
    out.backward()
    expected = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert torch.equal(grad, expected) and loss == float(out.detach())
    assert [s for s, _, _ in handed] == [3, 2, 1, 0]
    # The last slice left while the backward pass had yet to reach the first layer.
    assert handed[0][2] and not handed[-1][2]
    for s, g, _ in handed:
        assert torch.equal(g, expected[slice(*bounds[s])])
    # The sequential path's gradient written into a kept buffer: the same values.
    buffer = torch.full((replica.d,), float("nan"))
    twin, twin_loss = Replica(config, 0, x, y).gradient(out=buffer)
    assert twin is buffer and torch.equal(buffer, expected) and twin_loss == loss


def run_steps(trainer, steps: range, poison: int | None = None):
    """Per step: the record, every worker's S messages and parameters, and (before the step)
    the momentum of every worker."""
    rows = []
    for step in steps:
        before = ray.get([w.state.remote() for w in trainer.workers])
        if poison is not None and step == steps[-1]:
            ray.get(trainer.workers[poison].poison_next_gradient.remote(1))
        record = trainer.round(step)
        messages = [ray.get(w.resend.remote(step))[:-1] for w in trainer.workers]
        params = ray.get([w.parameters.remote() for w in trainer.workers])
        rows.append((record, messages, params, [s["momentum"] for s in before]))
    return rows


def test_overlapped_run_equals_the_sequential_run_bit_for_bit(started_trainer, tmp_path):
    runs = {}
    for overlap in (False, True):
        trainer = started_trainer.for_config(tiny(tmp_path, overlap=overlap))
        runs[overlap] = run_steps(trainer, range(1, STEPS + 1))
    for plain, overlapped in zip(runs[False], runs[True], strict=True):
        assert plain[0]["overlapped_workers"] == []
        assert overlapped[0]["overlapped_workers"] == [0, 1]
        assert plain[0]["participation"] == overlapped[0]["participation"] == [[0, 1]] * 3
        assert plain[0]["loss"] == overlapped[0]["loss"]
        for a, b in zip(plain[1], overlapped[1], strict=True):  # every worker's S messages
            assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        for a, b in zip(plain[2], overlapped[2], strict=True):  # every replica's parameters
            assert np.array_equal(a, b)
    # The votes: each step moved the parameters by the same +-lr (weight decay aside).
    first, last = runs[True][0][2][0], runs[True][-1][2][0]
    assert not np.array_equal(first, last)

    # Gradient accumulation cannot overlap: the worker falls back to the sequential round.
    trainer = started_trainer.for_config(tiny(tmp_path, overlap=True, accumulation_steps=2))
    assert trainer.round(1)["overlapped_workers"] == []


def test_nan_gradient_abstains_only_in_its_shard_when_overlapping(started_trainer, tmp_path):
    config = tiny(tmp_path, overlap=True)
    trainer = started_trainer.for_config(config)
    rows = run_steps(trainer, range(1, 3), poison=0)
    record, messages, params, momentum_before = rows[-1]
    bounds = trainer.bounds
    # Worker 0's gradient has a NaN at entry 0: its shard-0 message abstains, the others vote.
    assert [wire.parse_header(m).abstains for m in messages[0]] == [True, False, False]
    assert not any(wire.parse_header(m).abstains for m in messages[1])
    assert record["participation"] == [[1], [0, 1], [0, 1]]
    # Its momentum is untouched on shard 0 only.
    after = ray.get(trainer.workers[0].state.remote())["momentum"].numpy()
    before = momentum_before[0].numpy()
    a, b = bounds[0]
    assert np.array_equal(after[a:b], before[a:b])
    assert not np.array_equal(after[b:], before[b:])
    # Shard 0 applied worker 1's signs alone: x <- x (1 - lr wd) - lr sign(m_1), in float32
    # (sign bit set = -1, little-endian bit order: raysign.signs' convention).
    bits = np.unpackbits(wire.body(messages[1][0]), bitorder="little")[: b - a]
    signs = np.where(bits == 1, np.float32(-1), np.float32(1))
    x0 = rows[0][2][0][a:b]
    lr, decay = np.float32(config.lr), np.float32(1 - config.lr * config.weight_decay)
    assert np.array_equal(params[0][a:b], x0 * decay - lr * signs)
    assert np.array_equal(params[0], params[1])  # both replicas applied the same votes


def test_overlap_falls_back_where_it_cannot_keep_the_sequential_round(tmp_path):
    base = tiny(tmp_path, overlap=True)
    assert overlap_fallback(base, False, "cpu") is None
    for change in ({"transport": "objects"}, {"accumulation_steps": 2},
                   {"clip_grad_norm": 1.0}, {"precision": "fp16"},
                   {"aggregator": "mean", "vote_shards": 1}):
        assert overlap_fallback(tiny(tmp_path, overlap=True, **change), False, "cpu")
    assert "Byzantine" in overlap_fallback(base, True, "cpu")
    assert "cuda" in overlap_fallback(base, False, "cuda")
    with pytest.raises(ConfigError, match="overlap='yes'"):
        tiny(tmp_path, overlap="yes")
