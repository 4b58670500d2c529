"""Fault-injection drills: ways to make the signSGD actors fail on purpose, in one place.

The fault model of the actor path (see ``raysign.actors.trainer``) says a worker or a vote actor
may die at any moment and a worker may produce a non-finite gradient; the tests and an operator
rehearsing on a live cluster need to cause exactly those faults at a chosen step. The drills are
actor methods (Ray calls them like any other), mixed into the production classes:

- ``WorkerDrills.crash()``: the worker process exits at once, as a killed node would;
- ``WorkerDrills.poison_next_gradient(count)``: the worker's next gradient has ``count`` NaN
  entries, as a numerically broken batch would (the worker must abstain, not crash the round);
- ``VoteDrills.crash_at(step)``: the vote actor's process exits when it starts voting on
  ``step`` (a restarted actor has no such plan).

The production code calls one hook per class and is otherwise unaware of the drills:
``SignWorker`` passes every fresh gradient through ``WorkerDrills.drill_gradient`` and
``VoteActor.vote`` calls ``VoteDrills.drill_vote`` first. With no drill planned both hooks
do nothing.
"""

from __future__ import annotations

import os

import torch


class WorkerDrills:
    """Drills of a ``raysign.actors.worker.SignWorker``."""

    _nan_entries = 0  # entries of the next gradient to overwrite with NaN (0: no drill)

    def crash(self) -> None:
        """Exit the worker process at once (Ray sees the actor die and restarts it)."""
        os._exit(1)

    def poison_next_gradient(self, count: int = 1) -> None:
        """Make the next gradient's first ``count`` entries NaN."""
        self._nan_entries = count

    def cancel_drills(self) -> None:
        """Forget a planned poisoned gradient (a reset replica starts without one, as a new
        process would)."""
        self._nan_entries = 0

    def drill_gradient(self, grad: torch.Tensor) -> None:
        """The hook: poison ``grad`` (in place) if a drill is planned for it."""
        if self._nan_entries:
            grad[: self._nan_entries] = float("nan")
            self._nan_entries = 0


class VoteDrills:
    """Drills of a ``raysign.actors.vote.VoteActor`` (and ``DirectVoteActor``)."""

    _crash_at_step: int | None = None

    def crash_at(self, step: int) -> None:
        """Exit the process when voting on ``step``; the restarted actor has no such plan."""
        self._crash_at_step = step

    def drill_vote(self, step: int) -> None:
        """The hook, at the start of every vote: exit if the crash drill names ``step``."""
        if self._crash_at_step == step:
            os._exit(1)
