"""The retrieval task: embeddings, building indices and relevance, ready to re-rank and score.

One type, :class:`RetrievalTask`, serves training, evaluation and the
experiment suite. A task is built from a split's embeddings
(:func:`tasks_from_split`), written to the DESIGN §7 ``.npz`` layout
(:meth:`RetrievalTask.save`) and read back by :mod:`dycl.task_files`. The two tasks of
DA-Campus, keyed as in ``metrics.json``:

* ``"satellite->drone"`` (drone navigation): each satellite tile queries the drone views;
* ``"drone->satellite"`` (drone localization): each drone view queries the satellite tiles.

Queries and gallery items carry *building indices* (``0..B-1``), which index
the task's ``(B, B)`` level matrix and ``(B, 2)`` coordinates. Scores come
from the Rust core with the DESIGN §4 key names::

    from dycl.tasks import RerankConfig, evaluate_tasks, tasks_from_split

    tasks = tasks_from_split(satellite_emb, drone_emb, split)
    evaluation = evaluate_tasks(tasks, RerankConfig(method="msrerank"), train_split)
    evaluation.results["drone->satellite"]["H-AP"]

Nothing here imports torch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from ._files import atomic_open
from .geo import DEFAULT_THRESHOLDS, validate_thresholds
from .knn import PRESETS as KNN_SEARCHES
from .knn import check_search
from .metrics import DEFAULT_RECALL_AT, evaluate, evaluate_embeddings
from .metrics_authors import DEFINITIONS, check_compat
from .rerank import Reranked, check_options, k_reciprocal_graph, msrerank_graph, msrerank_ks
from .rerank_single import k_reciprocal_single_embeddings, msrerank_single_embeddings
from .spatial_metrics import spatial_scores

if TYPE_CHECKING:  # pragma: no cover
    from .data import Split

#: The two retrieval tasks, in the order the paper's tables list them.
TASKS: tuple[str, str] = ("satellite->drone", "drone->satellite")

#: File names of the per-task embedding files (DESIGN §7) in a run's embeddings folder.
TASK_FILES: dict[str, str] = {
    "satellite->drone": "satellite_to_drone.npz",
    "drone->satellite": "drone_to_satellite.npz",
}

#: ``--rerank`` choices.
RERANK_METHODS: tuple[str, ...] = ("none", "k-reciprocal", "msrerank")

#: ``--ks-from`` choices: whose images per building Eq. 6 counts (see :func:`eq6_ks`).
KS_SOURCES: tuple[str, ...] = ("drone", "gallery")


# --------------------------------------------------------------------------- the task type


@dataclass(frozen=True, eq=False)
class RetrievalTask:
    """One retrieval task, ready to score: embeddings, building indices and relevance.

    ``query_ids``/``gallery_ids`` index the rows of ``levels`` (and of
    ``coords``, the building latitude/longitude, when known). ``thresholds``
    name the ``within@{t}m`` shares of the localization error; ``building_ids``
    (optional) are the buildings' ids as listed in the dataset files.

    ``exclude_self``: a single-domain task (:func:`single_domain_task`): the
    gallery is the query set, each query is ranked against the other items and
    re-ranking uses :mod:`dycl.rerank_single` (the items once, not twice).
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
    exclude_self: bool = False

    @property
    def n_levels(self) -> int:
        """``L``, the level of the same building (the number of scales)."""
        return int(self.levels.max())

    def building_label(self, index: int) -> str:
        """The dataset's id of building ``index`` (``#index`` when the ids are unknown)."""
        if self.building_ids is not None:
            return str(self.building_ids[int(index)])
        return f"#{int(index)}"

    def save(self, path: str | os.PathLike) -> Path:
        """Write the task as a DESIGN §7 ``.npz`` (temporary name, then renamed); returns the path.

        Holds ``query``, ``gallery`` (float32), ``query_ids``, ``gallery_ids``
        (int64 building indices), ``levels`` (uint8) and ``thresholds``, plus
        ``coords`` and the dataset's ``building_ids`` (as strings when they are
        not integers) when known.
        """
        extra: dict[str, np.ndarray] = {}
        if self.coords is not None:
            extra["coords"] = np.asarray(self.coords, dtype=np.float64)
        extra["levels"] = np.asarray(self.levels, dtype=np.uint8)
        extra["thresholds"] = np.asarray(self.thresholds, dtype=np.float64)
        if self.building_ids is not None:
            ids = np.asarray(self.building_ids)
            extra["building_ids"] = ids.astype(str) if ids.dtype == object else ids
        if self.exclude_self:
            extra["exclude_self"] = np.asarray(True)
        target = Path(path)
        with atomic_open(target, "wb") as handle:
            np.savez(handle, query=np.ascontiguousarray(self.query, dtype=np.float32),
                     gallery=np.ascontiguousarray(self.gallery, dtype=np.float32),
                     query_ids=self.query_ids, gallery_ids=self.gallery_ids, **extra)
        return target


