"""dycl-index / dycl-localize / dycl-export and dycl.localize.Localizer on the tiny campus, with tiny models:
the same results from the API and the commands, RFC 7946 GeoJSON, ONNX parity, and every bad input."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from dycl._files import LOCK_FILE
from dycl.cli import export_main, index_main, localize_main
from dycl.localize import Localizer, read_index
from dycl.localize.estimate import estimate_positions, search
from dycl.models import build_model
from dycl.models.deploy import OnnxEmbeddingNet

FAST = ["--tile-m", "160", "--stride-m", "80", "--no-progress"]


def save_checkpoint(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = build_model("resnet18", embedding_dim=16, pretrained=False)
    torch.save(
        {
            "model": model.state_dict(),
            "config": {"backbone": "resnet18", "embedding_dim": 16, "image_size": 32},
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def work(campus, tmp_path_factory) -> dict[str, Path]:
    """Two tiny checkpoints, the campus's test map indexed with the first, and its ONNX export."""
    root = tmp_path_factory.mktemp("localize")
    paths = {
        "root": root,
        "ckpt": save_checkpoint(root / "a.pt", 0),
        "other": save_checkpoint(root / "b.pt", 1),
        "tif": campus / "orthophoto" / "test-01.tif",
        "photos": campus / "drone" / "test",
        "index": root / "map.dyclidx",
        "onnx": root / "a.onnx",
    }
    args = ["--checkpoint", paths["ckpt"], "--geotiff", paths["tif"], "--out", paths["index"], *FAST]
    assert index_main([str(a) for a in args]) == 0
    assert export_main(["--checkpoint", str(paths["ckpt"]), "--onnx", str(paths["onnx"])]) == 0
    return paths


def hashes(folder: Path) -> dict[str, str]:
    """sha256 of the files of ``folder`` (the lock file aside: it records who last held it)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != LOCK_FILE
    }


def one_line_error(capsys, main, args, match: str) -> str:
    capsys.readouterr()
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if "error:" in line]
    assert "Traceback" not in err and len(lines) == 1, err
    assert match in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------- the job, API and CLI


def locate_cli(work: dict[str, Path], photos: object, out: object, *options: object) -> int:
    """``dycl-localize`` on the fixture's index and checkpoint, without progress output."""
    return localize_main(["--index", str(work["index"]), "--checkpoint", str(work["ckpt"]), str(photos),
                          "--out", str(out), "--no-progress", *map(str, options)])


def test_index_holds_tiles_coords_footprints_and_the_model(work):
    index = read_index(work["index"])
    assert len(index) == 64 and index.embeddings.shape == (64, 16)  # 770 px map: 8 x 8 tiles of 160 px
    np.testing.assert_allclose(np.linalg.norm(index.embeddings, axis=1), 1.0, atol=1e-5)
    assert index.sources[0]["kind"] == "geotiff" and index.sources[0]["crs"] == "EPSG:32619"
    assert index.footprints.shape == (64, 4, 2) and (index.windows[:, 2] == 160).all()
    assert index.model["image_size"] == 32 and len(index.fingerprint) == 16


def test_cli_and_api_give_the_same_positions(work, tmp_path, capsys):
    out = tmp_path / "results"
    assert locate_cli(work, work["photos"], out) == 0
    printed = capsys.readouterr().out
    assert "median error (m)" in printed and "SDM@1" in printed and "R@5" in printed
    assert {p.name for p in out.iterdir()} >= {
        "results.csv",
        "topk.csv",
        "results.geojson",
        "summary.json",
        "map.png",
    }
    rows = list(csv.DictReader((out / "results.csv").open()))
    loc = Localizer.from_checkpoint(work["ckpt"], device="cpu", progress=False)
    loc.use_index(work["index"])
    located = loc.locate([work["photos"]])
    assert len(rows) == len(located) == 24 and all(r["status"] == "ok" for r in rows)
    for row, where in zip(rows, located, strict=True):
        assert row["image"] == where.image and where.truth_source == "exif"
        assert float(row["latitude"]) == pytest.approx(where.latitude, abs=1e-7)
        assert float(row["error_m"]) == pytest.approx(where.error_m, abs=0.01)
        assert len(where.matches) == 10 and where.matches[0].similarity >= where.matches[-1].similarity
    summary = json.loads((out / "summary.json").read_text())
    assert summary["located"] == 24 and summary["with_truth"] == 24
    assert summary["error_median_m"] == pytest.approx(np.median([w.error_m for w in located]))
    assert {"within@25m", "within@500m", "R@1", "err@5_median_m", "SDM@10"} <= set(summary)


