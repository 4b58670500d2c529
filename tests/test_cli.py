"""The `raysign` command: one sub-command per capability, the first releases' names as aliases,
and booleans as real flags."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from raysign import cli
from raysign.config import add_config_arguments, config_from_args

CAPABILITIES = ("signsgd", "crowd", "topics", "forecast", "lander")


def run_cli(*args: str, block_ray: bool = False) -> subprocess.CompletedProcess:
    """``raysign ARGS`` in a fresh interpreter; with ``block_ray`` ``import ray`` fails."""
    prelude = "import sys; sys.modules['ray'] = None; " if block_ray else ""
    code = f"{prelude}from raysign.cli import main; sys.exit(main({list(args)!r}))"
    return subprocess.run([sys.executable, "-c", "import sys; " + code], capture_output=True,
                          text=True, timeout=300)


def test_every_capability_has_a_sub_command_and_the_sweep_command():
    assert set(cli.SUBCOMMANDS) == {*CAPABILITIES, "sweep"}


def test_top_level_help_lists_the_sub_commands_without_importing_ray():
    result = run_cli("--help", block_ray=True)
    assert result.returncode == 0, result.stderr
    for name in (*CAPABILITIES, "sweep", "train", "land"):
        assert name in result.stdout


@pytest.mark.parametrize("alias, name", [("train", "signsgd"), ("land", "lander")])
def test_old_sub_command_names_are_aliases_with_the_same_options(alias, name):
    old, new = run_cli(alias, "--help"), run_cli(name, "--help")
    assert old.returncode == new.returncode == 0, old.stderr + new.stderr
    options = [line.split()[0] for line in new.stdout.splitlines()
               if line.strip().startswith("--")]
    assert len(options) > 3
    for option in options:
        assert option in old.stdout


@dataclasses.dataclass(frozen=True)
class _Toy:
    steps: int = 3
    progress: bool = True
    shuffle: bool = False


def test_config_booleans_are_flag_pairs_not_numbers():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, _Toy, {"steps": "s", "progress": "p", "shuffle": "h"})
    assert config_from_args(_Toy, parser.parse_args([])) == _Toy()
    flipped = config_from_args(_Toy, parser.parse_args(["--no-progress", "--shuffle"]))
    assert flipped == _Toy(progress=False, shuffle=True)
    with pytest.raises(SystemExit):
        parser.parse_args(["--progress", "0"])


SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_every_script_answers_help(script):
    """An entry point or benchmark whose imports broke fails here, not on a user's cluster."""
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
