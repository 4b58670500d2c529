"""Where runs write their results: ``runs/<name>/<timestamp>/``.

Each run directory holds ``config.json``, ``metrics.jsonl`` (one JSON object per line, appended
and flushed as the run goes, so a killed run keeps what it measured), CSV tables, PNG figures
and checkpoints.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return _jsonable(value.item())
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


class RunDir:
    """One run's output folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    @classmethod
    def create(cls, root: str | Path, name: str) -> RunDir:
        """A new folder ``root/name/<YYYYmmdd-HHMMSS>`` (suffixed if that already exists)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(root) / name / stamp
        suffix = 1
        while path.exists():
            path = Path(root) / name / f"{stamp}-{suffix}"
            suffix += 1
        return cls(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, data: Mapping[str, Any]) -> Path:
        target = self.file(name)
        target.write_text(json.dumps(_jsonable(data), indent=2, sort_keys=True) + "\n")
        return target

    def log(self, record: Mapping[str, Any], name: str = "metrics.jsonl") -> None:
        """Append one record to a JSON-lines file."""
        with open(self.file(name), "a") as fh:
            fh.write(json.dumps(_jsonable(record)) + "\n")

    def write_csv(self, name: str, rows: Iterable[Mapping[str, Any]]) -> Path:
        rows = list(rows)
        target = self.file(name)
        fields: list[str] = []
        for row in rows:
            fields.extend(k for k in row if k not in fields)
        with open(target, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(_jsonable(row) for row in rows)
        return target


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All records of a JSON-lines file."""
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]
