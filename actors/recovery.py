"""Fault recovery of ``SignSGDTrainer`` outside the vote: replica checks and re-syncs.

Every ``checksum_every`` steps and at the end, the driver compares a digest of every honest
replica's parameters; a replica that diverges is reported and re-synced (parameters, momentum,
schedule and data position) from a replica holding the majority digest.

Faults outside the round: a worker that dies during evaluation, the replica check or a
checkpoint save is restarted by Ray and re-synced, and the call is retried (evaluation on
another live replica). Every worker process has an incarnation id, new in each process Ray
starts; the driver passes the one it last synced with every round, and a worker restarted
between rounds (a fresh replica) abstains from that round and is re-synced after it, so it
never votes from a fresh replica.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import ray

from raysign.actors.placement import MAX_RESTARTS


class ReplicaRecovery:
    """Replica checks and re-syncs of ``SignSGDTrainer`` (a part of that class). Uses its
    ``config``, ``workers``, ``honest``, ``byzantine``, ``resyncs``, ``test_refs``, ``_step``
    (the last complete round) and ``_incarnations``."""

    def _resync(self, ranks: list[int], step: int) -> int:
        """Copy model, momentum and schedule from a live honest replica holding the majority
        digest into restarted workers, and move their data streams to where they would be
        after ``step`` steps. Returns the source rank."""
        source, _ = self._majority(step, exclude=ranks)
        print(f"[raysign] workers {ranks} failed; restarted and re-synced from rank {source}")
        state = self.workers[source].state.remote()
        for r in ranks:
            # The restarted process ran its constructor with the first configuration's
            # arguments: give it the current one before the state (matters after reconfigure).
            call_when_alive(lambda r=r: self.workers[r].reset.remote(self.config,
                                                                     r in self.byzantine))
            self._load(r, state, step)
        self.resyncs += len(ranks)
        return source

    def _load(self, rank: int, state: Any, step: int) -> None:
        """Put replica ``state`` (model, momentum, schedule) into worker ``rank``, its data
        stream after ``step`` steps, and take its process as the synced one."""
        ray.get(self.workers[rank].load_state.remote(state, False))
        ray.get(self.workers[rank].seek.remote(step))
        self._incarnations[rank] = ray.get(self.workers[rank].incarnation_id.remote())

    def _majority(self, step: int, exclude: list[int] = ()) -> tuple[int, dict[int, str]]:
        """The first honest rank (outside ``exclude``) whose parameter digest most live
        honest replicas share, and every live one's digest; a worker found dead is
        restarted and re-synced from the others first (data stream after ``step`` steps)."""
        while True:
            candidates = [r for r in self.honest if r not in exclude]
            if not candidates:
                raise RuntimeError(f"no live honest replica outside {sorted(exclude)} to "
                                   "re-sync from")
            refs = {r: self.workers[r].checksum.remote() for r in candidates}
            digests, dead = {}, []
            for r, ref in refs.items():
                try:
                    digests[r] = ray.get(ref)
                except ray.exceptions.RayActorError:
                    dead.append(r)
            if not dead:
                break
            self._resync(dead, step)
        counts = {dg: sum(1 for d in digests.values() if d == dg) for dg in digests.values()}
        best = max(counts.values())
        return next(r for r, dg in digests.items() if counts[dg] == best), digests

    def _on_live_worker(self, call: Callable[[Any], Any], ranks: list[int]) -> Any:
        """``ray.get(call(worker))`` on the first of ``ranks`` that answers; a dead one is
        restarted and re-synced before the next is tried (and, if none answers, retried)."""
        for _ in range(MAX_RESTARTS + 1):
            for r in ranks:
                try:
                    return ray.get(call(self.workers[r]))
                except ray.exceptions.RayActorError:
                    print(f"[raysign] worker {r} died outside a round; restarting and "
                          "re-syncing it")
                    self._resync([r], self._step)
        raise RuntimeError(f"no worker of {ranks} answered after {MAX_RESTARTS} restarts")

    def evaluate(self) -> dict[str, float]:
        """The workload's test metrics on the first honest replica that answers (built-in:
        ``{"test_accuracy": ...}``); empty when the workload has no test set."""
        if self.test_refs is None:
            return {}
        return self._on_live_worker(lambda w: w.evaluate.remote(*self.test_refs), self.honest)

    def check_replicas(self, step: int | None = None) -> tuple[bool, int]:
        """Compare honest replicas' parameter digests; re-sync divergent ones (model,
        momentum, schedule, and data stream after ``step`` steps, default the last round)
        from a replica holding the majority digest. Returns (all identical before re-sync,
        number re-synced)."""
        step = self._step if step is None else step
        source, digests = self._majority(step)
        divergent = [r for r, dg in digests.items() if dg != digests[source]]
        if divergent:
            print(f"[raysign] replicas {divergent} diverged from the majority (rank {source}); "
                  "re-syncing")
            state = self.workers[source].state.remote()
            for r in divergent:
                self._load(r, state, step)
        return not divergent, len(divergent)


def call_when_alive(call: Callable[[], Any], timeout: float = 120.0) -> Any:
    """``ray.get(call())``, retried while the actor is restarting."""
    deadline = time.time() + timeout
    while True:
        try:
            return ray.get(call())
        except ray.exceptions.ActorUnavailableError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)

