"""The ``raysign`` command: one sub-command per capability.

Each sub-command lives in a module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
this file only wires them to argparse. Modules are imported when their sub-command runs, so
``raysign --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("actors.train_job", "distributed signSGD with majority vote (Ray actors)"),
    "sweep": ("actors.sweep", "run a Ray Tune sweep from tune_configs/"),
    "crowd": ("actors.crowd_job", "crowd labels: Dawid-Skene aggregation, MBEM, budget trials"),
    "forecast": ("actors.forecast_job", "TT-RNN forecasting against LSTM/MLSTM/DLinear baselines"),
    "land": ("actors.lander_job", "Neural Lander: ground-effect env, SN residual, controllers"),
    "topics": ("actors.topics_job", "spectral (tensor-method) LDA on NYT with TensorLy"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raysign", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text)
        # Only the chosen sub-command's module is imported (and only it gets its options).
        if name == wanted:
            importlib.import_module(module).add_arguments(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
