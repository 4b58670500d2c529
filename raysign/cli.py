"""The ``raysign`` command: one sub-command per capability.

Each sub-command lives in a module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
this file only wires them to argparse. Modules are imported when their sub-command runs, so
``raysign --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help, aliases). A sub-command is named after its capability; the
# aliases are the names the first releases used.
SUBCOMMANDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "signsgd": ("raysign.actors.signsgd_job",
                "distributed signSGD with majority vote (Ray actors)", ("train",)),
    "crowd": ("raysign.actors.crowd_job",
              "crowd labels: Dawid-Skene aggregation, MBEM, budget trials", ()),
    "topics": ("raysign.actors.topics_job",
               "spectral (tensor-method) LDA on NYT with TensorLy", ()),
    "forecast": ("raysign.actors.forecast_job",
                 "TT-RNN forecasting against LSTM/MLSTM/DLinear baselines", ()),
    "lander": ("raysign.actors.lander_job",
               "Neural Lander: ground-effect env, SN residual, controllers", ("land",)),
    "sweep": ("raysign.actors.sweep", "run a Ray Tune sweep from tune_configs/", ()),
}
ALIASES = {alias: name for name, (_, _, aliases) in SUBCOMMANDS.items() for alias in aliases}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raysign", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = next((a for a in argv if not a.startswith("-")), None)
    wanted = ALIASES.get(wanted, wanted)
    for name, (module, help_text, aliases) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, aliases=list(aliases))
        # Only the chosen sub-command's module is imported (and only it gets its options).
        if name == wanted:
            importlib.import_module(module).add_arguments(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    command = ALIASES.get(args.command, args.command)
    module = importlib.import_module(SUBCOMMANDS[command][0])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
