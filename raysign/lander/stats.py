"""Paired statistics over seeded Neural Lander episodes and the checks of the issue's claims
(Shi et al., ICRA 2019, sec. VI).

Episodes of two controllers with the same seed share their start and noise, so controllers are
compared by seed (``compare_by_seed``, ``paired_difference``: mean, t interval, paired t and
Wilcoxon tests). The decisions were fixed before their confirmatory runs:

- ``oracle_bound``: the oracle bounds ``neural`` from below if the upper end of the 95% interval
  of ``oracle - neural`` (final mean |z error|) is at most ``ORACLE_MARGIN`` (a non-inferiority
  test);
- ``touchdown_comparison``: ``neural`` lands no harder than ``baseline`` if every episode of
  both touched down and the upper end of the 95% interval of the touchdown-speed difference is
  at most ``TOUCHDOWN_MARGIN`` times the baseline's mean;
- ``check_claims``: those, the >= 80% error reduction and SN against no SN, per task.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from raysign.lander.tasks import is_descend_task

TOUCHDOWN_MARGIN = 0.10  # non-inferiority margin of touchdown_comparison, x baseline mean
ORACLE_MARGIN = 1e-4  # m, non-inferiority margin of oracle_bound (14% of the PD noise floor)


def finite_mean(values: list[float]) -> float:
    """Mean of the non-NaN ``values`` (NaN when there is none)."""
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def finite_max(values: list[float]) -> float:
    """Max of the non-NaN ``values`` (NaN when there is none)."""
    finite = [v for v in values if not math.isnan(v)]
    return float(np.max(finite)) if finite else math.nan


def paired_difference(first: np.ndarray, second: np.ndarray,
                      level: float = 0.95) -> dict[str, float]:
    """Paired statistics of ``d = second - first`` (float arrays of shape (n,), one entry per
    pair, e.g. per replicate or per seed): mean, sample std, t statistic, two-sided ``level``
    confidence interval of the mean from the t distribution with ``n - 1`` degrees of freedom,
    the paired t test's and the Wilcoxon signed-rank test's two-sided p values, and the number
    of ``d > 0``. NaN where
    ``n < 2`` or every difference is zero."""
    from scipy import stats

    d = np.asarray(second, dtype=float) - np.asarray(first, dtype=float)
    n = len(d)
    out = {"diff_mean": float(d.mean()), "diff_std": math.nan, "diff_t": math.nan,
           "diff_ci_low": math.nan, "diff_ci_high": math.nan, "diff_p_t": math.nan,
           "diff_p_wilcoxon": math.nan, "diff_positive": int(np.sum(d > 0))}
    if n < 2 or not np.any(d != 0):
        return out
    std = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    t = out["diff_mean"] / (std / math.sqrt(n)) if std > 0 else math.copysign(math.inf,
                                                                               out["diff_mean"])
    out.update(diff_std=std, diff_t=t, diff_ci_low=out["diff_mean"] - half,
               diff_ci_high=out["diff_mean"] + half,
               diff_p_t=float(2 * stats.t.sf(abs(t), n - 1)),
               diff_p_wilcoxon=float(stats.wilcoxon(d).pvalue))
    return out


def compare_by_seed(rows: list[dict[str, Any]], first: str, second: str,
                    metric: str = "final_mean_abs_z_error") -> list[dict[str, Any]]:
    """Per task, ``paired_difference`` of ``metric`` between the controllers ``first`` and
    ``second`` over the seeds both ran (the same seed gives both the same start and noise)."""
    out = []
    for task, seeds, a, b in _paired_by_seed(rows, first, second, metric):
        out.append({"task": task, "first": first, "second": second, "metric": metric,
                    "seeds": len(seeds), "first_mean": float(a.mean()),
                    "second_mean": float(b.mean()), **paired_difference(a, b)})
    return out


def _paired_by_seed(rows: list[dict[str, Any]], first: str, second: str, metric: str):
    """Per task (in order of appearance): the seeds both controllers ran and their ``metric``
    values on those seeds, ``(task, seeds, a, b)`` with float arrays ``a``, ``b`` of shape
    (seeds,); tasks without a common seed are left out."""
    for task in dict.fromkeys(r["task"] for r in rows):
        value = {(r["controller"], r["seed"]): r[metric] for r in rows if r["task"] == task}
        seeds = sorted(s for c, s in value if c == first and (second, s) in value)
        if seeds:
            yield (task, seeds, np.array([value[(first, s)] for s in seeds], dtype=float),
                   np.array([value[(second, s)] for s in seeds], dtype=float))


def oracle_bound(rows: list[dict[str, Any]], margin: float = ORACLE_MARGIN,
                 learned: str = "neural") -> list[dict[str, Any]]:
    """Does the oracle bound ``learned`` from below? Per task (``landing_descend`` tasks left
    out: their final window is not a target), ``compare_by_seed`` of the final mean |z error|,
    ``d = oracle - learned``, with the decision fixed before the confirmatory run: the bound
    holds (``oracle <= learned`` up to ``margin``, a non-inferiority test) if the upper end of
    the 95% interval of the mean of ``d`` is at most ``margin`` (m); ``strictly_below`` if it
    is below 0."""
    out = []
    for row in compare_by_seed([r for r in rows if not is_descend_task(r["task"])],
                               learned, "oracle"):
        row.update(margin=margin, bound_holds=_interval_ends_within(row, margin),
                   strictly_below=_interval_ends_within(row, 0.0, strict=True))
        out.append(row)
    return out


def _interval_ends_within(row: dict[str, Any], bound: float, strict: bool = False) -> bool | None:
    """Whether the upper end of a ``paired_difference`` row's 95% interval is ``<= bound``
    (``<`` when ``strict``). Every difference zero (``seeds >= 2``, interval NaN) is the
    interval [0, 0]; fewer than two seeds decide nothing (None)."""
    high = row["diff_ci_high"]
    if math.isnan(high):
        if row["seeds"] < 2:
            return None
        high = row["diff_mean"]
    return bool(high < bound) if strict else bool(high <= bound)


def touchdown_comparison(rows: list[dict[str, Any]], first: str = "baseline",
                         second: str = "neural",
                         margin: float = TOUCHDOWN_MARGIN) -> list[dict[str, Any]]:
    """Touchdown speed of ``second`` against ``first`` per task, paired by seed
    (``paired_difference`` of ``d = v_td(second) - v_td(first)``), with the non-inferiority
    decision fixed before the first ``landing_descend`` run: ``second`` lands no harder than
    ``first`` if every episode of both touched down and the upper end of the 95% interval of
    the mean of ``d`` is at most ``margin`` times ``first``'s mean touchdown speed. Tasks where
    ``first`` never touched down get ``no_worse = None`` (not evaluable); other tasks where
    some episode did not touch down get ``False``; the hover tasks are left out."""
    out = []
    landings = [r for r in rows if r["task"].startswith("landing")]
    for task, seeds, a, b in _paired_by_seed(landings, first, second, "touchdown_speed"):
        row = {"task": task, "first": first, "second": second, "seeds": len(seeds),
               "first_touchdowns": int(np.sum(~np.isnan(a))),
               "second_touchdowns": int(np.sum(~np.isnan(b))),
               "first_mean": finite_mean(list(a)), "second_mean": finite_mean(list(b)),
               "first_max": finite_max(list(a)), "second_max": finite_max(list(b)),
               "margin": margin}
        all_down = row["first_touchdowns"] == row["second_touchdowns"] == len(seeds)
        if all_down:
            row.update(paired_difference(a, b))
            row["no_worse"] = _interval_ends_within(row, margin * row["first_mean"])
        else:
            row["no_worse"] = None if row["first_touchdowns"] == 0 else False
        out.append(row)
    return out


def check_claims(table: list[dict[str, Any]],
                 episodes: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The issue's targets per task: Neural Lander's reduction of the baseline's final mean
    |z error| (>= 80%; not a target of ``landing_descend``, whose reference ends below the
    ground), touchdown speed no worse (``touchdown_comparison`` of the ``episodes`` when given,
    else the maxima of the ``table``; None where the baseline never touched down: not
    evaluable), the oracle below it (``oracle_bound`` of the ``episodes`` when given, else
    the means), and SN against no-SN (in and out of the training range); the error targets
    are None for ``landing_descend`` tasks."""
    cell = {(r["task"], r["controller"]): r for r in table}
    touchdown = {r["task"]: r for r in touchdown_comparison(episodes)} if episodes else {}
    bound = {r["task"]: r["bound_holds"] for r in oracle_bound(episodes)} if episodes else {}
    rows = []
    for task in dict.fromkeys(r["task"] for r in table):
        def err(name: str, task: str = task) -> float:
            row = cell.get((task, name))
            return row["final_mean_abs_z_error"] if row else math.nan

        base, neural = err("baseline"), err("neural")
        reduction = 1.0 - neural / base if base > 0 and not is_descend_task(task) else math.nan
        speed_b = cell.get((task, "baseline"), {}).get("touchdown_speed_max", math.nan)
        speed_n = cell.get((task, "neural"), {}).get("touchdown_speed_max", math.nan)
        if task in touchdown:
            speed_ok = touchdown[task]["no_worse"]
        elif math.isnan(speed_b):
            speed_ok = None  # the baseline never touched down: nothing to compare against
        else:
            speed_ok = not math.isnan(speed_n) and speed_n <= speed_b
        rows.append({"task": task, "baseline_error": base, "neural_error": neural,
                     "oracle_error": err("oracle"), "nosn_error": err("nosn"),
                     "neural_gen_error": err("neural_gen"), "nosn_gen_error": err("nosn_gen"),
                     "neural_reduction": reduction,
                     "reduction_ge_80pct": None if math.isnan(reduction) else reduction >= 0.8,
                     "neural_touchdown_speed_max": speed_n,
                     "baseline_touchdown_speed_max": speed_b,
                     "touchdown_speed_no_worse": speed_ok,
                     "oracle_le_neural": None if is_descend_task(task)
                     else bound[task] if task in bound else err("oracle") <= neural,
                     "sn_beats_nosn": None if is_descend_task(task) else neural < err("nosn"),
                     "sn_beats_nosn_outside_range": None if is_descend_task(task)
                     else err("neural_gen") < err("nosn_gen")})
    return rows
