"""The evaluation engine (dycl.evaluate): embedding extraction, both tasks' scores, saved files, tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from dycl.data import Split
from dycl.embed import extract_embeddings
from dycl.geo import level_matrix
from dycl.metrics import evaluate
from dycl.tables import format_tables
from dycl.tasks import TASK_FILES, TASKS, save_task_embeddings, score_tasks


def make_split(n_buildings: int = 7, views: int = 3, seed: int = 0) -> Split:
    """A split with real coordinates (some buildings within 200/500 m of each other) and dummy paths."""
    rng = np.random.default_rng(seed)
    # ~0.001 deg latitude = 111 m: buildings spread over ~1 km so that all levels occur.
    coords = np.column_stack([30.0 + rng.uniform(0, 0.008, n_buildings),
                              120.0 + rng.uniform(0, 0.008, n_buildings)])
    drone_buildings = np.repeat(np.arange(n_buildings), views)
    return Split(
        name="test",
        building_ids=np.arange(100, 100 + n_buildings, dtype=np.int64),
        coords=coords,
        satellite_paths=tuple(Path(f"/nonexistent/sat/{b}.png") for b in range(n_buildings)),
        drone_paths=tuple(Path(f"/nonexistent/drone/{i}.png") for i in range(len(drone_buildings))),
        drone_buildings=drone_buildings,
    )


def cosine_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 1.0 - a.astype(np.float64) @ b.astype(np.float64).T


def test_score_tasks_matches_metrics_on_explicit_distances():
    split = make_split()
    rng = np.random.default_rng(1)
    sat = rng.standard_normal((split.num_buildings, 16)).astype(np.float32)
    drone = rng.standard_normal((split.num_drone, 16)).astype(np.float32)
    levels = level_matrix(split.coords)
    assert set(np.unique(levels)) == {0, 1, 2, 3}, "the fixture should exercise every level"
    results = score_tasks(sat, drone, split)
    assert list(results) == list(TASKS)
    sat_ids = np.arange(split.num_buildings)
    expected = {
        "satellite->drone": evaluate(cosine_distances(sat, drone), sat_ids, split.drone_buildings, levels,
                                     coords=split.coords),
        "drone->satellite": evaluate(cosine_distances(drone, sat), split.drone_buildings, sat_ids, levels,
                                     coords=split.coords),
    }
    for task in TASKS:
        assert set(results[task]) == set(expected[task])
        for key, value in expected[task].items():
            assert results[task][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (task, key)
        for key in ("H-AP", "ASI", "NDCG", "mAP_overall", "R@1_overall", "err@1_mean_m", "within@200m"):
            assert key in results[task]


def test_perfect_embeddings_score_one_at_the_exact_scale():
    split = make_split()
    sat = np.eye(split.num_buildings, dtype=np.float32)
    drone = sat[split.drone_buildings]
    results = score_tasks(sat, drone, split)
    for task in TASKS:
        assert results[task]["R@1_0"] == 1.0
        assert results[task]["mAP_0"] == 1.0
        assert results[task]["err@1_mean_m"] == 0.0
    # Other buildings are all equally far: the hierarchical metrics cannot be perfect.
    assert results["drone->satellite"]["H-AP"] < 1.0


def test_score_tasks_rejects_mismatched_rows():
    split = make_split()
    sat = np.zeros((split.num_buildings + 1, 4), np.float32)
    with pytest.raises(ValueError, match="satellite_emb"):
        score_tasks(sat, np.ones((split.num_drone, 4), np.float32), split)
    with pytest.raises(ValueError, match="drone_emb"):
        score_tasks(np.ones((split.num_buildings, 4), np.float32), np.ones((2, 4), np.float32), split)


def test_saved_task_files_rescore_to_the_same_metrics(tmp_path):
    split = make_split()
    rng = np.random.default_rng(2)
    sat = rng.standard_normal((split.num_buildings, 8)).astype(np.float32)
    drone = rng.standard_normal((split.num_drone, 8)).astype(np.float32)
    paths = save_task_embeddings(tmp_path, sat, drone, split)
    assert {p.name for p in paths.values()} == set(TASK_FILES.values())
    assert not list(tmp_path.glob("*.tmp"))
    results = score_tasks(sat, drone, split)
    for task, path in paths.items():
        with np.load(path) as f:
            assert f["query"].dtype == np.float32 and f["query_ids"].dtype == np.int64
            assert f["levels"].dtype == np.uint8 and f["coords"].shape == (split.num_buildings, 2)
            np.testing.assert_array_equal(f["building_ids"], split.building_ids)
            again = evaluate(cosine_distances(f["query"], f["gallery"]), f["query_ids"], f["gallery_ids"],
                             f["levels"], coords=f["coords"])
        assert again["H-AP"] == pytest.approx(results[task]["H-AP"], rel=1e-6)
        assert again["R@1_0"] == pytest.approx(results[task]["R@1_0"])
    with np.load(paths["satellite->drone"]) as f:
        np.testing.assert_array_equal(f["query"], sat)
        np.testing.assert_array_equal(f["gallery_ids"], split.drone_buildings)


def test_format_tables_shape_and_values():
    results = {
        "satellite->drone": {"H-AP": 0.5, "ASI": 0.25, "NDCG": 0.75, "mAP_0": 0.1, "mAP_1": 0.2, "mAP_2": 0.3,
                             "mAP_overall": 0.2, "R@1_0": 0.4, "R@1_1": 0.5, "R@1_2": 0.6, "R@1_overall": 0.5,
                             "err@1_mean_m": 123.456, "err@1_median_m": 0.0, "within@200m": 0.7,
                             "within@500m": 0.9},
        "drone->satellite": {"H-AP": 0.123456, "ASI": 0.0, "NDCG": 1.0, "mAP_0": 0.5, "mAP_1": float("nan"),
                             "mAP_2": 0.5, "mAP_overall": 0.5, "R@1_0": 1.0, "R@1_1": 1.0, "R@1_2": 1.0,
                             "R@1_overall": 1.0},
    }
    text = format_tables(results)
    assert "Table II" in text and "Table III" in text
    lines = text.splitlines()
    hier = next(line for line in lines if line.startswith("drone->satellite") and "12.35" in line)
    assert hier.split()[1:] == ["12.35", "0.00", "100.00"]
    header = next(line for line in lines if "mAP small" in line)
    assert header.split("  ")[0].strip() == "task"
    for name in ("mAP small", "mAP middle", "mAP large", "mAP overall", "R@1 small", "R@1 overall"):
        assert name in header
    row = [line for line in lines if line.startswith("satellite->drone")][1]
    assert row.split()[1:] == ["10.00", "20.00", "30.00", "20.00", "40.00", "50.00", "60.00", "50.00"]
    assert "n/a" in text  # NaN is shown, not hidden
    assert "123.5" in text and "within@500m" in text


def test_format_tables_names_scales_generically_for_other_level_counts():
    results = {"satellite->drone": {"H-AP": 0.5, "ASI": 0.5, "NDCG": 0.5, "mAP_0": 0.5, "mAP_1": 0.5,
                                    "mAP_overall": 0.5, "R@1_0": 0.5, "R@1_1": 0.5, "R@1_overall": 0.5}}
    text = format_tables(results)
    assert "mAP scale 0" in text and "mAP scale 1" in text and "small" not in text
    assert "Localization" not in text
    with pytest.raises(ValueError, match="results"):
        format_tables({})


class _Images(Dataset):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, 4, 4, generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], i


def test_extract_embeddings_keeps_order_and_mode():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 5))
    model.train()
    data = _Images(11)
    expected = model(data.images).detach().numpy()
    for batch_size in (1, 4, 64):
        emb = extract_embeddings(model, data, batch_size=batch_size, progress=False)
        assert emb.dtype == np.float32 and emb.shape == (11, 5)
        np.testing.assert_allclose(emb, expected, rtol=1e-5, atol=1e-6)
    assert model.training  # restored after the pass
    with pytest.raises(ValueError, match="batch_size"):
        extract_embeddings(model, data, batch_size=0)
    with pytest.raises(ValueError, match="image_set"):
        extract_embeddings(model, _Images(0), progress=False)
