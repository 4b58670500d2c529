"""Crowd labels: aggregation (``aggregate``), MBEM (``mbem``) and the user's own tables
(``tables``). ``aggregate_table``, ``mbem_table``, ``load_features`` and ``read_table`` are
importable from here; they load on first use, so importing a submodule stays light."""

from __future__ import annotations

from typing import Any

_TABLES = ("aggregate_table", "mbem_table", "load_features", "read_table")


def __getattr__(name: str) -> Any:
    if name in _TABLES:
        from raysign.crowd import tables

        return getattr(tables, name)
    raise AttributeError(f"module 'raysign.crowd' has no attribute {name!r}")