def task_slug(task: str) -> str:
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
    """Both tasks of a split's embeddings: ``{"satellite->drone": task, "drone->satellite": task}``.

    Args:
        satellite_emb: ``(B, d)``, row ``b`` = satellite tile of building index ``b``.
        drone_emb: ``(N, d)``, row ``i`` = drone image ``i`` of ``split``.
        split: where the embeddings come from (its levels for ``thresholds``,
            building coordinates and ids are used).
        thresholds: level thresholds in metres (DESIGN §3).
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
    ts = validate_thresholds(thresholds)
    sat = np.ascontiguousarray(sat, dtype=np.float32)
    drone = np.ascontiguousarray(drone, dtype=np.float32)
    sat_ids = np.arange(split.num_buildings, dtype=np.int64)
    drone_ids = np.asarray(split.drone_buildings, dtype=np.int64)
    common: dict[str, Any] = {
        "levels": split.levels(ts), "coords": np.asarray(split.coords, dtype=np.float64), "thresholds": ts,
        "building_ids": np.asarray(split.building_ids), "source": split.source or split.name,
    }
    return {
        "satellite->drone": RetrievalTask("satellite->drone", sat, drone, sat_ids, drone_ids, **common),
        "drone->satellite": RetrievalTask("drone->satellite", drone, sat, drone_ids, sat_ids, **common),
    }


def single_domain_task(
    name: str, embeddings: np.ndarray, ids: np.ndarray, levels: np.ndarray, source: str = "",
    class_labels: np.ndarray | None = None,
) -> RetrievalTask:
    """A single-domain retrieval task (e.g. DyML): every item queries all the others.

    Args:
        name: the task's name (its key in ``metrics.json``), e.g. ``"dyml-product"``.
        embeddings: ``(N, d)``, one row per image.
        ids: ``(N,)`` class index of each image, and ``levels`` the ``(C, C)``
            level matrix over the classes: both from :func:`dycl.levels.from_hierarchy`
            (or ``HierarchicalSet.ids_and_levels()``).
        source: where the images come from, for messages and reports.
        class_labels: optional ``(C,)`` names of the classes (stored like building ids).
    """
    emb = np.asarray(embeddings)
    if emb.ndim != 2 or emb.shape[0] < 2:
        raise ValueError(f"embeddings: expected (N, d) with N >= 2 items, got shape {emb.shape}")
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    id_arr = np.ascontiguousarray(ids, dtype=np.int64)
    if id_arr.shape != (emb.shape[0],):
        raise ValueError(f"ids: expected one class index per embedding ({emb.shape[0]}), got {id_arr.shape}")
    return RetrievalTask(name, emb, emb, id_arr, id_arr, np.asarray(levels, dtype=np.uint8),
                         building_ids=class_labels, source=source, exclude_self=True)


def save_task_embeddings(
    out_dir: str | os.PathLike,
    satellite_emb: np.ndarray,
    drone_emb: np.ndarray,
    split: Split,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> dict[str, Path]:
    """Write both tasks of a split's embeddings into ``out_dir`` (:data:`TASK_FILES`); ``{task: path}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {name: task.save(out / TASK_FILES[name])
            for name, task in tasks_from_split(satellite_emb, drone_emb, split, thresholds).items()}


# --------------------------------------------------------------------------- scoring


