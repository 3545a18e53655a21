"""Atomic file writes shared by the engines (training, evaluation, experiments, figures).

A file is written to ``<name>.tmp`` next to it and renamed over it with
``os.replace``, so a reader (or a resumed run) sees the old content or the
complete new one, never half a file. When the write fails (a full disk, an
error, Ctrl-C) the temporary file is removed and the old file stays as it was.

:class:`FolderLock` gives one process at a time a folder to write into.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

#: Suffix of the temporary file of an atomic write.
TMP_SUFFIX = ".tmp"
#: The lock file :class:`FolderLock` keeps in a folder (hidden; never counted as content).
LOCK_FILE = ".dycl.lock"


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", *, fsync: bool = False) -> Iterator[IO[Any]]:
    """``open(path, mode)`` on a temporary name, renamed over ``path`` when the block ends without error.

    Text modes use UTF-8. ``fsync=True`` flushes the data to disk before the
    rename (for checkpoints, which must survive a machine crash).
    """
    target = Path(path)
    tmp = target.with_name(target.name + TMP_SUFFIX)
    try:
        with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:  # also KeyboardInterrupt: never leave a half-written temporary file behind
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path) as handle:
        handle.write(text)


def json_safe(value: Any) -> Any:
    """JSON-compatible copy: NaN/inf become null, NumPy scalars and arrays become Python values."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Write :func:`json_safe` of ``payload`` as indented JSON with a final newline, atomically."""
    write_text_atomic(path, json.dumps(json_safe(payload), indent=2) + "\n")


class FolderLocked(ValueError):
    """Another process holds the folder's lock (a ``ValueError``: a one-line error at the command line)."""


class FolderLock:
    """An exclusive lock on a folder for one writer (``fcntl.flock`` on ``<folder>/.dycl.lock``).

    ``with FolderLock(folder, "output"):`` creates the folder if needed, takes
    the lock or raises :class:`FolderLocked` naming the process that holds it,
    and releases it when the block ends. The operating system drops the lock
    when its process dies (kill -9 included), so a lock file left behind is
    stale by construction and is simply taken over. The lock file itself stays
    (removing it would let two processes lock two different files).
    ``name`` is the argument named in the error, e.g. ``"output"``.
    """

    def __init__(self, folder: str | os.PathLike, name: str = "output", lock_file: str = LOCK_FILE) -> None:
        self.folder = Path(folder)
        self.name = name
        self.path = self.folder / lock_file
        self._fd: int | None = None

    def _holder(self) -> str:
        try:
            info = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return "another process"
        return f"process {info.get('pid')} on {info.get('host')} since {info.get('since')}"

    def acquire(self) -> FolderLock:
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise FolderLocked(
                f"{self.name}: {self.folder} is being written by {self._holder()}; wait for it to finish "
                "or choose another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def check_writable(folder: str | os.PathLike, name: str) -> Path:
    """Make sure files can be written into ``folder`` (or created there), before any long work.

    Creates nothing that stays: a probe file is written and removed in the
    folder, or in its nearest existing parent when the folder does not exist
    yet. Raises ``ValueError`` naming ``name`` (the option) for a read-only or
    unwritable place, or a path that is a file.
    """
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name}: {path} exists and is not a folder")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{name}: cannot create {path}: {existing} is not a folder")
    probe = existing / f".dycl-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"{name}: cannot write into {existing} ({exc.strerror or exc})") from None
    return path


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete ``*.tmp`` files of atomic writes that a killed process left in ``folder`` (not recursive).

    Call it only while holding the folder's :class:`FolderLock`, so no live writer owns them.
    """
    removed = []
    for path in Path(folder).glob(f"*{TMP_SUFFIX}"):
        if path.is_file():
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed
