"""Entry point for ``ray job submit --working-dir . -- python scripts/run_topics.py ...``.

The same options as ``raysign topics``; inside a Ray job, ``RAY_ADDRESS`` joins the cluster.
"""

import sys

from raysign.cli import main

if __name__ == "__main__":
    sys.exit(main(["topics", *sys.argv[1:]]))
