"""A researcher's own attack or aggregator, named by its import path ``"package.module:name"``.

Configs are frozen dataclasses serialised with ``to_dict`` (``config.json``, checkpoints, Tune
trials), and the attack and the aggregator run in Ray actors, so a user's callable is stored
and shipped as the string ``"mypkg.attacks:flip_top_k"`` and imported where it runs (the
driver, each worker, each vote actor): the module must be importable in every Ray process
(installed, on ``PYTHONPATH``, or shipped with ``runtime_env={"py_modules": [...]}``).
``import_path_of(fn)`` turns a function defined in an importable module into that string.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_import_path(name: Any) -> bool:
    """True for a string of the form ``"package.module:attribute"`` (not ``"byzfl:..."``)."""
    return isinstance(name, str) and not name.startswith("byzfl:") and bool(_PATH.match(name))


def load_callable(path: str, what: str) -> Callable[..., Any]:
    """The callable at ``path`` (``"package.module:attribute"``); a ``ValueError`` naming
    ``what`` (e.g. ``"attack"``) and the path if it cannot be imported or is not callable."""
    if not is_import_path(path):
        raise ValueError(f"{what}={path!r} is not an import path 'package.module:name'")
    module_name, _, attribute = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{what}={path!r} cannot be imported ({err.__class__.__name__}: "
                         f"{err}); the module must be importable here and in every Ray "
                         "process") from None
    if not callable(target):
        raise ValueError(f"{what}={path!r} is a {type(target).__name__}, not a callable")
    return target


def import_path_of(fn: Callable[..., Any], what: str) -> str:
    """``"module:qualname"`` of a function defined at the top level of an importable module;
    a ``ValueError`` for a lambda, a nested function or one defined in ``__main__`` (the Ray
    processes could not import it)."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname or module == "__main__":
        raise ValueError(f"{what}={fn!r} cannot be stored in the config: define it at the top "
                         "level of an importable module and pass it (or its path "
                         "'package.module:name')")
    path = f"{module}:{qualname}"
    if load_callable(path, what) is not fn:
        raise ValueError(f"{what}={fn!r}: {path!r} names another object; define it at the "
                         "top level of an importable module")
    return path
