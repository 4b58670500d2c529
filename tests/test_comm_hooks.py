"""``signum_vote_hook`` on M gloo ranks (separate processes) against Algorithm 1 written again
in numpy (Bernstein et al., ICLR 2019, Signum with majority vote).

The ranks train a small MLP with DDP, the hook and a plain ``torch.optim.SGD(lr,
weight_decay)``. The MLP registers its layers in another order than its forward pass uses
them, and the bucket cap is small, so DDP's first-iteration buckets (one bucket, registration
order) differ from the buckets it rebuilds after that iteration (several, gradient-ready
order): state kept per bucket index would follow the wrong parameters from step 2 on.

The reference (``reference_run``) takes from torch only each rank's stochastic gradient (torch
autograd on the same model, parameters and batch, one thread as the ranks) and does the rest in
numpy: momentum ``m <- beta m + (1 - beta) g``, the negating attack, the scaled sign and error
feedback per parameter tensor, ``sign`` with sign(0) = +1, the vote as the sign of a plain sum
of +-1 with ties -> +1, and SGD's ``x <- x - lr (V + lambda x)``. Every step's gradient that DDP
hands the optimizer must be the reference's vote exactly (+-1, not averaged); the parameters
must be bit-identical across ranks and equal to the reference up to float32 rounding (a wrong
vote would move a coordinate by 2 lr).

Bytes on the wire are measured twice: the tensors the hook hands to the collectives (the
collectives wrapped in each rank) and the operating system's count of bytes the rank passed
to ``write`` calls (``wchar`` in ``/proc/self/io``: gloo's sockets, headers included).
"""

from __future__ import annotations

import gc
import io
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn import functional
from torch.nn.parallel import DistributedDataParallel

from raysign.comm_hooks import SignumVoteState, signum_vote_hook

WORLD = 4
STEPS = 6
RESUME_AT = 3
LR, WEIGHT_DECAY = 0.01, 0.05
SEED, BATCH = 3, 8
SIZES = (16, 32, 32, 24, 4)  # in, hidden..., classes
BUCKET_CAP_MB = 0.001  # ~256 fp32 gradients: several buckets after the rebuild
ROOT = Path(__file__).resolve().parents[1]

SCENARIOS = {
    "allgather": dict(topology="allgather", momentum=0.9),
    "sharded": dict(topology="sharded", momentum=0.9),
    "signsgd_sharded": dict(topology="sharded", momentum=0.0),
    "byzantine_allgather": dict(topology="allgather", momentum=0.9, byzantine_ranks=[3],
                                attack="negate"),
    "scaled_allgather": dict(topology="allgather", momentum=0.9, scaled=True),
    "error_feedback_sharded": dict(topology="sharded", momentum=0.5, error_feedback=True),
}


class ReorderedMLP(nn.Module):
    """An MLP whose layers are registered last-first but run first-last."""

    def __init__(self, sizes=SIZES):
        super().__init__()
        pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
        for k in reversed(range(len(pairs))):
            self.add_module(f"layer{k}", nn.Linear(*pairs[k]))
        self.depth = len(pairs)

    def forward(self, x):
        for k in range(self.depth):
            x = getattr(self, f"layer{k}")(x)
            x = torch.relu(x) if k < self.depth - 1 else x
        return x


def build_model(sizes=SIZES) -> nn.Module:
    torch.manual_seed(SEED)
    return ReorderedMLP(sizes)


def batch(rank: int, step: int, sizes=SIZES) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng([SEED, rank, step])
    x = rng.standard_normal((BATCH, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], BATCH)
    return torch.from_numpy(x), torch.from_numpy(y)


def flat(tensors) -> np.ndarray:
    return torch.cat([t.detach().reshape(-1).cpu() for t in tensors]).numpy().copy()


# ------------------------------------------------------------------------- the ranks' side
def init_rank(rank: int, world: int, store: str, backend: str = "gloo") -> None:
    torch.set_num_threads(1)
    dist.init_process_group(backend, init_method=f"file://{store}", rank=rank, world_size=world)


def close_rank() -> None:
    """Free the DDP wrappers (a trainer and its hook form a reference cycle) while the
    process group lives, wait for every rank, then destroy the group: a reducer outliving it
    can abort the process at exit."""
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


