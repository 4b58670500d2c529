"""ByzFL aggregator chains and a researcher's own attacks and aggregators, plugged into the
vote path by name or import path, against ByzFL called directly and plain numpy."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import pickle
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import user_byzantine_plugins as plugins

from raysign import wire
from raysign.actors import signsgd_job
from raysign.actors.vote import VoteActor
from raysign.config import ConfigError, to_dict
from raysign.signsgd import aggregators
from raysign.signsgd.aggregators import make_aggregator
from raysign.signsgd.attacks import (
    ATTACKS,
    OMNISCIENT_ATTACKS,
    make_attack,
    make_crafted_attack,
)
from raysign.signsgd.config import SignSGDConfig
from raysign.signsgd.replica import Replica

PLUGINS = "user_byzantine_plugins"


@pytest.fixture(scope="module")
def byzfl():
    """``byzfl.aggregators`` loaded the way the tests of test_aggregators.py load it."""
    spec = importlib.util.find_spec("byzfl")
    if spec is None:
        pytest.skip("byzfl (bench extra) is not installed")
    if "byzfl" not in sys.modules:
        stub = types.ModuleType("byzfl")
        stub.__path__ = list(spec.submodule_search_locations)
        stub.__spec__ = spec
        sys.modules["byzfl"] = stub
    return importlib.import_module("byzfl.aggregators")


def fp32_message(values: np.ndarray, step: int, sender: int) -> np.ndarray:
    message = wire.new_message(wire.KIND_FP32, sender=sender, step=step, shard=0,
                               length=values.size)
    wire.body(message).view(np.float32)[:] = values
    return message


def vote_fp32(aggregate, rows: np.ndarray, step: int) -> np.ndarray:
    """One round of a vote actor (no Ray) aggregating fp32 ``rows`` [n, d]."""
    actor = VoteActor(0, 0, rows.shape[1], wire.KIND_FP32, aggregate)
    out, stats = actor.vote(step, *[fp32_message(r, step, i) for i, r in enumerate(rows)])
    assert stats["num_valid"] == len(rows) and not stats["rejected"]
    return wire.body(out).view(np.float32).copy()


CHAINS = [
    ("byzfl:NNM+TrMean", lambda m, f: [m.NNM(f=f), m.TrMean(f=f)]),
    ("byzfl:Bucketing(s=2)+Median", lambda m, f: [m.Bucketing(s=2), m.Median()]),
    ("byzfl:GeometricMedian(nu=0.1, T=5)", lambda m, f: [m.GeometricMedian(nu=0.1, T=5)]),
    ("byzfl:MDA", lambda m, f: [m.MDA(f=f)]),
    ("byzfl:ARC(f=1)+Clipping(c=2.0)+CAF", lambda m, f: [m.ARC(f=1), m.Clipping(c=2.0),
                                                          m.CAF(f=f)]),
]


@pytest.mark.parametrize("spec,direct", CHAINS, ids=[c[0] for c in CHAINS])
def test_byzfl_chain_in_the_vote_actor_equals_byzfl_called_directly(byzfl, spec, direct):
    """Two rounds through ``VoteActor.vote``; round k equals ByzFL's stages applied in order
    after ``np.random.seed([seed, k])`` (Bucketing draws its permutation there)."""
    f, seed = 2, 5
    aggregate = SignSGDConfig(aggregator=spec, num_byzantine=f, num_workers=7, seed=seed,
                              model="mlp").make_aggregator()
    rng = np.random.default_rng(0)
    for step in range(2):
        rows = (rng.standard_normal(40) + rng.standard_normal((7, 40))).astype(np.float32)
        ours = vote_fp32(aggregate, rows, step)
        np.random.seed([seed, step])
        theirs = rows.copy()
        *pre, final = direct(byzfl, f)
        for stage in pre:
            theirs = stage(theirs)
        np.testing.assert_array_equal(ours, np.asarray(final(theirs), dtype=np.float32))


def test_byzfl_chain_pickles_as_its_spec_and_continues_its_random_sequence(byzfl):
    rows = np.random.default_rng(1).standard_normal((6, 9)).astype(np.float32)
    chain = make_aggregator("byzfl:Bucketing(s=2)+Median", 1, seed=3)
    chain(rows)
    copy = pickle.loads(pickle.dumps(chain))
    assert copy.calls == 1 and copy.spec == chain.spec
    np.random.seed([3, 1])  # the second call of seed 3
    expected = np.asarray(byzfl.Median()(byzfl.Bucketing(s=2)(rows.copy())), np.float32)
    np.testing.assert_array_equal(copy(rows), expected)
    np.testing.assert_array_equal(chain(rows), expected)


def test_byzfl_chain_state_survives_a_checkpoint_into_a_restarted_vote_actor(byzfl, tmp_path):
    """A restarted vote actor gets the chain unpickled from the driver (state lost), then the
    state its predecessor returned, through a checkpoint file: rounds 2-3 equal ByzFL's
    Bucketing + CenteredClipping run without interruption (its centre carried, round k's
    permutation drawn after ``np.random.seed([seed, k])``)."""
    from raysign.signsgd.checkpoint import load_checkpoint, save_checkpoint

    spec, seed = "byzfl:Bucketing(s=2)+CenteredClipping(tau=0.5)", 3
    rng = np.random.default_rng(2)
    rounds = [(rng.standard_normal(11) + rng.standard_normal((5, 11))).astype(np.float32)
              for _ in range(4)]
    first = VoteActor(0, 0, 11, wire.KIND_FP32, make_aggregator(spec, 1, seed=seed))
    for step in range(2):
        vote_fp32(first.aggregate, rounds[step], step)
    path = save_checkpoint(tmp_path / "c.pt", config={}, step=2, workers=[],
                           extra={"votes": [first.state()]})
    restarted = VoteActor(0, 0, 11, wire.KIND_FP32, pickle.loads(pickle.dumps(
        make_aggregator(spec, 1, seed=seed))))
    restarted.load_state(load_checkpoint(path)["extra"]["votes"][0])
    clipping = byzfl.CenteredClipping(tau=0.5)
    for step, rows in enumerate(rounds):
        np.random.seed([seed, step])
        expected = np.asarray(clipping(byzfl.Bucketing(s=2)(rows.copy())), np.float32)
        if step >= 2:
            np.testing.assert_array_equal(vote_fp32(restarted.aggregate, rows, step), expected)


def test_byzfl_chain_leaves_the_callers_numpy_random_state_alone(byzfl):
    np.random.seed(11)
    before = np.random.random()
    np.random.seed(11)
    make_aggregator("byzfl:Bucketing(s=3)+Median", 0)(np.ones((6, 3), np.float32))
    assert np.random.random() == before


@pytest.mark.parametrize("spec,message", [
    ("byzfl:Foo", "'Foo' is not a ByzFL class valid as the last stage"),
    ("byzfl:TrMean+NNM", "'TrMean' is not a ByzFL class valid as a pre-aggregator"),
    ("byzfl:Bucketing(q=2)+Median", "Bucketing takes no ['q']"),
    ("byzfl:Bucketing(2)+Median", "must be key=literal pairs"),
    ("byzfl:NNM+", "is not 'Name' or 'Name(key=value, ...)'"),
])
def test_bad_byzfl_chains_fail_in_the_config_with_one_line(byzfl, spec, message):
    with pytest.raises(ConfigError) as err:
        SignSGDConfig(aggregator=spec, model="mlp")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_byzfl_is_one_line_naming_the_pip_command(monkeypatch):
    monkeypatch.delitem(sys.modules, "byzfl", raising=False)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "byzfl" else real_find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"pip install --no-deps byzfl==0\.0\.11$"):
        SignSGDConfig(aggregator="byzfl:NNM+TrMean", model="mlp")
    assert aggregators.BYZFL_INSTALL == "pip install --no-deps byzfl==0.0.11"


def test_user_aggregator_in_the_vote_actor_gives_the_numpy_reference():
    config = SignSGDConfig(aggregator=plugins.lower_median, model="mlp", num_workers=6)
    assert config.aggregator == f"{PLUGINS}:lower_median"  # stored as its import path
    assert json.loads(json.dumps(to_dict(config)))["aggregator"] == config.aggregator
    rows = np.random.default_rng(2).standard_normal((6, 33)).astype(np.float32)
    reference = np.array([sorted(column)[2] for column in rows.T], np.float32)
    np.testing.assert_array_equal(vote_fp32(config.make_aggregator(), rows, 0), reference)


def test_user_per_worker_attack_runs_on_the_workers_own_message():
    """A Byzantine replica (momentum 0: its message is its gradient) sends ``flip_top_k`` of
    it: the 3 largest-magnitude coordinates negated, in numpy."""
    path = f"{PLUGINS}:flip_top_k"
    assert path in ATTACKS and path not in OMNISCIENT_ATTACKS
    config = SignSGDConfig(dataset="mnist", model="mlp", num_workers=3, num_byzantine=1,
                           attack=path, momentum=0.0)
    images = np.random.default_rng(0).random((64, 784), dtype=np.float32)
    attacker = Replica(config, 2, images, np.arange(64) % 10, byzantine=True)
    grad = np.random.default_rng(3).standard_normal(attacker.d, dtype=np.float32)
    sent = attacker.momentum_and_attack(torch.from_numpy(grad.copy())).numpy()
    top = np.argsort(-np.abs(grad), kind="stable")[:3]
    expected = grad.copy()
    expected[top] = -grad[top]
    np.testing.assert_array_equal(sent, expected)


def test_user_crafted_attack_and_aggregator_through_one_vote_round():
    """3 honest + 2 crafted messages, aggregated by the user's lower median in a vote actor,
    against numpy: the crafted message is ``mean - f * std`` of the honest ones."""
    path, f = f"{PLUGINS}:shifted_mean", 2
    assert path in OMNISCIENT_ATTACKS and path not in ATTACKS
    config = SignSGDConfig(model="mlp", num_workers=5, num_byzantine=f, attack=path,
                           aggregator=f"{PLUGINS}:lower_median")
    attack = make_crafted_attack(config.attack, config.num_byzantine)
    honest = np.random.default_rng(4).standard_normal((3, 17)).astype(np.float32)
    crafted = attack(honest, honest[0], np.random.default_rng(0))
    rows = np.vstack([honest, crafted, crafted])
    bad = honest.mean(axis=0) - 2 * honest.std(axis=0)
    np.testing.assert_allclose(crafted, bad, rtol=1e-6, atol=1e-6)
    reference = np.sort(np.vstack([honest, bad, bad]), axis=0)[2]
    np.testing.assert_allclose(vote_fp32(config.make_aggregator(), rows, 0), reference,
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("field,value,message", [
    ("attack", "no_such_module_xyz:attack", "cannot be imported (ModuleNotFoundError"),
    ("attack", f"{PLUGINS}:NOT_CALLABLE", "is a int, not a callable"),
    ("attack", f"{PLUGINS}:lower_median", "takes 1 positional parameters"),
    ("attack", f"{PLUGINS}:three_arguments_wrong_dtype", "dtype=float64"),
    ("aggregator", f"{PLUGINS}:wrong_shape", "it returned ndarray shape=(7, 4)"),
    ("aggregator", f"{PLUGINS}:missing", "cannot be imported (AttributeError"),
    ("attack", lambda v, g: -v, "cannot be stored in the config"),
])
def test_a_bad_user_callable_fails_on_the_driver_with_one_line_naming_it(field, value, message):
    with pytest.raises(ConfigError) as err:
        SignSGDConfig(model="mlp", num_workers=7, num_byzantine=2, **{field: value})
    text = str(err.value)
    assert message in text and "\n" not in text
    if isinstance(value, str):
        assert repr(value) in text


def test_make_attack_refuses_a_path_of_the_other_kind():
    with pytest.raises(ValueError, match="crafted from the honest messages"):
        make_attack(f"{PLUGINS}:shifted_mean")
    with pytest.raises(ValueError, match="runs on each worker"):
        make_crafted_attack(f"{PLUGINS}:flip_top_k", 1)


@pytest.mark.parametrize("aggregator", [f"{PLUGINS}:lower_median", "byzfl:Median"])
def test_plugged_aggregators_need_the_whole_vector(aggregator):
    with pytest.raises(ConfigError, match="needs the whole vector"):
        SignSGDConfig(model="mlp", aggregator=aggregator, vote_shards=2)


def test_command_line_takes_a_byzfl_chain_and_a_user_attack_by_import_path(byzfl):
    parser = argparse.ArgumentParser()
    signsgd_job.add_arguments(parser)
    args = parser.parse_args(["--aggregator", "byzfl:NNM+TrMean(f=1)", "--attack",
                              f"{PLUGINS}:shifted_mean", "--num-byzantine", "2",
                              "--model", "mlp"])
    config = signsgd_job.config_from_args(args)
    assert (config.aggregator, config.attack) == ("byzfl:NNM+TrMean(f=1)",
                                                  f"{PLUGINS}:shifted_mean")
    chain = config.make_aggregator()
    assert [stage.f for stage in chain._stages] == [2, 1]  # f from --num-byzantine unless given


# ---------------------------------------------------------- docs/byzantine.md, as written
def docs_block(marker: str) -> str:
    text = (Path(__file__).resolve().parents[1] / "docs" / "byzantine.md").read_text()
    blocks = re.findall(rf"<!-- {marker} -->\s*```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 1, f"docs/byzantine.md needs one block marked {marker}"
    return blocks[0]


def test_docs_example_of_a_users_attack_and_aggregator_runs_as_written(tmp_path, monkeypatch,
                                                                        capsys):
    (tmp_path / "mylab_byzantine.py").write_text(docs_block("byzantine-module"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mylab_byzantine", raising=False)
    namespace = {"__name__": "__main__"}
    exec(compile(docs_block("byzantine-example"), "docs/byzantine.md example", "exec"),
         namespace)
    sys.modules.pop("mylab_byzantine", None)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "mylab_byzantine:flip_top_k mylab_byzantine:lower_median"
    assert printed[1] == "[3. 3.]"
    flipped = torch.tensor([0.1, 2.0, 0.3, -5.0, -0.2, -1.0])
    assert printed[2] == str(flipped)


@pytest.mark.parametrize("far", ["random", "scaled_negate"])
def test_nnm_trmean_and_mda_return_the_honest_mean_when_3_of_7_lie_far(byzfl, far):
    """docs/byzantine.md's reading of their equal accuracies under random and scaled
    negation: 4 honest rows, 3 far away; the mean of the honest rows (MDA exactly, NNM+TrMean
    to float32 rounding)."""
    rng = np.random.default_rng(0)
    honest = rng.standard_normal((4, 300)).astype(np.float32)
    if far == "random":
        adversaries = 10 * rng.standard_normal((3, 300)).astype(np.float32)
    else:
        adversaries = np.repeat(-10 * honest[:1], 3, axis=0)
    rows = np.vstack([honest, adversaries])
    honest_mean = honest.mean(axis=0)
    np.testing.assert_array_equal(make_aggregator("byzfl:MDA", 3)(rows), honest_mean)
    np.testing.assert_allclose(make_aggregator("byzfl:NNM+TrMean", 3)(rows), honest_mean,
                               rtol=0, atol=1e-6)


def test_loading_byzfl_for_a_chain_keeps_find_spec_working(byzfl, monkeypatch):
    """The package stub carries ByzFL's spec: other code asking ``find_spec("byzfl")`` after
    a chain was built (the ByzFL comparison tests do) gets it instead of a ValueError."""
    monkeypatch.delitem(sys.modules, "byzfl")
    aggregators.byzfl_aggregators()
    assert importlib.util.find_spec("byzfl").name == "byzfl"


@pytest.mark.parametrize("spec", ["byzfl:NNM+TrMean", "byzfl:MDA", "byzfl:GeometricMedian"])
def test_stateless_byzfl_chains_answer_a_round_the_same_after_a_restart(byzfl, spec):
    """A fresh chain (a restarted vote actor's) gives round 2 what the running one gives."""
    rng = np.random.default_rng(6)
    first, second = (rng.standard_normal((7, 20)).astype(np.float32) for _ in range(2))
    running = make_aggregator(spec, 2)
    running(first)
    np.testing.assert_array_equal(running(second), make_aggregator(spec, 2)(second))
