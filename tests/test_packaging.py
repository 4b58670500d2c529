"""What `pip install raysign` puts in site-packages, and how a source tree resolves the same names.

The repository keeps `actors/` and `tune_configs/` at its top level; they must install as
`raysign.actors` and `raysign.tune_configs` and never as top-level modules (a PyPI package named
`actors` exists). A wheel is built from a copy of the tracked files, as a fresh clone would
build it, and its file list and an import from it are checked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the dev extra brings tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def tracked_copy(dest: Path) -> Path:
    """The files git tracks (plus untracked, not ignored ones), copied to ``dest``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=ROOT, capture_output=True, check=True)
    for name in listed.stdout.decode().split("\0"):
        source = ROOT / name
        if name and source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def package_folders() -> set[str]:
    """Every folder with an ``__init__.py`` that the project ships, as its installed name."""
    names = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "raysign").rglob("__init__.py")
             if "__pycache__" not in p.parts}
    for top in ("actors", "tune_configs"):
        names |= {"raysign." + ".".join(p.parent.relative_to(ROOT).parts)
                  for p in (ROOT / top).rglob("__init__.py") if "__pycache__" not in p.parts}
    return names


def test_pyproject_lists_every_package_folder():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(config["packages"]) == package_folders()
    assert config["package-dir"] == {"raysign.actors": "actors",
                                     "raysign.tune_configs": "tune_configs"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tracked_copy(tmp_path_factory.mktemp("source"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True, timeout=600)
    (path,) = out.glob("raysign-*.whl")
    return path


def test_wheel_installs_nothing_at_the_top_level_but_raysign(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"raysign", next(t for t in top if t.endswith(".dist-info"))}
    for module in ("raysign/actors/trainer.py", "raysign/actors/vote.py",
                   "raysign/tune_configs/signsgd.py", "raysign/signsgd/replica.py",
                   "raysign/cli.py"):
        assert module in names, module
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "raysign = raysign.cli:main" in entry_points


def test_installed_wheel_imports_the_ray_layer_from_its_own_files(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site), str(wheel)], check=True, capture_output=True, timeout=600)
    code = ("import raysign.actors.trainer as t, raysign.tune_configs.signsgd as s, "
            "raysign.cli as c; print(t.__file__); print(s.__file__); "
            "print(sorted(c.SUBCOMMANDS))")
    env = dict(os.environ, PYTHONPATH=str(site))
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    trainer, sweep, commands = result.stdout.strip().splitlines()
    assert trainer == str(site / "raysign" / "actors" / "trainer.py")
    assert sweep == str(site / "raysign" / "tune_configs" / "signsgd.py")
    assert "signsgd" in commands and "sweep" in commands
    assert not (site / "actors").exists() and not (site / "tune_configs").exists()


def test_a_source_tree_resolves_the_ray_layer_from_itself(tmp_path):
    """The working directory `ray job submit --working-dir .` uploads is a source tree put in
    front of an installed raysign: its `raysign.actors` must be its own `actors/` folder."""
    tree = tracked_copy(tmp_path / "tree")
    code = ("import raysign, raysign.actors.vote as v, raysign.tune_configs as t; "
            "print(raysign.__file__); print(v.__file__); print(t.__file__)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tree / "raysign" / "__init__.py"),
                                     str(tree / "actors" / "vote.py"),
                                     str(tree / "tune_configs" / "__init__.py")]
