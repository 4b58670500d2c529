"""A real two-node Ray cluster in network namespaces runs a majority vote across both nodes.

Brings the cluster of ``scripts/netns_cluster.py`` up (two namespaces, a bridge, 1 Gbit/s
token-bucket links, a Ray head and a Ray worker node with token authentication), runs a driver
inside node 0's namespace that (a) does two communication rounds of
``raysign.actors.comm_bench`` with S = 2 vote shards and (b) two steps of ``SignSGDTrainer``
with S = 2, and checks that both nodes
did the work and that the vote equals a numpy majority vote of the workers' gradients. Then
``down`` must leave no namespace and no state behind. Skipped where the machine cannot build
the cluster (not root, or no ``ip`` / ``tc``).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("netns_cluster", ROOT / "scripts/netns_cluster.py")
netns_cluster = importlib.util.module_from_spec(_spec)
sys.modules["netns_cluster"] = netns_cluster
_spec.loader.exec_module(netns_cluster)

# One network-namespace cluster at a time: these run in one pytest-xdist process.
pytestmark = pytest.mark.xdist_group("netns")

D = 100_003
NODES = 2

DRIVER = """
import json, sys
sys.path.insert(0, {root!r})
import ray
from raysign.actors.cluster import connect
from raysign.actors.comm_bench import VoteRound, node_of, spread_group
from raysign.actors.trainer import SignSGDTrainer
from raysign import wire
from raysign.results import RunDir
from raysign.signsgd.config import SignSGDConfig

connect()
ips = sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"])
group = spread_group({nodes})
bench = VoteRound(group, {nodes}, {d}, {nodes}, wire.KIND_SIGNS, transport="direct")
where = bench.placement()
times = [bench.round(step)["round_s"] for step in range(2)]
vote = ray.get(bench.workers[1].parameter_values.remote())
identical = bench.replicas_identical()
bench.shutdown()
ray.util.remove_placement_group(group)

config = SignSGDConfig(model="mlp", num_workers={nodes}, vote_shards={nodes}, max_steps=2,
                     batch_size=16, train_subset=256, test_subset=100, name="netns_test",
                     transport="direct")
trainer = SignSGDTrainer(config, RunDir({out_dir!r}), progress=False)
trainer.start()
train_workers = [node_of(w) for w in trainer.workers]
train_votes = [node_of(v) for v in trainer.votes]
records = [trainer.round(step) for step in (1, 2)]
replicas_identical, _ = trainer.check_replicas()
trainer.shutdown()
with open({out!r}, "w") as fh:
    json.dump({{"ips": ips, "where": where, "times": times, "vote": vote.tolist(),
               "identical": identical, "train_workers": train_workers,
               "train_votes": train_votes, "replicas_identical": replicas_identical,
               "train_bytes": records[-1]["bytes_sent_per_worker"]}}, fh)
