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

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .geo import DEFAULT_THRESHOLDS, validate_thresholds
from .metrics import DEFAULT_RECALL_AT, evaluate_embeddings

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
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                query=np.ascontiguousarray(arrays["query"], dtype=np.float32),
                gallery=np.ascontiguousarray(arrays["gallery"], dtype=np.float32),
                query_ids=arrays["query_ids"],
                gallery_ids=arrays["gallery_ids"],
                **common,
            )
        os.replace(tmp, path)
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
    if not results:
        raise ValueError("results: no task to format")
    tasks = list(results)
    hier_rows = [[task, *(_pct(results[task].get(key)) for key in ("H-AP", "ASI", "NDCG"))] for task in tasks]
    blocks = [_render("Hierarchical retrieval (Table II, %)", ["task", "H-AP", "ASI", "NDCG"], hier_rows)]

    n_scales = max(_scale_count(m) for m in results.values())
    names = _scale_names(n_scales) + ["overall"]
    header = ["task"] + [f"mAP {n}" for n in names] + [f"R@1 {n}" for n in names]
    scale_rows = []
    for task in tasks:
        m = results[task]
        maps = [_pct(m.get(f"mAP_{s}")) for s in range(n_scales)] + [_pct(m.get("mAP_overall"))]
        r1s = [_pct(m.get(f"R@1_{s}")) for s in range(n_scales)] + [_pct(m.get("R@1_overall"))]
        scale_rows.append([task, *maps, *r1s])
    blocks.append(_render("Retrieval per scale (Table III, %)", header, scale_rows))

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
        blocks.append(_render("Localization error of the top-1 result", loc_header, loc_rows))
    return "\n\n".join(blocks)


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
]