class Trainer:
    """One rank's DDP model, hook state and SGD, recording what the test compares."""

    def __init__(self, options: dict, device: str = "cpu", sizes=SIZES, bucket_cap_mb=None):
        self.device = torch.device(device)
        self.model = build_model(sizes).to(self.device)
        self.names = {p: n for n, p in self.model.named_parameters()}
        self.ddp = DistributedDataParallel(
            self.model, bucket_cap_mb=bucket_cap_mb or BUCKET_CAP_MB,
            device_ids=[self.device] if self.device.type == "cuda" else None)
        self.state = SignumVoteState(module=self.ddp, **options)
        self.ddp.register_comm_hook(self.state, self.recording_hook)
        self.optimizer = torch.optim.SGD(self.ddp.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        self.sizes = sizes
        self.step_index = 0
        self.layouts: list[list[list[str]]] = []  # per step, per bucket: parameter names
        self.inputs: list[dict[str, np.ndarray]] = []  # per step: each parameter's g_i

    def recording_hook(self, state, bucket):
        names = [self.names[p] for p in bucket.parameters()]
        self.layouts[-1].append(names)
        for name, g in zip(names, bucket.gradients(), strict=True):
            self.inputs[-1][name] = g.detach().cpu().numpy().copy()
        return signum_vote_hook(state, bucket)

    def step(self, rank: int) -> np.ndarray:
        """One training step on this rank's batch; returns the gradient SGD sees."""
        self.layouts.append([])
        self.inputs.append({})
        x, y = batch(rank, self.step_index, self.sizes)
        loss = functional.cross_entropy(self.ddp(x.to(self.device)), y.to(self.device))
        self.optimizer.zero_grad()
        loss.backward()
        grads = flat(p.grad for p in self.model.parameters())
        self.optimizer.step()
        self.step_index += 1
        return grads

    def parameters(self) -> np.ndarray:
        return flat(self.model.parameters())

    def checkpoint(self) -> bytes:
        buffer = io.BytesIO()
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "hook": self.state.state_dict(), "step": self.step_index}, buffer)
        return buffer.getvalue()

    def restore(self, blob: bytes) -> None:
        saved = torch.load(io.BytesIO(blob), weights_only=True)
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.state.load_state_dict(saved["hook"])
        self.step_index = saved["step"]


def train_scenario(options: dict, rank: int, device: str = "cpu") -> dict[str, np.ndarray]:
    """STEPS steps: the parameters before and after each, the gradient SGD saw, each step's
    bucket layouts and the gradients the ranks fed the hook (in the model's parameter order)."""
    trainer = Trainer(options, device)
    params, grads = [trainer.parameters()], []
    for _ in range(STEPS):
        grads.append(trainer.step(rank))
        params.append(trainer.parameters())
    order = [n for n, _ in trainer.model.named_parameters()]
    inputs = [np.concatenate([step[n].reshape(-1) for n in order]) for step in trainer.inputs]
    return dict(params=np.stack(params), grads=np.stack(grads), inputs=np.stack(inputs),
                layouts=json.dumps(trainer.layouts))


def resume_drill(rank: int) -> np.ndarray:
    """RESUME_AT steps, a checkpoint through torch.save, then a new model (other initial
    values), a new DDP wrapper (initial bucket layout again), a new state and optimizer
    restored from it, and the remaining steps; returns the final parameters."""
    first = Trainer(SCENARIOS["allgather"])
    for _ in range(RESUME_AT):
        first.step(rank)
    blob = first.checkpoint()
    torch.manual_seed(SEED + 1)
    second = Trainer(SCENARIOS["allgather"])
    with torch.no_grad():
        for p in second.model.parameters():
            p.add_(1.0)
    second.restore(blob)
    for _ in range(STEPS - RESUME_AT):
        second.step(rank)
    return second.parameters()


def exactness_rank(rank: int, world: int, store: str, out: str) -> None:
    """Every scenario, then the resume drill; writes out/<scenario>-<rank>.npz."""
    init_rank(rank, world, store)
    for name, options in SCENARIOS.items():
        np.savez(f"{out}/{name}-{rank}.npz", **train_scenario(options, rank))
    np.savez(f"{out}/resume-{rank}.npz", params=resume_drill(rank))
    close_rank()