def score_task(
    task: RetrievalTask, distances: np.ndarray | None = None, recall_at: Sequence[int] = DEFAULT_RECALL_AT,
    geo_metrics: bool = False, compat: str = DEFINITIONS,
) -> dict[str, float]:
    """DESIGN §4 metrics of ``task``: on cosine distances of its embeddings, or on ``distances`` (q, g).

    With ``geo_metrics`` and coordinates, also ``err@{k}`` (k > 1) and ``SDM@{k}`` for the recall ks
    (:mod:`dycl.spatial_metrics`), after the DESIGN §4 keys. ``compat="authors"`` scores the DESIGN §4
    keys as the authors' release does (:mod:`dycl.metrics_authors`); the geo metrics beyond top-1 are
    not part of that release and stay as defined.
    """
    kwargs: dict[str, Any] = {"recall_at": recall_at, "coords": task.coords, "thresholds": task.thresholds,
                              "compat": compat, "exclude_self": task.exclude_self}
    if distances is None:
        out = evaluate_embeddings(task.query, task.gallery, task.query_ids, task.gallery_ids, task.levels,
                                  **kwargs)
    else:
        out = evaluate(distances, task.query_ids, task.gallery_ids, task.levels, **kwargs)
    if geo_metrics and task.coords is not None and not task.exclude_self:  # spatial_scores is two-set only
        out.update(spatial_scores(task.query_ids, task.gallery_ids, task.coords, recall_at, task.query,
                                  task.gallery, distances))
    return out


def score_tasks(
    satellite_emb: np.ndarray,
    drone_emb: np.ndarray,
    split: Split,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    recall_at: Sequence[int] = DEFAULT_RECALL_AT,
    geo_metrics: bool = False,
    compat: str = DEFINITIONS,
) -> dict[str, dict[str, float]]:
    """:func:`score_task` of both tasks of a split's embeddings (:func:`tasks_from_split`).

    Returns ``{"satellite->drone": metrics, "drone->satellite": metrics}``, each
    the dict of :func:`dycl.metrics.evaluate` (DESIGN §4 keys, counts, and the
    localization-error keys: the split's coordinates are always known); ``compat`` as in :func:`score_task`.
    """
    tasks = tasks_from_split(satellite_emb, drone_emb, split, thresholds)
    return {name: score_task(task, None, recall_at, geo_metrics, compat) for name, task in tasks.items()}


def random_embedding_baseline(test_split: Split, dim: int, thresholds: Sequence[float],
                              seed: int = 0) -> dict[str, dict[str, float]]:
    """Scores of random unit embeddings on ``test_split``: the chance level a trained model must beat."""
    rng = np.random.default_rng(seed)
    sat = rng.standard_normal((test_split.num_buildings, dim)).astype(np.float32)
    drone = rng.standard_normal((test_split.num_drone, dim)).astype(np.float32)
    return score_tasks(sat, drone, test_split, thresholds)


# --------------------------------------------------------------------------- re-ranking


@dataclass(frozen=True)
class RerankConfig:
    """Re-ranking of a task (DESIGN §5). ``ks=None`` means Eq. 6 (``--ks auto``), read as ``ks_from`` says.

    The values are checked on creation by :func:`dycl.rerank.check_options`
    (the re-ranking's own checks), so bad options fail before any work.
    """

    method: str = "none"
    variant: str = "paper"
    ks: tuple[int, ...] | None = None
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3
    ks_from: str = "drone"
    #: The neighbour search (a :data:`dycl.knn.PRESETS` name) and options over the preset's, as pairs.
    knn: str = "exact"
    knn_params: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.method not in RERANK_METHODS:
            raise ValueError(f"rerank: expected one of {', '.join(RERANK_METHODS)}, got {self.method!r}")
        pairs = self.knn_params.items() if isinstance(self.knn_params, Mapping) else self.knn_params
        object.__setattr__(self, "knn_params", tuple((str(k), v) for k, v in pairs))
        check_search(self.knn, dict(self.knn_params))  # a bad search fails now, not after embedding
        if self.ks_from not in KS_SOURCES:
            raise ValueError(f"ks_from: expected one of {', '.join(KS_SOURCES)}, got {self.ks_from!r}")
        check_options(self.k1, self.k2, self.lambda_value, self.ks, self.variant)

    def describe(self, ks: Sequence[int] | None = None) -> str:
        """Human-readable settings, e.g. ``msrerank (paper, ks 20,62,292, k2 6, lambda 0.3)``."""
        if self.method == "none":
            return "none (cosine distance)"
        common = f"k2 {self.k2}, lambda {self.lambda_value:g}"
        if self.knn != "exact" or self.knn_params:
            options = "".join(f", {k}={v}" for k, v in self.knn_params)
            common += f", knn {self.knn}{options}"
        if self.method == "k-reciprocal":
            return f"k-reciprocal (k1 {self.k1}, {common})"
        used = ks if ks is not None else self.ks
        ks_text = "auto" if used is None else ",".join(str(k) for k in used)
        return f"msrerank ({self.variant}, ks {ks_text}, {common})"


