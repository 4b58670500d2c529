"""The driver of distributed signSGD: ``SignSGDTrainer`` starts the actors and runs the loop.

A run: start the actors (``raysign.actors.placement``), then for every step one synchronous
round (``raysign.actors.rounds``), every ``checksum_every`` steps and at the end a replica
check (``raysign.actors.recovery``), an evaluation every ``eval_every`` steps and a checkpoint
every ``checkpoint_every`` steps (``raysign.actors.checkpointing``); each step's record and
the summary come from the actors' stats (``raysign.signsgd.records``, Ray-free), the figures
from ``raysign.signsgd.report``. The class is put together from those modules' parts; this
file holds its state, start-up, reconfiguration and the run loop.

What is trained is a workload (``raysign.signsgd.workload``): the built-in one the config
names, or ``workload=Workload(model_fn, loss_fn, train_data, ...)``, checked on the driver
before any actor starts (see docs/api.md). A ``ray.data.Dataset`` training or test set is
read inside the cluster (``raysign.actors.ray_data``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from raysign import wire
from raysign.actors.checkpointing import RunCheckpoints
from raysign.actors.cluster import ActorResources, check_inline_limit
from raysign.actors.placement import MAX_RESTARTS, VOTE_CPUS, put_each, start_actors
from raysign.actors.ray_data import RayDataSource, probe
from raysign.actors.recovery import ReplicaRecovery
from raysign.actors.rounds import DIRECT_TIMEOUT_S, ROUND_ATTEMPTS, RoundProtocol
from raysign.config import to_dict
from raysign.data import load_images
from raysign.results import RunDir, read_jsonl
from raysign.signs import shard_bounds
from raysign.signsgd.config import SignSGDConfig
from raysign.signsgd.models import build_model, num_parameters
from raysign.signsgd.records import (
    RunSummary,
    headline,
    round_stage_times,
    step_record,
    summarise,
)
from raysign.signsgd.report import write_figures
from raysign.signsgd.workload import (
    Workload,
    check_workload,
    data_length,
    data_parts,
    is_ray_dataset,
)

# Re-exported: callers import these from here.
__all__ = ["DIRECT_TIMEOUT_S", "MAX_RESTARTS", "ROUND_ATTEMPTS", "VOTE_CPUS", "RunSummary",
           "SignSGDTrainer", "round_stage_times"]


class SignSGDTrainer(RoundProtocol, ReplicaRecovery, RunCheckpoints):
    """Runs one ``SignSGDConfig`` on the connected Ray cluster, on the built-in workload the
    config names or on ``workload`` (a user's model, loss and data: docs/api.md), which is
    checked here, before any Ray call (``ConfigError`` naming the callable at fault)."""

    def __init__(self, config: SignSGDConfig, run_dir: RunDir | None = None,
                 progress: bool = True, worker_options: ActorResources | None = None, *,
                 workload: Workload | None = None):
        self.workload = workload
        # A ray.data.Dataset training or test set: its row count and first batch, read by a
        # task.
        self._ray_data: RayDataSource | None = None
        self._ray_test: RayDataSource | None = None
        sample = test_sample = None
        if workload is not None and is_ray_dataset(workload.train_data):
            columns = tuple(workload.columns)
            num_rows, batch = probe(workload.train_data, columns, config.batch_size)
            self._ray_data = RayDataSource(workload.train_data, columns, num_rows)
            sample = (num_rows, batch)
        if workload is not None and is_ray_dataset(workload.test_data):
            columns = tuple(workload.columns)
            num_rows, test_sample = probe(workload.test_data, columns, config.batch_size)
            self._ray_test = RayDataSource(workload.test_data, columns, num_rows)
        self._checked_parameters = (check_workload(workload, config, ray.cloudpickle, sample,
                                                   test_sample)
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

    # ------------------------------------------------------------------------------ start-up
    def _data_parts(self) -> tuple[tuple[Any, Any], tuple[Any, Any] | None]:
        """The training and test sets as ``(inputs, targets)`` arrays or ``(dataset, None)``;
        the test set is None when there is nothing to evaluate on."""
        cfg = self.config
        if self.workload is not None:
            test = self.workload.test_data
            train = ((self._ray_data, None) if self._ray_data is not None
                     else data_parts(self.workload.train_data))
            if self._ray_test is not None:
                return train, (self._ray_test, None)
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
        self.train_refs = put_each(train)
        self.test_refs = put_each(test) if test is not None else None
        self.workers, self.votes, self.placement_group = start_actors(
            cfg, self.bounds, self.train_refs, self._vote_setup(),
            functions=self.workload.functions if self.workload is not None else None,
            worker_options=self.worker_options,
            streamed=self._ray_data is not None or self._ray_test is not None)
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

    def _record(self, step: int, worker_stats: list[dict], vote_stats: list[dict],
                apply_stats: list[dict], failed: set[int], with_density: bool) -> dict[str, Any]:
        """After a complete round: keep the aggregators' states, re-sync the workers that failed
        or abstained, and make the step's record."""
        self._keep_vote_states()
        # Workers Ray restarted between rounds abstained (a fresh replica): re-sync them too.
        failed = failed | {st["rank"] for st in worker_stats if st.get("restarted")}
        if failed:
            self._resync(sorted(failed), step)
        self._step = step
        return step_record(step, worker_stats, vote_stats, apply_stats, failed=failed,
                           byzantine=self.byzantine, with_density=with_density,
                           stages=round_stage_times(worker_stats, vote_stats, apply_stats))

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
                curve.append((step, metrics[headline(metrics)]))
                bar.set_postfix(loss=f"{record['loss']:.3f}",
                                **{k: f"{v:.4f}" for k, v in metrics.items()})
            records.append(record)
            self.run_dir.log(record)
            if step % checkpoint_every == 0 or step == total:
                self.save_checkpoint(step, curve, identical)
            if on_record is not None:
                on_record(record)
        bar.close()
        summary = summarise(records, curve, identical=identical, resyncs=self.resyncs,
                            num_parameters=self.d, builtin=self.workload is None,
                            last_metrics=self.last_metrics, wall_seconds=time.time() - started,
                            run_dir=self.run_dir.location)
        self.run_dir.write_json("summary.json", summary.__dict__)
        write_figures(self.run_dir, records, curve, title=f"{cfg.name}: {cfg.aggregator}, "
                      f"{cfg.num_workers} workers, {cfg.num_byzantine} Byzantine")
        self.run_dir.sync()
        return summary

    def shutdown(self) -> None:
        for actor in self.workers + self.votes:
            ray.kill(actor)
        self.workers, self.votes = [], []
        if getattr(self, "placement_group", None) is not None:
            ray.util.remove_placement_group(self.placement_group)
            self.placement_group = None

