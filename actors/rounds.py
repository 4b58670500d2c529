"""One synchronous round of distributed signSGD, driven from the driver (``SignSGDTrainer``).

One round (see ``raysign.signsgd`` for the algorithm and ``raysign.wire`` for the messages)::

    worker i: compute(step) -> S messages (one per vote shard) + stats     [ObjectRefs]
    vote s:   vote(step, msg_1s, ..., msg_Ms) -> result message + stats     [ObjectRefs]
    worker i: apply(step, result_1, ..., result_S) -> stats

Two transports carry it. ``objects``: the driver only passes ObjectRefs between actors and
never fetches a payload (the omniscient attacks always take this path: their adversaries see
the honest messages first). ``direct`` (``SignWorker.exchange``): every worker sends its
messages to the vote actors itself and applies the results they return; the driver waits for
the workers' stats. Either way the driver fetches the small stats dicts, from which the step
record and its stage times are made (``raysign.signsgd.records``).

Faults inside a round: a worker whose process dies is left out of the vote (the round goes on
with the remaining votes) and is restarted by Ray and re-synced after it
(``raysign.actors.recovery``); a vote actor that dies is restarted and the round voted again
over the object path, with every stateful aggregator put back in its state after the last
complete round.
"""

from __future__ import annotations

from typing import Any

import ray

from raysign.actors.recovery import call_when_alive
from raysign.actors.vote import keeps_state
from raysign.signsgd.attacks import OMNISCIENT_ATTACKS

ROUND_ATTEMPTS = 4
# Direct transport: how long a vote actor waits for a worker's message before it votes
# over the messages that came (the driver tells it sooner when it sees a worker die).
DIRECT_TIMEOUT_S = 120.0