def test_search_is_ranked_by_the_core_and_estimates_follow_their_definition(work):
    index = read_index(work["index"])
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((5, 16)).astype(np.float32)
    ranked, sims = search(queries, index, 10)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    expected = np.argsort(-(qn @ index.embeddings.T), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(ranked, expected)
    top1, used = estimate_positions(ranked, sims, index, "top1", 100.0, 0.05)
    np.testing.assert_array_equal(top1, index.coords[ranked[:, 0]])
    assert (used == 1).all()
    # a radius below the stride keeps only the best tile: the weighted estimate is the top-1 centre
    alone, used = estimate_positions(ranked, sims, index, "weighted", 1.0, 0.05)
    np.testing.assert_allclose(alone, top1, atol=1e-12)
    assert (used == 1).all()
    # an infinite temperature and radius: the plain mean of the top-k centres
    mean, used = estimate_positions(ranked, sims, index, "weighted", 1e7, 1e9)
    np.testing.assert_allclose(mean, index.coords[ranked].mean(axis=1), atol=1e-9)
    assert (used == 10).all()


def test_geojson_is_rfc7946_with_lon_lat_positions(work, tmp_path):
    out = tmp_path / "r"
    assert locate_cli(work, work["photos"], out, "--no-map", "--top-k", "3") == 0
    doc = json.loads((out / "results.geojson").read_text())
    assert doc["type"] == "FeatureCollection" and "crs" not in doc  # RFC 7946 §4: WGS84 only, no crs member
    rows = {r["image"]: r for r in csv.DictReader((out / "results.csv").open())}
    kinds: dict[str, int] = {}
    for feature in doc["features"]:
        assert feature["type"] == "Feature" and set(feature) == {"type", "geometry", "properties"}
        geometry, kind = feature["geometry"], feature["properties"]["kind"]
        kinds[kind] = kinds.get(kind, 0) + 1
        positions = {"Point": lambda c: [c], "LineString": lambda c: c, "Polygon": lambda c: c[0]}[
            geometry["type"]
        ](geometry["coordinates"])
        for lon, lat in positions:  # the campus is near Cambridge, MA: longitude -71, latitude 42.4
            assert -72.0 < lon < -70.0 and 42.0 < lat < 43.0
        if geometry["type"] == "Polygon":
            ring = geometry["coordinates"][0]
            assert len(geometry["coordinates"]) == 1 and len(ring) == 5 and ring[0] == ring[-1]
            area = sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(ring, ring[1:], strict=False))
            assert area > 0  # exterior ring counter-clockwise (§3.1.6)
        if geometry["type"] == "LineString":
            assert len(geometry["coordinates"]) == 2
        if kind == "estimate":
            row = rows[feature["properties"]["image"]]
            assert geometry["coordinates"] == pytest.approx(
                [float(row["longitude"]), float(row["latitude"])], abs=1e-6
            )
    assert kinds == {"estimate": 24, "truth": 24, "error": 24, "tile": 72}


def test_onnx_export_matches_torch_and_serves_the_same_index(work, tmp_path, capsys):
    model = OnnxEmbeddingNet(work["onnx"])
    assert model.metadata["opset"] == 18 and model.image_size == 32 and model.embedding_dim == 16
    proto = onnx.load(str(work["onnx"]))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a named, dynamic batch axis
    torch_model = Localizer.from_checkpoint(work["ckpt"], device="cpu").model
    for batch in (1, 5):
        x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch)) * 4 - 2
        with torch.inference_mode():
            np.testing.assert_allclose(model(x).numpy(), torch_model(x).numpy(), atol=1e-4, rtol=0)
    # the fingerprint travels with the export: the checkpoint's index is accepted, results agree
    out_onnx, out_torch = tmp_path / "onnx", tmp_path / "torch"
    for flag, path, out in (("--model", work["onnx"], out_onnx), ("--checkpoint", work["ckpt"], out_torch)):
        assert (
            localize_main(
                [
                    "--index",
                    str(work["index"]),
                    flag,
                    str(path),
                    str(work["photos"]),
                    "--out",
                    str(out),
                    "--no-progress",
                    "--no-map",
                ]
            )
            == 0
        )
    a = list(csv.DictReader((out_onnx / "results.csv").open()))
    b = list(csv.DictReader((out_torch / "results.csv").open()))
    assert [r["top1_tile"] for r in a] == [r["top1_tile"] for r in b]
    idx = tmp_path / "onnx.dyclidx"
    assert (
        index_main(["--model", str(work["onnx"]), "--geotiff", str(work["tif"]), "--out", str(idx), *FAST])
        == 0
    )
    np.testing.assert_allclose(read_index(idx).embeddings, read_index(work["index"]).embeddings, atol=1e-4)


# --------------------------------------------------------------------------- bad input


