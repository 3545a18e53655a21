"""The figures of an evaluation: which queries, which rankings and which images go into :mod:`dycl.plots`.

:mod:`dycl.plots` draws; this module chooses what to draw for a set of
:class:`~dycl.tasks.RetrievalTask` and their :class:`~dycl.tasks.Evaluation`.
Used by ``dycl-eval --plots`` and by the experiment report.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .analysis_plots import RankShiftProfile
from .geo import level_matrix
from .metrics import ranked_gallery
from .rerank import DEFAULT_KS, k_reciprocal_embeddings
from .tasks import TASKS, Evaluation, RetrievalTask, task_slug

if TYPE_CHECKING:  # pragma: no cover
    from .data import Split


def sample_rows(n: int, count: int) -> np.ndarray:
    """``count`` indices spread evenly over ``0..n-1`` (all of them when ``n <= count``)."""
    if n <= count:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, count).round().astype(np.int64))


def cosine_rows(task: RetrievalTask, rows: np.ndarray) -> np.ndarray:
    """Cosine distances (float64) of the queries ``rows`` of ``task`` to its whole gallery."""
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


def task_images(task: RetrievalTask, split: Split | None) -> tuple[Sequence[Path], Sequence[Path]] | None:
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


def _ranked_lists(out: Path, name: str, task: RetrievalTask, evaluation: Evaluation, split: Split | None,
                  n_queries: int, top_k: int, dpi: int) -> Path:
    from .plots import RankedList, ranked_lists_figure, save_figure

    reranked = evaluation.distances.get(name)
    rows = sample_rows(task.query.shape[0], n_queries)
    dist = reranked[rows].astype(np.float64) if reranked is not None else cosine_rows(task, rows)
    k = min(top_k, task.gallery.shape[0])
    ranked = ranked_gallery(dist, k)
    images = task_images(task, split)
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
    return save_figure(fig, out / f"ranked_lists_{task_slug(name)}.png", dpi=dpi)


def _rank_shifts(out: Path, name: str, task: RetrievalTask, evaluation: Evaluation, shift_ks: Sequence[int],
                 shift_queries: int, progress: bool, dpi: int) -> Path:
    from .plots import rank_shift_figure, save_figure

    rows = sample_rows(task.query.shape[0], shift_queries)
    after = {}
    for kk in shift_ks:
        d = k_reciprocal_embeddings(task.query, task.gallery, kk, evaluation.rerank.k2,
                                    evaluation.rerank.lambda_value, progress=progress)
        after[kk] = d[rows]
    item_levels = task.levels[task.query_ids[rows][:, None], task.gallery_ids[None, :]]
    fig = rank_shift_figure(cosine_rows(task, rows), after, item_levels, task.thresholds,
                            top_n=min(50, task.gallery.shape[0]),
                            title=f"{name}: position shifts after k-reciprocal re-ranking")
    return save_figure(fig, out / f"rank_shifts_{task_slug(name)}.png", dpi=dpi)


def rank_shift_profile(base_distances: np.ndarray, reranked: np.ndarray) -> RankShiftProfile:
    """Fig. 7's statistics over every query (row): the mean shift of the item at each initial rank.

    Ranks are 1-based, ascending distance, ties by gallery index. For the item at initial rank ``r`` of
    a query, its shift is (its rank in ``reranked``) − ``r``; the profile averages the shift and its
    absolute value over the queries, and Kendall's τ-b of each query's two complete rankings.
    """
    from .plots import kendall_tau_rows

    base = np.asarray(base_distances, dtype=np.float64)
    after = np.asarray(reranked, dtype=np.float64)
    if base.ndim != 2 or base.size == 0:
        raise ValueError(f"base_distances: expected a non-empty (q, g) matrix, got shape {base.shape}")
    if after.shape != base.shape:
        raise ValueError(f"reranked: expected shape {base.shape}, got {after.shape}")
    rows = np.arange(base.shape[0])[:, None]
    initial_order = np.argsort(base, axis=1, kind="stable")  # item at each initial rank
    new_ranks = np.empty_like(initial_order)
    new_ranks[rows, np.argsort(after, axis=1, kind="stable")] = np.arange(1, base.shape[1] + 1)[None, :]
    shift = new_ranks[rows, initial_order] - np.arange(1, base.shape[1] + 1)[None, :]
    tau = kendall_tau_rows(base, after)
    tau = tau[np.isfinite(tau)]  # a query with a constant ranking has no τ
    return RankShiftProfile(mean_shift=shift.mean(axis=0), mean_abs_shift=np.abs(shift).mean(axis=0),
                            tau=float(tau.mean()) if tau.size else float("nan"), queries=int(base.shape[0]))


def write_rank_shift_profiles(out_dir: str | os.PathLike, tasks: Mapping[str, RetrievalTask],
                              ks: Sequence[int] = DEFAULT_KS, k2: int = 6, lambda_value: float = 0.3,
                              prefix: str = "rank_profile", label: str = "", progress: bool = False,
                              dpi: int = 100) -> list[Path]:
    """The paper's Fig. 7 for each task: every query, k-reciprocal re-ranking with each ``k`` in ``ks``.

    Writes ``<prefix>_<task>.png`` into ``out_dir`` and returns the files. The paper draws it on the
    training set (``tasks_from_split`` of the training split's embeddings); any task works.
    """
    from .analysis_plots import rank_shift_profile_figure
    from .plots import save_figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, task in tasks.items():
        base = cosine_rows(task, np.arange(task.query.shape[0]))
        profiles = {int(k): rank_shift_profile(base, k_reciprocal_embeddings(
            task.query, task.gallery, int(k), k2, lambda_value, progress=progress)) for k in ks}
        title = f"{label + ': ' if label else ''}{name}, position shifts after k-reciprocal re-ranking"
        written.append(save_figure(rank_shift_profile_figure(profiles, title=title),
                                   out / f"{prefix}_{task_slug(name)}.png", dpi=dpi))
    return written


def _building_map(out: Path, task: RetrievalTask, map_building: str | None, dpi: int) -> Path:
    from .plots import building_map_figure, save_figure

    labels = [task.building_label(i) for i in range(task.levels.shape[0])]
    if map_building is not None:
        if str(map_building) not in labels:
            raise ValueError(
                f"map_building: {map_building!r} is not a building of {task.source or task.name}")
        center = labels.index(str(map_building))
    else:
        center = _default_map_center(level_matrix(task.coords, task.thresholds))
    fig = building_map_figure(task.coords, center, task.thresholds, labels=labels,
                              title=f"buildings of {Path(task.source).name or task.name}")
    return save_figure(fig, out / "map.png", dpi=dpi)


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
    * ``rank_shifts_<task>.png`` — rank of the initial top results after
      k-reciprocal re-ranking with each of ``shift_ks`` (default 20, 62, 292),
      with Kendall tau, over ``shift_queries`` evenly spread queries;
    * ``map.png`` — the buildings around ``map_building`` (an id as listed in
      the dataset; default: the one with the most neighbours within the
      largest threshold) with the threshold circles (needs coordinates);
    * ``map_by_scale.png`` — per-scale mAP without and with the re-ranking.
    """
    from .plots import save_figure, scale_bars_figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ks = [int(x) for x in (shift_ks if shift_ks is not None else DEFAULT_KS)]
    written: list[Path] = []
    for name, task in tasks.items():
        written.append(_ranked_lists(out, name, task, evaluation, split, n_queries, top_k, dpi))
        written.append(_rank_shifts(out, name, task, evaluation, ks, shift_queries, progress, dpi))
    with_coords = [t for t in tasks.values() if t.coords is not None]
    if with_coords:
        written.append(_building_map(out, with_coords[0], map_building, dpi))
    runs = {"cosine (no re-ranking)": evaluation.baseline}
    if evaluation.rerank.method != "none":
        runs[evaluation.rerank.method] = evaluation.results
    fig = scale_bars_figure(runs, title="mAP per scale")
    written.append(save_figure(fig, out / "map_by_scale.png", dpi=dpi))
    return written


__all__ = ["cosine_rows", "rank_shift_profile", "sample_rows", "task_images", "write_plots",
           "write_rank_shift_profiles"]
