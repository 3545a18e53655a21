"""Smoke test of an installed dycl wheel (run by .ci/wheel-check in a fresh venv, not from the source tree).

Imports the package and its compiled core, then scores a tiny random retrieval
task through the public API (levels from coordinates, metrics, MSRerank), so a
wheel that imports but cannot compute fails here. NumPy is the only dependency.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import dycl
import dycl._core
from dycl.geo import level_matrix
from dycl.rerank import msrerank_embeddings, msrerank_ks
from dycl.tasks import RetrievalTask, score_task


def main() -> int:
    where = Path(dycl.__file__).resolve()
    if "site-packages" not in where.parts:
        raise SystemExit(f"dycl was imported from {where}, not from the installed wheel")
    core = Path(dycl._core.__file__).name
    if "abi3" not in core:
        raise SystemExit(f"dycl._core is {core}, not an abi3 extension")
    rng = np.random.default_rng(0)
    buildings, views, dim = 12, 3, 16
    coords = np.column_stack([30.0 + rng.uniform(0, 0.01, buildings), 120.0 + rng.uniform(0, 0.01, buildings)])
    levels = level_matrix(coords, thresholds=(200.0, 500.0))
    centres = rng.normal(size=(buildings, dim))
    gallery_ids = np.repeat(np.arange(buildings), views)
    gallery = (centres[gallery_ids] + 0.3 * rng.normal(size=(len(gallery_ids), dim))).astype(np.float32)
    task = RetrievalTask("satellite->drone", centres.astype(np.float32), gallery, np.arange(buildings),
                         gallery_ids, levels, coords=coords)
    scores = score_task(task)
    for key in ("H-AP", "ASI", "NDCG", "mAP_overall", "R@1_overall"):
        if not 0.0 <= scores[key] <= 1.0:
            raise SystemExit(f"{key} = {scores[key]} is outside [0, 1]")
    if scores["R@1_overall"] < 0.5:
        raise SystemExit(f"R@1 = {scores['R@1_overall']:.2f} on well-separated clusters: the core is wrong")
    reranked = msrerank_embeddings(task.query, task.gallery, ks=msrerank_ks(levels, images_per_building=views))
    if reranked.shape != (buildings, len(gallery_ids)) or not np.isfinite(reranked).all():
        raise SystemExit(f"msrerank_embeddings returned {reranked.shape}")
    print(f"wheel smoke test: dycl {dycl.__version__} from {where.parent} ({core}), Python "
          f"{sys.version.split()[0]}: H-AP {scores['H-AP']:.3f}, R@1 {scores['R@1_overall']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
