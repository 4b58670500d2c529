"""The Ray system against Algorithm 1 written again in numpy, compared round by round.

The reference (``reference_run``) takes from the project only what is not under test: each
worker's stochastic gradient, by torch autograd on a model built and seeded as the workers
build theirs, on the same data shard and batch order. Everything under test it does itself in
numpy (Bernstein et al., ICLR 2019, Algorithm 1): momentum ``m <- beta m + (1 - beta) g``, the
attacks, ``sign`` with sign(0) = +1, the majority vote as the sign of a plain sum of +-1 with
ties -> +1 (or the fp32 mean / median), and the update ``x <- x - lr (V + lambda x)``.

The run is observed after every step (``observe_run``: worker 0's parameters through
``on_record``), and the vote of step t is read back from the step's parameter change: every
coordinate moves by exactly ``lr``, so ``V_t = sign((1 - lr lambda) x_{t-1} - x_t)``. Every
round's vote must equal the reference's exactly and, since the reference applies the update
in the workers' order of float operations, the parameters must equal it bit for bit (majority
vote) or to float tolerance (the fp32 aggregators, whose sums are ordered differently).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest
import ray
import torch
from torch.nn import functional

from raysign import wire
from raysign.actors import trainer as trainer_module
from raysign.actors.vote import VoteActor
from raysign.config import ConfigError
from raysign.data import load_images, shard_indices
from raysign.results import RunDir, read_jsonl
from raysign.signs import pack_signs, shard_bounds
from raysign.signsgd.config import SignSGDConfig
from raysign.signsgd.models import build_model

pytestmark = pytest.mark.ray

TINY = dict(dataset="mnist", model="mlp", train_subset=1400, test_subset=500, batch_size=16,
            lr=0.002, checksum_every=3)
STAGES = ("compress", "gather", "vote", "broadcast", "decompress")


def tiny_config(tmp_path, **overrides) -> SignSGDConfig:
    fields = TINY | overrides
    return SignSGDConfig(results_dir=str(tmp_path), **fields)


def numpy_vote(messages: np.ndarray) -> np.ndarray:
    """sign(sum of signs) of float32 messages [M, d], with sign(0) = +1 and ties -> +1."""
    total = np.where(messages < 0, -1, 1).sum(axis=0)
    return np.where(total < 0, -1.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------ the in-process reference
class GradientOracle:
    """Worker ``rank``'s stochastic gradients: the model the workers build (same seed), its data
    shard and its batch order (a fresh permutation from ``default_rng([seed, rank])`` whenever
    the next batch no longer fits)."""

    def __init__(self, config: SignSGDConfig, rank: int, images: np.ndarray,
                 labels: np.ndarray):
        torch.manual_seed(config.seed)
        self.model = build_model(config.model)
        shard = shard_indices(len(labels), config.num_workers, config.seed)[rank]
        self.images, self.labels = images[shard], labels[shard]
        self.batch_size = config.batch_size
        self.rng = np.random.default_rng([config.seed, rank])
        self.order = self.rng.permutation(len(self.labels))
        self.cursor = 0

    def initial_parameters(self) -> np.ndarray:
        return torch.cat([p.detach().reshape(-1) for p in self.model.parameters()]).numpy()

    def gradient(self, x: np.ndarray) -> np.ndarray:
        """The flat gradient float32 [d] at parameters ``x`` on the next mini-batch."""
        if self.cursor + self.batch_size > len(self.order):
            self.order, self.cursor = self.rng.permutation(len(self.labels)), 0
        batch = self.order[self.cursor : self.cursor + self.batch_size]
        self.cursor += self.batch_size
        torch.nn.utils.vector_to_parameters(torch.from_numpy(x.copy()), self.model.parameters())
        self.model.zero_grad(set_to_none=True)
        loss = functional.cross_entropy(self.model(torch.from_numpy(self.images[batch])),
                                        torch.from_numpy(self.labels[batch]))
        loss.backward()
        return torch.cat([p.grad.reshape(-1) for p in self.model.parameters()]).numpy()


def sent_messages(config: SignSGDConfig, momenta: np.ndarray) -> np.ndarray:
    """What each worker sends, float32 [M, d]: its momentum, or for the adversaries (the last
    ``num_byzantine`` ranks) the attack, written here from the papers' definitions."""
    byzantine = range(config.num_workers - config.num_byzantine, config.num_workers)
    honest = momenta[: config.num_workers - config.num_byzantine]
    sent = momenta.copy()
    for b in byzantine:
        if config.attack == "negate":
            sent[b] = -momenta[b]
        elif config.attack == "colluding":  # the opposite of the honest vote (ties vote +1)
            honest_sum = np.where(honest < 0, -1, 1).sum(axis=0)
            sent[b] = np.where(honest_sum >= 0, -1.0, 1.0) * np.abs(honest).mean()
        elif config.attack == "alie":  # Baruch et al. 2019: mean - z_max std, s = n/2 + 1 - f
            n, f = config.num_workers, config.num_byzantine
            z = NormalDist().inv_cdf((n - (n // 2 + 1 - f)) / n)
            sent[b] = (honest.mean(axis=0, dtype=np.float64)
                       - z * honest.std(axis=0, ddof=1, dtype=np.float64))
        else:
            raise NotImplementedError(f"no reference for attack={config.attack!r}")
    return sent


@dataclass
class Reference:
    parameters: list[np.ndarray]  # x_0 .. x_T
    aggregates: list[np.ndarray]  # step t's V_t (majority vote) or fp32 aggregate, t = 1 .. T
    ties: int  # coordinates over all steps where the vote tied (and the tie rule decided)


def reference_run(config: SignSGDConfig, steps: int) -> Reference:
    """Algorithm 1 in numpy, every worker in this process."""
    train, _ = load_images(config.dataset, config.data_dir)
    images, labels = train.images[: config.train_subset], train.labels[: config.train_subset]
    oracles = [GradientOracle(config, rank, images, labels) for rank in range(config.num_workers)]
    x = oracles[0].initial_parameters()
    beta, one_minus_beta = np.float32(config.momentum), np.float32(1.0 - config.momentum)
    lr = np.float32(config.lr)
    decay = np.float32(1.0 - config.lr * config.weight_decay)
    momenta = np.zeros((config.num_workers, x.size), np.float32)
    result = Reference([x], [], 0)
    for _ in range(steps):
        for rank, oracle in enumerate(oracles):
            momenta[rank] = beta * momenta[rank] + one_minus_beta * oracle.gradient(x)
        sent = sent_messages(config, momenta)
        if config.aggregator == "vote":
            aggregate = numpy_vote(sent)
            result.ties += int((np.where(sent < 0, -1, 1).sum(axis=0) == 0).sum())
        elif config.aggregator == "mean":
            aggregate = sent.mean(axis=0, dtype=np.float64).astype(np.float32)
        elif config.aggregator == "median" and config.num_workers % 2:
            aggregate = np.sort(sent, axis=0)[config.num_workers // 2]
        else:
            raise NotImplementedError(f"no reference for aggregator={config.aggregator!r}")
        # x - lr (V + lambda x), as (1 - lr lambda) x - lr V: the workers' order of float
        # operations, so that the majority vote's parameters can compare bit for bit.
        x = decay * x - lr * aggregate
        result.parameters.append(x)
        result.aggregates.append(aggregate)
    return result


# --------------------------------------------------------------------- observing the run
@dataclass
class ObservedRun:
    summary: Any
    parameters: list[np.ndarray]  # worker 0's x_0 .. x_T
    digests: list[str]  # every worker's parameter digest at the end
    # Per step: the actors' stats that the trainer split into stages, and the driver's
    # wall-clock window of the round.
    stage_inputs: list[tuple[list[dict], list[dict], list[dict]]] = field(default_factory=list)
    round_windows: list[tuple[float, float]] = field(default_factory=list)


def observe_run(config: SignSGDConfig, monkeypatch, started_trainer) -> ObservedRun:
    """Run ``config``, reading worker 0's parameters before the first step and after every
    step, and the raw timestamps behind every step's stage times. The trainer is conftest's
    started one: reconfigured (a fresh replica in every worker, as if started anew) when the
    previous test ran the same shape, else started for ``config``."""
    split = trainer_module.round_stage_times
    stage_inputs, windows = [], []

    def recording_split(worker_stats, vote_stats, apply_stats):
        stage_inputs.append((worker_stats, vote_stats, apply_stats))
        return split(worker_stats, vote_stats, apply_stats)

    monkeypatch.setattr(trainer_module, "round_stage_times", recording_split)
    try:
        trainer = started_trainer.for_config(config)
        one_round = trainer.round

        def timed_round(step: int, with_density: bool = False) -> dict[str, Any]:
            started = time.time()
            record = one_round(step, with_density)
            windows.append((started, time.time()))
            return record

        monkeypatch.setattr(trainer, "round", timed_round)
        worker0 = trainer.workers[0]
        parameters = [ray.get(worker0.parameters.remote())]
        summary = trainer.run(
            on_record=lambda record: parameters.append(ray.get(worker0.parameters.remote())))
        digests = ray.get([w.checksum.remote() for w in trainer.workers])
    except BaseException:
        started_trainer.close()
        raise
    return ObservedRun(summary, parameters, digests, stage_inputs, windows)


def votes_read_from_parameters(config: SignSGDConfig, parameters: list[np.ndarray]):
    """Each step's vote from the parameter change, and how far ``|change| / lr`` is from 1."""
    decay = np.float32(1.0 - config.lr * config.weight_decay)
    for before, after in zip(parameters, parameters[1:], strict=False):
        change = (decay * before - after) / np.float32(config.lr)
        yield np.where(change < 0, -1.0, 1.0), float(np.abs(np.abs(change) - 1).max())


def assert_same_votes_and_parameters(config: SignSGDConfig, run: ObservedRun,
                                     expected: Reference) -> None:
    steps = len(expected.aggregates)
    assert len(run.parameters) == steps + 1
    assert run.parameters[0].tobytes() == expected.parameters[0].tobytes()
    observed = votes_read_from_parameters(config, run.parameters)
    for step, (vote, off_by) in enumerate(observed, start=1):
        assert off_by < 1e-3, f"step {step}: a coordinate did not move by lr"
        np.testing.assert_array_equal(vote, expected.aggregates[step - 1],
                                      err_msg=f"the vote of step {step}")
        assert run.parameters[step].tobytes() == expected.parameters[step].tobytes(), step


def stage_times_by_definition(worker_stats: list[dict], vote_stats: list[dict],
                              apply_stats: list[dict]) -> dict[str, float]:
    """The trainer's stages as its module docstring defines them, from the raw timestamps:
    compute and compress of the slowest worker, gather from the last message ready to the last
    vote start, the slowest shard's vote, broadcast from the last vote end to the last apply
    start, the slowest worker's decompress. (With the direct transport a vote may start, or an
    apply begin, before the last worker's other shards are out; such a gap counts as 0.)"""
    last_message_ready = max(w["t_compress_end"] for w in worker_stats)
    last_vote_start = max(v["t_vote_start"] for v in vote_stats)
    last_vote_end = max(v["t_vote_end"] for v in vote_stats)
    last_apply_start = max(a["t_apply_start"] for a in apply_stats)
    return {
        "compute": max(w["t_grad"] - w["t_start"] for w in worker_stats),
        "compress": max(w["t_compress_end"] - w["t_grad"] for w in worker_stats),
        "gather": max(0.0, last_vote_start - last_message_ready),
        "vote": max(v["t_vote_end"] - v["t_vote_start"] for v in vote_stats),
        "broadcast": max(0.0, last_apply_start - last_vote_end),
        "decompress": max(a["t_apply_end"] - a["t_apply_start"] for a in apply_stats),
    }


def assert_stage_times_follow_the_timestamps(config: SignSGDConfig, run: ObservedRun,
                                             records: list[dict]) -> None:
    assert len(run.stage_inputs) == len(run.round_windows) == len(records)
    for record, (workers, votes, applies), (begin, end) in zip(
            records, run.stage_inputs, run.round_windows, strict=True):
        assert len(workers) == len(applies) == config.num_workers
        assert len(votes) == config.vote_shards
        for w in workers:
            assert begin <= w["t_start"] <= w["t_grad"] <= w["t_compress_end"] <= end
        for v in votes:
            assert begin <= v["t_vote_start"] <= v["t_vote_end"] <= end
        for a in applies:
            assert begin <= a["t_apply_start"] <= a["t_apply_end"] <= end
        if config.transport == "objects":
            # A vote needs every worker's message, an apply every shard's vote.
            assert min(v["t_vote_start"] for v in votes) >= max(
                w["t_compress_end"] for w in workers)
            assert min(a["t_apply_start"] for a in applies) >= max(
                v["t_vote_end"] for v in votes)
        expected = stage_times_by_definition(workers, votes, applies)
        for stage in ("compute", *STAGES):
            assert record[stage] == pytest.approx(expected[stage], rel=1e-9, abs=1e-9), (
                record["step"], stage)


# ------------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("transport,shards", [("objects", 1), ("direct", 1), ("direct", 3)])
def test_majority_vote_run_equals_numpy_algorithm_every_round(started_trainer,
                                                              one_torch_thread, monkeypatch,
                                                              tmp_path, transport, shards):
    config = tiny_config(tmp_path, num_workers=4, max_steps=6, eval_every=3, weight_decay=0.01,
                         transport=transport, vote_shards=shards)
    run = observe_run(config, monkeypatch, started_trainer)
    expected = reference_run(config, 6)
    assert expected.ties > 0  # four voters: the tie rule is exercised
    assert_same_votes_and_parameters(config, run, expected)
    assert len(set(run.digests)) == 1 and run.summary.replicas_identical
    # What the run wrote: metrics at 1 bit per parameter and the five-stage time split.
    out = RunDir(run.summary.run_dir)
    for name in ("config.json", "metrics.jsonl", "summary.json", "accuracy.png",
                 "time_split.png", "checkpoint.pt"):
        assert out.file(name).is_file(), name
    records = read_jsonl(out.file("metrics.jsonl"))
    assert [r["step"] for r in records] == list(range(1, 7))
    d = run.summary.num_parameters
    overhead = shards * (wire.HEADER_BYTES + 8)  # a header and at most one padding word each
    for r in records:
        assert r["bytes_sent_per_worker"] <= -(-d // 8) + overhead
        assert r["bytes_received_per_worker"] <= -(-d // 8) + overhead
    assert_stage_times_follow_the_timestamps(config, run, records)
    assert "test_accuracy" in records[2] and 0 < records[2]["density"] <= 1


# The last two Byzantine runs and the median run have one shape (5 workers, 2 vote shards,
# direct): one xdist process runs them one after the other on one started trainer.
@pytest.mark.xdist_group("distributed-5-workers-2-shards-direct")
@pytest.mark.parametrize("attack,shards,transport", [("negate", 3, "objects"),
                                                      ("colluding", 2, "objects"),
                                                      ("negate", 2, "direct"),
                                                      ("colluding", 2, "direct")])
def test_byzantine_run_equals_numpy_algorithm_every_round(started_trainer, one_torch_thread,
                                                          monkeypatch, tmp_path, attack,
                                                          shards, transport):
    config = tiny_config(tmp_path, num_workers=5, num_byzantine=2, attack=attack,
                         vote_shards=shards, max_steps=5, transport=transport)
    run = observe_run(config, monkeypatch, started_trainer)
    assert_same_votes_and_parameters(config, run, reference_run(config, 5))
    assert len(set(run.digests)) == 1  # adversaries apply the vote too


@pytest.mark.xdist_group("distributed-5-workers-2-shards-direct")
def test_median_aggregator_under_attack_equals_coordinate_median(started_trainer,
                                                                  one_torch_thread, monkeypatch,
                                                                  tmp_path):
    config = tiny_config(tmp_path, num_workers=5, aggregator="median", num_byzantine=2,
                         attack="alie", lr=0.05, max_steps=4, vote_shards=2)
    run = observe_run(config, monkeypatch, started_trainer)
    expected = reference_run(config, 4)
    for step, (got, want) in enumerate(zip(run.parameters, expected.parameters, strict=True)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"step {step}")


@pytest.mark.parametrize("transport", ["objects", "direct"])
def test_mean_aggregator_equals_parameter_server_sgd_every_round(started_trainer,
                                                                 one_torch_thread, monkeypatch,
                                                                 tmp_path, transport):
    config = tiny_config(tmp_path, num_workers=3, aggregator="mean", lr=0.05, max_steps=5,
                         weight_decay=0.01, vote_shards=2, transport=transport)
    run = observe_run(config, monkeypatch, started_trainer)
    expected = reference_run(config, 5)
    for step, (got, want) in enumerate(zip(run.parameters, expected.parameters, strict=True)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"step {step}")


def test_vote_actor_counts_bad_payloads_as_abstentions(ray_session):
    d = 1000
    vote = ray.remote(VoteActor).options(num_cpus=0.1).remote(0, 0, d, wire.KIND_SIGNS)
    x = torch.randn(3, d)
    good = []
    for i in range(3):
        msg = wire.new_message(wire.KIND_SIGNS, sender=i, step=4, shard=0, length=d)
        wire.body(msg)[:] = pack_signs(x[i]).numpy()
        good.append(msg)
    wrong_length = wire.new_message(wire.KIND_SIGNS, sender=3, step=4, shard=0, length=d - 64)
    wrong_step = good[0].copy()
    wrong_step[12] = 9
    wrong_dtype = np.zeros(200, np.float32)
    result, stats = ray.get(vote.vote.options(num_returns=2).remote(
        4, *good, wrong_length, wrong_step, wrong_dtype))
    assert stats["num_valid"] == 3 and len(stats["rejected"]) == 3
    reasons = " ".join(r["reason"] for r in stats["rejected"])
    assert "length" in reasons and "step" in reasons and "uint8" in reasons
    _, body = wire.read_message(result, kind=wire.KIND_SIGNS, step=4, shard=0, length=d)
    voted = np.where(np.unpackbits(body, bitorder="little")[:d] == 1, -1.0, 1.0)  # set bit: -1
    np.testing.assert_array_equal(voted, numpy_vote(x.numpy()))
    ray.kill(vote)


@pytest.mark.parametrize("overrides,field", [
    (dict(num_byzantine=4), "num_byzantine"),
    (dict(num_workers=6, num_byzantine=3), "num_byzantine"),
    (dict(lr=0.0), "lr"),
    (dict(lr=-1.0), "lr"),
    (dict(attack="flip"), "attack"),
    (dict(aggregator="geometric_median"), "aggregator"),
    (dict(aggregator="krum", vote_shards=2), "vote_shards"),
    (dict(attack="alie", aggregator="vote", clip_tau=0.0), "clip_tau"),
    (dict(data_dir="/nonexistent/data"), "data_dir"),
    (dict(momentum=1.0), "momentum"),
])
def test_invalid_configuration_fails_before_ray_naming_the_field(overrides, field):
    fields = dataclasses.asdict(SignSGDConfig()) | {"num_workers": 7} | overrides
    with pytest.raises(ConfigError, match=field):
        SignSGDConfig(**fields)


def test_shard_bounds_used_by_the_trainer_cover_resnet18():
    d = 11_172_810
    bounds = shard_bounds(d, 4)
    assert bounds[-1][1] == d and all(b - a > 2_000_000 for a, b in bounds)


def test_resnet50_has_torchvision_resnet50_parameters_with_a_small_image_stem():
    from raysign.signsgd.models import build_model, num_parameters

    # torchvision's ResNet-50: 25,557,032 parameters with a 7x7x3 stem and 1000 classes;
    # ours has a 3x3x1 stem and 10 classes, everything else is the same.
    expected = 25_557_032 - 7 * 7 * 3 * 64 + 3 * 3 * 1 * 64 - (2048 * 1000 + 1000) \
        + (2048 * 10 + 10)
    model = build_model("resnet50")
    assert num_parameters(model) == expected
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
