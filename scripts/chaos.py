"""A seeded chaos run of distributed signSGD, checked bit for bit against a numpy replay.

``python scripts/chaos.py --seed 1`` trains a small user model (a 6-16-1 tanh MLP regressing
the ETTh1 oil temperature on the other six readings, 129 parameters, through ``Workload``) with
4 workers, 2 vote shards, the direct transport and a checkpoint every ``--checkpoint-every``
steps, and injects a seeded schedule of faults (``build_schedule``), one per step at most,
at least 3 steps apart:

==========================  ============================================================
kind                        what happens (``raysign.actors.drills``)
==========================  ============================================================
worker_kill_before          the worker's process exits between rounds, before step t
worker_kill_during          it exits inside the exchange of step t, after its shard-0 message
worker_kill_after           it exits once it has applied the vote of step t
worker_kill_evaluate        rank 0 (the replica evaluated) exits during the test evaluation
worker_kill_checkpoint      the worker exits while the driver collects a checkpoint's states
vote_kill_collecting        a vote actor exits at the second message of step t
vote_kill_voting            a vote actor exits when it starts voting on step t
msg_flip_bit                one body bit of the worker's own messages flipped after signing
msg_truncate                the worker's own messages lose the last 8 bytes of their body
msg_replay                  the worker's genuine messages of step t - 1 sent again for step t
msg_impersonate             a message in the next rank's name, signed with the worker's key
msg_drop                    one message of the worker (to one vote shard) lost on the way: the
                            shard votes without it at the timeout, no rejection logged
node_kill                   every process of one worker node of the network-namespace cluster
                            SIGKILLed as round t starts (its worker and any vote actor there),
                            the node's Ray started again at once (``netns_cluster.py
                            restart-node``); the round goes on without that node's worker,
                            which is re-synced once Ray restarted it on the node that came
                            back (only with ``--address`` of that cluster)
driver_kill                 the driver SIGKILLs itself as round t starts; resumed from the
                            last checkpoint by a new driver process
driver_kill_save            the driver SIGKILLs itself inside the checkpoint save of step t,
                            after collecting the workers' states, before writing; resumed
                            from the previous checkpoint
==========================  ============================================================

Each driver is a subprocess of this script (``--child``) joined to one Ray cluster: a
private local one this script starts, or ``--address``. A driver kill ends that subprocess
(``SIGKILL``, exit status -9) and the next resumes the run folder's checkpoint; no other fault
is scheduled in the steps the resumed driver runs again.

Written to ``--out`` (default ``runs/chaos/seed<S>``): ``schedule.json``, ``faults.jsonl``
(every fault injected: step, kind, target, driver segment), ``resyncs.jsonl`` (every re-sync:
after which step, which ranks, from which replica), ``rejections.jsonl`` (every message a vote
actor rejected, appended by the vote actors: ``$RAYSIGN_DRILL_REJECTIONS``),
``checkpoints.jsonl`` (each checkpoint re-read with its digest check), ``node_restarts.jsonl``
(per node kill: the node, the ranks and shards on it, the placement group's bundle -> node
ids before and after, where the killed actors run after the round, seconds until the node was
back and until the round returned), ``final.json`` /
``final.npy`` (every worker's parameter digest, rank 0's parameters), ``table.json`` and the
run folder (``runs/chaos/.../metrics.jsonl``: per step ``participation``, the ranks counted
per vote shard).

Then it checks, and prints as a table: every fault kind injected and survived; every worker's
parameters identical at the end and at every replica check; the final parameters equal, bit
for bit, ``raysign.signsgd.replay.replay_run`` of the recorded participation and re-syncs;
every forged or corrupted message rejected and logged under the sender it claims (and no
other message rejected, abstentions of restarted workers aside); a lost message's sender left
out of that shard only; a killed node back and every worker that was on it re-synced within
``GAP`` steps; every checkpoint readable. Exit status 0 only if all hold.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

from raysign.actors.placement import MAX_RESTARTS  # kills per actor and driver
from raysign.results import read_jsonl

WORKER_KINDS = ("worker_kill_before", "worker_kill_during", "worker_kill_after",
                "worker_kill_evaluate", "worker_kill_checkpoint")
VOTE_KINDS = ("vote_kill_collecting", "vote_kill_voting")
MESSAGE_KINDS = ("msg_flip_bit", "msg_truncate", "msg_replay", "msg_impersonate")
DROP_KIND = "msg_drop"
NODE_KIND = "node_kill"
DRIVER_KINDS = ("driver_kill", "driver_kill_save")
KINDS = WORKER_KINDS + VOTE_KINDS + MESSAGE_KINDS + (DROP_KIND, NODE_KIND) + DRIVER_KINDS
NUM_WORKERS = 4
VOTE_SHARDS = 2
GAP = 3  # steps between two faults at least
ROWS = 800  # ETTh1 rows used: the first 640 train, the next 160 test


# ------------------------------------------------------------------ the user's model and data
def regression_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))


def squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return ((outputs.squeeze(-1) - targets) ** 2).mean()


def ett_data(rows: int = ROWS) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray,
                                                                               np.ndarray]]:
    """ETTh1's first ``rows`` hours, standardised: six loads -> oil temperature (OT)."""
    from raysign.data import default_data_dir

    with open(default_data_dir() / "forecast" / "ETTh1.csv", newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        values = np.array([[float(v) for v in row[1:]] for _, row in zip(range(rows), reader,
                                                                         strict=False)])
    values = ((values - values.mean(0)) / values.std(0)).astype(np.float32)
    inputs, targets = np.ascontiguousarray(values[:, :6]), np.ascontiguousarray(values[:, 6])
    cut = rows * 4 // 5
    return (inputs[:cut], targets[:cut]), (inputs[cut:], targets[cut:])


def chaos_config(args: argparse.Namespace, out: Path):
    from raysign.signsgd.config import SignSGDConfig

    return SignSGDConfig(num_workers=NUM_WORKERS, vote_shards=VOTE_SHARDS, transport="direct",
                         lr=args.lr, momentum=0.9, batch_size=8, max_steps=args.steps,
                         eval_every=args.eval_every, checksum_every=args.checksum_every,
                         checkpoint_every=args.checkpoint_every, seed=args.seed,
                         results_dir=str(out / "runs"), name="chaos")


def _netns_cluster():
    """``scripts/netns_cluster.py`` as a module (beside this script)."""
    import importlib.util

    if "netns_cluster" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "netns_cluster", Path(__file__).resolve().with_name("netns_cluster.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules["netns_cluster"] = module
        spec.loader.exec_module(module)
    return sys.modules["netns_cluster"]


# ------------------------------------------------------------------------------ the schedule
def resume_step(kind: str, step: int, every: int) -> int:
    """The checkpoint a driver killed by ``kind`` at ``step`` is resumed from."""
    if kind == "driver_kill":  # the last checkpoint before round `step`
        return (step - 1) // every * every
    return step - every  # killed in the save of `step`: the one before


class _OverBudget(Exception):
    """A draw of the schedule kills one actor more often than Ray restarts it."""


SCHEDULE_ATTEMPTS = 20


def build_schedule(seed: int, steps: int, counts: dict[str, int], *,
                   checkpoint_every: int, eval_every: int) -> list[dict]:
    """``counts[kind]`` faults of each kind at seeded steps in ``[GAP, steps - GAP]``, one per
    step, ``GAP`` steps apart; evaluation and checkpoint kills at evaluation / checkpoint
    steps; no fault in the steps a resumed driver re-runs; at most ``MAX_RESTARTS`` kills of
    one actor per driver process, counting each node kill against both bundles it may take
    (``"bundles"``; ``node_to_kill``). Sorted by step. A draw that breaks the last rule is
    drawn again from the next seeded stream (``[seed, 2020, attempt]``)."""
    for attempt in range(SCHEDULE_ATTEMPTS):
        try:
            return _draw_schedule(seed, attempt, steps, counts,
                                  checkpoint_every=checkpoint_every, eval_every=eval_every)
        except _OverBudget:
            continue
    raise SystemExit(f"chaos: more than {MAX_RESTARTS} kills of one actor in one driver in "
                     f"{SCHEDULE_ATTEMPTS} draws; give more --steps or fewer faults")


def _draw_schedule(seed: int, attempt: int, steps: int, counts: dict[str, int], *,
                   checkpoint_every: int, eval_every: int) -> list[dict]:
    rng = np.random.default_rng([seed, 2020] + ([attempt] if attempt else []))
    taken: list[int] = []
    forbidden: list[tuple[int, int]] = []  # (first, last) steps re-run after a driver kill
    plan: list[dict] = []

    def free(step: int) -> bool:
        return (GAP <= step <= steps - GAP and all(abs(step - t) >= GAP for t in taken)
                and not any(a <= step <= b for a, b in forbidden))

    def place(kind: str, candidates: list[int]) -> int | None:
        options = [s for s in candidates if free(s)]
        if not options:
            return None
        step = int(rng.choice(options))
        taken.append(step)
        plan.append({"step": step, "kind": kind})
        return step

    first_placed = DRIVER_KINDS + ("worker_kill_evaluate", "worker_kill_checkpoint")
    ordered = [k for k in first_placed if k in counts] + [
        k for k in counts if k not in first_placed]
    for kind in ordered:
        for _ in range(counts[kind]):
            if kind == "driver_kill":
                candidates = [s for s in range(checkpoint_every + GAP, steps)
                              if s % checkpoint_every]
            elif kind == "driver_kill_save":
                candidates = list(range(2 * checkpoint_every, steps, checkpoint_every))
            elif kind == "worker_kill_evaluate":
                candidates = list(range(eval_every, steps, eval_every))
            elif kind == "worker_kill_checkpoint":
                candidates = list(range(checkpoint_every, steps, checkpoint_every))
            else:
                candidates = list(range(steps + 1))
            step = place(kind, candidates)
            if step is None:
                raise SystemExit(f"chaos: no room for {counts[kind]} x {kind} in {steps} steps; "
                                 "give more --steps")
            if kind in DRIVER_KINDS:
                first = resume_step(kind, step, checkpoint_every) + 1
                forbidden.append((first - GAP + 1, step + GAP - 1))
    plan.sort(key=lambda f: f["step"])
    # Targets, in step order: kills of one actor per driver process stay within its restarts.
    resumes = {id(f): resume_step(f["kind"], f["step"], checkpoint_every)
               for f in plan if f["kind"] in DRIVER_KINDS}
    kills: Counter = Counter()
    for fault in plan:
        # The driver process running this step: one more after each earlier resume.
        segment = sum(1 for key, r in resumes.items() if r < fault["step"] and key != id(fault))
        fault["segment"] = segment
        kind = fault["kind"]
        if kind == "worker_kill_evaluate":
            fault["target"] = 0
        elif kind in WORKER_KINDS:
            fault["target"] = _least_killed(rng, kills, segment, "worker", NUM_WORKERS)
        elif kind in VOTE_KINDS:
            fault["target"] = _least_killed(rng, kills, segment, "vote", VOTE_SHARDS)
        elif kind in MESSAGE_KINDS:
            fault["target"] = int(rng.integers(NUM_WORKERS))
        elif kind == DROP_KIND:
            fault["target"] = int(rng.integers(NUM_WORKERS))
            fault["shard"] = int(rng.integers(VOTE_SHARDS))
        elif kind == NODE_KIND:
            # Which node: chosen at run time (``node_to_kill``), where the placement is known.
            fault["target"] = "node"
        else:
            fault["target"] = "driver"
        if kind in WORKER_KINDS or kind in VOTE_KINDS:
            key = (segment, "worker" if kind in WORKER_KINDS else "vote", fault["target"])
            kills[key] += 1
            if kills[key] > MAX_RESTARTS:
                raise _OverBudget
    # A node kill takes bundle b's worker and vote shard (b < S); which bundle's node is not
    # the head is known only at run time, so each is charged to the two bundles killed least.
    for fault in plan:
        if fault["kind"] == NODE_KIND:
            segment = fault["segment"]

            def load(b: int, segment: int = segment) -> int:
                return max(kills[(segment, "worker", b)], kills[(segment, "vote", b)])

            fault["bundles"] = sorted(range(NUM_WORKERS), key=lambda b: (load(b), b))[:2]
            for b in fault["bundles"]:
                kills[(segment, "worker", b)] += 1
                kills[(segment, "vote", b)] += b < VOTE_SHARDS
                if load(b) > MAX_RESTARTS:
                    raise _OverBudget
    return plan


def _least_killed(rng, kills: Counter, segment: int, what: str, count: int) -> int:
    fewest = min(kills[(segment, what, i)] for i in range(count))
    return int(rng.choice([i for i in range(count) if kills[(segment, what, i)] == fewest]))


def node_to_kill(fault: dict, bundle_nodes: list[int]) -> int:
    """The bundle whose node a ``node_kill`` takes down: worker b and vote shard b (b < S)
    share bundle b of the trainer's placement group, which Ray's SPREAD strategy puts on a
    node of its choosing (``bundle_nodes[b]``, the netns node index). The first of the two
    bundles the schedule charged (``fault["bundles"]``) that is not on the head (node 0,
    never killed; it holds one bundle), so no actor is killed more often than Ray restarts
    it."""
    for bundle in fault["bundles"]:
        if bundle_nodes[bundle] != 0:
            return bundle
    raise RuntimeError(f"node_kill: bundles {fault['bundles']} are both on the head node")


# ------------------------------------------------------------------------- the driver (child)
def run_child(args: argparse.Namespace) -> int:
    import ray

    from raysign.actors import rounds
    from raysign.actors.drills import REJECTIONS_ENV
    from raysign.actors.trainer import SignSGDTrainer
    from raysign.config import to_dict
    from raysign.results import RunDir
    from raysign.signsgd.checkpoint import CheckpointError, load_checkpoint
    from raysign.signsgd.workload import Workload

    out = Path(args.out)
    schedule = json.loads((out / "schedule.json").read_text())
    by_step: dict[int, list[dict]] = {}
    for fault in schedule:
        if fault["segment"] == args.segment:
            by_step.setdefault(fault["step"], []).append(fault)
    # The vote actors' wait for a missing message, where the round protocol reads it.
    rounds.DIRECT_TIMEOUT_S = args.vote_timeout

    def note(name: str, record: dict) -> None:
        with open(out / name, "a") as fh:
            fh.write(json.dumps({**record, "segment": args.segment}) + "\n")

    def planned(step: int, *kinds: str) -> list[dict]:
        return [f for f in by_step.get(step, []) if f["kind"] in kinds]

    def driver_kill() -> None:
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def node_of(actor) -> str:
        return ray.get(actor.__ray_call__.remote(lambda _self: ray.util.get_node_ip_address()))

    def bundle_nodes(trainer) -> list[str]:
        """The Ray node id of each bundle of the trainer's placement group (short)."""
        table = ray.util.placement_group_table(trainer.placement_group)
        return [table["bundles_to_node_id"].get(b, "")[:8] for b in range(NUM_WORKERS)]

    def kill_node(trainer, fault: dict) -> tuple[threading.Thread, dict, float]:
        """Kill the node ``node_to_kill`` chooses, note who was on it, and restart it in a
        thread. Returns the thread, the restart's record and the time of the kill."""
        netns = _netns_cluster()
        ips = {netns.node_ip(i): i for i in range(netns.ClusterState.load().nodes)}
        fault["bundle"] = node_to_kill(fault, [ips[node_of(w)] for w in trainer.workers])
        node = fault["target"] = ips[node_of(trainer.workers[fault["bundle"]])]
        ip = netns.node_ip(node)
        fault["ranks"] = [r for r, w in enumerate(trainer.workers) if node_of(w) == ip]
        fault["shards"] = [j for j, v in enumerate(trainer.votes) if node_of(v) == ip]
        note("faults.jsonl", fault)
        restart = {"step": fault["step"], "node": node, "ranks": fault["ranks"],
                   "shards": fault["shards"], "bundle_nodes_before": bundle_nodes(trainer)}
        restart["processes_killed"] = netns.kill_node(node)
        started = time.time()

        def bring_back() -> None:
            try:
                netns.restart_node(node)
                restart["error"] = ""
            except (RuntimeError, ValueError) as err:
                restart["error"] = str(err)
            restart["back_after_s"] = round(time.time() - started, 1)

        thread = threading.Thread(target=bring_back, daemon=True)
        thread.start()
        return thread, restart, started

    def after_node_kill(trainer, thread, restart: dict, started: float) -> None:
        """Once the round of the kill returned: the node is back; note where Ray put the
        dead node's bundle and actors."""
        restart["round_returned_after_s"] = round(time.time() - started, 1)
        thread.join()
        restart["bundle_nodes_after"] = bundle_nodes(trainer)
        restart["ranks_now_on"] = [node_of(trainer.workers[r]) for r in restart["ranks"]]
        restart["shards_now_on"] = [node_of(trainer.votes[j]) for j in restart["shards"]]
        note("node_restarts.jsonl", restart)

    class ChaosTrainer(SignSGDTrainer):
        """The trainer with the schedule's faults injected around its own steps."""

        _source: int | None = None

        def round(self, step: int, with_density: bool = False) -> dict:
            restarts = []
            for fault in by_step.get(step, []):
                kind, target = fault["kind"], fault["target"]
                if kind == "driver_kill":
                    note("faults.jsonl", fault)
                    driver_kill()
                if kind in ("worker_kill_evaluate", "worker_kill_checkpoint",
                            "driver_kill_save"):
                    continue
                if kind == NODE_KIND:
                    restarts.append(kill_node(self, fault))
                    continue
                note("faults.jsonl", fault)
                if kind == "worker_kill_before":
                    try:
                        ray.get(self.workers[target].crash.remote())
                    except ray.exceptions.RayActorError:
                        pass
                elif kind == "worker_kill_during":
                    ray.get(self.workers[target].crash_in_exchange.remote(step))
                elif kind == "worker_kill_after":
                    ray.get(self.workers[target].crash_after_apply.remote(step))
                elif kind == "vote_kill_collecting":
                    ray.get(self.votes[target].crash_collecting.remote(step))
                elif kind == "vote_kill_voting":
                    ray.get(self.votes[target].crash_at.remote(step))
                elif kind in MESSAGE_KINDS:
                    ray.get(self.workers[target].forge_at.remote(step, kind[len("msg_"):]))
                elif kind == DROP_KIND:
                    ray.get(self.votes[fault["shard"]].lose_message.remote(step, target))
            result = super().round(step, with_density)
            for restart in restarts:  # the node is back before the next fault
                after_node_kill(self, *restart)
            return result

        def evaluate(self) -> dict:
            for fault in planned(self._step, "worker_kill_evaluate"):
                note("faults.jsonl", fault)
                ray.get(self.workers[self.honest[0]].crash_during.remote("evaluate"))
            return super().evaluate()

        def save_checkpoint(self, step: int, curve: list, identical: bool) -> Path:
            for fault in planned(step, "worker_kill_checkpoint"):
                note("faults.jsonl", fault)
                ray.get(self.workers[fault["target"]].crash_during.remote("state"))
            for fault in planned(step, "driver_kill_save"):
                note("faults.jsonl", fault)
                [self._on_live_worker(lambda w: w.state.remote(), [r])
                 for r in range(len(self.workers))]
                driver_kill()
            path = super().save_checkpoint(step, curve, identical)
            try:
                load_checkpoint(path, to_dict(self.config))
                readable, error = True, ""
            except CheckpointError as err:
                readable, error = False, str(err)
            note("checkpoints.jsonl", {"step": step, "readable": readable, "error": error})
            return path

        def _resync(self, ranks: list[int], step: int) -> int:
            source = super()._resync(ranks, step)
            note("resyncs.jsonl", {"step": step, "ranks": sorted(ranks), "source": source})
            return source

        def check_replicas(self, step: int | None = None) -> tuple[bool, int]:
            ok, count = super().check_replicas(step)
            note("replica_checks.jsonl", {"step": self._step if step is None else step,
                                          "identical": ok, "resynced": count})
            return ok, count

        def _restore(self, resume):
            first, curve, identical = super()._restore(resume)
            note("resumes.jsonl", {"resumed_after": first - 1})
            return first, curve, identical

    train, test = ett_data()
    workload = Workload(model_fn=regression_mlp, loss_fn=squared_error, train_data=train,
                        test_data=test)
    config = chaos_config(args, out)
    ray.init(address=args.address, log_to_driver=False,
             runtime_env={"env_vars": {REJECTIONS_ENV: str(out / "rejections.jsonl")}})
    try:
        if args.segment == 0:
            run_dir = RunDir.create(config.results_dir, config.name)
            (out / "run_dir.txt").write_text(str(run_dir.path))
            resume = None
        else:
            run_dir = RunDir((out / "run_dir.txt").read_text().strip())
            resume = run_dir.path
        trainer = ChaosTrainer(config, run_dir=run_dir, progress=False, workload=workload)
        try:
            summary = trainer.run(resume=resume)
            parameters = ray.get([w.parameters.remote() for w in trainer.workers])
            digests = ray.get([w.checksum.remote() for w in trainer.workers])
        finally:
            trainer.shutdown()
        np.save(out / "final.npy", parameters[0])
        (out / "final.json").write_text(json.dumps({
            "digests": digests,
            "identical": all(p.tobytes() == parameters[0].tobytes() for p in parameters),
            "replicas_identical": summary.replicas_identical,
            "test_metrics": summary.test_metrics, "steps": summary.steps}, indent=1))
    finally:
        ray.shutdown()
    return 0


# --------------------------------------------------------------------------- the checks
def read_lines(path: Path) -> list[dict]:
    return read_jsonl(path) if path.exists() else []


def valid_events(events: list[dict], resumes: list[dict], key: str = "step") -> list[dict]:
    """Events of the driver processes, less those of steps a later driver ran again."""
    kept = []
    for event in events:
        later = [r["resumed_after"] for r in resumes if r["segment"] > event["segment"]]
        if all(event[key] <= after for after in later):
            kept.append(event)
    return kept


def check_run(out: Path, args: argparse.Namespace, completed: bool) -> dict:
    """Every check of the module docstring, from the files the drivers wrote."""
    from raysign.signsgd.replay import replay_run

    schedule = json.loads((out / "schedule.json").read_text())
    resumes = read_lines(out / "resumes.jsonl")
    faults = read_lines(out / "faults.jsonl")
    resyncs = valid_events(read_lines(out / "resyncs.jsonl"), resumes)
    checks = read_lines(out / "replica_checks.jsonl")
    checkpoints = read_lines(out / "checkpoints.jsonl")
    rejections = read_lines(out / "rejections.jsonl")
    node_restarts = read_lines(out / "node_restarts.jsonl")
    run_dir = Path((out / "run_dir.txt").read_text().strip())
    records = read_jsonl(run_dir / "metrics.jsonl") if completed else []
    config = json.loads((run_dir / "config.json").read_text())
    final = json.loads((out / "final.json").read_text()) if completed else {}
    rows: dict[str, dict] = {k: {"scheduled": 0, "injected": 0, "survived": 0}
                             for k in sorted({f["kind"] for f in schedule}, key=KINDS.index)}
    for fault in schedule:
        rows[fault["kind"]]["scheduled"] += 1
    rejected = {(r["step"], r["worker"]) for r in rejections
                if not r["reason"].startswith("abstained")}
    by_shard: dict[tuple[int, int], set[int]] = {}
    for r in rejections:
        by_shard.setdefault((r["step"], r["worker"]), set()).add(r["shard"])
    expected_rejections = set()
    recorded_steps = {r["step"] for r in records}
    participation = {r["step"]: r["participation"] for r in records}
    for fault in faults:
        kind, step, target = fault["kind"], fault["step"], fault["target"]
        rows[kind]["injected"] += 1
        ok = completed and step in recorded_steps
        if kind in WORKER_KINDS:
            ok = ok and any(e["step"] == step and target in e["ranks"] for e in resyncs)
        elif kind in MESSAGE_KINDS:
            claimed = (target + 1) % NUM_WORKERS if kind == "msg_impersonate" else target
            expected_rejections.add((step, claimed))
            ok = ok and by_shard.get((step, claimed), set()) == set(range(VOTE_SHARDS))
        elif kind == DROP_KIND:  # left out of that shard only, and not taken as forged
            counted = participation.get(step, [])
            ok = ok and target not in counted[fault["shard"]] and all(
                target in c for j, c in enumerate(counted) if j != fault["shard"])
        elif kind == NODE_KIND:  # the node came back; its workers were re-synced after it
            ok = ok and bool(fault["ranks"]) and any(
                n["step"] == step and n["segment"] == fault["segment"] and not n["error"]
                for n in node_restarts) and all(
                any(step <= e["step"] < step + GAP and r in e["ranks"] for e in resyncs)
                for r in fault["ranks"])
        elif kind in DRIVER_KINDS:
            ok = ok and any(r["segment"] == fault["segment"] + 1 for r in resumes)
        rows[kind]["survived"] += int(ok)
    replay_equal = False
    if completed:
        train, _ = ett_data()
        result = replay_run(config, regression_mlp, squared_error, *train, records, resyncs)
        replay_equal = result.parameters.tobytes() == np.load(out / "final.npy").tobytes()
    checkpoint_steps = {c["step"] for c in checkpoints}
    table = {
        "seed": args.seed, "steps": args.steps, "completed": completed,
        "faults_injected": len(faults), "kinds": rows,
        "replicas_identical_at_end": bool(final.get("identical")) and len(
            set(final.get("digests", []))) == 1,
        "replica_checks_identical": all(c["identical"] for c in checks),
        "replica_checks": len(checks),
        "final_equals_replay": replay_equal,
        "rounds_short_of_a_voter": sum(
            1 for r in records if any(len(p) < NUM_WORKERS for p in r["participation"])),
        "forged_rejected_with_sender": expected_rejections <= rejected,
        "unexpected_rejections": sorted(rejected - expected_rejections),
        "checkpoints_readable": bool(checkpoints) and all(c["readable"] for c in checkpoints),
        "checkpoints_checked": len(checkpoint_steps),
        "resumes": [r["resumed_after"] for r in resumes],
        "node_restarts": [{k: n.get(k) for k in (
            "step", "node", "ranks", "shards", "bundle_nodes_before", "bundle_nodes_after",
            "back_after_s", "round_returned_after_s", "error")} for n in node_restarts],
    }
    table["all_ok"] = bool(
        completed and replay_equal and table["replicas_identical_at_end"]
        and table["replica_checks_identical"] and table["forged_rejected_with_sender"]
        and not table["unexpected_rejections"] and table["checkpoints_readable"]
        and all(r["injected"] == r["scheduled"] == r["survived"] for r in rows.values()))
    return table


def print_table(table: dict) -> None:
    print(f"\nchaos seed {table['seed']}: {table['steps']} steps, {table['faults_injected']} "
          f"faults injected, load average {table.get('load', '?')}")
    print(f"{'kind':<26}{'scheduled':>10}{'injected':>10}{'survived':>10}")
    for kind, row in table["kinds"].items():
        print(f"{kind:<26}{row['scheduled']:>10}{row['injected']:>10}{row['survived']:>10}")
    for key in ("completed", "replicas_identical_at_end", "replica_checks_identical",
                "final_equals_replay", "forged_rejected_with_sender", "unexpected_rejections",
                "checkpoints_readable", "checkpoints_checked", "rounds_short_of_a_voter",
                "resumes", "node_restarts", "wall_seconds", "all_ok"):
        print(f"  {key}: {table.get(key)}")


# ------------------------------------------------------------------------------ the parent
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--address", default=None,
                        help="a running Ray cluster's GCS address host:port (default: start a "
                             "private local one)")
    parser.add_argument("--out", default=None, help="output folder (default runs/chaos/seed<S>)")
    parser.add_argument("--kinds", default=None,
                        help="comma-separated fault kinds (default: all; node_kill only with "
                             "--address of the network-namespace cluster)")
    parser.add_argument("--per-kind", type=int, default=2, help="faults of each kind (driver "
                        "kinds: once each)")
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--checksum-every", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--vote-timeout", type=float, default=5.0,
                        help="seconds a vote actor waits for a missing message (a message "
                             "rejected on arrival leaves its sender's place empty until then)")
    parser.add_argument("--num-cpus", type=int, default=4, help="CPUs of the local Ray")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--segment", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return run_child(args)
    started = time.time()
    out = Path(args.out or f"runs/chaos/seed{args.seed}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("faults.jsonl", "resyncs.jsonl", "rejections.jsonl", "checkpoints.jsonl",
                 "replica_checks.jsonl", "resumes.jsonl", "node_restarts.jsonl", "final.json",
                 "final.npy", "run_dir.txt", "table.json"):
        (out / name).unlink(missing_ok=True)
    netns = args.address is not None and _netns_cluster().ClusterState.load() is not None
    kinds = ([k for k in args.kinds.split(",") if k] if args.kinds is not None
             else [k for k in KINDS if netns or k != NODE_KIND])
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise SystemExit(f"chaos: unknown fault kinds {unknown}; choose from {KINDS}")
    if NODE_KIND in kinds and not netns:
        raise SystemExit("chaos: node_kill needs --address of the network-namespace cluster "
                         "(scripts/netns_cluster.py up), run as root")
    counts = {k: (1 if k in DRIVER_KINDS else args.per_kind) for k in kinds}
    plan = build_schedule(args.seed, args.steps, counts, checkpoint_every=args.checkpoint_every,
                          eval_every=args.eval_every)
    (out / "schedule.json").write_text(json.dumps(plan, indent=1))
    started_ray = False
    address = args.address
    if address is None:
        import ray

        from raysign.actors.cluster import start_local

        start_local(num_cpus=args.num_cpus, log_to_driver=False)
        started_ray = True
        address = ray.get_runtime_context().gcs_address
    completed = False
    try:
        segments = 1 + sum(1 for f in plan if f["kind"] in DRIVER_KINDS)
        for segment in range(segments):
            command = [sys.executable, str(Path(__file__).resolve()), "--child",
                       "--segment", str(segment), "--address", address, "--out", str(out),
                       *_passed_options(args)]
            rc = subprocess.run(command).returncode
            if rc == 0:
                completed = segment == segments - 1
                break
            if rc != -signal.SIGKILL or segment == segments - 1:
                print(f"chaos: driver segment {segment} exited with status {rc}")
                break
            print(f"chaos: driver segment {segment} killed (SIGKILL); resuming")
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    table = check_run(out, args, completed)
    table["wall_seconds"] = round(time.time() - started, 1)
    table["load"] = [round(v, 2) for v in os.getloadavg()]
    (out / "table.json").write_text(json.dumps(table, indent=1))
    print_table(table)
    return 0 if table["all_ok"] else 1


def _passed_options(args: argparse.Namespace) -> list[str]:
    return ["--seed", str(args.seed), "--steps", str(args.steps), "--checkpoint-every",
            str(args.checkpoint_every), "--eval-every", str(args.eval_every),
            "--checksum-every", str(args.checksum_every), "--lr", str(args.lr),
            "--vote-timeout", str(args.vote_timeout)]


if __name__ == "__main__":
    sys.exit(main())
