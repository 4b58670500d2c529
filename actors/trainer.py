"""The driver of distributed signSGD: placement, synchronous rounds, replica checks, results.

One round (see ``raysign.signsgd`` for the algorithm and ``raysign.wire`` for the messages)::

    worker i: compute(step) -> S messages (one per vote shard) + stats     [ObjectRefs]
    vote s:   vote(step, msg_1s, ..., msg_Ms) -> result message + stats     [ObjectRefs]
    worker i: apply(step, result_1, ..., result_S) -> stats

The driver only passes ObjectRefs between actors; payloads go from worker to vote actor to
worker through Ray's object store, never through the driver. It fetches the small stats dicts
to time the round's five stages:

- compress: sign + pack on the worker (the slowest worker);
- gather: from the last worker's message being ready to the last vote actor starting;
- vote: validation + majority vote (the slowest shard);
- broadcast: from the last vote result being ready to the last worker starting to apply it;
- decompress: unpack + update on the worker (the slowest worker).

Sender identity: at start-up the driver draws one random 32-byte key per worker and hands it
to that worker and to every vote actor as a constructor argument (never with the messages);
every message carries a keyed BLAKE2b MAC of its header and body (``raysign.wire``), and a
vote actor rejects, logging the sender it claims, a message whose MAC does not verify under
its sender's key, a message naming another sender, and a sender's second message.

Every ``checksum_every`` steps and at the end, the driver compares a digest of every honest
replica's parameters; a replica that diverges is reported and re-synced (parameters, momentum,
schedule and data position) from a replica holding the majority digest.

Faults outside the round: a worker that dies during evaluation, the replica check or a
checkpoint save is restarted by Ray and re-synced, and the call is retried (evaluation on
another live replica). Every worker process has an incarnation id, new in each process Ray
starts; the driver passes the one it last synced with every round, and a worker restarted
between rounds (a fresh replica) abstains from that round and is re-synced after it, so it
never votes from a fresh replica.

The run folder (``raysign.results.RunDir``) may be bound for a URI: it is synced there after
every checkpoint and at the end of the run, and a run resumed from a URI keeps syncing to it.

What is trained is a workload (``raysign.signsgd.workload``): the built-in one the config
names, or ``workload=Workload(model_fn, loss_fn, train_data, ...)``, checked on the driver
before any actor starts (see docs/api.md).
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from raysign import wire
from raysign.actors.byzantine import ByzantineWorker
from raysign.actors.cluster import ActorResources, check_inline_limit, worker_resources
from raysign.actors.ray_data import READ_CPUS, RayDataSource, probe
from raysign.actors.vote import DirectVoteActor, VoteActor
from raysign.actors.worker import SignWorker
from raysign.config import to_dict
from raysign.data import load_images
from raysign.results import RunDir, read_jsonl
from raysign.signs import shard_bounds
from raysign.signsgd.attacks import OMNISCIENT_ATTACKS
from raysign.signsgd.checkpoint import (
    CheckpointError,
    load_checkpoint,
    open_checkpoint,
    save_checkpoint,
)
from raysign.signsgd.config import SignSGDConfig
from raysign.signsgd.models import build_model, num_parameters
from raysign.signsgd.report import STAGES, write_figures
from raysign.signsgd.workload import (
    Workload,
    check_workload,
    data_length,
    data_parts,
    describe_workload,
    is_ray_dataset,
)

VOTE_CPUS = 0.1
MAX_RESTARTS = 3
ROUND_ATTEMPTS = 4
# Direct transport: how long a vote actor waits for a worker's message before it votes
# over the messages that came (the driver tells it sooner when it sees a worker die).
DIRECT_TIMEOUT_S = 120.0


@dataclass
class RunSummary:
    """What a finished run reports (also written to ``summary.json``)."""

    test_accuracy: float
    steps: int
    num_parameters: int
    bytes_sent_per_worker_per_step: float
    fp32_bytes_per_step: float
    compression_ratio: float
    stage_seconds: dict[str, float]
    replicas_identical: bool
    resyncs: int
    rejected_payloads: int
    wall_seconds: float
    run_dir: str
    # (step, headline metric): test accuracy, or a user eval_fn's first metric.
    accuracy_curve: list[tuple[int, float]] = field(default_factory=list)
    test_metrics: dict[str, float] = field(default_factory=dict)  # the last evaluation


def round_stage_times(worker_stats: list[dict], vote_stats: list[dict],
                      apply_stats: list[dict]) -> dict[str, float]:
    """The five-stage split of one round from the actors' timestamps (seconds)."""
    compress_end = max(s["t_compress_end"] for s in worker_stats)
    vote_start = max(s["t_vote_start"] for s in vote_stats)
    vote_end = max(s["t_vote_end"] for s in vote_stats)
    apply_start = max(s["t_apply_start"] for s in apply_stats)
    return {
        "compute": max(s["t_grad"] - s["t_start"] for s in worker_stats),
        "compress": max(s["t_compress_end"] - s["t_grad"] for s in worker_stats),
        "gather": max(0.0, vote_start - compress_end),
        "vote": max(s["t_vote_end"] - s["t_vote_start"] for s in vote_stats),
        "broadcast": max(0.0, apply_start - vote_end),
        "decompress": max(s["t_apply_end"] - s["t_apply_start"] for s in apply_stats),
    }


