"""Where the actors of a ``SignSGDTrainer`` run: one worker actor per rank, one vote actor per
shard, spread over the cluster's nodes.

Sender identity: at start-up the driver draws one random 32-byte key per worker and hands it
to that worker and to every vote actor as a constructor argument (never with the messages);
every message carries a keyed BLAKE2b MAC of its header and body (``raysign.wire``), and a
vote actor rejects, logging the sender it claims, a message whose MAC does not verify under
its sender's key, a message naming another sender, and a sender's second message.

On several nodes worker i and vote shard i go into bundle i of a SPREAD placement group, so
with one-CPU bundles on one-CPU nodes that is one worker and one vote shard per node.
"""

from __future__ import annotations

import secrets
from typing import Any

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from raysign.actors.byzantine import ByzantineWorker
from raysign.actors.cluster import ActorResources, worker_resources
from raysign.actors.ray_data import READ_CPUS
from raysign.actors.vote import DirectVoteActor, VoteActor
from raysign.actors.worker import SignWorker
from raysign.signsgd.config import SignSGDConfig

VOTE_CPUS = 0.1
MAX_RESTARTS = 3


def start_actors(config: SignSGDConfig, bounds: list[tuple[int, int]], train_refs: tuple,
                 vote_setup: tuple[int, Any], *, functions: Any = None,
                 worker_options: ActorResources | None = None, streamed: bool = False,
                 ) -> tuple[list[Any], list[Any], Any]:
    """Start ``config.num_workers`` worker actors (``ByzantineWorker`` for the config's
    Byzantine ranks) on the training set ``train_refs`` and one vote actor per shard of
    ``bounds``, each restarted by Ray up to ``MAX_RESTARTS`` times. ``streamed``: the training
    or test set is a ray.data.Dataset, which the workers read in the cluster; its reading
    tasks need ``READ_CPUS`` beside the workers.
    Returns the workers, the vote actors and the placement group made (None if none)."""
    byzantine = set(config.byzantine_ranks())
    keys = [secrets.token_bytes(32) for _ in range(config.num_workers)]
    # On several nodes every worker's bundle also holds a vote actor's VOTE_CPUS, so reserve
    # them per worker (and per shard on one node).
    reserve = VOTE_CPUS * max(config.num_workers, config.vote_shards)
    if streamed:  # Ray Data's reading tasks run beside the workers
        reserve += READ_CPUS
    res = worker_options or worker_resources(config.num_workers, reserve_cpus=reserve)
    spread, group = spread_strategy(config.num_workers, res.options())
    workers = []
    for rank in range(config.num_workers):
        cls = ByzantineWorker if rank in byzantine else SignWorker
        actor = ray.remote(cls).options(
            scheduling_strategy=spread(rank), max_restarts=MAX_RESTARTS, max_task_retries=0,
            **res.options())
        workers.append(actor.remote(config, rank, *train_refs, bounds, functions=functions,
                                    key=keys[rank]))
    votes = []
    for shard, (start, stop) in enumerate(bounds):
        vote_cls = DirectVoteActor if config.transport == "direct" else VoteActor
        vote = ray.remote(vote_cls).options(num_cpus=VOTE_CPUS, max_restarts=MAX_RESTARTS,
                                            scheduling_strategy=spread(shard))
        votes.append(vote.remote(shard, start, stop, *vote_setup, keys=keys))
    return workers, votes, group


def put_each(parts: tuple[Any, Any]) -> tuple[Any, Any]:
    """Each part of a data set in the object store once (None stays None)."""
    return tuple(None if part is None else ray.put(part) for part in parts)


def spread_strategy(num_workers: int, worker_options: dict[str, float]):
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
