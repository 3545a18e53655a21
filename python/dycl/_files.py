"""Atomic file writes shared by the engines (training, evaluation, experiments, figures).

A file is written to ``<name>.tmp`` next to it and renamed over it with
``os.replace``, so a reader (or a resumed run) sees the old content or the
complete new one, never half a file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", *, fsync: bool = False) -> Iterator[IO[Any]]:
    """``open(path, mode)`` on a temporary name, renamed over ``path`` when the block ends without error.

    Text modes use UTF-8. ``fsync=True`` flushes the data to disk before the
    rename (for checkpoints, which must survive a machine crash).
    """
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as handle:
        yield handle
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, target)


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
