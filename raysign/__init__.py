"""raysign: five results from "Bridging theory and practice in optimization", run for real.

The algorithms live in this folder as plain torch / numpy / TensorLy code that never imports
Ray. The distributed system (Ray actors, the jobs, the sweeps) lives in the repository's
top-level folders ``actors/`` and ``tune_configs/``, which are installed as the subpackages
``raysign.actors`` and ``raysign.tune_configs`` (``pyproject.toml``'s ``package-dir``), so that
raysign claims no generic top-level name in site-packages.
"""

from pathlib import Path

__version__ = "0.1.0"


def _add_source_tree() -> None:
    """Run from a source tree (a clone, or the working directory ``ray job submit`` uploads),
    ``raysign.actors`` and ``raysign.tune_configs`` are the folders beside this one: add the
    tree's root to this package's search path, as the installed layout does for site-packages.
    """
    here = Path(__file__).resolve().parent
    root = here.parent
    installed = (here / "actors").is_dir()
    source_tree = ((root / "pyproject.toml").is_file()
                   and (root / "actors" / "__init__.py").is_file())
    if source_tree and not installed and str(root) not in __path__:
        __path__.append(str(root))


_add_source_tree()
