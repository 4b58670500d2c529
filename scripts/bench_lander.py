"""Neural Lander benchmark (Shi et al., ICRA 2019, sec. VI): baseline vs Neural Lander vs the
unnormalised network vs the oracle, on landing from 1-2 m and hovering at 5, 10 and 20 cm,
10 seeds per task and controller.

    python scripts/bench_lander.py                      # the defaults of ``raysign land``
    python scripts/bench_lander.py --eval-seeds 3 --flights 4 --steps 1000   # quicker
    ray job submit --working-dir . -- python scripts/bench_lander.py

Prints per task the final mean |z error| of every controller as a ratio to the baseline's
(measured in the same run), touchdown speed and time, fixed-point iterations and the checked
targets; writes everything of ``raysign land`` plus ``bench.csv`` (the ratio table) to
``runs/bench_lander/<timestamp>/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors import lander_job  # noqa: E402
from raysign.lander.experiment import LanderConfig  # noqa: E402
from raysign.results import RunDir  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    lander_job.add_arguments(parser)
    parser.set_defaults(name="bench_lander")
    args = parser.parse_args(argv)
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(LanderConfig)}
    out = lander_job.run_land(LanderConfig(**fields), args.tasks.split(","),
                              args.controllers.split(","), threads=args.threads,
                              results_dir=args.results_dir, name=args.name,
                              address=args.address, num_cpus=args.num_cpus)
    base = {r["task"]: r["final_mean_abs_z_error"] for r in out["table"]
            if r["controller"] == "baseline"}
    rows = [{"task": r["task"], "controller": r["controller"],
             "final_mean_abs_z_error": r["final_mean_abs_z_error"],
             "ratio_to_baseline": r["final_mean_abs_z_error"] / base[r["task"]]
             if base.get(r["task"]) else float("nan"),
             "final_max_abs_z_error": r["final_max_abs_z_error"],
             "touchdowns": r["touchdowns"], "touchdown_speed_max": r["touchdown_speed_max"],
             "time_to_touchdown_mean": r["time_to_touchdown_mean"],
             "fp_iterations_mean": r["fp_iterations_mean"]} for r in out["table"]]
    RunDir(out["run_dir"]).write_csv("bench.csv", rows)
    print("\nfinal mean |z error| relative to the baseline (same run):")
    for r in rows:
        print(f"  {r['task']:11s} {r['controller']:11s} {r['final_mean_abs_z_error']:.4f} m"
              f"  x{r['ratio_to_baseline']:.3f}")
    for name, report in out["residuals"].items():
        print(f"  {name:11s} Lipschitz product {report['lipschitz_product']:.3f} "
              f"(gamma {report['gamma']}), certified |df/dT| <= "
              f"{report['thrust_lipschitz_bound']:.3f}, samples {report['samples']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