# ------------------------------------------------------------------- bytes on the wire
BIG = (256, 384, 384, 10)  # ~250k parameters: a payload far above gloo's per-message headers
MEASURED_STEPS = 3  # after two warm-up steps (DDP's bucket rebuild talks at step 2)


def written_bytes() -> int:
    """Bytes this process has passed to write(2) and friends: gloo's socket writes."""
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("wchar:")).split(":")[1])


class CollectiveCounter:
    """Wraps the collectives the hook may call (``torch.distributed``'s attributes, which the
    hook looks up at call time); counts calls and the bytes this rank hands them for other
    ranks: all of an all-gather's input goes to each of the M - 1 others, an all-to-all's input
    less the split it keeps."""

    NAMES = ("all_gather_single", "all_gather_into_tensor", "all_to_all_single")

    def __init__(self, rank: int, world: int):
        self.rank, self.world = rank, world
        self.calls, self.sent, self.devices = 0, 0, set()
        self.originals = {n: getattr(dist, n) for n in self.NAMES if hasattr(dist, n)}
        for name, original in self.originals.items():
            setattr(dist, name, self.wrap(name, original))

    def wrap(self, name, original):
        def counted(output, tensor, *args, **kwargs):
            self.calls += 1
            self.devices.update({output.device.type, tensor.device.type})
            size = tensor.element_size()
            if name == "all_to_all_single":
                splits = args[1] if len(args) > 1 else kwargs.get("input_split_sizes")
                kept = splits[self.rank] if splits else tensor.numel() // self.world
                self.sent += (tensor.numel() - kept) * size
            else:
                self.sent += (self.world - 1) * tensor.numel() * size
            return original(output, tensor, *args, **kwargs)

        return counted

    def restore(self):
        for name, original in self.originals.items():
            setattr(dist, name, original)


def measure_bytes(topology: str, rank: int, world: int) -> dict[str, float]:
    trainer = Trainer(dict(topology=topology, momentum=0.9), sizes=BIG, bucket_cap_mb=0.4)
    for _ in range(2):
        trainer.step(rank)
    counter = CollectiveCounter(rank, world)
    dist.barrier()
    before = written_bytes()
    for _ in range(MEASURED_STEPS):
        trainer.step(rank)
    written = written_bytes() - before
    counter.restore()
    return dict(d=sum(p.numel() for p in trainer.model.parameters()),
                buckets=len(trainer.layouts[-1]), calls=counter.calls / MEASURED_STEPS,
                hook_bytes=counter.sent / MEASURED_STEPS, os_bytes=written / MEASURED_STEPS)


def bytes_rank(rank: int, world: int, store: str, out: str) -> None:
    init_rank(rank, world, store)
    result = {topology: measure_bytes(topology, rank, world)
              for topology in ("allgather", "sharded")}
    Path(f"{out}/bytes-{rank}.json").write_text(json.dumps(result))
    close_rank()


