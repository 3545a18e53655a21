"""Eq. 6 (MSRerank's neighbourhood sizes): the drone reading (default, as the authors' release: one set of
ks per dataset, from the drone view, for both tasks) and the gallery reading (each task's own gallery),
in the library, in ``dycl-eval`` and in the experiment runner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_evaluate import assert_same_metrics, clustered_task
from test_experiment import tiny_suite

from dycl.cli import eval_main
from dycl.data import read_dacampus, read_manifest
from dycl.experiment import RERANKINGS
from dycl.experiment.state import EVAL_DIR, RECORD_FILE, rerankings_to_score
from dycl.geo import level_matrix
from dycl.metrics import evaluate
from dycl.rerank import msrerank_embeddings, msrerank_ks
from dycl.tasks import RerankConfig, eq6_ks, evaluate_tasks, tasks_from_split

THRESHOLDS = (200.0, 500.0)


def write_manifest(folder: Path, train_buildings: int = 20, views: int = 60, test_buildings: int = 12,
                   test_views: int = 5) -> Path:
    """A manifest whose training buildings stand 100 m apart in a row, 60 drone views each (no images:
    Eq. 6 reads the lists only), so the drone reading of Eq. 6 differs from one tile per building."""
    rows = ["path,view,building,latitude,longitude,split"]
    for split, count, n_views, offset in (("train", train_buildings, views, 0),
                                          ("test", test_buildings, test_views, 1000)):
        for b in range(count):
            lat, lon = 30.0 + 0.0009 * b + 0.02 * (split == "test"), 120.0
            rows.append(f"s/{split}{b}.png,satellite,{offset + b},{lat},{lon},{split}")
            rows += [f"d/{split}{b}_{v}.png,drone,{offset + b},{lat},{lon},{split}" for v in range(n_views)]
    path = folder / "manifest.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_drone_reading_gives_both_tasks_the_ks_of_the_drone_view(campus):
    train = read_dacampus(campus, "train")
    test = read_dacampus(campus, "test")
    rng = np.random.default_rng(3)
    sat = rng.standard_normal((test.num_buildings, 8)).astype(np.float32)
    drone = rng.standard_normal((test.num_drone, 8)).astype(np.float32)
    tasks = tasks_from_split(sat, drone, test, (100.0, 200.0))
    levels = train.levels((100.0, 200.0))
    drone_ks = msrerank_ks(levels, train.drone_counts(), min_k=1)
    assert drone_ks != msrerank_ks(levels, 1, min_k=1)  # the two readings differ on this campus
    for name in ("satellite->drone", "drone->satellite"):
        ks, _ = eq6_ks(tasks[name], train, min_k=1, ks_from="drone")
        assert ks == drone_ks, name
    assert eq6_ks(tasks["drone->satellite"], train, min_k=1, ks_from="drone")[1] == (
        "Eq. 6 on the train split, drone view")
    # The gallery reading: one tile per building for drone->satellite.
    assert eq6_ks(tasks["drone->satellite"], train, min_k=1, ks_from="gallery")[0] == msrerank_ks(
        levels, 1, min_k=1)
    # Without a training split the drone view of the evaluated split: the gallery of satellite->drone,
    # the queries of drone->satellite, so again one set of ks.
    own = msrerank_ks(test.levels((100.0, 200.0)), test.drone_counts(), min_k=1)
    assert eq6_ks(tasks["satellite->drone"], None, min_k=1, ks_from="drone") == (own, "Eq. 6 on the gallery")
    assert eq6_ks(tasks["drone->satellite"], None, min_k=1, ks_from="drone") == (
        own, "Eq. 6 on the queries (drone view)")
    with pytest.raises(ValueError, match="ks_from: expected one of drone, gallery"):
        eq6_ks(tasks["drone->satellite"], train, ks_from="satellite")


def test_rerank_config_defaults_to_the_drone_reading(tmp_path):
    assert RerankConfig().ks_from == "drone"
    with pytest.raises(ValueError, match="ks_from"):
        RerankConfig(method="msrerank", ks_from="tiles")
    manifest = write_manifest(tmp_path)
    train = read_manifest(manifest, "train", check_images=False)
    test = read_manifest(manifest, "test", check_images=False)
    rng = np.random.default_rng(4)
    tasks = tasks_from_split(rng.standard_normal((test.num_buildings, 8)).astype(np.float32),
                             rng.standard_normal((test.num_drone, 8)).astype(np.float32), test, THRESHOLDS)
    drone = evaluate_tasks(tasks, RerankConfig("msrerank"), train, progress=False)
    expected = msrerank_ks(train.levels(THRESHOLDS), train.drone_counts())
    assert expected[-1] > 20  # 60 views per building: the larger scales get larger neighbourhoods
    assert drone.ks == {"satellite->drone": expected, "drone->satellite": expected}
    gallery = evaluate_tasks(tasks, RerankConfig("msrerank", ks_from="gallery"), train, progress=False)
    assert gallery.ks["drone->satellite"] == (20, 20, 20) and gallery.ks["satellite->drone"] == expected


def _embeddings_folder(folder: Path, rng: np.random.Generator) -> dict:
    arrays = clustered_task(rng)
    levels = level_matrix(arrays["coords"], THRESHOLDS)
    folder.mkdir()
    np.savez(folder / "satellite_to_drone.npz", **arrays, levels=levels)
    np.savez(folder / "drone_to_satellite.npz", query=arrays["gallery"], gallery=arrays["query"],
             query_ids=arrays["gallery_ids"], gallery_ids=arrays["query_ids"], coords=arrays["coords"],
             levels=levels)
    return {**arrays, "levels": levels}


def test_dycl_eval_ks_from_both_readings(tmp_path):
    manifest = write_manifest(tmp_path)
    train = read_manifest(manifest, "train", check_images=False)
    a = _embeddings_folder(tmp_path / "emb", np.random.default_rng(5))
    drone_ks = msrerank_ks(train.levels(THRESHOLDS), train.drone_counts())
    base = ["--embeddings", str(tmp_path / "emb"), "--data-dir", str(manifest), "--rerank", "msrerank",
            "--no-progress"]
    for reading, ks_d2s in (("drone", drone_ks), ("gallery", (20, 20, 20))):
        out = tmp_path / f"{reading}.json"
        extra = [] if reading == "drone" else ["--ks-from", "gallery"]  # drone is the default
        assert eval_main([*base, *extra, "--output", str(out)]) == 0
        md = out.with_suffix(".md").read_text()
        assert f"**ks satellite->drone**: {','.join(map(str, drone_ks))} (Eq. 6 on the train split)" in md
        view = ", drone view" if reading == "drone" else ""
        assert f"**ks drone->satellite**: {','.join(map(str, ks_d2s))} (Eq. 6 on the train split{view})" in md
        got = json.loads(out.read_text())["drone->satellite"]
        q, g = a["gallery"], a["query"]
        expected = evaluate(msrerank_embeddings(q, g, ks_d2s), a["gallery_ids"], a["query_ids"], a["levels"],
                            coords=a["coords"], thresholds=THRESHOLDS)
        assert_same_metrics(got, expected, tol=1e-6)
    with pytest.raises(SystemExit):
        eval_main([*base, "--ks-from", "tiles"])


def test_runner_rescores_msrerank_scored_with_the_other_reading(tmp_path):
    suite = tiny_suite()
    folder = tmp_path / "run"
    (folder / EVAL_DIR).mkdir(parents=True)
    for name in suite.rerankings:
        (folder / EVAL_DIR / f"{name}.json").write_text("{}")
    msrerank = [r for r in suite.rerankings if RERANKINGS[r][1].method == "msrerank"]
    assert msrerank == ["msrerank-paper", "msrerank-reference"]
    # Scored before the reading was recorded: the gallery reading, so MSRerank is scored again.
    (folder / RECORD_FILE).write_text(json.dumps({"ks": {r: {} for r in msrerank}}))
    assert rerankings_to_score(suite, folder) == msrerank
    (folder / RECORD_FILE).write_text(json.dumps({"ks_from": {r: "drone" for r in msrerank}}))
    assert rerankings_to_score(suite, folder) == []
    (folder / EVAL_DIR / "k-reciprocal.json").unlink()
    assert rerankings_to_score(suite, folder) == ["k-reciprocal"]
