"""Checkpoints of a ``SignSGDTrainer`` run: saving every replica's state and resuming from it.

A checkpoint (``raysign.signsgd.checkpoint``, ``checkpoint.pt`` in the run folder) holds the
config, the step, every worker's replica state (model, momentum, schedule, data position and
random generators), the vote actors' aggregator states, the accuracy curve and a record of the
workload. A resume loads them into freshly started actors, which then continue bit-identically
to an undisturbed run; the workload must be the same one (kind, parameter count, training-set
size).

The run folder (``raysign.results.RunDir``) may be bound for a URI: it is synced there after
every checkpoint and at the end of the run, and a run resumed from a URI keeps syncing to it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ray

from raysign.config import to_dict
from raysign.results import read_jsonl
from raysign.signsgd.checkpoint import (
    CheckpointError,
    load_checkpoint,
    open_checkpoint,
    save_checkpoint,
)
from raysign.signsgd.workload import describe_workload


class RunCheckpoints:
    """Saving and resuming of ``SignSGDTrainer`` (a part of that class). Uses its ``config``,
    ``workers``, ``votes``, ``run_dir``, ``resyncs``, ``workload``, ``d``, ``train_size``,
    ``_vote_states`` and ``_on_live_worker``."""

    def save_checkpoint(self, step: int, curve: list, identical: bool) -> Path:
        """Write ``checkpoint.pt`` and sync the run folder (with the metrics so far) to its
        destination."""
        states = [self._on_live_worker(lambda w: w.state.remote(), [r])
                  for r in range(len(self.workers))]
        path = save_checkpoint(self.run_dir.file("checkpoint.pt"), config=to_dict(self.config),
                               step=step, workers=states,
                               extra={"curve": [list(c) for c in curve],
                                      "votes": ray.get([v.state.remote() for v in self.votes]),
                                      "identical": identical, "resyncs": self.resyncs,
                                      "workload": self._workload_record()})
        self.run_dir.sync()
        return path

    def _restore(self, resume: str | Path) -> tuple[int, list, bool]:
        """Load a checkpoint (file or run folder, local path or URI) into the workers;
        continue its run folder from the next step. A checkpoint inside this trainer's own
        run folder (one the caller opened with ``open_checkpoint``) keeps that RunDir and so
        its destination."""
        run_dir, path = open_checkpoint(resume)
        payload = load_checkpoint(path, to_dict(self.config))
        step = int(payload["step"])
        if len(payload["workers"]) != len(self.workers):
            raise CheckpointError(f"checkpoint has {len(payload['workers'])} workers, "
                                  f"this run {len(self.workers)}")
        saved = payload["extra"].get("workload")  # absent in checkpoints before workloads
        if saved is not None:
            mine = self._workload_record()
            differing = [f"{k}: {saved.get(k)!r} vs {mine[k]!r}"
                         for k in ("kind", "num_parameters", "train_size")
                         if saved.get(k) != mine[k]]
            if differing:
                raise CheckpointError(f"checkpoint {str(path)!r} is from another workload "
                                      f"({', '.join(differing)})")
        ray.get([w.load_state.remote(st) for w, st in
                 zip(self.workers, payload["workers"], strict=True)])
        ray.get([v.load_state.remote(st) for v, st in
                 zip(self.votes, payload["extra"].get("votes", []), strict=False)])
        self._vote_states = payload["extra"].get("votes") or None
        if run_dir.path.resolve() != self.run_dir.path.resolve():
            self.run_dir = run_dir
        metrics = self.run_dir.file("metrics.jsonl")
        kept = [r for r in read_jsonl(metrics) if r["step"] <= step] if metrics.exists() else []
        metrics.write_text("".join(json.dumps(r) + "\n" for r in kept))
        extra = payload["extra"]
        self.resyncs = int(extra.get("resyncs", 0))
        print(f"[raysign] resumed {self.run_dir.location} after step {step}")
        return step + 1, [tuple(c) for c in extra.get("curve", [])], bool(
            extra.get("identical", True))

    def _workload_record(self) -> dict[str, Any]:
        return describe_workload(self.workload, self.d, self.train_size)

