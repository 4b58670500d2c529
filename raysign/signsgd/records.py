"""What a distributed signSGD run records: one dict per step and a ``RunSummary`` at the end.

The actors stamp each stage of a round with ``time.time()`` (``raysign.actors.worker`` and
``raysign.actors.vote``); ``round_stage_times`` turns those stamps into the five-stage split
of Bernstein et al. 2019, Section 5 (plus the gradient computation):

- compress: sign + pack on the worker (the slowest worker);
- gather: from the last worker's message being ready to the last vote actor starting;
- vote: validation + majority vote (the slowest shard);
- broadcast: from the last vote result being ready to the last worker starting to apply it;
- decompress: unpack + update on the worker (the slowest worker).

``step_record`` is one line of ``metrics.jsonl``; ``summarise`` is ``summary.json``. Plain
Python on the stats dicts the actors return, so it is tested without Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raysign.signsgd.report import STAGES


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


def step_record(step: int, worker_stats: list[dict], vote_stats: list[dict],
                apply_stats: list[dict], *, failed: set[int], byzantine: set[int],
                with_density: bool, stages: dict[str, float]) -> dict[str, Any]:
    """One step's line of ``metrics.jsonl`` from the actors' stats: loss, schedule and epoch
    of the honest replicas that voted (not restarted ones), bytes, voters, rejections, the
    ``failed`` workers, per vote shard the ranks whose message counted, and ``stages``
    (``round_stage_times`` of the same stats)."""
    honest_stats = [st for st in worker_stats
                    if st["rank"] not in byzantine and not st.get("restarted")]
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
        # The ranks whose vote overlapped their backward pass (SignSGDConfig.overlap).
        "overlapped_workers": sorted(st["rank"] for st in worker_stats if st.get("overlap")),
        # Per vote shard, the sorted ranks whose message counted (None: not reported).
        "participation": [st.get("counted")
                          for st in sorted(vote_stats, key=lambda st: st["shard"])],
        **stages,
    }
    if with_density:
        record["density"] = honest_stats[0]["density"]
    return record


def headline(metrics: dict[str, float]) -> str:
    """The metric a run's curve follows: test accuracy when there is one, else the first."""
    return "test_accuracy" if "test_accuracy" in metrics else next(iter(metrics))


def summarise(records: list[dict], curve: list[tuple[int, float]], *, identical: bool,
              resyncs: int, num_parameters: int, builtin: bool, last_metrics: dict[str, float],
              wall_seconds: float, run_dir: str) -> RunSummary:
    """The run's summary from its step records (this session's; after a resume also the
    earlier ones kept in ``metrics.jsonl``) and accuracy curve. ``builtin``: the built-in
    workload, whose headline is the curve's last accuracy even when a resume ran no step."""
    # The first rounds include actor warm-up; time the rest.
    steady = records[min(2, len(records) - 1):]
    stages = {k: float(np.mean([r[k] for r in steady])) for k in ("compute", *STAGES)}
    sent = float(np.mean([r["bytes_sent_per_worker"] for r in records]))
    fp32 = 4.0 * num_parameters
    accuracy = curve[-1][1] if builtin else last_metrics.get("test_accuracy", math.nan)
    return RunSummary(
        test_accuracy=accuracy, steps=len(records), num_parameters=num_parameters,
        bytes_sent_per_worker_per_step=sent, fp32_bytes_per_step=fp32,
        compression_ratio=fp32 / sent, stage_seconds=stages,
        replicas_identical=identical, resyncs=resyncs,
        rejected_payloads=sum(r["rejected"] for r in records), wall_seconds=wall_seconds,
        run_dir=run_dir, accuracy_curve=curve, test_metrics=dict(last_metrics))