def test_undecodable_photos_are_skipped_counted_and_named(work, tmp_path, capsys):
    photos = tmp_path / "photos"
    shutil.copytree(work["photos"], photos)
    broken = photos / "0009" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "out"
    capsys.readouterr()
    assert locate_cli(work, photos, out, "--no-map") == 0
    captured = capsys.readouterr()
    assert f"warning: {broken}: cannot decode image" in captured.err
    assert "1 skipped" in captured.out and f"skipped {broken}" in captured.out
    summary = json.loads((out / "summary.json").read_text())
    assert (
        summary["skipped"] == 1 and summary["located"] == 24 and str(broken) in summary["skipped_images"][0]
    )
    rows = {r["image"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert rows[str(broken)]["status"].startswith("skipped: ")
    # nothing decodable at all is fatal
    only = tmp_path / "only"
    only.mkdir()
    shutil.copy(broken, only / "x.jpg")
    one_line_error(
        capsys,
        localize_main,
        [
            "--index",
            work["index"],
            "--checkpoint",
            work["ckpt"],
            only,
            "--out",
            tmp_path / "none",
            "--no-progress",
        ],
        "none of the 1 images",
    )


def test_photos_without_gps_are_named_when_truth_is_asked_for(work, tmp_path, capsys):
    from PIL import Image

    photos = tmp_path / "plain"
    photos.mkdir()
    for src in sorted(work["photos"].rglob("*.jpg"))[:3]:
        Image.open(src).save(photos / src.name)  # re-saved without EXIF
    capsys.readouterr()
    assert locate_cli(work, photos, tmp_path / "out", "--truth", "exif", "--no-map") == 0
    err = capsys.readouterr().err
    assert err.count("no GPS position in its EXIF") == 3 and str(photos / "0009_00.jpg") in err
    # a truth CSV instead: listed photos get errors, the others a warning
    truth = tmp_path / "truth.csv"
    truth.write_text("path,latitude,longitude\n0009_00.jpg,42.3716,-71.0504\n")
    assert locate_cli(work, photos, tmp_path / "csv", "--truth", str(truth), "--no-map") == 0
    err = capsys.readouterr().err
    assert err.count("not listed in") == 2
    assert json.loads((tmp_path / "csv" / "summary.json").read_text())["with_truth"] == 1


def test_an_index_of_another_model_is_refused_and_nothing_is_lost(work, tmp_path, capsys):
    out = tmp_path / "out"
    assert locate_cli(work, work["photos"], out, "--no-map") == 0
    before = hashes(out)
    one_line_error(
        capsys,
        localize_main,
        [
            "--index",
            work["index"],
            "--checkpoint",
            work["other"],
            work["photos"],
            "--out",
            out,
            "--overwrite",
            "--no-progress",
        ],
        "was built with another model",
    )
    one_line_error(
        capsys,
        localize_main,
        [
            "--index",
            work["index"],
            "--checkpoint",
            work["ckpt"],
            work["photos"],
            "--out",
            out,
            "--no-progress",
        ],
        "exists; pass --overwrite",
    )
    assert hashes(out) == before
    index_before = work["index"].read_bytes()
    one_line_error(
        capsys,
        index_main,
        ["--checkpoint", work["ckpt"], "--geotiff", work["tif"], "--out", work["index"]],
        "exists; pass --overwrite",
    )
    assert work["index"].read_bytes() == index_before


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_bad_maps_and_tile_sizes_are_one_line_errors(work, tmp_path, capsys):
    import rasterio

    with rasterio.open(work["tif"]) as src:
        pixels, transform = src.read([1, 2, 3], window=((0, 200), (0, 200))), src.transform
    no_crs, no_transform = tmp_path / "no_crs.tif", tmp_path / "no_transform.tif"
    common = {"driver": "GTiff", "width": 200, "height": 200, "count": 3, "dtype": "uint8"}
    with rasterio.open(no_crs, "w", transform=transform, **common) as dst:  # a geotransform but no CRS
        dst.write(pixels)
    with rasterio.open(no_transform, "w", crs="EPSG:32619", **common) as dst:  # a CRS but no geotransform
        dst.write(pixels)
    args = ["--checkpoint", work["ckpt"], "--out", tmp_path / "x.dyclidx", "--no-progress"]
    one_line_error(capsys, index_main, [*args, "--geotiff", no_crs], "has no coordinate reference system")
    one_line_error(capsys, index_main, [*args, "--geotiff", no_transform], "has no geotransform")
    one_line_error(
        capsys,
        index_main,
        [*args, "--geotiff", work["tif"], "--tile-m", "0.2"],
        "--tile-m: 0.2 m is smaller than a pixel",
    )
    one_line_error(
        capsys,
        index_main,
        [*args, "--geotiff", work["tif"], "--tile-m", "5000"],
        "--tile-m: 5000 m is larger than the map",
    )
    one_line_error(capsys, index_main, [*args, "--geotiff", tmp_path / "missing.tif"], "no such file")
    assert not (tmp_path / "x.dyclidx").exists()


def test_onnx_files_that_are_not_embedding_models_are_refused(work, tmp_path, capsys):
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 32, 32])
    same = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3, 32, 32])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["out"])], "identity", [images], [same]
    )
    identity = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(identity))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf at all")
    common = ["--geotiff", work["tif"], "--out", tmp_path / "x.dyclidx", "--no-progress"]
    one_line_error(capsys, index_main, ["--model", identity, *common], "is not an embedding model")
    one_line_error(capsys, index_main, ["--model", garbage, *common], "cannot load")
    one_line_error(
        capsys,
        localize_main,
        ["--index", work["index"], "--model", identity, work["photos"], "--out", tmp_path / "o"],
        "is not an embedding model",
    )
    one_line_error(
        capsys,
        export_main,
        ["--checkpoint", work["ckpt"], "--onnx", work["onnx"]],
        "exists; pass --overwrite",
    )
