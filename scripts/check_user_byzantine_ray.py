"""A user's crafted attack and aggregator through a real local-Ray run, imported by the
worker and vote actors from ``PYTHONPATH``: ``tests/user_byzantine_plugins.py``'s
``shifted_mean`` against 1 of 3 workers, aggregated by its ``lower_median``, then by the
built-in ``median`` (the same for 3 workers); prints both runs' test accuracy and steps.

    PYTHONPATH=tests python scripts/check_user_byzantine_ray.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raysign.actors.cluster import connect  # noqa: E402
from raysign.actors.trainer import SignSGDTrainer  # noqa: E402
from raysign.signsgd.config import SignSGDConfig  # noqa: E402


def main() -> int:
    argparse.ArgumentParser(description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    connect(None)
    results, trainer = {}, None
    with tempfile.TemporaryDirectory() as results_dir:
        try:
            for aggregator in ("user_byzantine_plugins:lower_median", "median"):
                config = SignSGDConfig(model="mlp", num_workers=3, num_byzantine=1, lr=0.3,
                                       attack="user_byzantine_plugins:shifted_mean",
                                       aggregator=aggregator, max_steps=5, test_subset=500,
                                       results_dir=results_dir, name="user-byzantine")
                if trainer is None:
                    trainer = SignSGDTrainer(config, progress=False)
                else:
                    trainer.reconfigure(config)
                summary = trainer.run()
                results[aggregator] = (summary.test_accuracy, summary.steps)
                print(f"{aggregator}: test accuracy {summary.test_accuracy:.4f} after "
                      f"{summary.steps} steps (load average {os.getloadavg()[0]:.1f})",
                      flush=True)
        finally:
            if trainer is not None:
                trainer.shutdown()
    same = len(set(results.values())) == 1
    print("equal" if same else "different", results)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