def eq6_ks(
    task: RetrievalTask, train_split: Split | None = None, mu: float = 0.1, min_k: int = 20,
    ks_from: str = "gallery",
) -> tuple[tuple[int, ...], str]:
    """Eq. 6 neighbourhood sizes for ``task`` and where they come from (docs/evaluation.md).

    Levels: the training buildings' (for ``task.thresholds``) when a training split is given and the
    task is one of the two DA-Campus tasks, else the task's own buildings. Images per building:

    * ``ks_from="gallery"``: those of the task's gallery view (drone views for ``"satellite->drone"``,
      one tile for ``"drone->satellite"``, which gives ``min_k`` at every scale);
    * ``ks_from="drone"``: those of the drone view for both tasks, so one set of ks per dataset, as the
      authors' release uses (20, 62, 292 on DA-Campus for both tasks). The default of
      :class:`RerankConfig`, ``dycl-eval`` and the experiment suites; a task whose views are not known
      falls back to its gallery.
    """
    if ks_from not in KS_SOURCES:
        raise ValueError(f"ks_from: expected one of {', '.join(KS_SOURCES)}, got {ks_from!r}")
    drone_side = ks_from == "drone" and task.name in TASKS
    if train_split is not None and task.name in TASKS:
        levels = train_split.levels(task.thresholds)
        from_drone = drone_side or task.name == "satellite->drone"
        counts: np.ndarray | int = train_split.drone_counts() if from_drone else 1
        view = ", drone view" if drone_side and task.name == "drone->satellite" else ""
        source = f"Eq. 6 on the {train_split.name} split{view}"
    else:
        queries_are_drone = drone_side and task.name == "drone->satellite"
        ids = task.query_ids if queries_are_drone else task.gallery_ids
        present = np.unique(ids)
        levels = task.levels[np.ix_(present, present)]
        counts = np.bincount(ids, minlength=task.levels.shape[0])[present].astype(np.int64)
        unknown = " (views unknown)" if ks_from == "drone" and task.name not in TASKS else ""
        source = "Eq. 6 on the " + ("queries (drone view)" if queries_are_drone else f"gallery{unknown}")
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

    Uses the embedding entry points of :mod:`dycl.rerank` (no N×N matrix),
    or those of :mod:`dycl.rerank_single` for a single-domain task (``(N, N)``).
    ``ks`` (MSRerank) defaults to ``config.ks``.
    """
    result = rerank_task_result(task, config, ks, progress)
    return None if result is None else result.distances


def rerank_task_result(
    task: RetrievalTask, config: RerankConfig, ks: Sequence[int] | None = None, progress: bool = True
) -> Reranked | None:
    """:func:`rerank_task` with the neighbour search it used (``config.knn``): backend and exactness."""
    if config.method == "none":
        return None
    knn = {"knn": config.knn, "knn_params": dict(config.knn_params), "progress": progress}
    if config.method == "k-reciprocal":
        if task.exclude_self:
            return _single_set(task, config, lambda: k_reciprocal_single_embeddings(
                task.query, config.k1, config.k2, config.lambda_value, progress=progress))
        return k_reciprocal_graph(task.query, task.gallery, config.k1, config.k2, config.lambda_value, **knn)
    used = ks if ks is not None else config.ks
    if used is None:
        raise ValueError("ks: MSRerank needs ks (see eq6_ks)")
    if task.exclude_self:
        return _single_set(task, config, lambda: msrerank_single_embeddings(
            task.query, tuple(used), config.k2, config.lambda_value, config.variant, progress=progress))
    return msrerank_graph(task.query, task.gallery, tuple(used), config.k2, config.lambda_value,
                          config.variant, **knn)


def _single_set(task: RetrievalTask, config: RerankConfig, run: Callable[[], np.ndarray]) -> Reranked:
    """A single-domain re-ranking (the items once, exact core search only) as a :class:`Reranked`."""
    if config.knn != "exact":
        raise ValueError(f"knn: single-domain re-ranking ({task.name}) uses the core's exact neighbour "
                         f"search only, got {config.knn!r}")
    return Reranked(run(), "exact", True, {})


def describe_knn(result: Reranked) -> str:
    """One line for result files, e.g. ``faiss (index=ivf, nlist=400, nprobe=32), approximate``."""
    options = ", ".join(f"{k}={v}" for k, v in result.params.items())
    kind = "exact" if result.exact else "approximate"
    return f"{result.backend}" + (f" ({options})" if options else "") + f", {kind}"


@dataclass
class Evaluation:
    """What :func:`evaluate_tasks` computed.

    ``results`` holds the metrics with the chosen re-ranking, ``baseline`` those
    on plain cosine distances (the same object as ``results`` without
    re-ranking), ``distances`` the re-ranked ``(q, g)`` distances (None without
    re-ranking), ``ks`` the MSRerank sizes used and ``notes`` where they came from,
    ``knn`` each re-ranked task's neighbour search (:func:`describe_knn`).
    """

    results: dict[str, dict[str, float]]
    baseline: dict[str, dict[str, float]]
    distances: dict[str, np.ndarray | None]
    rerank: RerankConfig
    ks: dict[str, tuple[int, ...]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    knn: dict[str, str] = field(default_factory=dict)


def evaluate_tasks(
    tasks: Mapping[str, RetrievalTask],
    rerank: RerankConfig = RerankConfig(),
    train_split: Split | None = None,
    recall_at: Sequence[int] = DEFAULT_RECALL_AT,
    progress: bool = True,
    log: TextIO | None = None,
    compat: str = DEFINITIONS,
) -> Evaluation:
    """Re-rank (optionally) and score every task with the Rust core (geo metrics beyond top-1 included).

    Args:
        tasks: ``{name: task}``, e.g. from :func:`tasks_from_split` or :func:`load_embeddings`.
        rerank: the re-ranking; MSRerank with ``ks=None`` uses :func:`eq6_ks`
            (from ``train_split`` when given, images per building as ``rerank.ks_from`` says).
        train_split: the training split, for Eq. 6.
        recall_at: the ``K`` of Recall@K.
        progress: progress output for the re-ranking.
        log: where to report timings (e.g. ``sys.stderr``); None = silent.
        compat: ``"definitions"`` (default) or ``"authors"`` (the authors' release, see :func:`score_task`).
    """
    if not tasks:
        raise ValueError("tasks: nothing to evaluate")
    check_compat(compat, warn=False)  # before any re-ranking; the scoring warns
    out = Evaluation(results={}, baseline={}, distances={}, rerank=rerank)
    for name, task in tasks.items():
        start = time.perf_counter()
        out.baseline[name] = score_task(task, None, recall_at, geo_metrics=True, compat=compat)
        out.seconds[f"{name}: scoring"] = time.perf_counter() - start
        ks = None
        if rerank.method == "msrerank":
            given = (tuple(rerank.ks), "given") if rerank.ks is not None else None
            ks, out.notes[name] = given or eq6_ks(task, train_split, ks_from=rerank.ks_from)
            out.ks[name] = tuple(ks)
        start = time.perf_counter()
        reranked = rerank_task_result(task, rerank, ks, progress=progress)
        distances = out.distances[name] = None if reranked is None else reranked.distances
        if reranked is None:
            out.results[name] = out.baseline[name]
            continue
        out.knn[name] = describe_knn(reranked)
        out.seconds[f"{name}: re-ranking"] = time.perf_counter() - start
        start = time.perf_counter()
        out.results[name] = score_task(task, distances, recall_at, geo_metrics=True, compat=compat)
        out.seconds[f"{name}: scoring re-ranked"] = time.perf_counter() - start
        if log is not None:
            print(f"dycl-eval: {name}: {rerank.describe(ks)} in {out.seconds[f'{name}: re-ranking']:.2f} s"
                  + (f" (ks: {out.notes[name]})" if name in out.notes else ""), file=log)
    return out


__all__ = [
    "KNN_SEARCHES", "KS_SOURCES", "RERANK_METHODS", "TASKS", "TASK_FILES", "Evaluation", "RerankConfig",
    "RetrievalTask", "eq6_ks", "evaluate_tasks", "random_embedding_baseline",
    "describe_knn", "rerank_task", "rerank_task_result", "save_task_embeddings", "score_task", "score_tasks",
    "single_domain_task", "task_slug",
    "tasks_from_split",
]
