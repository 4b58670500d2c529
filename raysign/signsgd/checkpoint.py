"""Checkpoints of a distributed signSGD run: one file, read back with ``weights_only=True``.

A checkpoint holds the configuration, the step, and every worker's replica state (parameters,
batch-norm buffers, momentum, learning-rate schedule, data position and random-generator
states; see ``raysign.signsgd.replica.Replica.state``), so that a run killed after step k and
resumed ends bit-identical to one that was never interrupted.

A save is atomic: the file is written under a temporary name in the same folder, flushed to
disk (``fsync``), renamed over the real name, and the folder is flushed, so a run killed while
saving leaves the previous checkpoint in place (and at worst a stray ``checkpoint.pt.tmp``,
overwritten by the next save). A URI destination gets the same from
``raysign.storage.upload_file(atomic=True)``: a temporary key moved onto the real one. Every
checkpoint carries a BLAKE2b digest of its content (``content_digest``), checked on load: a
corrupted, truncated or half-copied checkpoint is refused with a one-line ``CheckpointError``
naming the file. Checkpoints written before digests existed load with a warning.

A checkpoint is found by its run folder or its file, a local path or a URI
(``open_checkpoint``); a URI's run folder is downloaded into local staging, and the run that
continues from it keeps syncing to the same URI (``raysign.results.RunDir``).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from raysign import storage
from raysign.results import RunDir

FORMAT = "raysign-signsgd-checkpoint"
VERSION = 1
# Fields that may differ between the run that wrote a checkpoint and the one resuming it (the
# data set is the same wherever its folder lies: a resume on another cluster may read it
# from elsewhere).
RESUMABLE_CHANGES = {"epochs", "max_steps", "results_dir", "data_dir", "name", "eval_every",
                     "checksum_every", "checkpoint_every"}
CHECKPOINT_NAME = "checkpoint.pt"
# Config fields added after checkpoints of this version were first written, with the value
# every run had before them: a checkpoint that lacks one was written with that value.
ADDED_FIELDS = {"lr_schedule": "constant", "lr_warmup_steps": 0, "lr_decay_steps": 0,
                "lr_min": 0.0, "lr_step_size": 0, "lr_gamma": 0.1, "accumulation_steps": 1,
                "precision": "fp32", "clip_grad_norm": 0.0}


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, corrupted, foreign or from an incompatible
    run."""


def content_digest(payload: dict[str, Any]) -> str:
    """BLAKE2b (32 bytes, hex) of everything in ``payload`` but its ``"digest"`` entry: every
    tensor's dtype, shape and bytes, and every other value's type and ``repr``, in order."""
    h = hashlib.blake2b(digest_size=32)
    _hash_value(h, {k: v for k, v in payload.items() if k != "digest"})
    return h.hexdigest()


def _hash_value(h: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{flat.dtype}{tuple(value.shape)}".encode())
        h.update(flat.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        h.update(f"D{len(value)}".encode())
        for key, item in value.items():
            _hash_value(h, key)
            _hash_value(h, item)
    elif isinstance(value, (list, tuple)):
        h.update(f"{type(value).__name__[0]}{len(value)}".encode())
        for item in value:
            _hash_value(h, item)
    else:  # numbers, strings, None: repr is exact (floats round-trip)
        text = f"{type(value).__name__}:{value!r}".encode()
        h.update(len(text).to_bytes(8, "little"))
        h.update(text)


def save_checkpoint(path: str | Path, *, config: dict[str, Any], step: int,
                    workers: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> Path:
    """Write the checkpoint atomically (module docstring): temporary file, fsync, rename,
    fsync of the folder."""
    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, "config": config, "step": step,
               "workers": workers, "extra": extra or {}}
    payload["digest"] = content_digest(payload)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power loss
    finally:
        os.close(folder)
    return path


def open_checkpoint(location: str | Path) -> tuple[RunDir, Path]:
    """The run folder of a checkpoint, to continue writing into, and the checkpoint's file on
    this machine. ``location``: the checkpoint file or the run folder holding
    ``checkpoint.pt``, a local path or a URI (whose run folder is downloaded; the returned
    RunDir syncs back to it)."""
    text = str(location)
    if storage.is_uri(text):
        found = storage.kind(text)
        if found == "missing":
            raise CheckpointError(f"checkpoint {text!r} does not exist")
        folder, name = storage.split_parent(text) if found == "file" else (text, CHECKPOINT_NAME)
        run_dir = RunDir.open(folder)
        return run_dir, run_dir.file(name)
    path = Path(location)
    if not path.exists():
        raise CheckpointError(f"checkpoint {text!r} does not exist")
    if path.is_dir():
        return RunDir(path), path / CHECKPOINT_NAME
    return RunDir(path.parent), path


def load_checkpoint(path: str | Path, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read and check a checkpoint; if ``config`` is given, every field outside
    ``RESUMABLE_CHANGES`` must match the checkpoint's."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated / non-torch files
        first_line = (str(err).strip().splitlines() or [""])[0]
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or not a torch file "
                              f"({type(err).__name__}: {first_line})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a raysign signSGD checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{str(path)!r} has version {payload.get('version')}; "
                              f"this raysign reads version {VERSION}")
    if "digest" not in payload:
        warnings.warn(f"checkpoint {str(path)!r} has no digest (written before digests); "
                      "loading it unchecked", stacklevel=2)
    elif content_digest(payload) != payload["digest"]:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupted: its content does not "
                              "match the digest it was saved with")
    if config is not None:
        saved = {**ADDED_FIELDS, **payload["config"]}
        differing = sorted(k for k in set(saved) | set(config)
                           if k not in RESUMABLE_CHANGES and saved.get(k) != config.get(k))
        if differing:
            details = ", ".join(f"{k}: {saved.get(k)!r} vs {config.get(k)!r}" for k in differing)
            raise CheckpointError(f"checkpoint {str(path)!r} is from a different run ({details})")
    return payload
