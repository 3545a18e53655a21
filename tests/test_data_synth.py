"""The synthetic campus: determinism, resumability, coordinates, density and the DESIGN §9 properties."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from dycl.data import read_dacampus
from dycl.data.stats import appearance_similarity, split_stats
from dycl.data.synth import campus_layout, enu_to_latlon, generate_campus
from dycl.data.synth.render import look_camera
from dycl.geo import geodesic_distances

TINY = {"train_buildings": 8, "test_buildings": 5, "drone_views": 3, "image_size": 32}


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    generate_campus(root, seed=3, workers=1, progress=False, **TINY)
    return root


def test_layout_files_and_counts(tiny):
    files = _digest(tiny)
    assert {
        "satellite/train.txt",
        "satellite/test.txt",
        "drone/train.txt",
        "drone/test.txt",
        "synth.json",
    } <= set(files)
    assert sum(name.endswith(".jpg") for name in files) == (8 + 5) * (1 + 3)
    assert json.loads((tiny / "synth.json").read_text())["seed"] == 3
    header = (tiny / "drone" / "train.txt").read_text().splitlines()[0]
    assert header.split() == ["path", "class_id", "latitude", "longitude"]
    from PIL import Image

    with Image.open(tiny / "satellite" / "train" / "0001" / "0001.jpg") as image:
        assert image.size == (32, 32) and image.mode == "RGB"


def test_same_seed_gives_byte_identical_files_whatever_the_workers(tiny, tmp_path):
    again = tmp_path / "again"
    generate_campus(again, seed=3, workers=2, progress=False, **TINY)
    assert _digest(again) == _digest(tiny)


def test_different_seed_gives_different_world(tiny, tmp_path):
    other = tmp_path / "other"
    generate_campus(other, seed=4, workers=1, progress=False, **TINY)
    a, b = _digest(tiny), _digest(other)
    images = [k for k in a if k.endswith(".jpg")]
    assert set(images) == {k for k in b if k.endswith(".jpg")}
    assert all(a[k] != b[k] for k in images)
    assert a["satellite/train.txt"] != b["satellite/train.txt"]


def test_interrupted_run_resumes_to_the_same_files(tiny, tmp_path):
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(tiny, partial)
    for rel in ("satellite/train.txt", "drone/test.txt"):
        (partial / rel).unlink()
    victims = sorted(partial.rglob("*.jpg"))[::7]
    for p in victims:
        p.unlink()
    generate_campus(partial, seed=3, workers=1, progress=False, **TINY)
    assert _digest(partial) == _digest(tiny)


def test_refuses_foreign_or_different_folders(tiny, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_campus(foreign, seed=3, workers=1, progress=False, **TINY)
    with pytest.raises(FileExistsError, match="seed"):
        generate_campus(tiny, seed=5, workers=1, progress=False, **TINY)
    with pytest.raises(ValueError, match="drone_views"):
        generate_campus(tmp_path / "x", drone_views=0)
    with pytest.raises(ValueError, match="image_size"):
        generate_campus(tmp_path / "x", image_size=8)


def test_class_ids_and_campuses():
    layout = campus_layout(200, 170, seed=1)
    train = layout.split_buildings("train")
    test = layout.split_buildings("test")
    assert [b.class_id for b in train] == list(range(1, 201))
    assert [b.class_id for b in test] == list(range(201, 371))
    train_campuses = {b.campus for b in train}
    test_campuses = {b.campus for b in test}
    assert len(train_campuses) == 2 and len(test_campuses) == 2
    assert not train_campuses & test_campuses
    # campuses are kilometres apart: no train building is within 1 km of a test building
    assert geodesic_distances(layout.coords("train"), layout.coords("test")).min() > 1000.0
    # ids do not follow location (shuffled), but the layout is deterministic
    again = campus_layout(200, 170, seed=1)
    np.testing.assert_array_equal(layout.coords("train"), again.coords("train"))
    assert not np.array_equal(layout.coords("train"), campus_layout(200, 170, seed=2).coords("train"))


def test_local_metres_to_wgs84_agree_with_geodesics():
    rng = np.random.default_rng(0)
    east, north = rng.uniform(-1500, 1500, 200), rng.uniform(-1500, 1500, 200)
    for lat0 in (0.0, 42.37, -65.0, 80.0):
        lat, lon = enu_to_latlon(east, north, lat0, 30.0)
        d = geodesic_distances(np.column_stack([lat, lon]))
        planar = np.hypot(east[:, None] - east[None, :], north[:, None] - north[None, :])
        assert np.abs(d - planar).max() < 0.01  # metres, over distances up to 4 km
    layout = campus_layout(60, 20, seed=0)
    buildings = layout.split_buildings("train")
    xy = np.array([[b.x, b.y] for b in buildings])
    planar = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    d = geodesic_distances(layout.coords("train"))
    assert np.abs(d - planar).max() < 0.01


def test_level_coverage_and_density():
    layout = campus_layout(60, 40, seed=2)
    from dycl.geo import level_matrix

    for split in ("train", "test"):
        levels = level_matrix(layout.coords(split))
        off = levels[~np.eye(len(levels), dtype=bool)]
        assert (off == 2).sum() > 0 and (off == 1).sum() > 0  # both positive scales populated
        assert (
            (levels == 2).sum(axis=1) - 1 >= 1
        ).mean() > 0.95  # nearly every building has a 200 m neighbour
    # a DA-Campus-sized set: about 10 others within 200 m and about 50 within 500 m
    big = campus_layout(450, 300, seed=0)
    for split in ("train", "test"):
        d = geodesic_distances(big.coords(split))
        within200 = (d <= 200).sum(axis=1) - 1
        within500 = (d <= 500).sum(axis=1) - 1
        assert 7 <= within200.mean() <= 14, within200.mean()
        assert 35 <= within500.mean() <= 65, within500.mean()
        assert np.sort(d, axis=1)[:, 1].min() > 25.0  # buildings do not overlap


def test_drone_camera_circles_the_building():
    target = np.array([10.0, 20.0, 5.0])
    for heading in (0.0, 90.0, 200.0):
        cam = look_camera(target, heading, 40.0, 100.0, 60.0, 0.0, 128)
        # the target projects to the image centre and the camera is above and behind it
        px = cam.project(cam.to_camera(target[None]))[0]
        np.testing.assert_allclose(px, [64.0, 64.0], atol=1e-9)
        offset = cam.position - target
        assert offset[2] == pytest.approx(100.0 * math.sin(math.radians(40.0)))
        bearing = math.degrees(math.atan2(-offset[0], -offset[1])) % 360.0
        assert bearing == pytest.approx(heading)
        # north of the target is further up the image when looking north
    cam = look_camera(target, 0.0, 40.0, 100.0, 60.0, 0.0, 128)
    north = cam.project(cam.to_camera((target + [0.0, 30.0, 0.0])[None]))[0]
    east = cam.project(cam.to_camera((target + [30.0, 0.0, 0.0])[None]))[0]
    assert north[1] < 64.0 and east[0] > 64.0


@pytest.fixture(scope="module")
def campus60(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("campus60")
    generate_campus(
        root,
        train_buildings=60,
        test_buildings=4,
        drone_views=2,
        image_size=32,
        seed=2,
        workers=1,
        progress=False,
    )
    return root


def test_appearance_is_spatially_correlated(campus60):
    """DESIGN §9 (1): tiles of nearer buildings are more alike, level 2 > level 1 > level 0."""
    split = read_dacampus(campus60, "train")
    result = appearance_similarity(split)
    by_level = result["satellite_by_level"]
    assert min(result["pairs_by_level"]) >= 100
    assert by_level[2] > by_level[1] > by_level[0], by_level
    assert by_level[2] - by_level[0] > 0.05


def test_drone_views_differ_from_the_satellite_tile(campus60):
    """DESIGN §9: drone views are not copies of the tile: same descriptor, far from a perfect match."""
    split = read_dacampus(campus60, "train")
    result = appearance_similarity(split)
    assert result["drone_to_own_satellite"] < 0.9
    assert result["histogram_recall_at_1"] < 0.5
    assert result["drone_to_own_satellite"] < np.mean(result["satellite_by_level"][2])
    stats = split_stats(split)
    assert stats["level_histogram"]["level_2"] > 0 and stats["level_histogram"]["level_1"] > 0


def test_progress_in_a_log_file_is_one_closing_line(tmp_path, capsys):
    # under capsys stderr is not a terminal, as in a batch job's log
    generate_campus(tmp_path / "logged", seed=3, workers=1, progress=True, **TINY)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("synth")]
    assert len(lines) == 1 and "images" in lines[0], err
