"""Stored files (images, checkpoints, grids, exports) through Django's storage API.

The same calls work on a local folder (MEDIA_ROOT, the default) and on an S3-compatible bucket
(MEDIA_STORAGE=s3), so that web and workers on different machines share media without a shared
filesystem. Names are storage names (`experiments/3/g001/samples/00007.png`), never paths.

Where a library needs a folder on disk (diffusers writes and reads a checkpoint as one), `folder()`
gives one: the storage's own folder when media is local; otherwise a copy on this machine, fetched
from the bucket on entry and sent back as it changes.
"""

from __future__ import annotations

import posixpath
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage
from django.core.files.utils import validate_file_name
from django.urls import reverse

from training.files import written_atomically


class MediaStorage(FileSystemStorage):
    """Local media with an object store's semantics: a write replaces the file under its own name
    (no `_abc123` suffix), whole or not at all (renamed into place), so that a reader, or a step
    resumed after a crash, never sees half a file."""

    def get_available_name(self, name, max_length=None):
        validate_file_name(name, allow_relative_path=True)
        return name

    def _save(self, name, content):
        with written_atomically(Path(self.path(name))) as handle:
            for chunk in content.chunks():
                handle.write(chunk)
        return name


def read(name: str) -> bytes:
    with default_storage.open(name, "rb") as handle:
        return handle.read()


def write(name: str, data: bytes | str) -> str:
    """Store `data` under `name`, replacing what was there; returns the name."""
    return default_storage.save(name, ContentFile(data.encode() if isinstance(data, str) else data))


def write_file(name: str, path: Path) -> str:
    """Store a local file under `name` (streamed, not read into memory)."""
    with open(path, "rb") as handle:
        return default_storage.save(name, File(handle))


def media_url(name: str) -> str:
    """Where the app serves a stored file (to staff, config/urls.py), whatever the storage: never a
    bucket's own address, which would bypass the permission check."""
    return reverse("media", kwargs={"path": name})


def exists(name: str) -> bool:
    return default_storage.exists(name)


def open_file(name: str):
    """A stored file opened for reading (FileNotFoundError where there is none)."""
    if not default_storage.exists(name):  # S3 storage opens lazily and fails only on the first read
        raise FileNotFoundError(name)
    return default_storage.open(name, "rb")


def size(name: str) -> int:
    return default_storage.size(name)


def names_under(prefix: str) -> list[str]:
    """Every stored name under the folder `prefix`, recursively, sorted."""
    prefix = prefix.rstrip("/")
    try:
        folders, files = default_storage.listdir(prefix)
    except FileNotFoundError:
        return []
    names = [f"{prefix}/{name}" for name in files]
    for folder in folders:
        names.extend(names_under(f"{prefix}/{folder}"))
    return sorted(names)


def delete_under(prefix: str) -> None:
    local = local_path(prefix)
    if local is not None:
        shutil.rmtree(local, ignore_errors=True)
        return
    for name in names_under(prefix):
        default_storage.delete(name)


def local_path(name: str) -> Path | None:
    """Where `name` lies on this machine's disk, or None when media lives in a bucket."""
    try:
        return Path(default_storage.path(name))
    except NotImplementedError:
        return None


class Folder:
    """A folder on this machine holding the stored files under `prefix` (see `folder`)."""

    def __init__(self, prefix: str, path: Path, remote: bool, last: str | None = None):
        self.prefix, self.path, self.remote, self.last = prefix.rstrip("/"), path, remote, last
        self._sent: dict[str, tuple[int, int]] = {}

    def fetch(self) -> None:
        if not self.remote:
            return
        for name in names_under(self.prefix):
            target = self.path / posixpath.relpath(name, self.prefix)
            with default_storage.open(name, "rb") as source, written_atomically(target) as handle:
                shutil.copyfileobj(source, handle)
            self._sent[name] = _signature(target)

    def push(self) -> None:
        """Send what changed in the folder since it was fetched or last pushed (files whose names start
        with a dot, those being written, stay here). The file named `last` goes after the others: a
        marker that what it describes is complete (a checkpoint's card) must not arrive before it."""
        if not self.remote or not self.path.is_dir():
            return
        for path in sorted(self.path.rglob("*"), key=lambda p: (p == self.path / (self.last or ""), p)):
            if not path.is_file() or any(part.startswith(".") for part in path.relative_to(self.path).parts):
                continue
            name = f"{self.prefix}/{path.relative_to(self.path).as_posix()}"
            signature = _signature(path)
            if self._sent.get(name) != signature:
                write_file(name, path)
                self._sent[name] = signature


def _signature(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


@contextmanager
def folder(prefix: str, *, keep: bool = True, last: str | None = None):
    """A `Folder` for the stored files under `prefix`. On local media, the media folder itself; in a
    bucket, a copy on this machine (under MEDIA_CACHE_ROOT, removed on leaving), fetched on entry and,
    with `keep`, what changed sent back on leaving without an error (call `push()` to send earlier,
    e.g. at a checkpoint; `last` names the file sent last)."""
    local = local_path(prefix)
    if local is not None:
        yield Folder(prefix, local, remote=False, last=last)
        return
    # A folder of its own for each use: two processes of one machine never share a copy, and the bucket
    # stays the one truth (each copy starts from what it holds).
    parent = Path(settings.MEDIA_CACHE_ROOT) / posixpath.dirname(prefix.rstrip("/"))
    parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"{posixpath.basename(prefix.rstrip('/'))}-", dir=parent))
    handle = Folder(prefix, workdir, remote=True, last=last)
    handle.fetch()
    try:
        yield handle
        if keep:
            handle.push()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
