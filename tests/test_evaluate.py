"""dycl-eval: embeddings files, checkpoints (ours and the authors' layout), re-ranking, outputs, errors.

Everything runs on a tiny synthetic campus (8 train / 6 test buildings, 4
drone views, 32 px); the training run is one step of ResNet-18 with 16-d
embeddings, so the whole module stays within seconds of CPU time.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dycl.cli import eval_main, train_main
from dycl.data import drone_set, eval_transforms, read_dacampus, satellite_set
from dycl.embed import extract_embeddings
from dycl.geo import level_matrix
from dycl.metrics import evaluate
from dycl.models import build_model
from dycl.rerank import k_reciprocal_embeddings, msrerank_embeddings, msrerank_ks
from dycl.tables import format_csv, read_metrics
from dycl.task_files import load_embeddings
from dycl.tasks import TASK_FILES, TASKS, RerankConfig, eq6_ks, evaluate_tasks

THRESHOLDS = ("--thresholds", "100", "200")
TINY_TRAIN = ["--backbone", "resnet18", "--no-pretrained", "--image-size", "32", "--embedding-dim", "16",
              "--batch-size", "8", *THRESHOLDS, "--workers", "0", "--no-progress", "--epochs", "1",
              "--max-steps-per-epoch", "1"]


@pytest.fixture(scope="module")
def trained_run(campus, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("eval") / "run"
    assert train_main(["--data-dir", str(campus), "--output", str(run), *TINY_TRAIN]) == 0
    return run


def run_eval(*args: object) -> int:
    return eval_main([str(a) for a in args])


def one_line_error(capsys, *args: object) -> str:
    capsys.readouterr()  # drop what earlier calls printed
    assert run_eval(*args) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    # Progress notes may come first; the error is one line, the last.
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    assert errors[0].startswith("dycl-eval: error: "), err
    return errors[0]


def clustered_task(rng: np.random.Generator, n_buildings: int = 12, views: int = 5, dim: int = 24):
    """Satellite queries and drone gallery around building centres; coordinates with every level."""
    centres = rng.standard_normal((n_buildings, dim))
    coords = np.column_stack([30.0 + rng.uniform(0, 0.006, n_buildings),
                              120.0 + rng.uniform(0, 0.006, n_buildings)])
    query = (centres + 0.9 * rng.standard_normal(centres.shape)).astype(np.float32)
    gallery_ids = np.repeat(np.arange(n_buildings), views)
    gallery = (centres[gallery_ids] + 0.9 * rng.standard_normal((gallery_ids.size, dim))).astype(np.float32)
    return {"query": query, "gallery": gallery, "query_ids": np.arange(n_buildings, dtype=np.int64),
            "gallery_ids": gallery_ids.astype(np.int64), "coords": coords}


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64) / np.linalg.norm(a, axis=1, keepdims=True)
    b = b.astype(np.float64) / np.linalg.norm(b, axis=1, keepdims=True)
    return 1.0 - a @ b.T


#: Keys dycl-eval adds after the DESIGN §4 ones when coordinates are known (geo metrics beyond top-1).
GEO_KEYS = re.compile(r"err@\d+_(mean|median)_m|SDM@\d+")


def assert_same_metrics(got: dict, expected: dict, tol: float = 1e-9) -> None:
    assert set(expected) <= set(got)
    assert all(GEO_KEYS.fullmatch(key) for key in set(got) - set(expected)), set(got) - set(expected)
    for key, value in expected.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            assert got[key] is None or math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(value, rel=tol, abs=tol), key


# --------------------------------------------------------------------------- embeddings files


def test_embeddings_file_scores_equal_metrics_evaluate(tmp_path, capsys):
    rng = np.random.default_rng(0)
    arrays = clustered_task(rng)
    levels = level_matrix(arrays["coords"], (200.0, 500.0))
    assert set(np.unique(levels)) == {0, 1, 2, 3}
    path = tmp_path / "satellite_to_drone.npz"
    np.savez(path, **arrays)  # coords only: levels from the default 200/500 m thresholds
    assert run_eval("--embeddings", path, "--output", tmp_path / "out" / "metrics.json", "--no-progress") == 0
    out = capsys.readouterr().out
    assert "Table II" in out and "Table III" in out and "satellite->drone" in out

    results = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert list(results) == ["satellite->drone"]
    dist = cosine(arrays["query"], arrays["gallery"])
    expected = evaluate(dist, arrays["query_ids"], arrays["gallery_ids"], levels, coords=arrays["coords"])
    assert_same_metrics(results["satellite->drone"], expected, tol=1e-6)

    # Markdown and CSV versions of the same numbers.
    md = (tmp_path / "out" / "metrics.md").read_text()
    assert "| satellite->drone |" in md and "## Retrieval per scale (Table III, %)" in md
    assert f"{100 * expected['H-AP']:.2f}" in md
    rows = (tmp_path / "out" / "metrics.csv").read_text().splitlines()
    header, row = rows[0].split(","), rows[1].split(",")
    assert header[0] == "task" and row[0] == "satellite->drone"
    assert float(row[header.index("mAP_1")]) == pytest.approx(expected["mAP_1"], abs=1e-12)

    # Stored levels (any file name = its task), other thresholds recomputed from coords.
    other = tmp_path / "my_model.npz"
    stored = {k: v for k, v in arrays.items() if k != "coords"}
    np.savez(other, **stored, levels=levels)
    assert run_eval("--embeddings", other, "--output", tmp_path / "o2.json", "--no-progress") == 0
    got = json.loads((tmp_path / "o2.json").read_text())["my_model"]
    expected_no_coords = evaluate(dist, arrays["query_ids"], arrays["gallery_ids"], levels)
    assert_same_metrics(got, expected_no_coords, tol=1e-6)
    assert "err@1_mean_m" not in got
    np.savez(other, **arrays)
    assert run_eval("--embeddings", other, "--thresholds", "150", "300", "600", "--output",
                    tmp_path / "o3.json", "--no-progress") == 0
    got = json.loads((tmp_path / "o3.json").read_text())["my_model"]
    lv4 = level_matrix(arrays["coords"], (150.0, 300.0, 600.0))
    expected4 = evaluate(dist, arrays["query_ids"], arrays["gallery_ids"], lv4, coords=arrays["coords"],
                         thresholds=(150.0, 300.0, 600.0))
    assert_same_metrics(got, expected4, tol=1e-6)
    assert "mAP_3" in got and "within@600m" in got


def test_rerank_options_score_the_reranked_distances(tmp_path, capsys):
    rng = np.random.default_rng(1)
    arrays = clustered_task(rng)
    levels = level_matrix(arrays["coords"])
    path = tmp_path / "satellite_to_drone.npz"
    np.savez(path, **arrays, levels=levels)
    q, g, qi, gi = arrays["query"], arrays["gallery"], arrays["query_ids"], arrays["gallery_ids"]
    kw = {"coords": arrays["coords"]}

    def scored(*options: str) -> dict:
        out = tmp_path / f"m{len(list(tmp_path.glob('m*.json')))}.json"
        assert run_eval("--embeddings", path, "--output", out, "--no-progress", *options) == 0
        return json.loads(out.read_text())["satellite->drone"]

    got = scored("--rerank", "k-reciprocal", "--k1", "7", "--k2", "3", "--lambda", "0.2")
    expected = evaluate(k_reciprocal_embeddings(q, g, 7, 3, 0.2), qi, gi, levels, **kw)
    assert_same_metrics(got, expected)
    before = evaluate(cosine(q, g), qi, gi, levels, **kw)
    assert f"H-AP {100 * before['H-AP']:.2f} -> {100 * expected['H-AP']:.2f}" in capsys.readouterr().out
    assert got != scored()  # re-ranking changed something

    got = scored("--rerank", "msrerank", "--ks", "5,8,12", "--msrerank-variant", "reference")
    expected = evaluate(msrerank_embeddings(q, g, (5, 8, 12), variant="reference"), qi, gi, levels, **kw)
    assert_same_metrics(got, expected)

    # --ks auto without a training split: Eq. 6 on the gallery (12 buildings, 5 views each).
    auto = msrerank_ks(levels, 5, mu=0.1, min_k=20)
    got = scored("--rerank", "msrerank", "--ks", "auto")
    expected = evaluate(msrerank_embeddings(q, g, auto), qi, gi, levels, **kw)
    assert_same_metrics(got, expected)
    md = (tmp_path / "m3.md").read_text()
    assert f"{','.join(map(str, auto))} (Eq. 6 on the gallery)" in md


def test_eq6_ks_come_from_the_training_split(campus):
    train = read_dacampus(campus, "train")
    test = read_dacampus(campus, "test")
    rng = np.random.default_rng(2)
    sat = rng.standard_normal((test.num_buildings, 8)).astype(np.float32)
    drone = rng.standard_normal((test.num_drone, 8)).astype(np.float32)
    from dycl.tasks import tasks_from_split

    tasks = tasks_from_split(sat, drone, test, (100.0, 200.0))
    ks, source = eq6_ks(tasks["satellite->drone"], train, min_k=2)
    assert ks == msrerank_ks(train.levels((100.0, 200.0)), train.drone_counts(), min_k=2)
    assert source == "Eq. 6 on the train split"
    ks, _ = eq6_ks(tasks["drone->satellite"], train, min_k=1)
    assert ks == msrerank_ks(train.levels((100.0, 200.0)), 1, min_k=1)
    # Without a training split: the test gallery.
    ks, source = eq6_ks(tasks["satellite->drone"], None, min_k=2)
    assert ks == msrerank_ks(test.levels((100.0, 200.0)), test.drone_counts(), min_k=2)
    assert source == "Eq. 6 on the gallery"
    evaluation = evaluate_tasks(tasks, RerankConfig("msrerank"), train, progress=False)
    expected = msrerank_ks(train.levels((100.0, 200.0)), train.drone_counts())
    assert evaluation.ks["satellite->drone"] == expected
    assert evaluation.baseline["satellite->drone"] != evaluation.results["satellite->drone"]


# --------------------------------------------------------------------------- checkpoints


def test_rescoring_last_pt_reproduces_the_training_metrics(trained_run, campus, tmp_path, capsys):
    out = tmp_path / "eval" / "metrics.json"
    assert run_eval("--checkpoint", trained_run / "last.pt", "--data-dir", campus, "--output", out,
                    "--workers", "0", "--no-progress") == 0
    assert "(dycl-train, resnet18, 16-d, 32 px)" in capsys.readouterr().err
    trained = json.loads((trained_run / "metrics.json").read_text())
    again = json.loads(out.read_text())
    assert list(again) == list(TASKS) == list(trained)
    for task in TASKS:
        assert "within@100m" in again[task]  # the run's thresholds, read from the checkpoint
        assert_same_metrics(again[task], trained[task], tol=1e-5)

    # The saved embeddings re-score without the network to the same numbers.
    for task in TASKS:
        with np.load(out.with_suffix(".embeddings") / TASK_FILES[task]) as f, \
                np.load(trained_run / "embeddings" / TASK_FILES[task]) as t:
            np.testing.assert_allclose(f["query"], t["query"], atol=1e-6)
            np.testing.assert_allclose(f["gallery"], t["gallery"], atol=1e-6)
    out2 = tmp_path / "again.json"
    assert run_eval("--embeddings", out.with_suffix(".embeddings"), "--output", out2, "--no-progress") == 0
    rescored = json.loads(out2.read_text())
    for task in TASKS:
        assert_same_metrics(rescored[task], again[task], tol=1e-12)

    # Existing results are only replaced on request.
    err = one_line_error(capsys, "--checkpoint", trained_run / "last.pt", "--data-dir", campus,
                         "--output", out, "--workers", "0", "--no-progress")
    assert "--overwrite" in err and "metrics.json" in err


def test_two_checkpoint_evaluations_into_one_folder_do_not_collide(trained_run, campus, tmp_path, capsys):
    """Each evaluation keeps its own embeddings: named after its output, or where --save-embeddings says."""
    folder = tmp_path / "shared"
    common = ("--checkpoint", trained_run / "last.pt", "--data-dir", campus, "--workers", "0",
              "--no-progress")
    assert run_eval(*common, "--output", folder / "a.json") == 0
    assert run_eval(*common, "--output", folder / "b.json", "--rerank", "k-reciprocal", "--k1", "5") == 0
    for name in ("a", "b"):
        assert (folder / f"{name}.json").is_file()
        saved = sorted(p.name for p in (folder / f"{name}.embeddings").iterdir())
        assert saved == sorted(TASK_FILES.values())
    assert not (folder / "embeddings").exists()
    # Both files were written by their own run, and each names its own embeddings.
    assert "a.embeddings" in (folder / "a.md").read_text() and "b.embeddings" in (folder / "b.md").read_text()
    assert json.loads((folder / "a.json").read_text()) != json.loads((folder / "b.json").read_text())

    explicit = tmp_path / "mine"
    assert run_eval(*common, "--output", folder / "c.json", "--save-embeddings", explicit) == 0
    assert sorted(p.name for p in explicit.iterdir()) == sorted(TASK_FILES.values())
    assert not (folder / "c.embeddings").exists()
    # Reusing a name still needs --overwrite, and says which file is in the way.
    err = one_line_error(capsys, *common, "--output", folder / "a.json")
    assert "--overwrite" in err and "a.json" in err


def test_authors_layout_checkpoint_loads_and_evaluates(campus, tmp_path):
    torch.manual_seed(3)
    model = build_model("resnet50", embedding_dim=512, pretrained=False)
    ckpt = tmp_path / "net.pth"
    torch.save({"net_state": model.state_dict()}, ckpt)
    out = tmp_path / "authors" / "metrics.json"
    assert run_eval("--checkpoint", ckpt, "--data-dir", campus, "--image-size", "32", "--batch-size", "16",
                    "--workers", "0", "--output", out, "--no-progress") == 0
    results = json.loads(out.read_text())
    assert list(results) == list(TASKS)
    for task in TASKS:
        assert 0.0 <= results[task]["H-AP"] <= 1.0 and "mAP_2" in results[task]
        assert "within@500m" in results[task]  # the paper's default thresholds
    # The embeddings are those of the saved network, i.e. its weights were loaded.
    split = read_dacampus(campus, "test")
    expected = extract_embeddings(model, satellite_set(split, eval_transforms(32)), batch_size=16,
                                  progress=False)
    with np.load(out.with_suffix(".embeddings") / TASK_FILES["satellite->drone"]) as f:
        assert f["query"].shape == (6, 512)
        np.testing.assert_allclose(f["query"], expected, atol=1e-5)
    expected_drone = extract_embeddings(model, drone_set(split, eval_transforms(32)), batch_size=16,
                                        progress=False)
    with np.load(out.with_suffix(".embeddings") / TASK_FILES["drone->satellite"]) as f:
        np.testing.assert_allclose(f["query"], expected_drone, atol=1e-5)


def test_checkpoint_that_does_not_fit_lists_missing_and_unexpected_keys(campus, tmp_path, capsys):
    state = build_model("resnet18", embedding_dim=16, pretrained=False).state_dict()
    del state["fc.bias"]
    state["extra.weight"] = torch.zeros(3)
    ckpt = tmp_path / "bad.pth"
    torch.save({"net_state": state}, ckpt)
    err = one_line_error(capsys, "--checkpoint", ckpt, "--data-dir", campus, "--backbone", "resnet18",
                         "--image-size", "32", "--workers", "0", "--no-progress")
    assert "1 missing: fc.bias" in err and "1 unexpected: extra.weight" in err, err
    # ResNet-18 weights read as the default ResNet-50: the report suggests --backbone.
    torch.save({"net_state": build_model("resnet18", embedding_dim=16, pretrained=False).state_dict()}, ckpt)
    err = one_line_error(capsys, "--checkpoint", ckpt, "--data-dir", campus, "--image-size", "32",
                         "--workers", "0", "--no-progress")
    assert "resnet50" in err and "missing" in err and "--backbone" in err, err
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    err = one_line_error(capsys, "--checkpoint", tmp_path / "junk.pth", "--data-dir", campus,
                         "--workers", "0")
    assert "junk.pth" in err
    err = one_line_error(capsys, "--checkpoint", tmp_path / "none.pth", "--data-dir", campus)
    assert "no such file" in err
    err = one_line_error(capsys, "--checkpoint", ckpt, "--data-dir", campus, "--backbone", "resnet7")
    assert "backbone" in err and "resnet7" in err


@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_image_is_one_line_naming_the_file(trained_run, campus, tmp_path, capsys, workers):
    broken = tmp_path / "campus"
    shutil.copytree(campus, broken)
    test_split = read_dacampus(broken, "test")
    victim = test_split.drone_paths[2]
    victim.write_bytes(b"\x00garbage, not a jpeg")
    err = one_line_error(capsys, "--checkpoint", trained_run / "last.pt", "--data-dir", broken,
                         "--workers", workers, "--no-progress")
    assert str(victim) in err and "Caught" not in err, err


# --------------------------------------------------------------------------- bad input


def _write(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def test_bad_embeddings_files_are_one_line_errors(tmp_path, capsys):
    rng = np.random.default_rng(4)
    a = clustered_task(rng, n_buildings=5, views=2, dim=8)
    levels = level_matrix(a["coords"])
    cases = {
        "lacks gallery_ids": _write(tmp_path / "a.npz", query=a["query"], gallery=a["gallery"],
                                    query_ids=a["query_ids"], levels=levels),
        "lacks levels or coords": _write(tmp_path / "b.npz", query=a["query"], gallery=a["gallery"],
                                         query_ids=a["query_ids"], gallery_ids=a["gallery_ids"]),
        "embedding width 6 differs from the query's 8": _write(
            tmp_path / "c.npz", **{**a, "gallery": a["gallery"][:, :6]}),
        "gallery_ids: id 9 is outside the level matrix": _write(
            tmp_path / "d.npz", **{**a, "gallery_ids": np.where(a["gallery_ids"] == 4, 9, a["gallery_ids"])}),
        "query_ids: expected 5 ids, got 4": _write(
            tmp_path / "e.npz", **{**a, "query_ids": a["query_ids"][:4]}),
        "query: contains NaN": _write(tmp_path / "f.npz", **{**a, "query": np.full_like(a["query"], np.nan)}),
        "coords: 4 rows": _write(tmp_path / "g.npz", **{**a, "coords": a["coords"][:4]}, levels=levels),
    }
    for needle, path in cases.items():
        err = one_line_error(capsys, "--embeddings", path, "--no-progress")
        assert needle in err and path.name in err, (needle, err)
    levels_only = _write(tmp_path / "h.npz", **{k: v for k, v in a.items() if k != "coords"}, levels=levels)
    err = one_line_error(capsys, "--embeddings", levels_only, "--thresholds", "100", "--no-progress")
    assert "thresholds" in err and "no coords" in err
    (tmp_path / "text.npz").write_text("hello")
    assert "cannot read" in one_line_error(capsys, "--embeddings", tmp_path / "text.npz")
    np.save(tmp_path / "single.npy", a["query"])
    assert "not a .npz archive" in one_line_error(capsys, "--embeddings", tmp_path / "single.npy")
    assert "no such file" in one_line_error(capsys, "--embeddings", tmp_path / "missing.npz")
    (tmp_path / "empty_dir").mkdir()
    assert "satellite_to_drone.npz" in one_line_error(capsys, "--embeddings", tmp_path / "empty_dir")


def test_cli_option_errors(campus, tmp_path, capsys):
    rng = np.random.default_rng(5)
    path = _write(tmp_path / "t.npz", **clustered_task(rng, n_buildings=4, views=2, dim=8))
    assert "--data-dir" in one_line_error(capsys, "--checkpoint", tmp_path / "x.pt")
    assert "--k1" in one_line_error(capsys, "--embeddings", path, "--rerank", "k-reciprocal", "--k1", "0")
    assert "--lambda" in one_line_error(capsys, "--embeddings", path, "--lambda", "2")
    assert "--labels" in one_line_error(capsys, "--embeddings", path, "--labels", "a")
    assert "map_building" in one_line_error(capsys, "--embeddings", path, "--plots", tmp_path / "p",
                                            "--map-building", "nope", "--no-progress")
    with pytest.raises(SystemExit) as exc:  # argparse: bad --ks syntax, usage + exit code 2
        eval_main(["--embeddings", str(path), "--ks", "20,x"])
    assert exc.value.code == 2


# --------------------------------------------------------------------------- figures and comparisons


def test_plots_of_a_checkpoint_run(trained_run, campus, tmp_path):
    plots = tmp_path / "plots"
    assert run_eval("--checkpoint", trained_run / "last.pt", "--data-dir", campus, "--workers", "0",
                    "--rerank", "k-reciprocal", "--k1", "5", "--plots", plots, "--plot-queries", "2",
                    "--plot-top-k", "5", "--shift-ks", "5,10", "--map-building", "9", "--no-progress") == 0
    from PIL import Image

    names = sorted(p.name for p in plots.iterdir())
    assert names == sorted(["map.png", "map_by_scale.png"] + [f"{kind}_{Path(TASK_FILES[t]).stem}.png"
                                                              for t in TASKS
                                                              for kind in ("ranked_lists", "rank_shifts")])
    for name in names:
        data = (plots / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(plots / name) as image:
            image.load()
            assert image.width > 300 and image.height > 200


def test_compare_writes_bars_of_several_metrics_files(tmp_path, capsys):
    rng = np.random.default_rng(6)
    path = _write(tmp_path / "satellite_to_drone.npz", **clustered_task(rng))
    a, b = tmp_path / "a" / "metrics.json", tmp_path / "b" / "metrics.json"
    assert run_eval("--embeddings", path, "--output", a, "--no-progress") == 0
    assert run_eval("--embeddings", path, "--output", b, "--rerank", "k-reciprocal", "--k1", "5",
                    "--no-progress") == 0
    capsys.readouterr()
    png = tmp_path / "cmp.png"
    assert run_eval("--compare", a, b, "--labels", "cosine", "k-reciprocal", "--out", png) == 0
    out = capsys.readouterr().out
    assert "== cosine" in out and "== k-reciprocal" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run_eval("--compare", a, b, "--plots", tmp_path / "figs", "--metric", "R@1") == 0
    assert (tmp_path / "figs" / "r1_by_scale.png").is_file()
    stored = json.loads(a.read_text())["satellite->drone"]["mAP_0"]
    assert read_metrics(a)["satellite->drone"]["mAP_0"] == stored

    assert "2 metrics files" in one_line_error(capsys, "--compare", a, b, "--labels", "x", "--out", png)
    assert "--out PNG or --plots" in one_line_error(capsys, "--compare", a, b)
    (tmp_path / "notmetrics.json").write_text('{"hello": 1}')
    assert "not a metrics file" in one_line_error(capsys, "--compare", tmp_path / "notmetrics.json",
                                                  "--out", png)
    (tmp_path / "broken.json").write_text("{")
    assert "cannot read" in one_line_error(capsys, "--compare", tmp_path / "broken.json", "--out", png)


def test_load_embeddings_of_a_folder_and_csv_of_nan(tmp_path):
    rng = np.random.default_rng(7)
    arrays = clustered_task(rng, n_buildings=4, views=2, dim=8)
    folder = tmp_path / "emb"
    folder.mkdir()
    np.savez(folder / TASK_FILES["drone->satellite"], **arrays, task=np.asarray("drone->satellite"))
    tasks = load_embeddings(folder)
    assert list(tasks) == ["drone->satellite"] and tasks["drone->satellite"].n_levels == 3
    text = format_csv({"t": {"H-AP": float("nan"), "mAP_0": 0.25}})
    assert text.splitlines() == ["task,H-AP,mAP_0", "t,,0.25"]


def test_ks_auto_through_the_cli_uses_the_training_split_when_there_is_one(trained_run, campus, tmp_path,
                                                                            capsys):
    out = tmp_path / "with_train.json"
    assert run_eval("--embeddings", trained_run / "embeddings", "--data-dir", campus, "--rerank", "msrerank",
                    "--output", out, "--no-progress") == 0
    train = read_dacampus(campus, "train")
    ks = msrerank_ks(train.levels((100.0, 200.0)), train.drone_counts())
    md = out.with_suffix(".md").read_text()
    assert f"**ks satellite->drone**: {','.join(map(str, ks))} (Eq. 6 on the train split)" in md
    # A dataset folder without a training split: Eq. 6 on the gallery, and a note saying why.
    test_only = tmp_path / "test_only"
    shutil.copytree(campus, test_only)
    for view in ("satellite", "drone"):
        (test_only / view / "train.txt").unlink()
    capsys.readouterr()
    out2 = tmp_path / "without_train.json"
    assert run_eval("--embeddings", trained_run / "embeddings", "--data-dir", test_only, "--rerank",
                    "msrerank", "--output", out2, "--no-progress") == 0
    assert "no training split for Eq. 6" in capsys.readouterr().err
    assert "(Eq. 6 on the gallery)" in out2.with_suffix(".md").read_text()
