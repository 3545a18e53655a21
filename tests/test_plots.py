"""dycl.plots: every figure is a valid PNG of the expected size and shows what it claims."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.colors import to_hex
from PIL import Image
from scipy.stats import kendalltau

from dycl.geo import geodesic_distances, level_matrix
from dycl.plots import (
    EXACT_COLOR,
    FAR_COLOR,
    RankedList,
    building_map_figure,
    kendall_tau_rows,
    level_colors,
    level_labels,
    local_east_north,
    png_size,
    rank_shift_figure,
    ranked_lists_figure,
    save_figure,
    scale_bars_figure,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png(fig, path: Path, dpi: int = 100) -> None:
    written = save_figure(fig, path, dpi=dpi)
    assert written == path and not list(path.parent.glob("*.tmp"))
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    width, height = png_size(fig, dpi)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (width, height)
    assert mpimg.imread(path).shape[:2] == (height, width)


def campus_coords(rng: np.random.Generator, n: int = 14) -> np.ndarray:
    return np.column_stack([47.0 + rng.uniform(0, 0.01, n), 8.5 + rng.uniform(0, 0.014, n)])


def test_level_colours_and_labels():
    assert level_labels((200.0, 500.0)) == ["> 500 m", "≤ 500 m", "≤ 200 m", "same building"]
    assert level_labels((100.0,)) == ["> 100 m", "≤ 100 m", "same building"]
    colors = level_colors(3)
    assert len(colors) == 4 and colors[0] == FAR_COLOR and colors[3] == EXACT_COLOR
    assert len(set(colors)) == 4
    assert level_colors(1) == [FAR_COLOR, EXACT_COLOR]
    with pytest.raises(ValueError, match="n_levels"):
        level_colors(0)


def test_ranked_lists_frame_every_item_in_its_level_colour(tmp_path):
    rng = np.random.default_rng(0)
    rows = [
        RankedList("building 3", [3, 2, 0, 1], ["3", "4", "9", "5"],
                   query_image=rng.integers(0, 255, (40, 40, 3), dtype=np.uint8),
                   images=[rng.integers(0, 255, (32, 48, 3), dtype=np.uint8) for _ in range(4)]),
        RankedList("building 7", [0, 0, 3, 2], ["1", "2", "7", "8"]),  # no images: placeholders
    ]
    fig = ranked_lists_figure(rows, (200.0, 500.0), title="test")
    colors = level_colors(3)
    # Axes: per row the query, then the k items in rank order.
    axes = fig.axes
    assert len(axes) == 2 * 5
    for r, row in enumerate(rows):
        query_ax = axes[5 * r]
        assert to_hex(query_ax.spines["left"].get_edgecolor()) == "#000000"
        for j, level in enumerate(row.levels):
            spine = axes[5 * r + 1 + j].spines["top"]
            assert to_hex(spine.get_edgecolor()) == colors[level], (r, j)
    check_png(fig, tmp_path / "ranked.png")
    with pytest.raises(ValueError, match="level 4"):
        ranked_lists_figure([RankedList("q", [4], ["x"])], (200.0, 500.0))
    with pytest.raises(ValueError, match="same, non-zero number"):
        ranked_lists_figure([RankedList("q", [1, 2], ["x"])])


def test_local_projection_keeps_geodesic_distances_from_the_centre():
    rng = np.random.default_rng(1)
    coords = campus_coords(rng)
    xy = local_east_north(coords, 4)
    expected = geodesic_distances(coords[4:5], coords)[0]
    np.testing.assert_allclose(np.hypot(xy[:, 0], xy[:, 1]), expected, atol=1e-6)
    assert np.all(xy[4] == 0.0)
    # Orientation: a building due north has x ~ 0 and y > 0.
    north = local_east_north(np.array([[47.0, 8.5], [47.001, 8.5]]), 0)[1]
    assert abs(north[0]) < 1e-6 and north[1] == pytest.approx(111.2, abs=0.5)


def test_building_map_draws_threshold_circles_and_level_colours(tmp_path):
    rng = np.random.default_rng(2)
    coords = campus_coords(rng)
    levels = level_matrix(coords, (200.0, 500.0))
    center = int(np.argmax((levels >= 1).sum(axis=1)))
    fig = building_map_figure(coords, center, (200.0, 500.0), labels=[f"b{i}" for i in range(len(coords))])
    ax = fig.axes[0]
    radii = sorted(p.get_radius() for p in ax.patches)
    assert radii == [200.0, 500.0]
    points = ax.collections[0]
    xy = points.get_offsets()
    colors = [to_hex(c) for c in points.get_facecolors()]
    by_position = {(round(x, 3), round(y, 3)): c for (x, y), c in zip(np.asarray(xy), colors, strict=True)}
    projected = local_east_north(coords, center)
    palette = level_colors(3)
    for i, (x, y) in enumerate(projected):
        assert by_position[(round(x, 3), round(y, 3))] == palette[levels[center, i]], i
    check_png(fig, tmp_path / "map.png")
    with pytest.raises(ValueError, match="center"):
        building_map_figure(coords, len(coords), (200.0, 500.0))


def test_rank_shift_figure_reports_kendall_tau(tmp_path):
    rng = np.random.default_rng(3)
    base = rng.random((5, 30))
    small = base + 0.05 * rng.random(base.shape)
    large = rng.random(base.shape)
    item_levels = rng.integers(0, 4, base.shape)
    fig = rank_shift_figure(base, {20: small, 60: large}, item_levels, top_n=10, title="shifts")
    taus = kendall_tau_rows(base, small)
    assert taus[0] == pytest.approx(kendalltau(base[0], small[0]).statistic)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith(f"k = 20: Kendall τ = {np.mean(taus):.3f}")
    assert titles[1].startswith(f"k = 60: Kendall τ = {np.mean(kendall_tau_rows(base, large)):.3f}")
    # Unchanged distances: every item keeps its rank, tau = 1.
    same = rank_shift_figure(base, {5: base}, item_levels, top_n=10)
    assert "Kendall τ = 1.000" in same.axes[0].get_title() and "shift| = 0.0" in same.axes[0].get_title()
    check_png(fig, tmp_path / "shifts.png")
    with pytest.raises(ValueError, match="item_levels"):
        rank_shift_figure(base, {5: base}, item_levels[:, :3])


def test_scale_bars_compare_runs(tmp_path):
    def metrics(v: float) -> dict:
        return {"mAP_0": v, "mAP_1": v / 2, "mAP_2": v / 3, "mAP_overall": v / 2,
                "R@1_0": v, "R@1_1": v, "R@1_2": v, "R@1_overall": v}

    runs = {"a": {"satellite->drone": metrics(0.8), "drone->satellite": metrics(0.6)},
            "b": {"satellite->drone": metrics(0.4), "drone->satellite": metrics(float("nan"))}}
    fig = scale_bars_figure(runs, title="cmp")
    assert [ax.get_title() for ax in fig.axes] == ["satellite->drone", "drone->satellite"]
    heights = [round(rect.get_height(), 6) for rect in fig.axes[0].patches]
    assert heights == [80.0, 40.0, 26.666667, 40.0, 40.0, 20.0, 13.333333, 20.0]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["small", "middle", "large", "overall"]
    assert any(t.get_text() == "n/a" for t in fig.axes[1].texts)
    check_png(fig, tmp_path / "bars.png", dpi=80)
    with pytest.raises(ValueError, match="metric"):
        scale_bars_figure(runs, metric="H-AP")
    with pytest.raises(ValueError, match="runs"):
        scale_bars_figure({})
