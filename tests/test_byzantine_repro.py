"""The Byzantine grid's reproducibility record (scripts/bench_signsgd_byzantine.py, issue 20
item 6): every row says who voted, a disturbed cell is run again on fresh actors, and the
tables mark rows carried over from an earlier commit or disturbed. No Ray: the trainer is a
stand-in whose per-step records are written out by hand here."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "bench_signsgd_byzantine", ROOT / "scripts" / "bench_signsgd_byzantine.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench
_spec.loader.exec_module(bench)

from raysign.results import RunDir  # noqa: E402
from raysign.signsgd.config import SignSGDConfig  # noqa: E402


def record(step: int, voters: int = 7, rejected: int = 0, failed: tuple = (),
           loss: float = 2.0) -> dict:
    return {"step": step, "voters": voters, "rejected": rejected, "failed_workers": list(failed),
            "loss": loss}


def test_participation_counts_short_rounds_rejections_and_failed_workers():
    records = [record(1), record(2, voters=6, failed=(3,)), record(3, voters=5, rejected=2,
                                                                      failed=(5, 3))]
    assert bench.participation(records, 7) == {
        "expected_voters": 7, "min_voters": 5, "short_rounds": 2, "diverged_rounds": 0,
        "rejected": 2, "failed_workers": "3;5", "disturbed": True}
    clean = bench.participation([record(1), record(2)], 7)
    assert clean["disturbed"] is False and clean["min_voters"] == 7
    assert clean["short_rounds"] == 0 and clean["failed_workers"] == ""


def test_a_timed_out_worker_disturbs_a_cell_but_a_diverged_model_does_not():
    # A live worker whose message missed the round (rejected, finite loss) vs every worker
    # abstaining once the model diverged (non-finite honest loss): the second is the same on
    # every re-run of the cell.
    timed_out = bench.participation([record(1), record(2, voters=6, rejected=1)], 7)
    assert timed_out["short_rounds"] == 1 and timed_out["disturbed"] is True
    diverged = bench.participation(
        [record(1), record(2, voters=0, rejected=7, loss=float("nan")),
         record(3, voters=0, rejected=7, loss=float("inf"))], 7)
    assert diverged["diverged_rounds"] == 2 and diverged["short_rounds"] == 0
    assert diverged["min_voters"] == 0 and diverged["disturbed"] is False


@dataclass
class Summary:
    test_accuracy: float
    resyncs: int = 0
    replicas_identical: bool = True
    steps: int = 3
    wall_seconds: float = 0.0


class StandInTrainer:
    """Plays back one scripted run per ``run`` call: (records, summary)."""

    started: list[StandInTrainer] = []

    def __init__(self, config, progress=False):
        self.runs = list(self.script.pop(0))
        self.shut = False
        self.reconfigured = 0
        StandInTrainer.started.append(self)

    def reconfigure(self, config):
        self.reconfigured += 1

    def run(self, on_record):
        records, summary = self.runs.pop(0)
        for r in records:
            on_record(r)
        return summary

    def shutdown(self):
        self.shut = True


def config(name: str = "median-alie-3-0") -> SignSGDConfig:
    return SignSGDConfig(model="mlp", aggregator="median", attack="alie", num_byzantine=3,
                         num_workers=7, max_steps=3, name=name)


def facts(trainer) -> dict:
    return {"param_digest": f"digest-{StandInTrainer.started.index(trainer)}",
            "worker_threads": 1}


def test_a_disturbed_cell_is_run_again_on_fresh_actors_and_the_clean_run_kept():
    # First actors: one round counted 6 of 7 voters (worker 4 failed and was re-synced);
    # fresh actors: a full vote every round.
    StandInTrainer.started = []
    StandInTrainer.script = [
        [([record(1), record(2, voters=6, failed=(4,)), record(3)], Summary(0.7149, resyncs=1))],
        [([record(1), record(2), record(3)], Summary(0.6788))],
    ]
    trainer, summary, fields = bench.run_cell(None, config(), retries=2,
                                              start=StandInTrainer, facts=facts)
    first, second = StandInTrainer.started
    assert first.shut and not second.shut and trainer is second
    assert second.reconfigured == 0  # the retry starts new actors, it does not reuse them
    assert summary.test_accuracy == 0.6788
    assert fields["attempts"] == 2 and fields["disturbed"] is False
    assert fields["min_voters"] == 7 and fields["param_digest"] == "digest-1"


def test_a_cell_still_disturbed_after_its_retries_is_kept_and_marked():
    StandInTrainer.started = []
    short = ([record(1, voters=6, failed=(2,))], Summary(0.5, resyncs=1))
    StandInTrainer.script = [[short], [short]]
    _, summary, fields = bench.run_cell(None, config(), retries=1, start=StandInTrainer,
                                        facts=facts)
    assert fields["attempts"] == 2 and fields["disturbed"] is True
    assert fields["min_voters"] == 6 and fields["failed_workers"] == "2"


def test_replicas_that_differed_make_a_cell_disturbed_even_with_every_voter_counted():
    StandInTrainer.started = []
    StandInTrainer.script = [[([record(1)], Summary(0.8, replicas_identical=False))]]
    _, _, fields = bench.run_cell(None, config(), retries=0, start=StandInTrainer, facts=facts)
    assert fields["disturbed"] is True and fields["attempts"] == 1


def test_tables_mark_carried_over_and_disturbed_rows(tmp_path):
    rows = [
        {"aggregator": "vote", "attack": "negate", "adversaries": 3, "seed": 0,
         "test_accuracy": 0.7612, "provenance": "c1ce48e, not reproduced"},
        {"aggregator": "median", "attack": "negate", "adversaries": 3, "seed": 0,
         "test_accuracy": 0.75, "provenance": "f0ec6a0", "disturbed": True},
        {"aggregator": "mean", "attack": "negate", "adversaries": 3, "seed": 0,
         "test_accuracy": 0.5, "provenance": "f0ec6a0", "disturbed": False},
    ]
    out = RunDir(tmp_path)
    bench.summarise(rows, ["vote", "median", "mean"], [3], "mlp", out)
    table = (tmp_path / "tables.md").read_text()
    assert "| vote | 0.761 +- 0.000* |" in table
    assert "| median | 0.750 +- 0.000† |" in table
    assert "| mean | 0.500 +- 0.000 |" in table
    assert "| vote | 0.761* |" in table and "| mean | 0.500 |" in table


def test_rows_read_back_typed_from_old_and_new_csv(tmp_path):
    out = RunDir(tmp_path)
    old = {"aggregator": "vote", "attack": "none", "adversaries": 0, "seed": 0,
           "test_accuracy": 0.8326, "steps": 150, "wall_seconds": 26.6}
    new = {**old, "test_accuracy": 0.833, "min_voters": 7, "disturbed": False,
           "replicas_identical": True, "failed_workers": "", "param_digest": "3320466e"}
    out.write_csv("old.csv", [old])
    out.write_csv("new.csv", [new])
    assert bench.read_rows(tmp_path / "old.csv") == [old]
    (read,) = bench.read_rows(tmp_path / "new.csv")
    assert read == new and read["disturbed"] is False and isinstance(read["min_voters"], int)


def test_carried_over_rows_fill_the_table_marked_and_are_replaced_when_measured():
    def row(agg, acc, **extra):
        return {"aggregator": agg, "attack": "alie", "adversaries": 3, "seed": 0,
                "test_accuracy": acc, **extra}

    measured_here = [row("vote", 0.6623, provenance="6f7925b")]
    committed = [row("vote", 0.6623), row("median", 0.7149)]
    rows = bench.carry_over(measured_here, committed, "c1ce48e")
    assert rows == [row("vote", 0.6623, provenance="6f7925b"),
                    row("median", 0.7149, provenance="c1ce48e, not reproduced")]
    # A resume runs the carried cell again and its row takes the carried row's place.
    assert bench.measured(rows) == {("vote", "alie", 3, 0)}
    bench.put_row(rows, row("median", 0.6788, provenance="6f7925b"))
    assert rows == [row("vote", 0.6623, provenance="6f7925b"),
                    row("median", 0.6788, provenance="6f7925b")]
    assert bench.measured(rows) == {("vote", "alie", 3, 0), ("median", "alie", 3, 0)}


def test_a_cell_whose_run_raised_is_run_again_on_fresh_actors():
    # A worker restarted between rounds after reconfigure still holds the first cell's payload
    # kind; an omniscient adversary reading its message raises and ends the run.
    class Raising(StandInTrainer):
        def run(self, on_record):
            if StandInTrainer.started.index(self) == 0:
                raise RuntimeError("worker rank 5 failed in compute: kind=1 but expected 0")
            return super().run(on_record)

    StandInTrainer.started = []
    StandInTrainer.script = [[], [([record(1)], Summary(0.7252))]]
    trainer, summary, fields = bench.run_cell(None, config(), retries=1, start=Raising,
                                              facts=facts)
    first, second = StandInTrainer.started
    assert first.shut and trainer is second and summary.test_accuracy == 0.7252
    assert fields["attempts"] == 2 and fields["disturbed"] is False
