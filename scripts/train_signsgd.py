"""Entry point for ``ray job submit --working-dir . -- python scripts/train_signsgd.py ...``.

The same options as ``raysign train``; inside a Ray job, ``RAY_ADDRESS`` joins the cluster.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors import train_job  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=train_job.__doc__.splitlines()[0])
    train_job.add_arguments(parser)
    sys.exit(train_job.run(parser.parse_args()))
