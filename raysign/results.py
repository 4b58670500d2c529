"""Where runs write their results: ``<results_dir>/<name>/<timestamp>/``.

Each run directory holds ``config.json``, ``metrics.jsonl`` (one JSON object per line, appended
and flushed as the run goes, so a killed run keeps what it measured), CSV tables, PNG figures
and checkpoints.

``results_dir`` is a local or shared-filesystem path, or a URI (``s3://bucket/runs``,
``file:///shared/runs``; ``raysign.storage``). For a URI the run writes into a local staging
folder and ``sync()`` uploads what changed since the last sync (the trainer syncs after every
checkpoint and at the end), so a killed run keeps, at its destination, what the last sync
wrote; ``close()`` syncs a last time and removes the staging folder.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from raysign import storage

# Uploaded under a temporary name and renamed, so that the destination never holds half a
# checkpoint.
ATOMIC_SUFFIXES = (".pt",)


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
    """One run's output folder: ``path`` is where files are written on this machine; ``uri``
    the destination they are uploaded to by ``sync()`` (None when ``path`` is the destination).
    """

    def __init__(self, path: str | Path, uri: str | None = None):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.uri = uri
        self._uploaded: dict[str, tuple[int, int]] = {}

    @property
    def location(self) -> str:
        """Where the results end up: the URI, or the local folder."""
        return self.uri or str(self.path)

    @classmethod
    def create(cls, root: str | Path, name: str) -> RunDir:
        """A new folder ``root/name/<YYYYmmdd-HHMMSS>`` (suffixed if that already exists);
        for a URI ``root``, the destination is created and the files are staged locally."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        if storage.is_uri(root):
            location = storage.join(root, name, stamp)
            suffix = 1
            while storage.exists(location):
                location = storage.join(root, name, f"{stamp}-{suffix}")
                suffix += 1
            storage.make_directory(location)
            return cls(_fresh_staging(location), uri=location)
        path = Path(root) / name / stamp
        suffix = 1
        while path.exists():
            path = Path(root) / name / f"{stamp}-{suffix}"
            suffix += 1
        return cls(path)

    @classmethod
    def open(cls, location: str | Path) -> RunDir:
        """An existing run folder, to continue writing into. A URI's files are downloaded
        into a fresh staging folder (whatever an earlier process left there is discarded: the
        destination holds what its last sync wrote)."""
        if not storage.is_uri(location):
            if not Path(location).is_dir():
                raise FileNotFoundError(f"run folder {str(location)!r} does not exist")
            return cls(location)
        location = str(location)
        if storage.kind(location) != "directory":
            raise FileNotFoundError(f"run folder {location!r} does not exist")
        staging = _fresh_staging(location)
        storage.download(location, staging)
        run_dir = cls(staging, uri=location)
        run_dir._uploaded = run_dir._changed()  # what is there already needs no upload
        return run_dir

    def _changed(self) -> dict[str, tuple[int, int]]:
        """Every local file (relative name) whose size or modification time differs from its
        last upload, with its new (size, mtime_ns)."""
        changed = {}
        for file in sorted(p for p in self.path.rglob("*") if p.is_file()):
            name = file.relative_to(self.path).as_posix()
            if name.endswith(".tmp"):
                continue
            stat = file.stat()
            if self._uploaded.get(name) != (stat.st_size, stat.st_mtime_ns):
                changed[name] = (stat.st_size, stat.st_mtime_ns)
        return changed

    def sync(self) -> None:
        """Upload the files that changed since the last sync to ``uri`` (nothing to do for a
        local run folder)."""
        if self.uri is None:
            return
        for name, stamp in self._changed().items():
            storage.upload_file(self.path / name, storage.join(self.uri, name),
                                atomic=name.endswith(ATOMIC_SUFFIXES))
            self._uploaded[name] = stamp

    def close(self) -> None:
        """Sync a last time and remove the staging folder of a URI run (``path`` is gone
        afterwards; ``location`` still names the results)."""
        if self.uri is None:
            return
        self.sync()
        shutil.rmtree(self.path, ignore_errors=True)

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


def _fresh_staging(location: str) -> Path:
    staging = storage.staging_dir(location)
    shutil.rmtree(staging, ignore_errors=True)
    return staging


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All records of a JSON-lines file."""
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]
