"""Entry point for ``ray job submit --working-dir . -- python scripts/run_lander.py ...``.

The same options as ``raysign lander``; inside a Ray job, ``RAY_ADDRESS`` joins the cluster.
"""

import sys

from raysign.cli import main

if __name__ == "__main__":
    sys.exit(main(["lander", *sys.argv[1:]]))
