"""Where results, checkpoints and data live: a local path, a shared-filesystem path, or a URI.

A location is named one way everywhere (``--results-dir``, ``--data-dir``, ``--resume``): a
plain path, or a URI that ``pyarrow.fs.FileSystem.from_uri`` understands (``file://``,
``s3://``, ``gs://``, ``hdfs://``, ...), the mechanism Ray Train's ``RunConfig(storage_path=...)``
uses (``ray/train/_internal/storage.py``). Files are moved with ``pyarrow.fs.copy_files``.

A URI is never written or read in place: a run stages its folder locally and uploads it
(``raysign.results.RunDir.sync``), and a data folder is copied once per node into the cache
(``cached_copy``). Both local copies live under ``$RAYSIGN_CACHE`` (default
``~/.cache/raysign``): ``data/<hash of the URI>/`` and ``staging/<hash of the URI>/``.

``ray job submit --working-dir .`` runs the driver inside Ray's temporary copy of that folder
(``.../runtime_resources/working_dir_files/_ray_pkg_<hash>/``), which no other node sees and
which disappears with the session; ``check_location`` refuses a location that resolves there.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import posixpath
import re
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from raysign.config import ConfigError

CACHE_ENV = "RAYSIGN_CACHE"
# Set by Ray's job supervisor in the environment of a job's driver
# (ray/dashboard/modules/job/job_supervisor.py, ``_get_driver_env_vars``).
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
# Ray unpacks a job's --working-dir under <session>/runtime_resources/working_dir_files/
# (ray_constants.DEFAULT_RUNTIME_ENV_DIR_NAME, runtime_env/packaging.py RAY_PKG_PREFIX).
RAY_RUNTIME_DIR = "runtime_resources"
RAY_PKG_PREFIX = "_ray_pkg_"
FIX = "pass an absolute path on storage every node reaches, or a URI such as {example}"
# The schemes pyarrow.fs.FileSystem.from_uri resolves (pyarrow 14-26).
KNOWN_SCHEMES = frozenset({"file", "local", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs",
                           "abfss"})
# A scheme of two letters or more: "C:/data" stays a path.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def is_uri(location: str | Path) -> bool:
    """True for ``scheme://...`` (``file://``, ``s3://``, ...), False for a plain path."""
    return isinstance(location, str) and bool(_SCHEME.match(location))


def join(location: str | Path, *parts: str) -> str:
    """``location / part / ...`` for a path or a URI (a URI's query string stays at the end)."""
    if not is_uri(location):
        return str(Path(location).joinpath(*parts))
    split = urlsplit(str(location))
    path = posixpath.join(split.path or "/", *parts)
    return urlunsplit(split._replace(path=path))


def split_parent(location: str | Path) -> tuple[str, str]:
    """(the folder holding ``location``, its last name), for a path or a URI."""
    if not is_uri(location):
        path = Path(location)
        return str(path.parent), path.name
    split = urlsplit(str(location))
    folder, name = posixpath.split(split.path.rstrip("/"))
    return urlunsplit(split._replace(path=folder or "/")), name


def filesystem(location: str | Path) -> tuple[Any, str]:
    """``(pyarrow FileSystem, path on it)`` for a URI or a local path."""
    import pyarrow.fs

    if not is_uri(location):
        return pyarrow.fs.LocalFileSystem(), os.path.abspath(location)
    return pyarrow.fs.FileSystem.from_uri(str(location))


def kind(location: str | Path) -> str:
    """``"file"``, ``"directory"`` or ``"missing"``."""
    import pyarrow.fs

    fs, path = filesystem(location)
    found = fs.get_file_info(path).type
    if found == pyarrow.fs.FileType.File:
        return "file"
    return "directory" if found == pyarrow.fs.FileType.Directory else "missing"


def exists(location: str | Path) -> bool:
    return kind(location) != "missing"


def make_directory(location: str | Path) -> None:
    fs, path = filesystem(location)
    fs.create_dir(path, recursive=True)


def _copy(source: str, destination: str, source_fs: Any, destination_fs: Any) -> None:
    import pyarrow.fs

    options: dict[str, Any] = {"chunk_size": 64 * 2**20}
    s3 = getattr(pyarrow.fs, "S3FileSystem", None)
    if s3 is not None and isinstance(destination_fs, s3):
        # Multi-threaded uploads to S3 are unsafe in pyarrow (apache/arrow#32372; Ray Train
        # turns them off the same way).
        options["use_threads"] = False
    pyarrow.fs.copy_files(source, destination, source_filesystem=source_fs,
                          destination_filesystem=destination_fs, **options)