"""


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.mark.slow
@pytest.mark.skipif(netns_cluster.missing_requirements() is not None,
                    reason=f"netns cluster unavailable: {netns_cluster.missing_requirements()}")
def test_majority_vote_runs_across_two_namespace_nodes_and_down_removes_everything(tmp_path):
    from raysign.actors.comm_bench import synthetic_gradient

    out = tmp_path / "result.json"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(root=str(ROOT), nodes=NODES, d=D, out=str(out),
                                    out_dir=str(tmp_path / "trainer")))
    # Outside the try: an `up` refused because another cluster is up must not take that
    # cluster down (up removes what it made itself on any other failure).
    state = netns_cluster.up(NODES, rate="1gbit", cpus_per_node=1, object_store_mb=256)
    try:
        assert state.address == "10.77.0.1:6379"
        code = netns_cluster.exec_in(0, [sys.executable, str(script)])
        assert code == 0, "the driver inside namespace rs0 failed (its output is above)"
    finally:
        netns_cluster.down(quiet=True)
    result = json.loads(out.read_text())

    # Both namespace nodes are in the cluster, and every actor pair landed on its own node.
    assert result["ips"] == ["10.77.0.1", "10.77.0.2"]
    assert len(set(result["where"]["workers"])) == NODES
    assert len(set(result["where"]["votes"])) == NODES
    assert len(set(result["train_workers"])) == NODES
    assert len(set(result["train_votes"])) == NODES
    assert result["replicas_identical"] and result["identical"]
    # The sign bytes of the trainer's tiny MLP (1 bit per parameter, in whole words).
    assert result["train_bytes"] < 0.05 * 4 * 203_530

    # The vote equals a numpy majority vote of the M gradients (bit set iff > M // 2 negative):
    # after two rounds at lr 1 from zero the parameters are -2 V (Signum's momentum keeps the
    # sign of a fixed gradient).
    negatives = sum((synthetic_gradient(r, D).numpy() < 0).astype(int) for r in range(NODES))
    expected = -2 * np.where(negatives > NODES // 2, -1.0, 1.0)
    np.testing.assert_array_equal(np.array(result["vote"]), expected)

    # down removed every namespace it made and its state.
    assert not ({"rsbr"} | {f"rs{i}" for i in range(NODES)}) & _namespaces()
    assert not netns_cluster.STATE_FILE.exists()


@pytest.mark.ray
def test_comm_round_vote_and_gloo_match_numpy_on_local_ray(ray_session):
    """The communication-round actors on a one-node Ray (no root needed): the sharded vote
    equals numpy's majority vote on every worker, and gloo all-reduce equals numpy's mean."""
    import ray

    from raysign import wire
    from raysign.actors.comm_bench import GlooGroup, VoteRound, spread_group, synthetic_gradient

    d, m = 10_007, 2
    grads = np.stack([synthetic_gradient(r, d).numpy() for r in range(m)])
    group = spread_group(m, cpus_per_bundle=0.5, strategy="PACK")
    try:
        expected = np.where((grads < 0).sum(0) > m // 2, -1.0, 1.0)
        for transport in ("objects", "direct"):
            vote = VoteRound(group, m, d, 2, wire.KIND_SIGNS, transport=transport)
            record = vote.round(0)
            # Two messages (32-byte headers) of whole 64-bit words: 1 bit per parameter.
            assert record["bytes_sent_per_worker"] == 2 * 32 + 8 * -(-d // 64)
            # One round at lr 1 from zero parameters: -V.
            np.testing.assert_array_equal(ray.get(vote.workers[1].parameter_values.remote()),
                                          -expected)
            assert vote.replicas_identical()
            vote.shutdown()
        gloo = GlooGroup(group, m, d)
        assert len(gloo.allreduce_rounds(1)) == 1
        np.testing.assert_allclose(ray.get(gloo.workers[1].mean_values.remote()),
                                   grads.mean(0), atol=1e-6)
        gloo.shutdown()
    finally:
        ray.util.remove_placement_group(group)


def test_kill_node_and_restart_node_refuse_the_head_and_a_missing_cluster(monkeypatch):
    """Cheap, no cluster: the head (node 0) holds the cluster's state and is never killed."""
    monkeypatch.setattr(netns_cluster.ClusterState, "load", classmethod(lambda cls: None))
    with pytest.raises(RuntimeError, match="no cluster is up"):
        netns_cluster.kill_node(1)
    state = netns_cluster.ClusterState(nodes=4, rate="1gbit", delay="", cpus_per_node=1)
    monkeypatch.setattr(netns_cluster.ClusterState, "load", classmethod(lambda cls: state))
    killed = []
    monkeypatch.setattr(netns_cluster, "_kill_namespace_processes",
                        lambda namespaces, **kw: killed.append(namespaces) or {})
    for node in (0, 4):
        with pytest.raises(ValueError, match=r"must be a worker node, in \[1, 3\]"):
            netns_cluster.kill_node(node)
        with pytest.raises(ValueError, match="must be a worker node"):
            netns_cluster.restart_node(node)
    assert killed == []
