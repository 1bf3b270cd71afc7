"""Files written whole or not at all: under a temporary name beside the target, then renamed over it
(a rename within one folder is atomic), so that a reader, or a step resumed after a crash, never sees
half a file."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path


def temporary_beside(path: Path) -> Path:
    """The name a file is written under before it is renamed to `path` (one per process)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def written_atomically(path: Path):
    """A binary file open for writing that becomes `path`, whole, when the block ends without an
    error; after an error nothing of it is left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(path)
    try:
        with open(tmp, "wb") as handle:
            yield handle
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes | str) -> Path:
    with written_atomically(path) as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
    return Path(path)


@contextmanager
def exclusive(lock_path: Path):
    """Hold an exclusive lock on `lock_path` (created if missing) across processes for the block: the
    second process to ask waits until the first is done."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