def upload_file(local: str | Path, location: str, atomic: bool = False) -> None:
    """Copy one local file to ``location`` (its folders are created). ``atomic``: write
    ``<name>.tmp`` and rename it, so that a reader never sees half a file."""
    import pyarrow.fs

    fs, path = filesystem(location)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    target = path + ".tmp" if atomic else path
    _copy(str(local), target, pyarrow.fs.LocalFileSystem(), fs)
    if atomic:
        fs.move(target, path)


def download(location: str, local: str | Path) -> None:
    """Copy a file or a folder (its contents, recursively) from ``location`` to ``local``."""
    import pyarrow.fs

    fs, path = filesystem(location)
    local = Path(local)
    (local if kind(location) == "directory" else local.parent).mkdir(parents=True,
                                                                     exist_ok=True)
    _copy(path, str(local), fs, pyarrow.fs.LocalFileSystem())


def cache_root() -> Path:
    """``$RAYSIGN_CACHE``, else ``~/.cache/raysign``: this node's local copies of URIs."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "raysign")


def _digest(location: str) -> str:
    return hashlib.sha256(location.encode()).hexdigest()[:16]


def staging_dir(location: str) -> Path:
    """The local folder where a run bound for the URI ``location`` is written before upload."""
    return cache_root() / "staging" / _digest(location)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if needed): one process per node fetches."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_copy(location: str | Path, parts: Sequence[str] = ()) -> Path:
    """A local folder holding ``location``'s files. A plain path is returned as it is; a URI is
    copied once into ``cache_root()/data/<hash of the URI>/`` on this node (only its
    sub-paths ``parts``, files or folders, when given) and read from there afterwards. Raises
    FileNotFoundError naming the URI of a missing part."""
    if not is_uri(location):
        return Path(location)
    location = str(location)
    folder = cache_root() / "data" / _digest(location)
    index = folder / ".fetched.json"
    with _locked(folder.with_name(folder.name + ".lock")):
        fetched = set(json.loads(index.read_text())) if index.is_file() else set()
        for part in parts or [""]:
            if part in fetched:
                continue
            source = join(location, part) if part else location
            if not exists(source):
                raise FileNotFoundError(f"data_dir: {source!r} does not exist")
            target = folder / part if part else folder
            partial = folder / f".partial-{_digest(part)}"
            shutil.rmtree(partial, ignore_errors=True)
            download(source, partial)
            if part:
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.is_dir():
                    shutil.rmtree(target)
                os.replace(partial, target)
            else:
                for entry in partial.iterdir():
                    os.replace(entry, folder / entry.name)
                partial.rmdir()
            fetched.add(part)
            index.write_text(json.dumps(sorted(fetched)))
    return folder


def job_working_dir(cwd: Path | None = None) -> Path | None:
    """The temporary folder Ray unpacked this job's ``--working-dir`` into, when this process
    runs there (a ``ray job submit`` driver, or a task of such a job): the enclosing
    ``runtime_resources`` folder, else the ``_ray_pkg_*`` folder, else (a Ray job driver whose
    runtime environment has a working_dir) the working directory itself. None otherwise."""
    cwd = (cwd or Path.cwd()).resolve()
    for folder in (cwd, *cwd.parents):
        if folder.name == RAY_RUNTIME_DIR:
            return folder
    for folder in (cwd, *cwd.parents):
        if folder.name.startswith(RAY_PKG_PREFIX):
            return folder
    job = os.environ.get(RAY_JOB_ENV)
    if job:
        try:
            working_dir = json.loads(job).get("runtime_env", {}).get("working_dir", "")
        except (ValueError, AttributeError):
            working_dir = ""
        # "local://" working dirs are the user's own folder, used in place.
        if working_dir and not str(working_dir).startswith("local://"):
            return cwd
    return None


def check_location(field: str, value: str | Path, example: str = "s3://bucket/runs or "
                   "file:///shared/runs") -> None:
    """ConfigError unless ``value`` is a usable location: a URI with a scheme pyarrow knows
    (checked without touching the network), or a path that does not resolve inside a Ray
    job's temporary working directory (``job_working_dir``)."""
    text = str(value)
    if is_uri(text):
        scheme = text.split("://", 1)[0].lower()
        if scheme not in KNOWN_SCHEMES:
            raise ConfigError(f"{field}={text!r} has the scheme {scheme!r}, which pyarrow.fs "
                              f"does not read; use a path or one of {sorted(KNOWN_SCHEMES)}")
        return
    temporary = job_working_dir()
    if temporary is None:
        return
    resolved = Path(text).resolve()
    if resolved == temporary or temporary in resolved.parents:
        raise ConfigError(f"{field}={text!r} resolves to {str(resolved)!r}, inside the Ray "
                          f"job's temporary working directory (under {str(temporary)!r}), "
                          "which other nodes do not see and which is deleted with the session; "
                          + FIX.format(example=example))