def spawn(fn, world: int, tmp_path: Path, timeout_s: float = 240) -> Path:
    """Run ``fn(rank, world, store, out)`` in ``world`` fresh processes; a hang fails the test
    after ``timeout_s`` (and ends the processes it started) instead of blocking the session."""
    out = tmp_path / "out"
    out.mkdir(parents=True, exist_ok=True)
    context = mp.start_processes(fn, args=(world, str(tmp_path / "store"), str(out)),
                                 nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.terminate()
            pytest.fail(f"{fn.__name__} on {world} ranks did not finish in {timeout_s} s")
    return out


# ------------------------------------------------------------------------- the reference
def numpy_sign(u: np.ndarray) -> np.ndarray:
    return np.where(u < 0, np.float32(-1), np.float32(1))


def numpy_vote(sent: np.ndarray) -> tuple[np.ndarray, int]:
    """sign(sum of signs) of [M, d] messages with sign(0) = +1 and ties -> +1; and the tie
    count."""
    total = np.where(sent < 0, -1, 1).sum(axis=0)
    return np.where(total < 0, np.float32(-1), np.float32(1)), int((total == 0).sum())


class Reference:
    """Algorithm 1 in numpy for ``WORLD`` ranks; gradients by torch autograd."""

    def __init__(self, options: dict, world: int = WORLD):
        self.options, self.world = options, world
        self.model = build_model()
        self.x = flat(self.model.parameters())
        sizes = [p.numel() for p in self.model.parameters()]
        self.bounds = list(zip(np.cumsum([0, *sizes[:-1]]), np.cumsum(sizes), strict=True))
        self.m = np.zeros((world, self.x.size), np.float32)
        self.e = np.zeros((world, self.x.size), np.float32)
        self.params, self.gradients, self.votes, self.ties = [self.x], [], [], 0

    def local_gradient(self, rank: int, step: int) -> np.ndarray:
        torch.nn.utils.vector_to_parameters(torch.from_numpy(self.x.copy()),
                                            self.model.parameters())
        self.model.zero_grad(set_to_none=True)
        x, y = batch(rank, step)
        functional.cross_entropy(self.model(x), y).backward()
        return flat(p.grad for p in self.model.parameters())

    def run(self, steps: int) -> Reference:
        beta = np.float32(self.options["momentum"])
        byzantine = self.options.get("byzantine_ranks", [])
        ef = self.options.get("error_feedback", False)
        scaled = self.options.get("scaled", False) or ef
        for step in range(steps):
            g = np.stack([self.local_gradient(r, step) for r in range(self.world)])
            self.m = beta * self.m + (np.float32(1) - beta) * g if beta else g
            sent = self.m.copy()
            sent[byzantine] = -sent[byzantine]
            scales = np.ones((self.world, len(self.bounds)), np.float32)
            if scaled:
                for k, (a, b) in enumerate(self.bounds):
                    u = sent[:, a:b] + self.e[:, a:b] if ef else sent[:, a:b]
                    scales[:, k] = np.abs(u).mean(axis=1, dtype=np.float64)
                    sent[:, a:b] = u
                    if ef:
                        self.e[:, a:b] = u - scales[:, k, None] * numpy_sign(u)
            vote, ties = numpy_vote(sent)
            gradient = vote.copy()
            for k, (a, b) in enumerate(self.bounds):
                gradient[a:b] *= scales[:, k].mean(dtype=np.float64)
            self.x = (self.x - np.float32(LR) * (gradient + np.float32(WEIGHT_DECAY) * self.x))
            self.x = self.x.astype(np.float32)
            self.params.append(self.x)
            self.gradients.append(gradient)
            self.votes.append(vote)
            self.ties += ties
        return self


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def four_ranks(tmp_path_factory) -> Path:
    """One spawn of WORLD gloo ranks running every scenario (the spawn is the slow part)."""
    return spawn(exactness_rank, WORLD, tmp_path_factory.mktemp("exactness"))


# The tests that read ``four_ranks`` run in one pytest-xdist process: split over two, each
# process would spawn the WORLD ranks again.
ONE_SPAWN = pytest.mark.xdist_group("comm-hooks-four-ranks")


def load_ranks(out: Path, name: str, world: int = WORLD) -> list[dict]:
    return [dict(np.load(out / f"{name}-{rank}.npz")) for rank in range(world)]


def assert_ranks_follow_the_reference(out: Path, name: str, honest=range(WORLD)) -> Reference:
    ranks = load_ranks(out, name)
    expected = Reference(SCENARIOS[name]).run(STEPS)
    for rank in honest:
        assert ranks[rank]["params"].tobytes() == ranks[honest[0]]["params"].tobytes(), rank
    observed = ranks[honest[0]]
    np.testing.assert_array_equal(observed["params"][0], expected.params[0])
    scaled = SCENARIOS[name].get("scaled") or SCENARIOS[name].get("error_feedback")
    for step in range(STEPS):
        grad = observed["grads"][step]
        if scaled:
            np.testing.assert_array_equal(numpy_sign(grad), expected.votes[step],
                                          err_msg=f"the vote of step {step + 1}")
            np.testing.assert_allclose(grad, expected.gradients[step], rtol=1e-5, atol=0)
        else:  # exactly +-1: the vote itself, not an average
            np.testing.assert_array_equal(grad, expected.votes[step],
                                          err_msg=f"the vote of step {step + 1}")
        # float32 rounding only; a wrong vote would be off by 2 lr = 0.02.
        np.testing.assert_allclose(observed["params"][step + 1], expected.params[step + 1],
                                   rtol=0, atol=2e-6, err_msg=f"parameters after {step + 1}")
    return expected


def assert_buckets_were_rebuilt(out: Path, name: str) -> None:
    layouts = json.loads(str(load_ranks(out, name)[0]["layouts"]))
    assert len(layouts[0]) == 1, "first iteration: one bucket"
    assert len(layouts[1]) >= 3, "rebuilt: several buckets"
    assert layouts[1] == layouts[-1]
    names = [n for bucket in layouts[1] for n in bucket]
    assert names != layouts[0][0] and sorted(names) == sorted(layouts[0][0])


# --------------------------------------------------------------------------------- tests
@ONE_SPAWN
@pytest.mark.parametrize("name", ["allgather", "sharded"])
def test_vote_equals_numpy_algorithm_1_through_the_bucket_rebuild(four_ranks, name,
                                                                   one_torch_thread):
    assert_buckets_were_rebuilt(four_ranks, name)
    expected = assert_ranks_follow_the_reference(four_ranks, name)
    assert expected.ties > 0, "with M = 4 some coordinates tie and the tie rule decides"


@ONE_SPAWN
def test_momentum_zero_is_signsgd_with_majority_vote(four_ranks, one_torch_thread):
    assert_ranks_follow_the_reference(four_ranks, "signsgd_sharded")


@ONE_SPAWN
def test_negating_rank_is_outvoted_exactly_as_numpy_algorithm_1(four_ranks, one_torch_thread):
    expected = assert_ranks_follow_the_reference(four_ranks, "byzantine_allgather",
                                                 honest=[0, 1, 2])
    clean = Reference(SCENARIOS["allgather"]).run(STEPS)
    assert any((a != b).any() for a, b in zip(expected.votes, clean.votes, strict=True)), \
        "the attack changed some vote (the scenario tests something)"


@ONE_SPAWN
@pytest.mark.parametrize("name", ["scaled_allgather", "error_feedback_sharded"])
def test_scaled_sign_and_error_feedback_equal_numpy(four_ranks, name, one_torch_thread):
    assert_ranks_follow_the_reference(four_ranks, name)


@ONE_SPAWN
def test_state_dict_round_trip_resumes_bit_identically(four_ranks):
    uninterrupted = load_ranks(four_ranks, "allgather")
    for rank, resumed in enumerate(load_ranks(four_ranks, "resume")):
        assert resumed["params"].tobytes() == uninterrupted[rank]["params"][-1].tobytes(), rank


def test_bytes_on_the_wire_per_rank_per_step(tmp_path):
    """Measured for M = 2 and M = 4 (d = 250k parameters in 2 buckets): allgather sends
    (M - 1) ceil(d/8) bytes per rank and step, sharded 2 (M - 1)/M ceil(d/8) <= 2 ceil(d/8),
    each plus the padding of every bucket's message to whole 64-bit words (< 8 bytes per
    bucket and message) and, on the socket, gloo's headers (~144 bytes per peer and call;
    512 allowed)."""
    measured = {}
    for world in (2, 4):
        out = spawn(bytes_rank, world, tmp_path / f"m{world}")
        measured[world] = [json.loads((out / f"bytes-{r}.json").read_text())
                           for r in range(world)]
    for world, ranks in measured.items():
        for rank, result in enumerate(ranks):
            for topology, row in result.items():
                payload, pad = math.ceil(row["d"] / 8), 8 * row["buckets"]
                if topology == "allgather":
                    low, high = (world - 1) * payload, (world - 1) * (payload + pad)
                else:  # the shards of a bucket differ by at most one word
                    low, high = 2 * (world - 1) / world * payload - world * pad, 2 * (payload + pad)
                headers = 512 * (world - 1) * row["calls"]
                where = (world, rank, topology, row)
                assert low <= row["hook_bytes"] <= high, where
                assert low <= row["os_bytes"] <= high + headers, where
    # Allgather's traffic grows with M - 1; sharded's stays below 2 ceil(d/8).
    for topology, growth in (("allgather", 3.0), ("sharded", 1.5)):
        ratio = measured[4][0][topology]["os_bytes"] / measured[2][0][topology]["os_bytes"]
        assert ratio == pytest.approx(growth, rel=0.02), topology


def docs_example() -> str:
    text = (ROOT / "docs" / "ddp_hook.md").read_text()
    found = re.search(r"<!-- ddp-hook-example -->\s*```python\n(.*?)```", text, re.S)
    assert found, "docs/ddp_hook.md has no ```python block after <!-- ddp-hook-example -->"
    return found.group(1)


def test_docs_example_runs_as_written_with_two_ranks(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(docs_example())
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(re.findall(r"final loss \d+\.\d+", run.stdout)) == 2, run.stdout
    saved = [torch.load(tmp_path / f"checkpoint-{r}.pt", weights_only=True) for r in (0, 1)]
    for key, value in saved[0]["model"].items():
        assert torch.equal(value, saved[1]["model"][key]), key
    names = {k.removeprefix("module.") for k in saved[0]["model"]}
    assert set(saved[0]["hook"]["momentum"]) == names
    # It learned the example's task (the class is the sign of the first input) on fresh data.
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 2))
    model.load_state_dict({k.removeprefix("module."): v for k, v in saved[0]["model"].items()})
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2000, 20), dtype=np.float32))
    accuracy = (model(x).argmax(1) == (x[:, 0] > 0).long()).float().mean().item()
    assert accuracy > 0.9, accuracy


