"""The majority-vote DDP hook inside Ray Train: building blocks for ``train_loop_per_worker``.

``raysign.comm_hooks`` is pure ``torch.distributed``; this module is the Ray Train glue
around it (docs/ddp_hook.md, "With Ray Train"):

- ``prepare_vote_hook(model, **state_kwargs)``: ``ray.train.torch.prepare_model`` (device and
  DDP wrapper) plus ``register_comm_hook(SignumVoteState(...), signum_vote_hook)``;
- ``save_checkpoint(directory, model, optimizer, hook_state, step)``: a
  ``ray.train.Checkpoint`` for ``ray.train.report(metrics, checkpoint=...)`` holding the
  model, the optimizer, the step and every rank's hook state;
- ``load_checkpoint(checkpoint, model, optimizer, hook_state)``: restores all of it and
  returns the step to continue from.

The hook's momentum is per rank (each rank's momentum follows its own gradients; only the
vote, and so the parameters, are shared), so every rank writes its own
``hook-rank<r>.pt`` into the checkpoint (Ray Train merges the ranks' files into one
checkpoint folder) and rank 0 alone writes ``model.pt`` (model, optimizer and step, the same
on every rank). A checkpoint resumes only on the same number of workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn

from raysign.comm_hooks import SignumVoteState, signum_vote_hook

__all__ = ["load_checkpoint", "prepare_vote_hook", "save_checkpoint"]

MODEL_FILE = "model.pt"


def hook_file(rank: int) -> str:
    """The checkpoint file holding rank ``rank``'s hook state."""
    return f"hook-rank{rank}.pt"


def prepare_vote_hook(model: nn.Module, **state_kwargs: Any
                      ) -> tuple[nn.parallel.DistributedDataParallel, SignumVoteState]:
    """Move ``model`` to this worker's device, wrap it in DDP and register the majority-vote
    hook; ``state_kwargs`` go to ``SignumVoteState`` (``momentum``, ``topology``, ...).
    Returns the DDP model and the hook state (keep it: it is what ``save_checkpoint`` saves).

    Call it inside ``train_loop_per_worker``, once the process group is up; build the
    optimizer afterwards, a plain ``torch.optim.SGD`` without momentum."""
    if "module" in state_kwargs:
        raise ValueError("prepare_vote_hook sets SignumVoteState's module itself; drop "
                         "module= from state_kwargs")
    ddp = ray.train.torch.prepare_model(model, parallel_strategy="ddp")
    if not isinstance(ddp, nn.parallel.DistributedDataParallel):
        # prepare_model leaves a single worker's model unwrapped; the hook needs DDP.
        device = ray.train.torch.get_device()
        device_ids = [device] if device.type == "cuda" else None
        ddp = nn.parallel.DistributedDataParallel(ddp, device_ids=device_ids)
    state = SignumVoteState(module=ddp, **state_kwargs)
    ddp.register_comm_hook(state, signum_vote_hook)
    return ddp, state


def save_checkpoint(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    hook_state: SignumVoteState, step: int) -> ray.train.Checkpoint:
    """Write this rank's share of a checkpoint after ``step`` completed steps into
    ``directory`` (a fresh one per call, e.g. a ``tempfile.TemporaryDirectory`` around
    ``ray.train.report``) and return it as a ``ray.train.Checkpoint``. Every rank must call
    it: each saves its own hook state; rank 0 also saves the model (without its DDP wrapper),
    the optimizer and the step."""
    directory = Path(directory)
    rank = dist.get_rank(hook_state.group())
    torch.save({"step": step, "hook": hook_state.state_dict()}, directory / hook_file(rank))
    if rank == 0:
        torch.save({"step": step, "model": _unwrapped(model).state_dict(),
                    "optimizer": optimizer.state_dict()}, directory / MODEL_FILE)
    return ray.train.Checkpoint.from_directory(str(directory))


def load_checkpoint(checkpoint: ray.train.Checkpoint, model: nn.Module,
                    optimizer: torch.optim.Optimizer, hook_state: SignumVoteState) -> int:
    """Restore ``save_checkpoint``'s model, optimizer and this rank's hook state (momentum)
    onto the prepared model, its optimizer and hook state; returns the number of steps done.
    The checkpoint must come from a run with the same number of workers."""
    rank = dist.get_rank(hook_state.group())
    world = dist.get_world_size(hook_state.group())
    with checkpoint.as_directory() as folder:
        folder = Path(folder)
        ranks = sorted(int(p.stem.removeprefix("hook-rank")) for p in folder.glob("hook-rank*.pt"))
        if ranks != list(range(world)):
            raise ValueError(f"checkpoint {checkpoint.path!r} holds hook states of ranks "
                             f"{ranks}; this run has {world} workers (ranks 0..{world - 1}): "
                             f"resume on as many workers as the checkpoint was saved from")
        main = torch.load(folder / MODEL_FILE, weights_only=True)
        own = torch.load(folder / hook_file(rank), weights_only=True)
    if own["step"] != main["step"]:
        raise ValueError(f"checkpoint {checkpoint.path!r} mixes steps: {MODEL_FILE} has step "
                         f"{main['step']}, {hook_file(rank)} step {own['step']}")
    _unwrapped(model).load_state_dict(main["model"])
    optimizer.load_state_dict(main["optimizer"])
    hook_state.load_state_dict(own["hook"])
    return int(main["step"])


def _unwrapped(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