class SignSGDTrainer:
    """Runs one ``SignSGDConfig`` on the connected Ray cluster, on the built-in workload the
    config names or on ``workload`` (a user's model, loss and data: docs/api.md), which is
    checked here, before any Ray call (``ConfigError`` naming the callable at fault)."""

    def __init__(self, config: SignSGDConfig, run_dir: RunDir | None = None,
                 progress: bool = True, worker_options: ActorResources | None = None, *,
                 workload: Workload | None = None):
        self.workload = workload
        # A ray.data.Dataset training set: its row count and first batch, read by a task.
        self._ray_data: RayDataSource | None = None
        sample = None
        if workload is not None and is_ray_dataset(workload.train_data):
            columns = tuple(workload.columns)
            num_rows, batch = probe(workload.train_data, columns, config.batch_size)
            self._ray_data = RayDataSource(workload.train_data, columns, num_rows)
            sample = (num_rows, batch)
        self._checked_parameters = (check_workload(workload, config, ray.cloudpickle, sample)
                                    if workload is not None else None)
        self.config = config
        self.worker_options = worker_options
        self.run_dir = run_dir or RunDir.create(config.results_dir, config.name)
        self.progress = progress
        self.workers: list[Any] = []
        self.votes: list[Any] = []
        self.byzantine = set(config.byzantine_ranks())
        self.honest = [r for r in range(config.num_workers) if r not in self.byzantine]
        self.resyncs = 0
        self._vote_tag = 0  # which configuration the vote actors hold (0: the constructor's)
        # The aggregators' state after the last complete round (refs from ``VoteActor.state``,
        # or the checkpoint's states); None: before the first round. Stateful aggregators only.
        self._vote_states: list[Any] | None = None
        self._incarnations: list[str] = []  # per worker, the process last synced
        self._step = 0  # the last complete round

    # ----------------------------------------------------------------------------- placement
    def _data_parts(self) -> tuple[tuple[Any, Any], tuple[Any, Any] | None]:
        """The training and test sets as ``(inputs, targets)`` arrays or ``(dataset, None)``;
        the test set is None when there is nothing to evaluate on."""
        cfg = self.config
        if self.workload is not None:
            test = self.workload.test_data
            train = ((self._ray_data, None) if self._ray_data is not None
                     else data_parts(self.workload.train_data))
            return train, (data_parts(test) if test is not None else None)
        train, test = load_images(cfg.dataset, cfg.data_dir)
        if cfg.train_subset:
            train = type(train)(train.images[: cfg.train_subset], train.labels[: cfg.train_subset])
        if cfg.test_subset:
            test = type(test)(test.images[: cfg.test_subset], test.labels[: cfg.test_subset])
        return (train.images, train.labels), (test.images, test.labels)

    def start(self) -> None:
        cfg = self.config
        train, test = self._data_parts()
        self.train_size = data_length(*train)
        self.shard_size = self.train_size // cfg.num_workers
        self.d = (self._checked_parameters if self.workload is not None
                  else num_parameters(build_model(cfg.model)))
        self.bounds = shard_bounds(self.d, cfg.vote_shards)
        if cfg.transport == "direct":  # say so if the cluster cannot send its messages inline
            check_inline_limit(wire.HEADER_BYTES + wire.body_nbytes(
                self._vote_setup()[0], max(stop - start for start, stop in self.bounds)))
        # The data sets go into the object store once; every worker reads arrays zero-copy, a
        # Dataset object is unpickled on each worker and read there by index, a ray.data
        # Dataset (its plan) is read by each worker in the cluster. Held for the whole run: a
        # restarted worker re-runs its constructor with them.
        self.train_refs = _put_each(train)
        self.test_refs = _put_each(test) if test is not None else None
        functions = self.workload.functions if self.workload is not None else None
        keys = [secrets.token_bytes(32) for _ in range(cfg.num_workers)]
        # On several nodes every worker's bundle also holds a vote actor's VOTE_CPUS, so reserve
        # them per worker (and per shard on one node).
        reserve = VOTE_CPUS * max(cfg.num_workers, cfg.vote_shards)
        if self._ray_data is not None:  # Ray Data's reading tasks run beside the workers
            reserve += READ_CPUS
        res = self.worker_options or worker_resources(cfg.num_workers, reserve_cpus=reserve)
        spread, self.placement_group = _spread_strategy(cfg.num_workers, res.options())
        for rank in range(cfg.num_workers):
            cls = ByzantineWorker if rank in self.byzantine else SignWorker
            actor = ray.remote(cls).options(
                scheduling_strategy=spread(rank), max_restarts=MAX_RESTARTS, max_task_retries=0,
                **res.options())
            self.workers.append(actor.remote(cfg, rank, *self.train_refs, self.bounds,
                                             functions=functions, key=keys[rank]))
        for shard, (start, stop) in enumerate(self.bounds):
            vote_cls = DirectVoteActor if cfg.transport == "direct" else VoteActor
            vote = ray.remote(vote_cls).options(num_cpus=VOTE_CPUS, max_restarts=MAX_RESTARTS,
                                                scheduling_strategy=spread(shard))
            self.votes.append(vote.remote(shard, start, stop, *self._vote_setup(), keys=keys))
        sizes = ray.get([w.num_parameters.remote() for w in self.workers])
        if set(sizes) != {self.d}:
            raise RuntimeError(f"workers disagree on the parameter count: {sizes}")
        self._incarnations = ray.get([w.incarnation_id.remote() for w in self.workers])

    RESHAPING_FIELDS = ("num_workers", "vote_shards", "model", "dataset", "data_dir",
                        "train_subset", "test_subset", "transport")

    def reconfigure(self, config: SignSGDConfig, run_dir: RunDir | None = None) -> None:
        """Run another configuration on the actors already started (a benchmark grid): every
        worker gets a fresh replica, every vote actor the new payload kind and aggregator, as if
        started anew but without new processes. The model, data set (or workload), worker
        count and vote shards must stay the same; aggregator, attack, adversaries, seed,
        learning rate and schedule may change."""
        if not self.workers:
            raise RuntimeError("reconfigure() needs started actors: call start() or run() first")
        changed = [f for f in self.RESHAPING_FIELDS
                   if getattr(config, f) != getattr(self.config, f)]
        if changed:
            raise ValueError(f"reconfigure() cannot change {', '.join(changed)}; start a new "
                             "SignSGDTrainer for that")
        self.config = config
        self.run_dir = run_dir or RunDir.create(config.results_dir, config.name)
        self.byzantine = set(config.byzantine_ranks())
        self.honest = [r for r in range(config.num_workers) if r not in self.byzantine]
        self.resyncs = 0
        self._vote_tag += 1
        self._vote_states = None
        ray.get([w.reset.remote(config, rank in self.byzantine)
                 for rank, w in enumerate(self.workers)]
                + [v.reset.remote(*self._vote_setup(), tag=self._vote_tag) for v in self.votes])

    def _vote_setup(self) -> tuple[int, Any]:
        cfg = self.config
        kind = wire.KIND_SIGNS if cfg.aggregator == "vote" else wire.KIND_FP32
        return kind, (None if cfg.aggregator in ("vote", "mean") else cfg.make_aggregator())

    # ---------------------------------------------------------------------------- one round
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
            _, dead = _get_each({i: compute_refs[i][s] for i in live}, "compute")
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
            worker_stats, dead = _get_each({i: compute_refs[i][s] for i in live}, "compute")
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
            apply_stats, dead = _get_each(applied, "apply")
            failed |= dead
            break
        else:
            raise RuntimeError(f"step {step}: no complete round after {ROUND_ATTEMPTS} attempts")
        return self._record(step, worker_stats, vote_stats, apply_stats, failed, with_density)

    def _reset_restarted_votes(self) -> None:
        """Before a round is voted again: a restarted vote actor ran its constructor with the
        first configuration's arguments, so give it the current one (a no-op unless
        reconfigured); then put every stateful aggregator (centered clipping's center) back
        in its state after the last complete round - the restarted one lost it, and the
        others may have voted the failed round already."""
        for v in self.votes:
            if _call_when_alive(lambda v=v: v.tag.remote()) != self._vote_tag:
                ray.get(v.reset.remote(*self._vote_setup(), tag=self._vote_tag))
        if self._stateful_votes():
            states = self._vote_states or [{"center": None}] * len(self.votes)
            ray.get([v.load_state.remote(st) for v, st in zip(self.votes, states, strict=True)])

    def _stateful_votes(self) -> bool:
        """Whether the vote actors' aggregator carries state from round to round."""
        return hasattr(self._vote_setup()[1], "center")

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

    def _record(self, step: int, worker_stats: list[dict], vote_stats: list[dict],
                apply_stats: list[dict], failed: set[int], with_density: bool) -> dict[str, Any]:
        self._keep_vote_states()
        # Workers Ray restarted between rounds abstained (a fresh replica): re-sync them too.
        failed = failed | {st["rank"] for st in worker_stats if st.get("restarted")}
        if failed:
            self._resync(sorted(failed), step)
        self._step = step
        honest_stats = [st for st in worker_stats
                        if st["rank"] not in self.byzantine and not st.get("restarted")]
        record = {
            "step": step,
            "epoch": honest_stats[0]["epoch"],
            "loss": float(np.mean([st["loss"] for st in honest_stats])),
            "lr": honest_stats[0]["lr"],
            "bytes_sent_per_worker": float(np.mean([st["bytes_sent"] for st in worker_stats])),
            "bytes_received_per_worker": float(
                np.mean([st["bytes_received"] for st in apply_stats])),
            "voters": min(v["num_valid"] for v in vote_stats),
            "rejected": sum(len(v["rejected"]) for v in vote_stats),
            "failed_workers": sorted(failed),
            # Per vote shard, the sorted ranks whose message counted (None: not reported).
            "participation": [st.get("counted")
                              for st in sorted(vote_stats, key=lambda st: st["shard"])],
            **round_stage_times(worker_stats, vote_stats, apply_stats),
        }
        if with_density:
            record["density"] = honest_stats[0]["density"]
        return record

    def _resync(self, ranks: list[int], step: int) -> None:
        """Copy model, momentum and schedule from a live honest replica holding the majority
        digest into restarted workers, and move their data streams to where they would be
        after ``step`` steps."""
        source, _ = self._majority(step, exclude=ranks)
        print(f"[raysign] workers {ranks} failed; restarted and re-synced from rank {source}")
        state = self.workers[source].state.remote()
        for r in ranks:
            # The restarted process ran its constructor with the first configuration's
            # arguments: give it the current one before the state (matters after reconfigure).
            _call_when_alive(lambda r=r: self.workers[r].reset.remote(self.config,
                                                                      r in self.byzantine))
            self._load(r, state, step)
        self.resyncs += len(ranks)

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

    # ------------------------------------------------------------------------------ the run
    def steps_per_epoch(self) -> int:
        cfg = self.config
        return max(1, self.shard_size // (cfg.batch_size * cfg.accumulation_steps))

    def total_steps(self) -> int:
        if self.config.max_steps:
            return self.config.max_steps
        return max(1, math.ceil(self.config.epochs * self.steps_per_epoch()))

    def run(self, on_record: Callable[[dict[str, Any]], None] | None = None,
            resume: str | Path | None = None) -> RunSummary:
        """Train for ``total_steps()``; ``on_record`` sees every step's metrics (Ray Tune
        reports through it). ``resume``: a checkpoint file or run folder to continue from."""
        from tqdm.auto import tqdm

        cfg = self.config
        started = time.time()
        self.last_metrics: dict[str, float] = {}
        if not self.workers:
            self.start()
        first, curve, identical = 1, [], True
        if resume is not None:
            first, curve, identical = self._restore(resume)
        else:
            self.run_dir.write_json("config.json", {**to_dict(cfg), "num_parameters": self.d,
                                                    "workload": self._workload_record()})
        total = self.total_steps()
        per_epoch = self.steps_per_epoch()
        eval_every = cfg.eval_every or per_epoch
        checkpoint_every = cfg.checkpoint_every or per_epoch
        records = read_jsonl(self.run_dir.file("metrics.jsonl")) if resume is not None else []
        bar = tqdm(range(first, total + 1), desc=f"{cfg.name} ({cfg.aggregator})",
                   disable=not self.progress, unit="step", initial=first - 1, total=total)
        for step in bar:
            record = self.round(step, with_density=(step % eval_every == 0 or step == 1))
            if step % cfg.checksum_every == 0 or step == total:
                ok, n = self.check_replicas(step)
                identical &= ok
                self.resyncs += n
                record["replicas_identical"] = ok
            if self.test_refs is not None and (step % eval_every == 0 or step == total):
                metrics = self.evaluate()
                record.update(metrics)
                self.last_metrics = metrics
                curve.append((step, metrics[_headline(metrics)]))
                bar.set_postfix(loss=f"{record['loss']:.3f}",
                                **{k: f"{v:.4f}" for k, v in metrics.items()})
            records.append(record)
            self.run_dir.log(record)
            if step % checkpoint_every == 0 or step == total:
                self.save_checkpoint(step, curve, identical)
            if on_record is not None:
                on_record(record)
        bar.close()
        summary = self._summarise(records, curve, identical, time.time() - started)
        self.run_dir.write_json("summary.json", summary.__dict__)
        write_figures(self.run_dir, records, curve, title=f"{cfg.name}: {cfg.aggregator}, "
                      f"{cfg.num_workers} workers, {cfg.num_byzantine} Byzantine")
        self.run_dir.sync()
        return summary

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

    def _summarise(self, records, curve, identical, wall) -> RunSummary:
        # The first rounds include actor warm-up; time the rest.
        steady = records[min(2, len(records) - 1):]
        stages = {k: float(np.mean([r[k] for r in steady])) for k in ("compute", *STAGES)}
        sent = float(np.mean([r["bytes_sent_per_worker"] for r in records]))
        fp32 = 4.0 * self.d
        if self.workload is None:  # the built-in headline, also after a resume with no step
            accuracy = curve[-1][1]
        else:
            accuracy = self.last_metrics.get("test_accuracy", math.nan)
        return RunSummary(
            test_accuracy=accuracy, steps=len(records), num_parameters=self.d,
            bytes_sent_per_worker_per_step=sent, fp32_bytes_per_step=fp32,
            compression_ratio=fp32 / sent, stage_seconds=stages,
            replicas_identical=identical, resyncs=self.resyncs,
            rejected_payloads=sum(r["rejected"] for r in records), wall_seconds=wall,
            run_dir=self.run_dir.location, accuracy_curve=curve,
            test_metrics=dict(self.last_metrics))

    def shutdown(self) -> None:
        for actor in self.workers + self.votes:
            ray.kill(actor)
        self.workers, self.votes = [], []
        if getattr(self, "placement_group", None) is not None:
            ray.util.remove_placement_group(self.placement_group)
            self.placement_group = None


def _call_when_alive(call: Callable[[], Any], timeout: float = 120.0) -> Any:
    """``ray.get(call())``, retried while the actor is restarting."""
    deadline = time.time() + timeout
    while True:
        try:
            return ray.get(call())
        except ray.exceptions.ActorUnavailableError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def _headline(metrics: dict[str, float]) -> str:
    """The metric a run's curve follows: test accuracy when there is one, else the first."""
    return "test_accuracy" if "test_accuracy" in metrics else next(iter(metrics))


def _put_each(parts: tuple[Any, Any]) -> tuple[Any, Any]:
    """Each part of a data set in the object store once (None stays None)."""
    return tuple(None if part is None else ray.put(part) for part in parts)


def _get_each(refs: dict[int, Any], what: str) -> tuple[list[Any], set[int]]:
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


def _spread_strategy(num_workers: int, worker_options: dict[str, float]):
    """Scheduling for rank / shard ``i``: spread over nodes when the cluster has several (a
    placement group with one bundle per worker, STRATEGY SPREAD), default otherwise. Returns
    the strategy function and the placement group it made (None if none), which the trainer
    removes on shutdown."""
    current = ray.util.get_current_placement_group()
    if current is not None:  # e.g. a Tune trial: its actors go into the trial's bundles
        return lambda i: PlacementGroupSchedulingStrategy(placement_group=current), None
    if len(ray.nodes()) <= 1:
        return lambda i: "DEFAULT", None
    bundle = {"CPU": worker_options["num_cpus"] + VOTE_CPUS}
    if worker_options["num_gpus"]:
        bundle["GPU"] = worker_options["num_gpus"]
    group = ray.util.placement_group([dict(bundle) for _ in range(num_workers)],
                                     strategy="SPREAD")
    ray.get(group.ready())
    return lambda i: PlacementGroupSchedulingStrategy(
        placement_group=group, placement_group_bundle_index=i % num_workers), group