# ----------------------------------------------------------------------------- NCCL / GPU
def nccl_rank(rank: int, world: int, store: str, out: str) -> None:
    torch.cuda.set_device(rank)
    init_rank(rank, world, store, backend="nccl")
    counter = CollectiveCounter(rank, world)
    for topology in ("allgather", "sharded"):
        np.savez(f"{out}/{topology}-{rank}.npz",
                 **train_scenario(dict(topology=topology, momentum=0.9), rank, f"cuda:{rank}"))
    counter.restore()
    Path(f"{out}/devices-{rank}.json").write_text(json.dumps(sorted(counter.devices)))
    close_rank()


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="no CUDA device here: the NCCL path needs a GPU")
def test_nccl_vote_on_cuda_tensors_equals_numpy_vote(tmp_path):
    """NCCL, one rank per GPU (up to 4): packed words stay on the GPU (every tensor handed to
    a collective is a CUDA tensor) and each step's gradient is the numpy vote of the momenta of
    the gradients the ranks fed the hook."""
    world = min(torch.cuda.device_count(), WORLD)
    out = spawn(nccl_rank, world, tmp_path)
    for rank in range(world):
        assert json.loads((out / f"devices-{rank}.json").read_text()) == ["cuda"]
    for topology in ("allgather", "sharded"):
        ranks = load_ranks(out, topology, world)
        m = np.zeros_like(ranks[0]["inputs"][0])
        for step in range(STEPS):
            g = np.stack([r["inputs"][step] for r in ranks])
            m = np.float32(0.9) * m + np.float32(0.1) * g
            vote, _ = numpy_vote(m)
            for rank, r in enumerate(ranks):
                np.testing.assert_array_equal(r["grads"][step], vote, err_msg=f"{rank} {step}")
                assert r["params"].tobytes() == ranks[0]["params"].tobytes()


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("options, named", [
    (dict(momentum=1.0), "momentum=1.0"),
    (dict(topology="ring"), "topology='ring'"),
    (dict(attack="colluding"), "attack='colluding'"),
    (dict(byzantine_ranks=[-1]), "byzantine_ranks=[-1]"),
])
def test_bad_state_arguments_fail_naming_the_value(options, named):
    with pytest.raises(ValueError, match=re.escape(named)) as error:
        SignumVoteState(**options)
    assert "\n" not in str(error.value)


def test_state_dict_needs_the_module_to_name_parameters():
    with pytest.raises(ValueError, match="module="):
        SignumVoteState().state_dict()
    state = SignumVoteState(module=nn.Linear(2, 2))
    with pytest.raises(ValueError, match="conv.weight"):
        state.load_state_dict({"momentum": {"conv.weight": torch.zeros(2)}})
