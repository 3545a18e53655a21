"""Evaluation engine: embed a test split, score both retrieval tasks, format the paper's tables.

The two tasks of DA-Campus (DESIGN §1), keyed as in ``metrics.json``:

* ``"satellite->drone"`` (drone navigation): each satellite tile queries the drone views;
* ``"drone->satellite"`` (drone localization): each drone view queries the satellite tiles.

Queries and gallery items carry *building indices* (``0..B-1`` of the split),
which index the split's ``(B, B)`` level matrix and ``(B, 2)`` coordinates.
Scores come from the Rust core (:func:`dycl.metrics.evaluate_embeddings`)
with the DESIGN §4 key names, plus the localization-error keys because the
building coordinates are always passed.

Typical use::

    from dycl.data import drone_set, eval_transforms, read_dacampus, satellite_set
    from dycl.evaluate import extract_embeddings, format_tables, save_task_embeddings, score_tasks

    split = read_dacampus(root, "test")
    transform = eval_transforms(256)
    sat = extract_embeddings(model, satellite_set(split, transform), batch_size=256, device="cuda")
    drone = extract_embeddings(model, drone_set(split, transform), batch_size=256, device="cuda")
    results = score_tasks(sat, drone, split)          # {"satellite->drone": {...}, "drone->satellite": {...}}
    print(format_tables(results))
    save_task_embeddings("run/embeddings", sat, drone, split)   # DESIGN §7 .npz, one file per task

Torch is imported inside the functions that need it, so scoring saved
embeddings does not import it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from ._files import atomic_open, json_safe, write_json_atomic, write_text_atomic
from ._validate import float_matrix, id_vector
from ._validate import level_matrix as _checked_levels
from .geo import DEFAULT_THRESHOLDS, _coords, level_matrix, validate_thresholds
from .metrics import DEFAULT_RECALL_AT, evaluate, evaluate_embeddings, ranked_gallery
from .rerank import DEFAULT_KS, VARIANTS, k_reciprocal_embeddings, msrerank_embeddings, msrerank_ks

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .data import Split

#: The two retrieval tasks, in the order the paper's tables list them.
TASKS: tuple[str, str] = ("satellite->drone", "drone->satellite")

#: File names of the per-task embedding files written by :func:`save_task_embeddings`.
TASK_FILES: dict[str, str] = {
    "satellite->drone": "satellite_to_drone.npz",
    "drone->satellite": "drone_to_satellite.npz",
}

#: Names of the scales in the paper's Table III when there are three of them.
PAPER_SCALE_NAMES: tuple[str, ...] = ("small", "middle", "large")


# --------------------------------------------------------------------------- devices and precision


def autocast_dtype(device: torch.device | str, amp: bool = True) -> torch.dtype | None:
    """The autocast dtype for ``device``: bf16 on CUDA when supported, else fp16; None = full precision.

    Mixed precision is only used on CUDA: on CPU the engines stay in float32,
    which keeps CPU runs bit-reproducible.
    """
    import torch

    dev = torch.device(device)
    if not amp or dev.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# --------------------------------------------------------------------------- embeddings


def extract_embeddings(
    model: torch.nn.Module,
    image_set: torch.utils.data.Dataset,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    amp: bool = True,
    workers: int = 0,
    progress: bool = True,
    desc: str = "embedding",
) -> np.ndarray:
    """Embed every image of ``image_set`` with ``model``; returns ``(len(image_set), d)`` float32.

    Args:
        model: maps a ``(b, 3, H, W)`` batch to ``(b, d)`` embeddings (an
            :class:`~dycl.models.EmbeddingNet`, not a DDP wrapper). It is put in
            eval mode for the pass and its previous mode is restored after.
        image_set: yields ``(image, building)`` items in a fixed order, e.g.
            :func:`dycl.data.satellite_set` / :func:`dycl.data.drone_set` with
            :func:`dycl.data.eval_transforms`. Rows of the result follow it.
        batch_size: images per forward pass.
        device: where the model lives.
        amp: autocast on CUDA (see :func:`autocast_dtype`); ignored on CPU.
        workers: DataLoader worker processes (0 = load in this process).
        progress: show a tqdm bar.
        desc: label of the progress bar.
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers: expected a non-negative integer, got {workers!r}")
    if len(image_set) == 0:
        raise ValueError("image_set: is empty")
    dev = torch.device(device)
    on_cuda = dev.type == "cuda"
    dtype = autocast_dtype(dev, amp)
    loader = DataLoader(
        image_set,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=on_cuda,
        persistent_workers=False,
    )
    was_training = model.training
    model.eval()
    rows: list[np.ndarray] = []
    try:
        with torch.inference_mode():
            for images, _ in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
                images = images.to(dev, non_blocking=on_cuda)
                if on_cuda:
                    images = images.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device_type=dev.type, dtype=dtype, enabled=dtype is not None):
                    emb = model(images)
                rows.append(emb.float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.ascontiguousarray(np.concatenate(rows, axis=0), dtype=np.float32)


# --------------------------------------------------------------------------- scoring


def task_arrays(
    satellite_emb: np.ndarray, drone_emb: np.ndarray, split: Split
) -> dict[str, dict[str, np.ndarray]]:
    """Query/gallery embeddings and building indices of both tasks.

    Returns ``{task: {"query", "gallery", "query_ids", "gallery_ids"}}`` with
    building indices (rows of ``split.levels()`` and ``split.coords``).
    """
    sat = np.asarray(satellite_emb)
    drone = np.asarray(drone_emb)
    if sat.ndim != 2 or sat.shape[0] != split.num_buildings:
        raise ValueError(
            f"satellite_emb: expected one row per building ({split.num_buildings}), got shape {sat.shape}"
        )
    if drone.ndim != 2 or drone.shape[0] != split.num_drone:
        raise ValueError(
            f"drone_emb: expected one row per drone image ({split.num_drone}), got shape {drone.shape}"
        )
    sat_ids = np.arange(split.num_buildings, dtype=np.int64)
    drone_ids = np.asarray(split.drone_buildings, dtype=np.int64)
    return {
        "satellite->drone": {"query": sat, "gallery": drone, "query_ids": sat_ids, "gallery_ids": drone_ids},
        "drone->satellite": {"query": drone, "gallery": sat, "query_ids": drone_ids, "gallery_ids": sat_ids},
    }


def score_tasks(
    satellite_emb: np.ndarray,
    drone_emb: np.ndarray,
    split: Split,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    recall_at: Sequence[int] = DEFAULT_RECALL_AT,
) -> dict[str, dict[str, float]]:
    """Score both tasks on cosine distances of the embeddings (Rust core).

    Args:
        satellite_emb: ``(B, d)``, row ``b`` = satellite tile of building index ``b``.
        drone_emb: ``(N, d)``, row ``i`` = drone image ``i`` of ``split``.
        split: the evaluated split (its levels and building coordinates are used).
        thresholds: level thresholds in metres (DESIGN §3).
        recall_at: the ``K`` of Recall@K.

    Returns:
        ``{"satellite->drone": metrics, "drone->satellite": metrics}`` where
        ``metrics`` is the dict of :func:`dycl.metrics.evaluate` (DESIGN §4 keys,
        counts, and the localization-error keys).
    """
    ts = validate_thresholds(thresholds)
    levels = split.levels(ts)
    coords = np.asarray(split.coords, dtype=np.float64)
    results: dict[str, dict[str, float]] = {}
    for task, arrays in task_arrays(satellite_emb, drone_emb, split).items():
        results[task] = evaluate_embeddings(
            arrays["query"], arrays["gallery"], arrays["query_ids"], arrays["gallery_ids"], levels,
            recall_at=recall_at, coords=coords, thresholds=ts,
        )
    return results


def save_task_embeddings(
    out_dir: str | os.PathLike,
    satellite_emb: np.ndarray,
    drone_emb: np.ndarray,
    split: Split,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> dict[str, Path]:
    """Write one DESIGN §7 ``.npz`` per task into ``out_dir``; returns ``{task: path}``.

    Each file holds ``query``, ``gallery`` (float32), ``query_ids``,
    ``gallery_ids`` (int64 building indices), ``coords`` ``(B, 2)`` and
    ``levels`` ``(B, B)`` uint8 (for ``thresholds``, also stored), plus the
    split's ``building_ids`` (as listed in the dataset files, or their string
    form) so a result can be traced back to the data. Files are written to a
    temporary name and renamed, so a reader never sees half a file.
    """
    ts = validate_thresholds(thresholds)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    levels = split.levels(ts)
    building_ids = np.asarray(split.building_ids)
    if building_ids.dtype == object:
        building_ids = building_ids.astype(str)
    common = {
        "coords": np.asarray(split.coords, dtype=np.float64),
        "levels": np.asarray(levels, dtype=np.uint8),
        "thresholds": np.asarray(ts, dtype=np.float64),
        "building_ids": building_ids,
    }
    written: dict[str, Path] = {}
    for task, arrays in task_arrays(satellite_emb, drone_emb, split).items():
        path = out / TASK_FILES[task]
        with atomic_open(path, "wb") as handle:
            np.savez(
                handle,
                query=np.ascontiguousarray(arrays["query"], dtype=np.float32),
                gallery=np.ascontiguousarray(arrays["gallery"], dtype=np.float32),
                query_ids=arrays["query_ids"],
                gallery_ids=arrays["gallery_ids"],
                **common,
            )
        written[task] = path
    return written


# --------------------------------------------------------------------------- tables


def _scale_count(metrics: Mapping[str, Any]) -> int:
    count = 0
    while f"mAP_{count}" in metrics:
        count += 1
    return count


def _scale_names(count: int) -> list[str]:
    if count == len(PAPER_SCALE_NAMES):
        return list(PAPER_SCALE_NAMES)
    return [f"scale {s}" for s in range(count)]


def _pct(value: object) -> str:
    if value is None:
        return "-"
    v = float(value)  # type: ignore[arg-type]
    return "n/a" if math.isnan(v) else f"{100.0 * v:.2f}"


def _render(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(header[c]), *(len(r[c]) for r in rows)) for c in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    rule = "-" * len(line(header))
    return "\n".join([title, line(header), rule, *(line(r) for r in rows)])


def format_tables(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Plain-text tables shaped like the paper's Table II and Table III (values in %).

    ``results`` maps task names (normally :data:`TASKS`) to metric dicts as
    returned by :func:`score_tasks`. Blocks:

    * hierarchical metrics — H-AP, ASI, NDCG per task (Table II);
    * per-scale retrieval — mAP and R@1 at each scale and their mean
      ("overall"), per task (Table III);
    * localization error of the top-1 result, when the metrics carry it.
    """
    return "\n\n".join(_render(title, header, rows) for title, header, rows in _table_blocks(results))


def _table_blocks(results: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(title, header, rows)`` of each block of :func:`format_tables` (also rendered as Markdown)."""
    if not results:
        raise ValueError("results: no task to format")
    tasks = list(results)
    hier_rows = [[task, *(_pct(results[task].get(key)) for key in ("H-AP", "ASI", "NDCG"))] for task in tasks]
    blocks = [("Hierarchical retrieval (Table II, %)", ["task", "H-AP", "ASI", "NDCG"], hier_rows)]

    n_scales = max(_scale_count(m) for m in results.values())
    names = _scale_names(n_scales) + ["overall"]
    header = ["task"] + [f"mAP {n}" for n in names] + [f"R@1 {n}" for n in names]
    scale_rows = []
    for task in tasks:
        m = results[task]
        maps = [_pct(m.get(f"mAP_{s}")) for s in range(n_scales)] + [_pct(m.get("mAP_overall"))]
        r1s = [_pct(m.get(f"R@1_{s}")) for s in range(n_scales)] + [_pct(m.get("R@1_overall"))]
        scale_rows.append([task, *maps, *r1s])
    blocks.append(("Retrieval per scale (Table III, %)", header, scale_rows))

    if any("err@1_mean_m" in m for m in results.values()):
        within = sorted({key for m in results.values() for key in m if key.startswith("within@")},
                        key=lambda k: float(k[len("within@"):-1]))
        loc_header = ["task", "mean m", "median m", *(f"{k} %" for k in within)]
        loc_rows = []
        for task in tasks:
            m = results[task]
            mean, median = m.get("err@1_mean_m"), m.get("err@1_median_m")
            loc_rows.append([
                task,
                "-" if mean is None else f"{float(mean):.1f}",
                "-" if median is None else f"{float(median):.1f}",
                *(_pct(m.get(k)) for k in within),
            ])
        blocks.append(("Localization error of the top-1 result", loc_header, loc_rows))
    return blocks


# =========================================================================== dycl-eval
# Everything below serves the ``dycl-eval`` command (issue 6): retrieval tasks read
# from DESIGN §7 embedding files or embedded from a checkpoint, optional re-ranking,
# result files (JSON, Markdown, CSV) and figures (dycl.plots).

#: ``--rerank`` choices.
RERANK_METHODS: tuple[str, ...] = ("none", "k-reciprocal", "msrerank")
#: Arrays every embeddings file must hold (plus ``levels`` or ``coords``).
EMBEDDING_ARRAYS: tuple[str, ...] = ("query", "gallery", "query_ids", "gallery_ids")


@dataclass(frozen=True, eq=False)
class RetrievalTask:
    """One retrieval task, ready to score: embeddings, building indices and relevance.

    ``query_ids``/``gallery_ids`` index the rows of ``levels`` (and of
    ``coords``, the building latitude/longitude, when known). ``thresholds``
    name the ``within@{t}m`` shares of the localization error; ``building_ids``
    (optional) are the buildings' ids as listed in the dataset files.
    """

    name: str
    query: np.ndarray
    gallery: np.ndarray
    query_ids: np.ndarray
    gallery_ids: np.ndarray
    levels: np.ndarray
    coords: np.ndarray | None = None
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    building_ids: np.ndarray | None = None
    source: str = ""

    @property
    def n_levels(self) -> int:
        """``L``, the level of the same building (the number of scales)."""
        return int(self.levels.max())

    def building_label(self, index: int) -> str:
        if self.building_ids is not None:
            return str(self.building_ids[int(index)])
        return f"#{int(index)}"


def _slug(task: str) -> str:
    """File-name form of a task name: ``"satellite->drone"`` -> ``"satellite_to_drone"``."""
    if task in TASK_FILES:
        return Path(TASK_FILES[task]).stem
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in task.replace("->", "_to_"))
    return safe or "task"


def tasks_from_split(
    satellite_emb: np.ndarray,
    drone_emb: np.ndarray,
    split: Split,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> dict[str, RetrievalTask]:
    """Both tasks of a split's embeddings (see :func:`task_arrays`) as :class:`RetrievalTask`."""
    ts = validate_thresholds(thresholds)
    levels = split.levels(ts)
    coords = np.asarray(split.coords, dtype=np.float64)
    building_ids = np.asarray(split.building_ids)
    out = {}
    for name, arrays in task_arrays(satellite_emb, drone_emb, split).items():
        out[name] = RetrievalTask(
            name=name,
            query=np.ascontiguousarray(arrays["query"], dtype=np.float32),
            gallery=np.ascontiguousarray(arrays["gallery"], dtype=np.float32),
            query_ids=arrays["query_ids"], gallery_ids=arrays["gallery_ids"],
            levels=levels, coords=coords, thresholds=ts, building_ids=building_ids,
            source=split.source or split.name,
        )
    return out


def _task_name_of_file(path: Path, arrays: Mapping[str, np.ndarray]) -> str:
    if "task" in arrays and arrays["task"].ndim == 0 and arrays["task"].dtype.kind == "U":
        return str(arrays["task"])
    for task, file_name in TASK_FILES.items():
        if path.name == file_name:
            return task
    return path.stem.replace("_to_", "->")


def _read_task_file(path: Path, thresholds: Sequence[float] | None) -> RetrievalTask:
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
    try:
        query = float_matrix("query", arrays["query"], dtype=np.float32)
        gallery = float_matrix("gallery", arrays["gallery"], dtype=np.float32)
        for key, arr in (("query", query), ("gallery", gallery)):
            if arr.shape[0] == 0 or arr.shape[1] == 0:
                raise ValueError(f"{key}: is empty, shape {arr.shape}")
        if query.shape[1] != gallery.shape[1]:
            raise ValueError(
                f"gallery: embedding width {gallery.shape[1]} differs from the query's {query.shape[1]}"
            )
        explicit = thresholds is not None
        if explicit:
            ts = validate_thresholds(thresholds)  # type: ignore[arg-type]
        elif "thresholds" in arrays:
            ts = validate_thresholds(np.atleast_1d(arrays["thresholds"]).tolist())
        else:
            ts = DEFAULT_THRESHOLDS
        coords = _coords("coords", arrays["coords"]) if "coords" in arrays else None
        if "levels" in arrays and not explicit:
            levels = _checked_levels("levels", arrays["levels"])
        elif coords is not None:
            levels = level_matrix(coords, ts)
        else:
            raise ValueError(
                "thresholds: the file stores levels but no coords, so levels cannot be recomputed for other "
                "thresholds (drop --thresholds to use the stored levels)"
            )
        if levels.max() == 0:
            raise ValueError("levels: has no positive level (the same building should be level L >= 1)")
        n_buildings = levels.shape[0]
        if coords is not None and coords.shape[0] != n_buildings:
            raise ValueError(
                f"coords: {coords.shape[0]} rows, but the level matrix has {n_buildings} buildings")
        query_ids = id_vector("query_ids", arrays["query_ids"], n_buildings, query.shape[0])
        gallery_ids = id_vector("gallery_ids", arrays["gallery_ids"], n_buildings, gallery.shape[0])
    except ValueError as exc:
        raise ValueError(f"embeddings: {path}: {exc}") from None
    building_ids = arrays.get("building_ids")
    if building_ids is not None and (building_ids.ndim != 1 or building_ids.shape[0] != n_buildings):
        building_ids = None
    return RetrievalTask(
        name=_task_name_of_file(path, arrays), query=query, gallery=gallery, query_ids=query_ids,
        gallery_ids=gallery_ids, levels=levels, coords=coords, thresholds=ts, building_ids=building_ids,
        source=str(path),
    )


def load_embeddings(
    path: str | os.PathLike, thresholds: Sequence[float] | None = None
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

    Raises:
        ValueError: a missing or unreadable file, a missing array, mismatched
            widths or lengths, ids outside the level matrix, ... (one line,
            naming the file and the array).
    """
    p = Path(path)
    if p.is_dir():
        files = [p / TASK_FILES[t] for t in TASKS if (p / TASK_FILES[t]).is_file()]
        if not files:
            raise ValueError(
                f"embeddings: {p} holds neither {' nor '.join(TASK_FILES[t] for t in TASKS)}"
            )
    elif p.is_file():
        files = [p]
    else:
        raise ValueError(f"embeddings: no such file or folder: {p}")
    tasks: dict[str, RetrievalTask] = {}
    for file in files:
        task = _read_task_file(file, thresholds)
        if task.name in tasks:
            raise ValueError(f"embeddings: {file} holds task {task.name!r} again")
        tasks[task.name] = task
    return tasks


# --------------------------------------------------------------------------- re-ranking


@dataclass(frozen=True)
class RerankConfig:
    """Re-ranking of ``dycl-eval`` (DESIGN §5). ``ks=None`` means Eq. 6 (``--ks auto``)."""

    method: str = "none"
    variant: str = "paper"
    ks: tuple[int, ...] | None = None
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3

    def __post_init__(self) -> None:
        if self.method not in RERANK_METHODS:
            raise ValueError(f"rerank: expected one of {', '.join(RERANK_METHODS)}, got {self.method!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"msrerank_variant: expected one of {', '.join(VARIANTS)}, got {self.variant!r}")

    def describe(self, ks: Sequence[int] | None = None) -> str:
        """Human-readable settings, e.g. ``msrerank (paper, ks 20,62,292, k2 6, lambda 0.3)``."""
        if self.method == "none":
            return "none (cosine distance)"
        common = f"k2 {self.k2}, lambda {self.lambda_value:g}"
        if self.method == "k-reciprocal":
            return f"k-reciprocal (k1 {self.k1}, {common})"
        used = ks if ks is not None else self.ks
        ks_text = "auto" if used is None else ",".join(str(k) for k in used)
        return f"msrerank ({self.variant}, ks {ks_text}, {common})"


def eq6_ks(
    task: RetrievalTask, train_split: Split | None = None, mu: float = 0.1, min_k: int = 20
) -> tuple[tuple[int, ...], str]:
    """Eq. 6 neighbourhood sizes for ``task`` and where they come from.

    With a training split and one of the two DA-Campus tasks: the training
    buildings' levels (for ``task.thresholds``) with the gallery view's images
    per building (drone views for ``"satellite->drone"``, one tile for
    ``"drone->satellite"``), as ``dycl-data stats`` reports them. Otherwise the
    task's own gallery: its buildings and their images in the gallery.
    """
    if train_split is not None and task.name in TASKS:
        levels = train_split.levels(task.thresholds)
        counts: np.ndarray | int = train_split.drone_counts() if task.name == "satellite->drone" else 1
        source = f"Eq. 6 on the {train_split.name} split"
    else:
        present = np.unique(task.gallery_ids)
        levels = task.levels[np.ix_(present, present)]
        counts = np.bincount(task.gallery_ids, minlength=task.levels.shape[0])[present].astype(np.int64)
        source = "Eq. 6 on the gallery"
    ks = msrerank_ks(levels, counts, mu=mu, min_k=min_k)
    if len(ks) != task.n_levels:
        raise ValueError(
            f"ks: Eq. 6 gives {len(ks)} scales for thresholds {task.thresholds} but "
            f"{task.source or task.name} has {task.n_levels}; pass --thresholds matching its levels, or --ks"
        )
    return ks, source


def rerank_task(
    task: RetrievalTask, config: RerankConfig, ks: Sequence[int] | None = None, progress: bool = True
) -> np.ndarray | None:
    """``(q, g)`` float32 re-ranked distances of ``task`` (None for ``method="none"``).

    Uses the embedding entry points of :mod:`dycl.rerank` (no N×N matrix).
    ``ks`` (MSRerank) defaults to ``config.ks``.
    """
    if config.method == "none":
        return None
    if config.method == "k-reciprocal":
        return k_reciprocal_embeddings(task.query, task.gallery, config.k1, config.k2, config.lambda_value,
                                       progress=progress)
    used = ks if ks is not None else config.ks
    if used is None:
        raise ValueError("ks: MSRerank needs ks (see eq6_ks)")
    return msrerank_embeddings(task.query, task.gallery, tuple(used), config.k2, config.lambda_value,
                               config.variant, progress=progress)


def score_task(
    task: RetrievalTask, distances: np.ndarray | None = None, recall_at: Sequence[int] = DEFAULT_RECALL_AT
) -> dict[str, float]:
    """DESIGN §4 metrics of ``task``: on cosine distances of its embeddings, or on ``distances`` (q, g)."""
    kwargs: dict[str, Any] = {"recall_at": recall_at, "coords": task.coords, "thresholds": task.thresholds}
    if distances is None:
        return evaluate_embeddings(task.query, task.gallery, task.query_ids, task.gallery_ids, task.levels,
                                   **kwargs)
    return evaluate(distances, task.query_ids, task.gallery_ids, task.levels, **kwargs)


@dataclass
class Evaluation:
    """What :func:`evaluate_tasks` computed.

    ``results`` holds the metrics with the chosen re-ranking, ``baseline`` those
    on plain cosine distances (the same object as ``results`` without
    re-ranking), ``distances`` the re-ranked ``(q, g)`` distances (None without
    re-ranking), ``ks`` the MSRerank sizes used and ``notes`` where they came from.
    """

    results: dict[str, dict[str, float]]
    baseline: dict[str, dict[str, float]]
    distances: dict[str, np.ndarray | None]
    rerank: RerankConfig
    ks: dict[str, tuple[int, ...]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def evaluate_tasks(
    tasks: Mapping[str, RetrievalTask],
    rerank: RerankConfig = RerankConfig(),
    train_split: Split | None = None,
    recall_at: Sequence[int] = DEFAULT_RECALL_AT,
    progress: bool = True,
    log: TextIO | None = None,
) -> Evaluation:
    """Re-rank (optionally) and score every task with the Rust core.

    Args:
        tasks: ``{name: task}``, e.g. from :func:`tasks_from_split` or :func:`load_embeddings`.
        rerank: the re-ranking; MSRerank with ``ks=None`` uses :func:`eq6_ks`
            (from ``train_split`` when given).
        train_split: the training split, for Eq. 6.
        recall_at: the ``K`` of Recall@K.
        progress: progress bars for the re-ranking.
        log: where to report timings (e.g. ``sys.stderr``); None = silent.
    """
    if not tasks:
        raise ValueError("tasks: nothing to evaluate")
    out = Evaluation(results={}, baseline={}, distances={}, rerank=rerank)
    for name, task in tasks.items():
        start = time.perf_counter()
        base = score_task(task, None, recall_at)
        out.seconds[f"{name}: scoring"] = time.perf_counter() - start
        out.baseline[name] = base
        ks = None
        if rerank.method == "msrerank":
            if rerank.ks is None:
                ks, out.notes[name] = eq6_ks(task, train_split)
            else:
                ks, out.notes[name] = tuple(rerank.ks), "given"
            out.ks[name] = tuple(ks)
        start = time.perf_counter()
        distances = rerank_task(task, rerank, ks, progress=progress)
        out.distances[name] = distances
        if distances is None:
            out.results[name] = base
            continue
        out.seconds[f"{name}: re-ranking"] = time.perf_counter() - start
        start = time.perf_counter()
        out.results[name] = score_task(task, distances, recall_at)
        out.seconds[f"{name}: scoring re-ranked"] = time.perf_counter() - start
        if log is not None:
            print(f"dycl-eval: {name}: {rerank.describe(ks)} in {out.seconds[f'{name}: re-ranking']:.2f} s"
                  + (f" (ks: {out.notes[name]})" if name in out.notes else ""), file=log)
    return out


# --------------------------------------------------------------------------- checkpoints


def load_model(
    checkpoint: str | os.PathLike,
    backbone: str | None = None,
    image_size: int | None = None,
    trusted: bool = False,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the network of a checkpoint and load its weights (strictly); returns ``(model, info)``.

    Accepted: our ``last.pt`` (architecture from its saved configuration) and
    the authors' release (``{"net_state": state_dict}`` with ``backbone.<i>.*``
    and ``fc.*``: ResNet-50 unless ``backbone`` says otherwise, embedding size
    from ``fc.weight``, 256 px) or any plain state dict of that layout. Nothing
    is downloaded and none of the authors' packages is needed.

    ``info`` has ``layout``, ``backbone``, ``embedding_dim``, ``image_size``
    and, from our checkpoints, ``thresholds``, ``eval_batch_size``, ``epoch``.

    Raises:
        ValueError: missing/unreadable file, or weights that do not fit the
            model (listing the missing and unexpected keys).
    """
    from .models import build_model, load_checkpoint, unwrap_state_dict
    from .models.checkpoint import read_weights_object

    path = Path(checkpoint)
    obj = read_weights_object(path, trusted=trusted, name="checkpoint")
    state = unwrap_state_dict(obj, name=f"checkpoint: {path}")
    saved = obj.get("config") if isinstance(obj, Mapping) else None
    saved = saved if isinstance(saved, Mapping) else {}
    if isinstance(obj, Mapping) and str(obj.get("format", "")).startswith("dycl-train-checkpoint"):
        layout = "dycl-train"
    elif isinstance(obj, Mapping) and "net_state" in obj:
        layout = "net_state"
    else:
        layout = "state dict"
    fc = state.get("fc.weight")
    info: dict[str, Any] = {
        "layout": layout,
        "backbone": backbone or saved.get("backbone") or "resnet50",
        "embedding_dim": int(saved.get("embedding_dim") or (fc.shape[0] if fc is not None else 512)),
        "image_size": int(image_size or saved.get("image_size") or 256),
    }
    for key in ("thresholds", "eval_batch_size"):
        if saved.get(key) is not None:
            info[key] = saved[key]
    if isinstance(obj, Mapping) and isinstance(obj.get("epoch"), int):
        info["epoch"] = obj["epoch"]
    model = build_model(info["backbone"], embedding_dim=info["embedding_dim"], pretrained=False)
    try:
        load_checkpoint(model, state, strict=True)
    except ValueError as exc:
        hint = "" if backbone else "; pass --backbone if it was trained with another backbone"
        raise ValueError(
            f"checkpoint: {path} does not fit {info['backbone']} with a {info['embedding_dim']}-d head: "
            f"{str(exc).removeprefix('checkpoint does not match the model: ')}{hint}"
        ) from None
    model.eval()
    return model, info


def _worker_error(exc: BaseException) -> str:
    """The original message of an error re-raised by a DataLoader worker (else the error's own)."""
    text = str(exc).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.splitlines()[-1]
        _, sep, message = last.partition(": ")
        return message if sep else last
    return text.splitlines()[0] if text else type(exc).__name__


def embed_split(
    model: torch.nn.Module,
    split: Split,
    image_size: int,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    amp: bool = True,
    workers: int = 0,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Satellite ``(B, d)`` and drone ``(N, d)`` embeddings of ``split`` (each image set once).

    Evaluation transforms at ``image_size``; batched, AMP on CUDA. An
    unreadable image raises ``ValueError`` with its path (also from workers).
    """
    from .data import drone_set, eval_transforms, satellite_set

    transform = eval_transforms(image_size)
    kwargs: dict[str, Any] = {"batch_size": batch_size, "device": device, "amp": amp, "workers": workers,
                              "progress": progress}
    try:
        sat = extract_embeddings(model, satellite_set(split, transform), desc="embedding satellite", **kwargs)
        drone = extract_embeddings(model, drone_set(split, transform), desc="embedding drone", **kwargs)
    except ValueError as exc:
        message = _worker_error(exc)
        # Drop the frames' references to the DataLoader iterator now, so that its workers are shut
        # down at once; left to the garbage collector, the shutdown waits for timeouts (~10 s).
        traceback.clear_frames(exc.__traceback__)
        raise ValueError(message) from None
    return sat, drone


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {device} was asked for but CUDA is not available")
    return device


def _read_split(data_dir: str | os.PathLike, name: str, dataset_format: str = "auto",
                check_images: bool = True) -> Split:
    from .data import read_dacampus, read_manifest

    path = Path(data_dir)
    if not path.exists():
        raise ValueError(f"data_dir: {path} does not exist")
    manifest = dataset_format == "manifest" or (dataset_format == "auto" and path.is_file())
    reader = read_manifest if manifest else read_dacampus
    return reader(path, name, check_images=check_images)


def _training_split(
    data_dir: str | os.PathLike, dataset_format: str, evaluated: str
) -> tuple[Split | None, str]:
    """The training split for Eq. 6, or None and the reason (no such split, or it cannot be read)."""
    from .data import DatasetError

    name = "train" if evaluated != "train" else "test"
    try:
        return _read_split(data_dir, name, dataset_format, check_images=False), ""
    except DatasetError as exc:
        return None, str(exc).splitlines()[0]


# --------------------------------------------------------------------------- result files


def _metric_keys(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    keys: list[str] = []
    for metrics in results.values():
        keys += [k for k in metrics if k not in keys]
    return keys


def format_markdown(
    results: Mapping[str, Mapping[str, Any]], settings: Mapping[str, Any] | None = None, title: str = ""
) -> str:
    """The tables of :func:`format_tables` as Markdown (values in %), after a list of ``settings``."""
    lines = [f"# {title or 'dycl-eval results'}", ""]
    for key, value in (settings or {}).items():
        lines.append(f"- **{key}**: {value}")
    if settings:
        lines.append("")
    for block_title, header, rows in _table_blocks(results):
        lines += [f"## {block_title}", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def format_csv(results: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per task, one column per metric (fractions as stored in ``metrics.json``; empty = NaN)."""
    keys = _metric_keys(results)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["task", *keys])
    for task, metrics in results.items():
        cells = []
        for key in keys:
            value = json_safe(metrics.get(key))
            cells.append("" if value is None else repr(value) if isinstance(value, float) else str(value))
        writer.writerow([task, *cells])
    return buffer.getvalue()


def result_paths(output: str | os.PathLike) -> dict[str, Path]:
    """The ``json``, ``md`` and ``csv`` files of ``--output`` (``metrics.json``, ``metrics.md``, ...)."""
    json_path = Path(output)
    if json_path.suffix.lower() != ".json":
        json_path = json_path.with_name(json_path.name + ".json")
    return {"json": json_path, "md": json_path.with_suffix(".md"), "csv": json_path.with_suffix(".csv")}


def write_results(
    output: str | os.PathLike,
    results: Mapping[str, Mapping[str, Any]],
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``metrics.json`` (``{task: {DESIGN §4 key: value}}``, NaN as null) and its ``.md``/``.csv``.

    Files are written to temporary names and renamed. Returns :func:`result_paths`.
    """
    paths = result_paths(output)
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(paths["json"], results)
    write_text_atomic(paths["md"], format_markdown(results, settings))
    write_text_atomic(paths["csv"], format_csv(results))
    return paths


def read_metrics(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Read a ``metrics.json`` (of ``dycl-train`` or ``dycl-eval``): ``{task: metrics}``, null read as NaN."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"compare: no such file: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"compare: cannot read {p} as JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not data or not all(
            isinstance(m, dict) and "mAP_0" in m for m in data.values()):
        raise ValueError(f"compare: {p} is not a metrics file ({{task: {{'mAP_0': ..., ...}}}} as dycl-eval "
                         "or dycl-train write it)")
    return {task: {k: float("nan") if v is None else v for k, v in m.items()} for task, m in data.items()}


# --------------------------------------------------------------------------- figures


def _sample_rows(n: int, count: int) -> np.ndarray:
    """``count`` indices spread evenly over ``0..n-1`` (all of them when ``n <= count``)."""
    if n <= count:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, count).round().astype(np.int64))


def _cosine_rows(task: RetrievalTask, rows: np.ndarray) -> np.ndarray:
    q = task.query[rows].astype(np.float64)
    g = task.gallery.astype(np.float64)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    g /= np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    return 1.0 - q @ g.T


def _thumbnail(path: Path, size: int = 128) -> np.ndarray | None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((size, size))
            return np.asarray(image)
    except (OSError, ValueError):
        return None  # the figure shows a placeholder; scoring already read the image or never needed it


def _task_images(task: RetrievalTask, split: Split | None) -> tuple[Sequence[Path], Sequence[Path]] | None:
    """Image paths of the task's queries and gallery items when ``split`` is the data they came from."""
    if split is None or task.name not in TASKS:
        return None
    if task.levels.shape[0] != split.num_buildings:
        return None
    if task.building_ids is not None:
        same = [str(a) for a in task.building_ids.tolist()] == [str(b) for b in split.building_ids.tolist()]
        if not same:
            return None
    sat, drone = split.satellite_paths, split.drone_paths
    query, gallery = (sat, drone) if task.name == "satellite->drone" else (drone, sat)
    if len(query) != task.query.shape[0] or len(gallery) != task.gallery.shape[0]:
        return None
    return query, gallery


def _default_map_center(levels: np.ndarray) -> int:
    """The building with the most others within the largest threshold (lowest index on ties)."""
    return int(np.argmax((levels >= 1).sum(axis=1)))


def write_plots(
    out_dir: str | os.PathLike,
    tasks: Mapping[str, RetrievalTask],
    evaluation: Evaluation,
    split: Split | None = None,
    n_queries: int = 4,
    top_k: int = 10,
    map_building: str | None = None,
    shift_ks: Sequence[int] | None = None,
    shift_queries: int = 32,
    progress: bool = True,
    dpi: int = 100,
) -> list[Path]:
    """Write the figures of :mod:`dycl.plots` for an evaluation into ``out_dir``; returns the files.

    * ``ranked_lists_<task>.png`` — ``n_queries`` evenly spread queries with
      their ``top_k`` results (after re-ranking, if any), framed by level; the
      images are drawn when ``split`` is the data the task came from;
    * ``map.png`` — the buildings around ``map_building`` (an id as listed in
      the dataset; default: the one with the most neighbours within the
      largest threshold) with the threshold circles (needs coordinates);
    * ``rank_shifts_<task>.png`` — rank of the initial top results after
      k-reciprocal re-ranking with each of ``shift_ks`` (default 20, 62, 292),
      with Kendall tau, over ``shift_queries`` evenly spread queries;
    * ``map_by_scale.png`` — per-scale mAP without and with the re-ranking.
    """
    from .plots import (
        RankedList,
        building_map_figure,
        rank_shift_figure,
        ranked_lists_figure,
        save_figure,
        scale_bars_figure,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, task in tasks.items():
        reranked = evaluation.distances.get(name)
        rows = _sample_rows(task.query.shape[0], n_queries)
        dist = reranked[rows].astype(np.float64) if reranked is not None else _cosine_rows(task, rows)
        k = min(top_k, task.gallery.shape[0])
        ranked = ranked_gallery(dist, k)
        images = _task_images(task, split)
        ranked_rows = []
        for r, row in enumerate(rows):
            qb = int(task.query_ids[row])
            items = ranked[r]
            ranked_rows.append(RankedList(
                query_label=f"building {task.building_label(qb)}",
                levels=[int(task.levels[qb, task.gallery_ids[j]]) for j in items],
                labels=[task.building_label(int(task.gallery_ids[j])) for j in items],
                query_image=_thumbnail(images[0][row]) if images else None,
                images=[_thumbnail(images[1][j]) for j in items] if images else [],
            ))
        how = evaluation.rerank.describe(evaluation.ks.get(name))
        fig = ranked_lists_figure(ranked_rows, task.thresholds, title=f"{name}: top {k}, re-ranking {how}")
        written.append(save_figure(fig, out / f"ranked_lists_{_slug(name)}.png", dpi=dpi))

        ks = [int(x) for x in (shift_ks if shift_ks is not None else DEFAULT_KS)]
        rows = _sample_rows(task.query.shape[0], shift_queries)
        after = {}
        for kk in ks:
            d = k_reciprocal_embeddings(task.query, task.gallery, kk, evaluation.rerank.k2,
                                        evaluation.rerank.lambda_value, progress=progress)
            after[kk] = d[rows]
        item_levels = task.levels[task.query_ids[rows][:, None], task.gallery_ids[None, :]]
        fig = rank_shift_figure(_cosine_rows(task, rows), after, item_levels, task.thresholds,
                                top_n=min(50, task.gallery.shape[0]),
                                title=f"{name}: position shifts after k-reciprocal re-ranking")
        written.append(save_figure(fig, out / f"rank_shifts_{_slug(name)}.png", dpi=dpi))

    with_coords = [t for t in tasks.values() if t.coords is not None]
    if with_coords:
        task = with_coords[0]
        if map_building is not None:
            labels = [task.building_label(i) for i in range(task.levels.shape[0])]
            if str(map_building) not in labels:
                raise ValueError(
                    f"map_building: {map_building!r} is not a building of {task.source or task.name}")
            center = labels.index(str(map_building))
        else:
            center = _default_map_center(level_matrix(task.coords, task.thresholds))
        labels = [task.building_label(i) for i in range(task.levels.shape[0])]
        fig = building_map_figure(task.coords, center, task.thresholds, labels=labels,
                                  title=f"buildings of {Path(task.source).name or task.name}")
        written.append(save_figure(fig, out / "map.png", dpi=dpi))

    runs = {"cosine (no re-ranking)": evaluation.baseline}
    if evaluation.rerank.method != "none":
        runs[evaluation.rerank.method] = evaluation.results
    fig = scale_bars_figure(runs, title="mAP per scale")
    written.append(save_figure(fig, out / "map_by_scale.png", dpi=dpi))
    return written


# --------------------------------------------------------------------------- the command


def run_eval(
    *,
    checkpoint: str | os.PathLike | None = None,
    embeddings: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    dataset_format: str = "auto",
    split: str = "test",
    backbone: str | None = None,
    image_size: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    workers: int | None = None,
    amp: bool = True,
    trust_checkpoint: bool = False,
    thresholds: Sequence[float] | None = None,
    rerank: RerankConfig = RerankConfig(),
    recall_at: Sequence[int] = DEFAULT_RECALL_AT,
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    plots: str | os.PathLike | None = None,
    plot_queries: int = 4,
    plot_top_k: int = 10,
    map_building: str | None = None,
    shift_ks: Sequence[int] | None = None,
    progress: bool = True,
    out: TextIO | None = None,
    log: TextIO | None = None,
) -> Evaluation:
    """``dycl-eval``: score a checkpoint (both tasks of ``data_dir``'s test split) or an embeddings file.

    With ``checkpoint``: the model is built from the checkpoint (see
    :func:`load_model`), the satellite and drone images of ``split`` are
    embedded once, and both tasks are scored; the embeddings are saved next to
    ``output`` (``embeddings/*.npz``) for re-scoring without the network.
    Thresholds, image size and batch size default to the checkpoint's training
    configuration. With ``embeddings``: the task(s) of the file or folder (see
    :func:`load_embeddings`); ``data_dir`` is then optional (Eq. 6 from its
    training split, images in the figures).

    Prints the tables to ``out`` and progress/timings to ``log``; writes
    ``output`` (+ ``.md``, ``.csv``) and the figures under ``plots``. Existing
    result files are only replaced with ``overwrite``.
    """
    out = out if out is not None else sys.stdout
    log = log if log is not None else sys.stderr
    if (checkpoint is None) == (embeddings is None):
        raise ValueError("checkpoint: pass exactly one of checkpoint and embeddings")
    paths = result_paths(output) if output is not None else None
    if paths is not None and not overwrite:
        taken = [p for p in paths.values() if p.exists()]
        if checkpoint is not None:
            taken += [paths["json"].parent / "embeddings" / f for f in TASK_FILES.values()
                      if (paths["json"].parent / "embeddings" / f).exists()]
        if taken:
            raise ValueError(f"output: {taken[0]} exists; pass --overwrite to replace it")
    ts_given = None if thresholds is None else validate_thresholds(thresholds)
    settings: dict[str, Any] = {}
    test_split = None
    train_split = None
    timings: dict[str, float] = {}

    if checkpoint is not None:
        if data_dir is None:
            raise ValueError("data_dir: --checkpoint needs --data-dir (the images to embed)")
        start = time.perf_counter()
        model, info = load_model(checkpoint, backbone=backbone, image_size=image_size,
                                 trusted=trust_checkpoint)
        ts = ts_given or validate_thresholds(info.get("thresholds") or DEFAULT_THRESHOLDS)
        test_split = _read_split(data_dir, split, dataset_format)
        dev = _resolve_device(device)
        model.to(dev)
        if dev.startswith("cuda"):
            import torch

            model.to(memory_format=torch.channels_last)  # as in training; extract_embeddings feeds NHWC
        bs = int(batch_size or info.get("eval_batch_size") or 128)
        n_workers = min(8, os.cpu_count() or 1) if workers is None else int(workers)
        print(f"dycl-eval: {checkpoint} ({info['layout']}, {info['backbone']}, {info['embedding_dim']}-d, "
              f"{info['image_size']} px) on {test_split.num_buildings} satellite + {test_split.num_drone} "
              f"drone images of {data_dir} [{split}], {dev}", file=log)
        sat, drone = embed_split(model, test_split, info["image_size"], batch_size=bs, device=dev, amp=amp,
                                 workers=n_workers, progress=progress)
        timings["embedding"] = time.perf_counter() - start
        tasks = tasks_from_split(sat, drone, test_split, ts)
        settings.update({"checkpoint": f"{checkpoint} ({info['layout']})", "backbone": info["backbone"],
                         "embedding dim": info["embedding_dim"], "image size": info["image_size"],
                         "data": f"{data_dir} [{split}]"})
        if paths is not None:
            saved = save_task_embeddings(paths["json"].parent / "embeddings", sat, drone, test_split, ts)
            settings["embeddings"] = ", ".join(str(p) for p in saved.values())
    else:
        tasks = load_embeddings(embeddings, ts_given)  # type: ignore[arg-type]
        settings["embeddings"] = ", ".join(t.source for t in tasks.values())
        if data_dir is not None and plots is not None:
            test_split = _read_split(data_dir, split, dataset_format)

    if rerank.method == "msrerank" and rerank.ks is None and data_dir is not None:
        train_split, why = _training_split(data_dir, dataset_format, split)
        if train_split is None:
            print(f"dycl-eval: no training split for Eq. 6 ({why}); ks from the gallery", file=log)
    evaluation = evaluate_tasks(tasks, rerank, train_split, recall_at, progress=progress, log=log)
    evaluation.seconds.update(timings)

    first = next(iter(tasks.values()))
    settings["thresholds"] = ", ".join(f"{t:g} m" for t in first.thresholds)
    settings["re-ranking"] = rerank.describe()
    for name, ks in evaluation.ks.items():
        settings[f"ks {name}"] = f"{','.join(map(str, ks))} ({evaluation.notes[name]})"
    print(format_tables(evaluation.results), file=out)
    if rerank.method != "none":
        print(f"\nRe-ranking against plain cosine distances (%, {rerank.describe()}):", file=out)
        for name, after in evaluation.results.items():
            before = evaluation.baseline[name]
            changes = [f"{key} {_pct(before.get(key))} -> {_pct(after.get(key))}"
                       for key in ("H-AP", "mAP_overall", "R@1_overall")]
            print(f"  {name}: {', '.join(changes)}", file=out)
    if paths is not None:
        write_results(paths["json"], evaluation.results, settings)
        print(f"\nwrote {paths['json']}, {paths['md'].name}, {paths['csv'].name}", file=out)
    if plots is not None:
        start = time.perf_counter()
        files = write_plots(plots, tasks, evaluation, split=test_split, n_queries=plot_queries,
                            top_k=plot_top_k, map_building=map_building, shift_ks=shift_ks, progress=progress)
        evaluation.seconds["figures"] = time.perf_counter() - start
        print(f"wrote {len(files)} figures to {plots}: {', '.join(f.name for f in files)}", file=out)
    timing = ", ".join(f"{k} {v:.2f} s" for k, v in evaluation.seconds.items())
    print(f"dycl-eval: times: {timing}", file=log)
    return evaluation


def _default_labels(files: Sequence[Path]) -> list[str]:
    labels = [f.parent.name if f.stem == "metrics" and f.parent.name else f.stem for f in files]
    if len(set(labels)) < len(labels):
        labels = [str(f) for f in files]
    return labels


def run_compare(
    files: Sequence[str | os.PathLike],
    labels: Sequence[str] | None = None,
    out_png: str | os.PathLike | None = None,
    plots: str | os.PathLike | None = None,
    metric: str = "mAP",
    out: TextIO | None = None,
) -> Path:
    """``dycl-eval --compare``: per-scale bars of several ``metrics.json`` files; returns the PNG.

    The PNG is ``out_png``, or ``plots/map_by_scale.png`` (``r1_by_scale.png``
    for ``metric="R@1"``). The compared numbers are also printed as a table.
    """
    from .plots import save_figure, scale_bars_figure

    out = out if out is not None else sys.stdout
    paths = [Path(f) for f in files]
    if not paths:
        raise ValueError("compare: no metrics file given")
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"labels: {len(labels)} labels for {len(paths)} metrics files")
    if out_png is None and plots is None:
        raise ValueError("out: --compare needs --out PNG or --plots DIR")
    names = list(labels) if labels is not None else _default_labels(paths)
    runs = {name: read_metrics(p) for name, p in zip(names, paths, strict=True)}
    if len(runs) != len(names):
        raise ValueError("labels: every compared file needs its own label")
    for name, results in runs.items():
        print(f"== {name}\n{format_tables(results)}\n", file=out)
    fig = scale_bars_figure(runs, metric=metric, title=f"{metric} per scale")
    target = Path(out_png) if out_png is not None else Path(plots) / (  # type: ignore[arg-type]
        "map_by_scale.png" if metric == "mAP" else "r1_by_scale.png")
    written = save_figure(fig, target)
    print(f"wrote {written}", file=out)
    return written


__all__ = [
    "PAPER_SCALE_NAMES",
    "TASKS",
    "TASK_FILES",
    "autocast_dtype",
    "extract_embeddings",
    "format_tables",
    "save_task_embeddings",
    "score_tasks",
    "task_arrays",
    # dycl-eval
    "Evaluation",
    "RERANK_METHODS",
    "RerankConfig",
    "RetrievalTask",
    "embed_split",
    "eq6_ks",
    "evaluate_tasks",
    "format_csv",
    "format_markdown",
    "load_embeddings",
    "load_model",
    "read_metrics",
    "rerank_task",
    "run_compare",
    "run_eval",
    "score_task",
    "tasks_from_split",
    "write_plots",
    "write_results",
]
