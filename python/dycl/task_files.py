"""Reading retrieval tasks from DESIGN §7 embedding files (``.npz``), one file or a run's folder.

:meth:`dycl.tasks.RetrievalTask.save` writes them; this module reads them
back, checking the file as a whole (it is an input of its own), so a bad
file is one line naming the file and the array::

    from dycl.task_files import load_embeddings

    tasks = load_embeddings("run/embeddings")     # {"satellite->drone": RetrievalTask, ...}
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ._validate import float_matrix, id_vector, relevance_levels
from .geo import DEFAULT_THRESHOLDS, _coords, level_matrix, validate_thresholds
from .tasks import TASK_FILES, TASKS, RetrievalTask

#: Arrays every embeddings file must hold (plus ``levels`` or ``coords``).
EMBEDDING_ARRAYS: tuple[str, ...] = ("query", "gallery", "query_ids", "gallery_ids")


def _task_name_of_file(path: Path, arrays: Mapping[str, np.ndarray]) -> str:
    if "task" in arrays and arrays["task"].ndim == 0 and arrays["task"].dtype.kind == "U":
        return str(arrays["task"])
    for task, file_name in TASK_FILES.items():
        if path.name == file_name:
            return task
    return path.stem.replace("_to_", "->")


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (AttributeError, TypeError):  # a .npy file: np.load returns an array, not an archive
        raise ValueError(f"embeddings: {path} is a single array, not a .npz archive (DESIGN §7)") from None
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"embeddings: cannot read {path} as a .npz archive ({first})") from None
    missing = [key for key in EMBEDDING_ARRAYS if key not in arrays]
    if "levels" not in arrays and "coords" not in arrays:
        missing.append("levels or coords")
    if missing:
        raise ValueError(
            f"embeddings: {path} lacks {', '.join(missing)} (it holds: "
            f"{', '.join(sorted(arrays)) or 'nothing'}; DESIGN §7 needs query, gallery, query_ids, "
            "gallery_ids and levels or coords)"
        )
    return arrays


def _file_embeddings(arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    # A file is checked whole when it is read (NaN included): it is an input of its own, named by array.
    query = float_matrix("query", arrays["query"], dtype=np.float32)
    gallery = float_matrix("gallery", arrays["gallery"], dtype=np.float32)
    for key, arr in (("query", query), ("gallery", gallery)):
        if arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ValueError(f"{key}: is empty, shape {arr.shape}")
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"gallery: embedding width {gallery.shape[1]} differs from the query's {query.shape[1]}")
    return query, gallery


def _file_relevance(arrays: Mapping[str, np.ndarray], thresholds: Sequence[float] | None
                    ) -> tuple[np.ndarray, np.ndarray | None, tuple[float, ...]]:
    """Levels, coordinates and thresholds of a file: stored levels, or levels of its coords."""
    explicit = thresholds is not None
    if explicit:
        ts = validate_thresholds(thresholds)  # type: ignore[arg-type]
    elif "thresholds" in arrays:
        ts = validate_thresholds(np.atleast_1d(arrays["thresholds"]).tolist())
    else:
        ts = DEFAULT_THRESHOLDS
    coords = _coords("coords", arrays["coords"], building_coords=True) if "coords" in arrays else None
    if "levels" in arrays and not explicit:
        levels = relevance_levels("levels", arrays["levels"])
    elif coords is not None:
        levels = level_matrix(coords, ts)
    else:
        raise ValueError(
            "thresholds: the file stores levels but no coords, so levels cannot be recomputed for other "
            "thresholds (drop --thresholds to use the stored levels)"
        )
    if coords is not None and coords.shape[0] != levels.shape[0]:
        raise ValueError(
            f"coords: {coords.shape[0]} rows, but the level matrix has {levels.shape[0]} buildings")
    return levels, coords, ts


def _file_exclude_self(path: Path, arrays: Mapping[str, np.ndarray], forced: bool | None) -> bool:
    """Whether a file is a single-domain task: ``forced`` when given, else its ``exclude_self`` entry."""
    if forced is not None:
        return bool(forced)
    if "exclude_self" not in arrays:
        return False
    flag = arrays["exclude_self"]
    if flag.ndim != 0 or flag.dtype != np.bool_:
        raise ValueError(f"embeddings: {path}: exclude_self: expected a boolean scalar, got {flag!r}")
    return bool(flag)


def read_task_file(path: str | os.PathLike, thresholds: Sequence[float] | None = None,
                   exclude_self: bool | None = None) -> RetrievalTask:
    """One DESIGN §7 ``.npz`` as a :class:`RetrievalTask` (see :func:`load_embeddings`)."""
    path = Path(path)
    arrays = _read_arrays(path)
    try:
        query, gallery = _file_embeddings(arrays)
        levels, coords, ts = _file_relevance(arrays, thresholds)
        n_buildings = levels.shape[0]
        query_ids = id_vector("query_ids", arrays["query_ids"], n_buildings, query.shape[0])
        gallery_ids = id_vector("gallery_ids", arrays["gallery_ids"], n_buildings, gallery.shape[0])
    except ValueError as exc:
        raise ValueError(f"embeddings: {path}: {exc}") from None
    building_ids = arrays.get("building_ids")
    if building_ids is not None and (building_ids.ndim != 1 or building_ids.shape[0] != n_buildings):
        building_ids = None
    single = _file_exclude_self(path, arrays, exclude_self)
    if single and (query.shape != gallery.shape or not np.array_equal(query, gallery)
                   or not np.array_equal(query_ids, gallery_ids)):
        raise ValueError(f"embeddings: {path}: exclude_self: the gallery (embeddings and ids) must equal the "
                         "queries in a single-domain task")
    return RetrievalTask(
        name=_task_name_of_file(path, arrays), query=query, gallery=gallery, query_ids=query_ids,
        gallery_ids=gallery_ids, levels=levels, coords=coords, thresholds=ts, building_ids=building_ids,
        source=str(path), exclude_self=single,
    )


def load_embeddings(
    path: str | os.PathLike, thresholds: Sequence[float] | None = None, exclude_self: bool | None = None
) -> dict[str, RetrievalTask]:
    """Read DESIGN §7 embedding files: one ``.npz`` (one task) or a folder of the per-task files.

    A folder is a training run's ``embeddings/`` (the files of :data:`TASK_FILES`).
    The task of a file is its ``task`` entry if it has one, else given by its
    name (``satellite_to_drone.npz`` -> ``"satellite->drone"``, any other
    ``a_to_b.npz`` -> ``"a->b"``, else the file's stem).

    Levels: the stored ``levels`` when ``thresholds`` is None; otherwise (or
    when the file has none) :func:`dycl.geo.level_matrix` of the stored
    ``coords`` with ``thresholds`` (default: the file's ``thresholds`` entry,
    else 200 m / 500 m).

    ``exclude_self``: None reads it from each file (a single-domain task saved
    by :func:`dycl.tasks.single_domain_task` stores ``exclude_self = True``);
    True makes every file a single-domain task (its gallery must equal its
    queries), False none.

    Raises:
        ValueError: a missing or unreadable file, a missing array, mismatched
            widths or lengths, ids outside the level matrix, ... (one line,
            naming the file and the array).
    """
    p = Path(path)
    if p.is_dir():
        files = [p / TASK_FILES[t] for t in TASKS if (p / TASK_FILES[t]).is_file()]
        if not files:
            raise ValueError(f"embeddings: {p} holds neither {' nor '.join(TASK_FILES[t] for t in TASKS)}")
    elif p.is_file():
        files = [p]
    else:
        raise ValueError(f"embeddings: no such file or folder: {p}")
    tasks: dict[str, RetrievalTask] = {}
    for file in files:
        task = read_task_file(file, thresholds, exclude_self)
        if task.name in tasks:
            raise ValueError(f"embeddings: {file} holds task {task.name!r} again")
        tasks[task.name] = task
    return tasks


__all__ = ["EMBEDDING_ARRAYS", "load_embeddings", "read_task_file"]
