"""dycl.levels (levels from a label hierarchy) and the hierarchical readers (manifest, DyML layout)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dycl import geo, metrics, rerank
from dycl.data.dyml import dyml_layout, read_dyml, read_dyml_benchmark
from dycl.data.hierarchy import DatasetError, read_hierarchy_manifest
from dycl.levels import from_hierarchy, split_label_paths


def _brute_levels(labels_fine_first: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The definition, pair by pair: depths agreed on counting from the coarsest."""
    fine = labels_fine_first[0]
    classes = sorted(set(fine.tolist()))
    first_image = {c: int(np.flatnonzero(fine == c)[0]) for c in classes}
    out = np.zeros((len(classes), len(classes)), dtype=np.uint8)
    for a, ca in enumerate(classes):
        for b, cb in enumerate(classes):
            level = 0
            for depth in reversed(labels_fine_first):
                if depth[first_image[ca]] != depth[first_image[cb]]:
                    break
                level += 1
            out[a, b] = level
    ids = np.array([classes.index(c) for c in fine.tolist()])
    return ids, out


def _random_tree(rng: np.random.Generator, n: int, branching: tuple[int, ...]) -> list[np.ndarray]:
    """Labels finest first of ``n`` images in a random tree with ``branching`` children per depth."""
    labels = [rng.integers(0, np.prod(branching), size=n)]
    for b in branching[:-1]:
        labels.append(labels[-1] // b)
    return labels


@pytest.mark.parametrize("branching", [(3, 2, 2), (4, 3), (5,), (2, 2, 2, 2)])
def test_from_hierarchy_matches_the_definition(branching: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(branching))
    labels = _random_tree(rng, 60, branching)
    ids, lv = from_hierarchy(*labels)
    want_ids, want = _brute_levels(labels)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(lv, want)
    # the orientation and dtype geo.level_matrix uses: uint8, L on the diagonal, symmetric
    geo_lv = geo.level_matrix(np.array([[0.0, 0.0], [0.0, 0.001]]))
    assert lv.dtype == geo_lv.dtype == np.uint8 and ids.dtype == np.int64
    assert (np.diagonal(lv) == len(branching)).all() and (lv == lv.T).all()


def test_string_labels_and_levels_feed_metrics_and_eq6() -> None:
    fine = np.array(["a1", "a2", "b1", "a1", "b2", "b1"])
    middle = np.array(["a", "a", "b", "a", "b", "b"])
    coarse = np.array(["x", "x", "x", "x", "x", "x"])
    ids, lv = from_hierarchy(fine, middle, coarse)
    np.testing.assert_array_equal(ids, [0, 1, 2, 0, 3, 2])
    assert lv[0, 1] == 2 and lv[0, 2] == 1 and lv[2, 3] == 2 and lv[1, 1] == 3
    dist = np.abs(np.arange(6)[:, None] - np.arange(6)[None, :]).astype(float)
    scores = metrics.evaluate(dist, ids, ids, lv, exclude_self=True)
    assert 0 < scores["mAP_0"] <= 1 and scores["n_queries"] == 6
    assert len(rerank.msrerank_ks(lv, np.bincount(ids))) == 3


def test_a_fine_class_under_two_parents_is_refused_by_name() -> None:
    fine = np.array([1, 2, 1, 3])
    middle = np.array([10, 10, 11, 11])  # fine class 1 under middles 10 and 11
    coarse = np.array([0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"^middle: fine label 1 is under 2 different middle labels"):
        from_hierarchy(fine, middle, coarse)
    with pytest.raises(ValueError, match=r"^coarse: middle label 10 "):
        from_hierarchy(np.array([1, 2]), np.array([10, 10]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"^labels\[1\]: "):
        from_hierarchy(np.array([1, 1]), np.array([5, 6]))
    with pytest.raises(ValueError, match="^genus: expected 2 labels"):
        from_hierarchy(np.array([1, 2]), np.array([5, 6, 7]), names=("species", "genus"))
    with pytest.raises(ValueError, match="^labels: "):
        from_hierarchy()
    with pytest.raises(ValueError, match="^fine: "):
        from_hierarchy(np.array([]), np.array([]), np.array([]))


def test_label_paths_make_equal_names_under_different_parents_different_nodes() -> None:
    paths = ["vehicle/suv/model_1", "vehicle/sedan/model_1", "animal/cat/model_1", "vehicle/suv/model_1"]
    fine, middle, coarse = split_label_paths(paths)
    ids, lv = from_hierarchy(fine, middle, coarse)
    assert len(set(ids.tolist())) == 3 and ids[0] == ids[3]
    assert lv[ids[0], ids[1]] == 1 and lv[ids[0], ids[2]] == 0
    with pytest.raises(ValueError, match="^label_path: path 1 .*2 parts"):
        split_label_paths(["a/b/c", "a/b"])


# --------------------------------------------------------------------------- manifest


def _image(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (value % 256, 0, 0)).save(path)


def test_manifest_with_label_columns_or_label_paths(tmp_path: Path) -> None:
    for i in range(4):
        _image(tmp_path / f"img/{i}.png", i)
    (tmp_path / "by_columns.csv").write_text(
        "path,coarse,middle,fine,split\n"
        "img/0.png,vehicle,suv,m1,test\nimg/1.png,vehicle,suv,m2,test\n\n"
        "img/2.png,vehicle,sedan,m3,test\nimg/3.png,animal,cat,m4,train\n"
    )
    s = read_hierarchy_manifest(tmp_path / "by_columns.csv", split="test")
    assert s.num_images == 3 and s.depth_names == ("fine", "middle", "coarse")
    assert s.paths[2] == tmp_path / "img/2.png"
    ids, lv = s.ids_and_levels()
    assert lv[ids[0], ids[1]] == 2 and lv[ids[0], ids[2]] == 1
    (tmp_path / "by_path.csv").write_text(
        "label_path,path\nvehicle/suv/m1,img/0.png\nvehicle/suv/m2,img/1.png\nanimal/cat/m1,img/3.png\n"
    )
    p = read_hierarchy_manifest(tmp_path / "by_path.csv")
    pids, plv = p.ids_and_levels()
    assert p.labels[0][2] == "animal/cat/m1" and plv[pids[0], pids[2]] == 0 and plv[pids[0], pids[1]] == 2


@pytest.mark.parametrize(("text", "message"), [
    ("path,kind\nimg/0.png,x\n", r":1: no label columns"),
    ("path,coarse,middle,fine\nimg/0.png,a,b\n", r":2: expected 4 comma-separated fields"),
    ("path,coarse,middle,fine\nimg/0.png,a,,c\n", r":2: empty path or label"),
    ("path,coarse,middle,fine\nimg/0.png,a,b,c\nimg/0.png,a,b,d\n", r":3: duplicate row for img/0.png"),
    ("path,coarse,middle,fine\nimg/9.png,a,b,c\n", r":2: image img/9.png does not exist"),
    ("path,coarse,middle,fine\nimg/0.png,a,b,c\nimg/1.png,a,z,c\n", r"middle: fine label 'c' is under 2"),
    ("", r":1: empty file"),
])
def test_manifest_faults_name_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    _image(tmp_path / "img/0.png")
    _image(tmp_path / "img/1.png")
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(DatasetError, match=message):
        read_hierarchy_manifest(tmp_path / "m.csv")


# --------------------------------------------------------------------------- DyML layout


def _write_list(path: Path, header: str, rows: list[str], glued: bool) -> None:
    """A DyML list file; ``glued``: the header runs into the first row, as in the release."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [header + rows[0], *rows[1:]] if glued else [header, *rows]
    path.write_text("\n".join(lines) + "\n")


def _three_level_rows(folder: Path, n: int) -> list[str]:
    rows = []
    for i in range(n):
        fine = i % 6
        _image(folder / f"{i}.jpg", i)
        rows.append(f"{i}.jpg, {fine // 4}, {fine // 2}, {fine}")
    return rows


@pytest.mark.parametrize("glued", [True, False])
def test_dyml_product_layout(tmp_path: Path, glued: bool) -> None:
    header = "fname, coarse_id, middle_id, fine_id"
    _write_list(tmp_path / "train/label.csv", header, _three_level_rows(tmp_path / "train/imgs", 12), glued)
    test_rows = _three_level_rows(tmp_path / "mini-bmk_all_in_one/imgs", 9)
    _write_list(tmp_path / "mini-bmk_all_in_one/label.csv", header, test_rows, glued)
    assert dyml_layout(tmp_path) == "product"
    train = read_dyml(tmp_path, "train")
    assert train.num_images == 12  # the glued first row is not lost
    assert train.paths[0] == tmp_path / "train/imgs/0.jpg"
    np.testing.assert_array_equal(train.labels[0], np.arange(12) % 6)
    np.testing.assert_array_equal(train.labels[2], (np.arange(12) % 6) // 4)
    test = read_dyml(tmp_path, "test")
    ids, lv = test.ids_and_levels()
    assert test.num_images == 9 and lv.shape == (6, 6) and lv[0, 1] == 2 and lv[0, 2] == 1 and lv[0, 5] == 0


def test_dyml_benchmark_layout_and_faults(tmp_path: Path) -> None:
    _write_list(tmp_path / "train/label.csv", "fname, coarse_id, middle_id, fine_id",
                _three_level_rows(tmp_path / "train/imgs", 6), True)
    for role in ("query", "gallery"):
        rows = []
        for i in range(5):
            _image(tmp_path / f"bmk_middle/{role}/{i}.jpg", i)
            rows.append(f"{i}.jpg, {i % 2}")
        _write_list(tmp_path / f"bmk_middle/{role}.csv", "fname, labels", rows, True)
    assert dyml_layout(tmp_path) == "benchmarks"
    q = read_dyml_benchmark(tmp_path, "middle", "query")
    assert q.num_images == 5 and q.depth_names == ("middle",)
    np.testing.assert_array_equal(q.labels[0], np.arange(5) % 2)
    with pytest.raises(DatasetError, match="bmk_fine/query.csv: missing file"):
        read_dyml_benchmark(tmp_path, "fine", "query")
    with pytest.raises(ValueError, match="^role: "):
        read_dyml_benchmark(tmp_path, "middle", "probe")
    with pytest.raises(DatasetError, match="no mini-bmk_all_in_one"):
        read_dyml(tmp_path, "test")
    (tmp_path / "bmk_middle/gallery.csv").write_text("fname, labels\n0.jpg, x\n")
    with pytest.raises(DatasetError, match=r"gallery.csv:2: label 'x' is not an integer"):
        read_dyml_benchmark(tmp_path, "middle", "gallery")
    not_a_tree = "fname, coarse_id, middle_id, fine_id\n0.jpg, 0, 1, 5\n1.jpg, 0, 2, 5\n"
    (tmp_path / "train/label.csv").write_text(not_a_tree)
    with pytest.raises(DatasetError, match="middle: fine label 5 is under 2"):
        read_dyml(tmp_path, "train")


# --------------------------------------------------------------------------- synthetic shapes


def test_synthetic_shapes_are_deterministic_and_read_back(tmp_path: Path) -> None:
    from dycl.data.shapes import shapes_dataset, write_shapes

    a = write_shapes(tmp_path / "a", images_per_class=3, size=16, seed=5, test_per_class=1)
    b = write_shapes(tmp_path / "b", images_per_class=3, size=16, seed=5, test_per_class=1)
    assert a.read_text() == b.read_text()
    for name in ("0.png", "50.png", "107.png"):
        assert (tmp_path / "a/images" / name).read_bytes() == (tmp_path / "b/images" / name).read_bytes()
    other = shapes_dataset(3, 16, seed=6)
    assert not np.array_equal(other.images, shapes_dataset(3, 16, seed=5).images)
    test = read_hierarchy_manifest(a, split="test")
    ids, lv = test.ids_and_levels()
    assert test.num_images == 36 and lv.shape == (36, 36) and (np.bincount(ids) == 1).all()
    assert set(np.unique(test.labels[2]).tolist()) == {"disc", "square", "triangle"}
    train = read_hierarchy_manifest(a, split="train")
    assert train.num_images == 72 and not set(train.paths) & set(test.paths)


def test_synthetic_shapes_carry_their_hierarchy_in_the_pixels() -> None:
    from dycl.data.shapes import pixel_embeddings, shapes_dataset

    data = shapes_dataset(4, 24, seed=0)
    ids, lv = from_hierarchy(*data.labels())
    emb = pixel_embeddings(data.images).astype(np.float64)
    sim = emb @ emb.T
    pair_level = lv[ids[:, None], ids[None, :]]
    off = ~np.eye(len(ids), dtype=bool)
    means = [sim[off & (pair_level == level)].mean() for level in range(4)]
    # same pattern > same colour > the rest; across families colour still dominates the raw pixels
    # (same colour, other family, is about as close as same family, other colour): no free lunch at level 0/1
    assert means[3] > means[2] > max(means[0], means[1]), means


def test_dycl_data_shapes_writes_the_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dycl.cli import data_main

    args = ["--images-per-class", "3", "--test-per-class", "1", "--image-size", "12"]
    assert data_main(["shapes", str(tmp_path / "s"), *args]) == 0
    s = read_hierarchy_manifest(tmp_path / "s/shapes.csv", split="test")
    assert s.num_images == 36 and "wrote" in capsys.readouterr().out
    assert data_main(["shapes", str(tmp_path / "t"), "--images-per-class", "2", "--test-per-class", "3"]) == 2
    assert "error: test_per_class" in capsys.readouterr().err


def test_dyml_header_names_decide_the_column_order(tmp_path: Path) -> None:
    for i in range(4):
        _image(tmp_path / f"train/imgs/{i}.jpg", i)
    # fine first here: the named header, not the release's usual order, must decide
    rows = [f"{i}.jpg, {i}, {i // 2}, 0" for i in range(4)]
    _write_list(tmp_path / "train/label.csv", "fname, fine_id, middle_id, coarse_id", rows, glued=True)
    s = read_dyml(tmp_path, "train")
    np.testing.assert_array_equal(s.labels[0], np.arange(4))
    np.testing.assert_array_equal(s.labels[1], np.arange(4) // 2)
    with pytest.raises(DatasetError, match="without a test set"):
        dyml_layout(tmp_path)
    with pytest.raises(DatasetError, match="no train/label.csv"):
        dyml_layout(tmp_path / "nowhere")
    (tmp_path / "train/label.csv").write_text("fname, a, b\n0.jpg, 1, 2, 3\n")
    with pytest.raises(DatasetError, match=r"label.csv:1: expected a header of 4 names"):
        read_dyml(tmp_path, "train")
