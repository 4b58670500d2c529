"""Validation for the frozen configuration dataclasses shared by the CLI, scripts and Ray Tune.

Every capability has one config type; its ``__post_init__`` calls these checks so that a bad
value fails before Ray starts, with a message naming the field and what would be valid.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration field holds a value outside its allowed range or set."""


def check_range(
    field: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Fail unless ``low <= value <= high`` (``<`` on an open end); None means unbounded."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        left = "(" if low_open or low is None else "["
        right = ")" if high_open or high is None else "]"
        interval = f"{left}{lo}, {hi}{right}"
        raise ConfigError(f"{field}={value!r} is outside the allowed range {interval}")


def check_choice(field: str, value: Any, allowed: Iterable[Any]) -> None:
    """Fail unless ``value`` is one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{field}={value!r} is not one of {allowed}")


def check_path_exists(field: str, path: str | Path, hint: str = "") -> None:
    """Fail unless ``path`` exists on this machine."""
    if not Path(path).exists():
        extra = f" ({hint})" if hint else ""
        raise ConfigError(f"{field}={str(path)!r} does not exist{extra}")


def add_config_arguments(parser: argparse.ArgumentParser, config_type: type,
                         help_text: Mapping[str, str]) -> None:
    """One ``--flag`` per field of a config dataclass, typed by its default (a boolean is a
    pair ``--flag`` / ``--no-flag``), with ``help_text[field]`` and the default in the help."""
    for f in dataclasses.fields(config_type):
        flag = "--" + f.name.replace("_", "-")
        help_line = f"{help_text[f.name]} (default: {f.default!r})"
        if isinstance(f.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                                help=help_line)
        else:
            parser.add_argument(flag, type=type(f.default), default=f.default, help=help_line)


def config_from_args(config_type: type, args: argparse.Namespace) -> Any:
    """The config dataclass built (and so validated) from ``add_config_arguments``' flags."""
    return config_type(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_type)})


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (possibly nested) config dataclass; paths become strings."""
    def convert(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    return {k: convert(v) for k, v in dataclasses.asdict(config).items()}


def config_from_mapping(config_type: type, values: Mapping[str, Any], **overrides: Any) -> Any:
    """The config dataclass built (and so validated) from the entries of ``values`` that are
    its fields - e.g. a Ray Tune trial's config, which also holds the sweep's own keys."""
    names = {f.name for f in dataclasses.fields(config_type)}
    return config_type(**{k: v for k, v in values.items() if k in names}, **overrides)
