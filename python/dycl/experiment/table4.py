"""Table IV in miniature: re-ranking on a single-domain hierarchical benchmark, evaluation side.

The paper's Table IV scores HAPPIER embeddings of DyML-Vehicle / Animal /
Product plainly, with k-reciprocal re-ranking and with MSRerank. Here the
benchmark is the synthetic shapes (:mod:`dycl.data.shapes`: family > colour >
pattern) and the embeddings come from a fixed, untrained feature map
(:func:`dycl.data.shapes.pixel_embeddings`), so the comparison runs in a second on a CPU and
exercises the whole single-domain path: levels from the hierarchy, the
``exclude_self`` metrics and single-set re-ranking with Eq. 6 ks.
:func:`trained_shapes_task` replaces the fixed features by a ResNet-18 trained
on the hierarchy (:mod:`dycl.train.hierarchy`, a minute or two on a CPU).

    from dycl.experiment.table4 import table4_miniature
    rows = table4_miniature()       # {"none": metrics, "k-reciprocal": ..., "MSRerank (paper)": ...}
    rows = table4_miniature(task=trained_shapes_task())
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .._files import write_json_atomic
from ..data.shapes import pixel_embeddings, shapes_dataset
from ..levels import from_hierarchy
from ..rerank import msrerank_ks
from ..tables import markdown_table
from ..tasks import RerankConfig, RetrievalTask, evaluate_tasks, single_domain_task
from ..train.hierarchy import HierarchyTraining, embed_images, train_on_hierarchy
from .paper import PAPER, TABLE_IV
from .sections import TABLE4_DIR

#: The compared re-rankings, in the order of the paper's Table IV rows (MSRerank's ks: see
#: :func:`miniature_ks`).
TABLE4_RERANKINGS: dict[str, RerankConfig] = {
    "none": RerankConfig(),
    "k-reciprocal": RerankConfig(method="k-reciprocal"),
    "MSRerank (paper)": RerankConfig(method="msrerank", variant="paper"),
}


def shapes_task(images_per_class: int = 6, size: int = 24, seed: int = 0) -> RetrievalTask:
    """The single-domain task of the synthetic shapes with :func:`pixel_embeddings`."""
    data = shapes_dataset(images_per_class, size, seed)
    ids, levels = from_hierarchy(*data.labels())
    source = f"synthetic shapes ({images_per_class} per class, {size} px, seed {seed})"
    return single_domain_task("shapes", pixel_embeddings(data.images), ids, levels, source=source)


def miniature_ks(task: RetrievalTask, mu: float = 1.0, min_k: int = 5) -> tuple[int, ...]:
    """Eq. 6 ks of a small single-domain task with ``μ = 1``: the mean number of images within each
    scale. The paper's ``μ = 0.1, min_k = 20`` are sized for DA-Campus's gallery; on a few hundred
    images they give ``min_k`` at every scale, and MSRerank with equal ks is plain k-reciprocal."""
    counts = np.bincount(task.gallery_ids, minlength=task.levels.shape[0])
    return msrerank_ks(task.levels, counts, mu=mu, min_k=min_k)


def trained_shapes_task(images_per_class: int = 8, test_per_class: int = 3, size: int = 32, seed: int = 0,
                        settings: HierarchyTraining | None = None) -> RetrievalTask:
    """The shapes task with embeddings of a network trained on the other images of each class
    (:func:`dycl.train.hierarchy.train_on_hierarchy`, default settings unless given); the last
    ``test_per_class`` images of each class are scored."""
    settings = settings if settings is not None else HierarchyTraining()
    data = shapes_dataset(images_per_class, size, seed)
    labels = data.labels()
    test = data.instance >= images_per_class - test_per_class
    model, _ = train_on_hierarchy(data.images[~test], [a[~test] for a in labels], settings)
    ids, levels = from_hierarchy(*[a[test] for a in labels])
    source = f"synthetic shapes, trained ({settings.loss}, {settings.epochs} epochs)"
    return single_domain_task("shapes", embed_images(model, data.images[test]), ids, levels, source=source)


def table4_miniature(images_per_class: int = 6, size: int = 24, seed: int = 0, progress: bool = False,
                     task: RetrievalTask | None = None) -> dict[str, dict[str, float]]:
    """Metrics of a single-domain task (default :func:`shapes_task`; e.g. :func:`trained_shapes_task`)
    for each of :data:`TABLE4_RERANKINGS` (ks of :func:`miniature_ks`)."""
    task = task if task is not None else shapes_task(images_per_class, size, seed)
    ks = miniature_ks(task)
    out = {}
    for label, config in TABLE4_RERANKINGS.items():
        if config.method == "msrerank":
            config = RerankConfig(method="msrerank", variant=config.variant, ks=ks)
        out[label] = evaluate_tasks({task.name: task}, config, progress=progress).results[task.name]
    return out


def run_table4_seed(output: Path, seed: int) -> dict[str, Any]:
    """One seed of the suite's Table IV entry: :func:`trained_shapes_task` with ``seed`` for the images and
    the network, scored by :func:`table4_miniature`; written to ``output/table4/seed<seed>.json``."""
    start = time.perf_counter()
    task = trained_shapes_task(seed=seed, settings=HierarchyTraining(seed=seed))
    record = {"seed": seed, "source": task.source, "ks": list(miniature_ks(task)),
              "rows": table4_miniature(task=task)}
    record["seconds"] = time.perf_counter() - start
    (output / TABLE4_DIR).mkdir(parents=True, exist_ok=True)
    write_json_atomic(output / TABLE4_DIR / f"seed{seed}.json", record)
    return record


#: Columns of :func:`format_table4`: (metric key, header).
_TABLE4_COLUMNS = (("mAP_overall", "mAP"), ("H-AP", "H-AP"), ("ASI", "ASI"), ("NDCG", "NDCG"))


def format_table4(rows: dict[str, dict[str, float]], source: str) -> str:
    """Markdown of :func:`table4_miniature`'s rows (in %), then the paper's Table IV mAP for reference."""
    header = ["re-ranking", *(name for _, name in _TABLE4_COLUMNS)]
    ours = [[label, *(f"{100 * metrics[key]:.2f}" for key, _ in _TABLE4_COLUMNS)]
            for label, metrics in rows.items()]
    lines = [f"Table IV in miniature: {source}", "", *markdown_table(header, ours)]
    lines += [f"The paper's Table IV ({PAPER}), HAPPIER embeddings, mAP (%):", ""]
    paper = [[name, f"{plain:.2f}", f"{ms:.2f}"] for name, (plain, ms) in TABLE_IV.items()]
    lines += markdown_table(["dataset", "+ k-reciprocal", "+ MSRerank"], paper)
    lines.append("Different data and models: compare the direction of the re-ranking rows, not the numbers.")
    return "\n".join(lines)
