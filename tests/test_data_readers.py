"""Readers of the data layer: DA-Campus layout and manifest CSV, round trip and validation errors."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from dycl.data import DatasetError, Split, check_disjoint, read_dacampus, read_manifest
from dycl.data.synth import campus_layout, generate_campus
from dycl.geo import level_matrix

PARAMS = {"train_buildings": 10, "test_buildings": 6, "drone_views": 3, "image_size": 32, "seed": 11}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("campus")
    generate_campus(root, workers=1, progress=False, **PARAMS)
    return root


@pytest.fixture
def copy(dataset, tmp_path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(dataset, target)
    return target


def _rewrite(path: Path, edit) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(edit(lines)))


# --------------------------------------------------------------------------- round trip


def test_dacampus_round_trip_matches_the_generated_world(dataset):
    layout = campus_layout(PARAMS["train_buildings"], PARAMS["test_buildings"], PARAMS["seed"])
    for name, first in (("train", 1), ("test", PARAMS["train_buildings"] + 1)):
        split = read_dacampus(dataset, name)
        b = PARAMS[f"{name}_buildings"]
        assert isinstance(split, Split) and split.name == name
        assert split.building_ids.tolist() == list(range(first, first + b))
        assert split.building_ids.dtype == np.int64
        np.testing.assert_allclose(split.coords, layout.coords(name), atol=1e-8)
        assert split.num_drone == split.num_pairs == b * PARAMS["drone_views"]
        assert split.drone_counts().tolist() == [PARAMS["drone_views"]] * b
        assert all(p.is_file() for p in split.satellite_paths + split.drone_paths)
        # drone images are grouped by building and name their building
        assert (np.diff(split.drone_buildings) >= 0).all()
        for path, building in zip(split.drone_paths, split.drone_buildings, strict=True):
            assert path.name.startswith(f"{split.building_ids[building]:04d}_")
        for path, cid in zip(split.satellite_paths, split.building_ids, strict=True):
            assert path.name == f"{cid:04d}.jpg"
        np.testing.assert_array_equal(split.levels(), level_matrix(split.coords))
        assert split.index_of(first + 2) == 2 and split.index_of(str(first)) == 0
        with pytest.raises(ValueError, match="building_id"):
            split.index_of(99999)
    check_disjoint(read_dacampus(dataset, "train"), read_dacampus(dataset, "test"))


def test_columns_in_any_order_extra_columns_and_drone_rows_out_of_order(copy):
    for platform in ("satellite", "drone"):

        def edit(lines):
            rows = [ln.split() for ln in lines]
            out = [" ".join(["longitude", "note", "latitude", "path", "class_id"]) + "\n"]
            body = [" ".join([r[3], "x", r[2], r[0], r[1]]) + "\n" for r in rows[1:]]
            return out + body[::-1]  # reversed: buildings' rows no longer consecutive or in order

        _rewrite(copy / platform / "train.txt", edit)
    split = read_dacampus(copy, "train")
    assert split.building_ids.tolist() == list(range(1, 11))
    assert (np.diff(split.drone_buildings) >= 0).all()
    assert split.num_drone == 30


def test_manifest_round_trip_equals_dacampus(dataset, tmp_path):
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["split", "longitude", "path", "view", "latitude", "building"])
        for name in ("train", "test"):
            for platform in ("satellite", "drone"):
                lines = (dataset / platform / f"{name}.txt").read_text().split("\n")[1:]
                for line in filter(None, lines):
                    path, cid, lat, lon = line.split()
                    writer.writerow([name, lon, str(dataset / platform / path), platform, lat, cid])
    for name in ("train", "test"):
        a, b = read_dacampus(dataset, name), read_manifest(manifest, name)
        np.testing.assert_array_equal(a.building_ids, b.building_ids)
        np.testing.assert_array_equal(a.coords, b.coords)
        assert a.satellite_paths == b.satellite_paths and a.drone_paths == b.drone_paths
        np.testing.assert_array_equal(a.drone_buildings, b.drone_buildings)


def test_manifest_relative_paths_and_string_building_labels(dataset, tmp_path):
    img = tmp_path / "img"
    img.mkdir()
    src = sorted((dataset / "satellite" / "train").rglob("*.jpg"))[:2]
    for k, p in enumerate(src):
        shutil.copy(p, img / f"s{k}.jpg")
        shutil.copy(p, img / f"d{k}.jpg")
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,view,building,latitude,longitude,split\n"
        "img/s0.jpg,satellite,north-hall,40.0,-70.0,train\n"
        "img/s1.jpg,Satellite,east-wing,40.001,-70.0,train\n"
        "img/d0.jpg,drone,north-hall,40.0,-70.0,train\n"
        "img/d1.jpg,drone,east-wing,40.001,-70.0,train\n"
    )
    split = read_manifest(manifest, "train")
    assert split.building_ids.tolist() == ["east-wing", "north-hall"]
    assert split.satellite_paths[0] == tmp_path / "img" / "s1.jpg"
    assert split.drone_buildings.tolist() == [0, 1]
    assert split.levels()[0, 1] == 2  # 111 m apart


# --------------------------------------------------------------------------- validation errors


def _error(func, *args) -> str:
    with pytest.raises(DatasetError) as info:
        func(*args)
    assert isinstance(info.value, ValueError)
    return str(info.value)


def _assert_line(message: str, path: Path, line: int | None = None) -> None:
    assert str(path) in message, message
    if line is not None:
        assert re.search(rf"{re.escape(str(path))}:{line}\b", message), message


def test_missing_folder_platform_and_file(copy, tmp_path):
    _assert_line(_error(read_dacampus, tmp_path / "nope", "train"), tmp_path / "nope")
    (copy / "drone" / "test.txt").unlink()
    _assert_line(_error(read_dacampus, copy, "test"), copy / "drone" / "test.txt")
    assert "missing file" in _error(read_dacampus, copy, "test")
    shutil.rmtree(copy / "satellite")
    assert "missing folder" in _error(read_dacampus, copy, "train")
    with pytest.raises(ValueError, match="split"):
        read_dacampus(copy, "../train")


def test_missing_column(copy):
    path = copy / "satellite" / "train.txt"
    _rewrite(path, lambda lines: ["path class_id lat longitude\n"] + lines[1:])
    message = _error(read_dacampus, copy, "train")
    _assert_line(message, path, 1)
    assert "latitude" in message


def test_missing_image_files_are_counted_and_listed(copy):
    victims = sorted((copy / "drone" / "train").rglob("*.jpg"))[:5]
    for p in victims:
        p.unlink()
    message = _error(read_dacampus, copy, "train")
    assert "5 image file(s) do not exist" in message
    assert str(victims[0]) in message and str(victims[4]) not in message  # the first few only
    _assert_line(message, copy / "drone" / "train.txt")
    assert read_dacampus(copy, "train", check_images=False).num_drone == 30


def test_building_without_satellite_image(copy):
    path = copy / "satellite" / "train.txt"
    _rewrite(path, lambda lines: [ln for ln in lines if not ln.split()[1:2] == ["4"]])
    message = _error(read_dacampus, copy, "train")
    assert "building 4" in message and "no satellite image" in message
    drone_lines = (copy / "drone" / "train.txt").read_text().splitlines()
    first = next(i for i, ln in enumerate(drone_lines, 1) if ln.split()[1] == "4")
    _assert_line(message, copy / "drone" / "train.txt", first)


@pytest.mark.parametrize(
    "value,needle", [("north", "not a number"), ("91.5", "outside"), ("nan", "outside"), ("-inf", "outside")]
)
def test_bad_latitude(copy, value, needle):
    path = copy / "satellite" / "train.txt"

    def edit(lines):
        fields = lines[3].split()
        fields[2] = value
        return lines[:3] + [" ".join(fields) + "\n"] + lines[4:]

    _rewrite(path, edit)
    message = _error(read_dacampus, copy, "train")
    _assert_line(message, path, 4)
    assert needle in message and "latitude" in message


def test_bad_longitude_in_drone_file(copy):
    path = copy / "drone" / "train.txt"

    def edit(lines):
        fields = lines[7].split()
        fields[3] = "181"
        return lines[:7] + [" ".join(fields) + "\n"] + lines[8:]

    _rewrite(path, edit)
    message = _error(read_dacampus, copy, "train")
    _assert_line(message, path, 8)
    assert "longitude" in message


def test_duplicate_row(copy):
    path = copy / "drone" / "train.txt"
    _rewrite(path, lambda lines: lines + [lines[2]])
    message = _error(read_dacampus, copy, "train")
    _assert_line(message, path, 32)
    assert "duplicate" in message and "line 3" in message


def test_second_satellite_image_for_a_building(copy):
    path = copy / "satellite" / "train.txt"

    def edit(lines):
        fields = lines[2].split()
        fields[0] = "train/extra.jpg"
        fields[1] = lines[1].split()[1]
        return lines + [" ".join(fields) + "\n"]

    _rewrite(path, edit)
    message = _error(read_dacampus, copy, "train")
    _assert_line(message, path, 12)
    assert "second satellite" in message


def test_wrong_field_count_and_bad_class_id(copy):
    path = copy / "satellite" / "train.txt"
    original = path.read_text()
    _rewrite(path, lambda lines: lines[:2] + [lines[2].rstrip("\n") + " extra\n"] + lines[3:])
    _assert_line(_error(read_dacampus, copy, "train"), path, 3)
    path.write_text(original)

    def edit(lines):
        fields = lines[5].split()
        fields[1] = "7b"
        return lines[:5] + [" ".join(fields) + "\n"] + lines[6:]

    _rewrite(path, edit)
    message = _error(read_dacampus, copy, "train")
    _assert_line(message, path, 6)
    assert "class_id" in message


def test_empty_file(copy):
    path = copy / "satellite" / "train.txt"
    path.write_text("\n")
    _assert_line(_error(read_dacampus, copy, "train"), path, 1)


def test_building_in_both_splits(copy):
    train_sat = copy / "satellite" / "train.txt"
    test_sat = copy / "satellite" / "test.txt"
    moved = test_sat.read_text().splitlines(keepends=True)[1]
    _rewrite(train_sat, lambda lines: lines + [moved.replace("test/", "test_copy/")])
    message = _error(read_dacampus, copy, "train")
    assert "also in the test split" in message
    _assert_line(message, train_sat, 12)
    assert str(test_sat) in message
    assert "also in the train split" in _error(read_dacampus, copy, "test")


def test_check_disjoint(dataset):
    train = read_dacampus(dataset, "train")
    check_disjoint(train, read_dacampus(dataset, "test"))
    with pytest.raises(DatasetError, match="both"):
        check_disjoint(train, train)


def _manifest(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "m.csv"
    path.write_text("path,view,building,latitude,longitude,split\n" + "".join(r + "\n" for r in rows))
    for r in rows:
        (tmp_path / r.split(",")[0]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / r.split(",")[0]).write_bytes(b"")
    return path


def test_manifest_errors(tmp_path):
    ok = [
        "a/s1.jpg,satellite,1,40.0,-70.0,train",
        "a/d1.jpg,drone,1,40.0,-70.0,train",
        "a/s2.jpg,satellite,2,40.01,-70.0,test",
        "a/d2.jpg,drone,2,40.01,-70.0,test",
    ]
    path = _manifest(tmp_path, ok)
    assert read_manifest(path, "train").num_buildings == 1
    message = _error(read_manifest, path, "val")
    assert "no rows for split 'val'" in message and "test, train" in message

    path = _manifest(tmp_path, ok + ["a/d3.jpg,drone,2,40.01,-70.0,train"])
    message = _error(read_manifest, path, "train")
    _assert_line(message, path, 6)
    assert "building 2" in message and "'test'" in message

    path = _manifest(tmp_path, ok + ["a/d1.jpg,drone,1,40.0,-70.0,train"])
    message = _error(read_manifest, path, "train")
    _assert_line(message, path, 6)
    assert "duplicate" in message

    path = _manifest(tmp_path, ok[:3] + ["a/d2.jpg,ground,2,40.01,-70.0,test"])
    _assert_line(_error(read_manifest, path, "test"), path, 5)

    path = _manifest(tmp_path, ok[:3] + ["a/d2.jpg,drone,2,40.01,-200,test"])
    _assert_line(_error(read_manifest, path, "test"), path, 5)

    path = _manifest(tmp_path, ok + ["a/d9.jpg,drone,9,40.0,-70.0,train"])
    message = _error(read_manifest, path, "train")
    _assert_line(message, path, 6)
    assert "no satellite image" in message

    path.write_text("path,view,building,latitude,split\n")
    message = _error(read_manifest, path, "train")
    _assert_line(message, path, 1)
    assert "longitude" in message

    path = _manifest(tmp_path, ok)
    (tmp_path / "a" / "d1.jpg").unlink()
    message = _error(read_manifest, path, "train")
    assert "1 image file(s) do not exist" in message and "d1.jpg" in message

    assert "missing file" in _error(read_manifest, tmp_path / "none.csv", "train")


def test_split_constructor_copies_and_checks():
    ids = np.array([3, 5])
    coords = np.array([[40.0, -70.0], [40.001, -70.0]])
    drone = np.array([1, 0, 1])
    split = Split("x", ids, coords, ("a.jpg", "b.jpg"), ("d0", "d1", "d2"), drone)
    coords[0, 0] = 0.0
    ids[0] = 99
    assert split.coords[0, 0] == 40.0 and split.building_ids[0] == 3  # private copies
    with pytest.raises(ValueError):
        split.coords[0, 0] = 1.0  # read-only
    assert split.satellite_paths[0] == Path("a.jpg") and split.drone_counts().tolist() == [1, 2]
    assert split.index_of(5) == 1
    with pytest.raises(ValueError, match="one row per building"):
        Split("x", ids, coords[:1], ("a.jpg", "b.jpg"), (), np.zeros(0, dtype=np.int64))
    with pytest.raises(ValueError, match="outside"):
        Split("x", ids, coords, ("a.jpg", "b.jpg"), ("d0",), np.array([2]))
    with pytest.raises(ValueError, match="same length"):
        Split("x", ids, coords, ("a.jpg", "b.jpg"), ("d0",), np.array([0, 1]))