class RoundProtocol:
    """The round of ``SignSGDTrainer`` (a part of that class). Uses its ``config``,
    ``workers``, ``votes``, ``byzantine``, ``_incarnations`` (per worker, the process last
    synced), ``_vote_tag``, ``_vote_states``, ``_vote_setup()`` and ``_record(...)``, which
    turns a complete round's stats into the step record."""

    def round(self, step: int, with_density: bool = False) -> dict[str, Any]:
        """One synchronous round, over the configured transport (the object path for the
        omniscient attacks, whose adversaries must see the honest messages first). A worker
        whose process dies is left out of the vote (the round goes on with the remaining
        votes), restarted by Ray and re-synced from a live honest replica; a vote actor that
        dies is restarted and its vote retried."""
        s = self.config.vote_shards
        live = list(range(self.config.num_workers))
        failed: set[int] = set()
        omniscient = self.config.attack in OMNISCIENT_ATTACKS and bool(self.byzantine)
        # Per live worker, the refs of what it sends this round: S messages, then its stats.
        if self.config.transport == "direct" and not omniscient:
            done, failed, compute_refs = self._direct_round(step, with_density)
            live = [i for i in live if i not in failed]
            if done is not None:
                return self._record(step, *done, failed, with_density)
            self._reset_restarted_votes()
        else:
            compute_refs = {i: self.workers[i].compute.options(num_returns=s + 1).remote(
                step, with_density, self._incarnations[i]) for i in live}
        if omniscient:
            # The adversaries see the honest messages of this round before sending theirs.
            _, dead = get_each({i: compute_refs[i][s] for i in live}, "compute")
            failed |= dead
            live = [i for i in live if i not in dead]
            honest = [compute_refs[i][j] for i in live if i not in self.byzantine
                      for j in range(s)]
            for i in live:
                if i in self.byzantine:
                    compute_refs[i] = self.workers[i].craft_omniscient_messages.options(
                        num_returns=s + 1).remote(step, *honest)
        for _ in range(ROUND_ATTEMPTS):
            voted = [self.votes[j].vote.options(num_returns=2).remote(
                step, *[compute_refs[i][j] for i in live], senders=tuple(live))
                for j in range(s)]
            applied = {i: self.workers[i].apply.remote(step, *[v[0] for v in voted])
                       for i in live}
            worker_stats, dead = get_each({i: compute_refs[i][s] for i in live}, "compute")
            if dead:
                failed |= dead
                live = [i for i in live if i not in dead]
                if not live:
                    raise RuntimeError(f"step {step}: every worker died")
                continue
            try:
                vote_stats = ray.get([v[1] for v in voted])
            except ray.exceptions.RayActorError as err:
                print(f"[raysign] step {step}: a vote actor died ({err.__class__.__name__}); "
                      "retrying the vote after its restart")
                self._reset_restarted_votes()
                continue
            apply_stats, dead = get_each(applied, "apply")
            failed |= dead
            break
        else:
            raise RuntimeError(f"step {step}: no complete round after {ROUND_ATTEMPTS} attempts")
        return self._record(step, worker_stats, vote_stats, apply_stats, failed, with_density)

    def _reset_restarted_votes(self) -> None:
        """Before a round is voted again: a restarted vote actor ran its constructor with the
        first configuration's arguments, so give it the current one (a no-op unless
        reconfigured); then put every stateful aggregator (centered clipping's center, a
        ByzFL chain's state) back in its state after the last complete round - the restarted
        one lost it, and the others may have voted the failed round already."""
        for v in self.votes:
            if call_when_alive(lambda v=v: v.tag.remote()) != self._vote_tag:
                ray.get(v.reset.remote(*self._vote_setup(), tag=self._vote_tag))
        if self._stateful_votes():
            states = self._vote_states or [{"center": None}] * len(self.votes)
            ray.get([v.load_state.remote(st) for v, st in zip(self.votes, states, strict=True)])

    def _stateful_votes(self) -> bool:
        """Whether the vote actors' aggregator carries state from round to round (centered
        clipping's center, or ``state`` / ``load_state`` methods: a ByzFL chain's)."""
        aggregate = self._vote_setup()[1]
        return hasattr(aggregate, "center") or keeps_state(aggregate)

    def _keep_vote_states(self) -> None:
        """After a complete round: hold each stateful aggregator's state where a restart of
        its actor cannot lose it (objects the driver owns, fetched only to reload them)."""
        if self._stateful_votes():
            states = [v.state.remote() for v in self.votes]
            ray.wait(states, num_returns=len(states), fetch_local=False)
            self._vote_states = states

    def _direct_round(self, step: int, with_density: bool):
        """One round with the direct transport (``SignWorker.exchange``). Returns
        ``(stats, failed, None)`` when every live worker applied the vote, where ``stats`` is
        (worker, vote, apply stats); a worker that dies is left out of the vote (the driver
        tells the vote actors at once). If a vote actor died, returns ``(None, failed,
        compute_refs)`` with the live workers' messages and stats of this step as object refs
        (``resend``), for the object path."""
        s = self.config.vote_shards
        senders = tuple(range(self.config.num_workers))
        refs = {self.workers[i].exchange.remote(step, self.votes, senders, DIRECT_TIMEOUT_S,
                                                with_density, self._incarnations[i]): i
                for i in senders}
        results, failed, vote_died = {}, set(), False
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            rank = refs[ready[0]]
            try:
                results[rank] = ray.get(ready[0])
            except ray.exceptions.RayTaskError as err:
                # Raised inside the worker's call: a vote actor died under it.
                if not isinstance(err, ray.exceptions.RayActorError):
                    raise RuntimeError(f"worker rank {rank} failed in exchange: {err}") from err
                vote_died = True
            except ray.exceptions.RayActorError:  # the worker's own process died
                failed.add(rank)
                for vote in self.votes:
                    vote.drop.remote(step, rank)
        if not results and not vote_died:
            raise RuntimeError(f"step {step}: every worker died")
        if not vote_died:
            ranks = sorted(results)
            stats = ([results[i][0] for i in ranks], results[ranks[0]][1],
                     [results[i][2] for i in ranks])
            return stats, failed, None
        print(f"[raysign] step {step}: a vote actor died; voting this step again through the "
              "object store after its restart")
        live = [i for i in senders if i not in failed]
        return None, failed, {i: self.workers[i].resend.options(num_returns=s + 1).remote(step)
                              for i in live}


def get_each(refs: dict[int, Any], what: str) -> tuple[list[Any], set[int]]:
    """``ray.get`` each worker's result; workers whose process died are returned as dead.
    Any other failure is a bug or bad input and surfaces here with the worker's rank."""
    results, dead = [], set()
    for rank, ref in refs.items():
        try:
            results.append(ray.get(ref))
        except ray.exceptions.RayActorError:
            dead.add(rank)
        except ray.exceptions.RayTaskError as err:
            raise RuntimeError(f"worker rank {rank} failed in {what}: {err}") from err
    return results, dead

