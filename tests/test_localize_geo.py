"""Localization's geospatial formats: GeoTIFF tiles in several CRSs, GPS EXIF, the synthetic campus's
georeferencing, and the geo metrics (err@k, SDM@K) against their definitions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from geographiclib.geodesic import Geodesic
from PIL import Image
from pyproj import Transformer

from dycl.data.exif import gps_exif, read_gps
from dycl.data.geotiff import plan_tiles
from dycl.geo import level_matrix
from dycl.spatial_metrics import sdm_values, spatial_scores
from dycl.tasks import RetrievalTask, score_task

WGS84 = Geodesic.WGS84


def metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Geodesic distance (GeographicLib, independent of the code under test)."""
    return WGS84.Inverse(a[0], a[1], b[0], b[1])["s12"]


def write_geotiff(path: Path, crs: str, transform: Affine, width: int, height: int, **extra) -> Path:
    data = np.random.default_rng(0).integers(0, 255, (3, height, width), dtype=np.uint8)
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 3, "dtype": "uint8",
               "crs": crs, "transform": transform, **extra}
    if crs is None:
        profile.pop("crs")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


# (CRS, top-left corner in that CRS, pixel size in CRS units): UTM 33N in metres, Web Mercator whose
# grid metres are 1/cos(lat) ground metres, and plain longitude/latitude degrees.
CRSS = {
    "utm": ("EPSG:32633", (499_000.0, 5_001_000.0), 0.5),
    "web-mercator": ("EPSG:3857", (-7_916_000.0, 5_218_000.0), 1.0),
    "geographic": ("EPSG:4326", (-71.12, 42.38), 6e-6),
}


@pytest.mark.parametrize("name", sorted(CRSS))
def test_geotiff_tile_centres_and_sizes_agree_with_pyproj(tmp_path, name):
    crs, (x0, y0), res = CRSS[name]
    transform = Affine(res, 0.0, x0, 0.0, -res, y0)
    path = write_geotiff(tmp_path / f"{name}.tif", crs, transform, 900, 700)
    grid = plan_tiles(path, tile_m=100.0, stride_m=50.0)
    assert len(grid) > 10 and grid.skipped_empty == 0
    to_wgs84 = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    for (col, row, w, h), centre, corners in zip(grid.windows, grid.centres, grid.footprints, strict=True):
        x, y = transform @ (col + w / 2.0, row + h / 2.0)
        lon, lat = to_wgs84.transform(x, y)
        assert metres((lat, lon), tuple(centre)) < 0.5
        # the tile is 100 m on the ground (to a pixel), whatever the CRS's units
        top, left = metres(tuple(corners[0]), tuple(corners[1])), metres(tuple(corners[0]), tuple(corners[3]))
        pixel = max(grid.ground_resolution_m)
        assert abs(top - 100.0) <= pixel and abs(left - 100.0) <= pixel, (top, left)
    # neighbours along a row are one stride apart on the ground
    assert abs(metres(tuple(grid.centres[0]), tuple(grid.centres[1])) - 50.0) <= max(grid.ground_resolution_m)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_geotiff_bad_inputs_are_refused_in_one_line(tmp_path):
    ok = write_geotiff(tmp_path / "ok.tif", "EPSG:32633", Affine(1, 0, 499_000, 0, -1, 5_001_000), 300, 200)
    no_crs = write_geotiff(tmp_path / "nocrs.tif", None, Affine(1, 0, 499_000, 0, -1, 5_001_000), 300, 200)
    no_transform = write_geotiff(tmp_path / "notransform.tif", "EPSG:32633", Affine.identity(), 300, 200)
    with pytest.raises(ValueError, match="has no coordinate reference system"):
        plan_tiles(no_crs)
    with pytest.raises(ValueError, match="has no geotransform"):
        plan_tiles(no_transform)
    with pytest.raises(ValueError, match="tile_m: 0.5 m is smaller than a pixel"):
        plan_tiles(ok, tile_m=0.5)
    with pytest.raises(ValueError, match="tile_m: 250 m is larger than the map"):
        plan_tiles(ok, tile_m=250.0)
    with pytest.raises(ValueError, match="stride_m: expected a positive number"):
        plan_tiles(ok, tile_m=100.0, stride_m=0.0)
    (tmp_path / "text.tif").write_text("not a raster")
    with pytest.raises(ValueError, match="cannot read .* as a raster"):
        plan_tiles(tmp_path / "text.tif")


def test_gps_exif_round_trip_in_every_hemisphere(tmp_path):
    image = Image.new("RGB", (8, 8), (10, 20, 30))
    for lat, lon in ((42.37361234, -71.10975678), (-33.8567844, 151.2152967), (0.0, 0.0), (-89.5, 179.99)):
        path = tmp_path / "gps.jpg"
        image.save(path, "JPEG", exif=gps_exif(lat, lon, altitude=-12.5, direction=271.25))
        fix = read_gps(path)
        assert fix is not None
        assert abs(fix.latitude - lat) < 1e-9 and abs(fix.longitude - lon) < 1e-9 and fix.altitude == -12.5
    image.save(tmp_path / "plain.jpg", "JPEG")
    assert read_gps(tmp_path / "plain.jpg") is None
    with pytest.raises(ValueError, match="latitude"):
        gps_exif(91.0, 0.0)


def _split_rows(campus: Path, view: str, split: str = "test") -> list[list[str]]:
    return [line.split() for line in (campus / view / f"{split}.txt").read_text().splitlines()[1:]]


def test_campus_drone_photos_carry_their_camera_position(campus):
    rows = _split_rows(campus, "drone")
    for rel, _, lat, lon in rows:
        fix = read_gps(campus / "drone" / rel)
        assert fix is not None and fix.altitude is not None and fix.altitude > 10.0
        # the drone looks at its building from an oblique camera tens of metres away
        assert 20.0 < metres((fix.latitude, fix.longitude), (float(lat), float(lon))) < 400.0


def _crop_error(src, image: np.ndarray, to_map, lat: float, lon: float, tile: np.ndarray,
                dx: float, dy: float) -> float:
    """Mean absolute difference between ``tile`` and the 160 m crop of the map at (lat, lon) + (dx, dy) m."""
    x, y = to_map.transform(lon, lat)
    col, row = ~src.transform @ (x + dx, y + dy)
    half = 80.0 / src.res[0]
    box = (col - half, row - half, col + half, row + half)
    crop = Image.fromarray(image).resize(tile.shape[:2][::-1], Image.BILINEAR, box=box, reducing_gap=2.0)
    return float(np.abs(np.asarray(crop, dtype=np.float64) - tile).mean())


def test_campus_orthophoto_is_georeferenced_where_the_buildings_are(campus):
    """A crop of the GeoTIFF at a building's coordinates matches its satellite tile; shifted crops less."""
    tif = campus / "orthophoto" / "test-01.tif"
    with rasterio.open(tif) as src:
        assert src.crs.to_epsg() == 32619  # the UTM zone of the campus (Cambridge, MA)
        to_map = Transformer.from_crs("EPSG:4326", src.crs, always_xy=True)
        image = np.moveaxis(src.read([1, 2, 3]), 0, 2)
        for rel, _, lat, lon in _split_rows(campus, "satellite"):
            tile = np.asarray(Image.open(campus / "satellite" / rel).convert("RGB"), dtype=np.float64)
            here = _crop_error(src, image, to_map, float(lat), float(lon), tile, 0.0, 0.0)
            assert here < 12.0, here
            shifted = [_crop_error(src, image, to_map, float(lat), float(lon), tile, dx, dy)
                       for dx, dy in ((25, 0), (-25, 0), (0, 25), (0, -25))]
            assert here < min(shifted)


# --------------------------------------------------------------------------- err@k and SDM@K


def test_sdm_follows_denseuav_definition():
    query = np.array([[30.0, 120.0]])
    results = np.array([[[30.0, 120.0], [30.0 + 1e-4, 120.0], [30.0, 120.0 + 3e-4]]])
    # K = 3: weights 1, 2/3, 1/3; exp(-5000 d) with d in degrees (DenseUAV's evaluateDistance.py)
    expected = (1.0 + 2 / 3 * math.exp(-0.5) + 1 / 3 * math.exp(-1.5)) / 2.0
    assert sdm_values(query, results, 3)[0] == pytest.approx(expected, rel=1e-9)  # 30 + 1e-4 is inexact
    assert sdm_values(query, results, 1)[0] == 1.0


def test_err_at_k_is_the_nearest_of_the_top_k_and_eval_keys_are_only_added():
    coords = np.array([[42.0, -71.0], [42.001, -71.0], [42.01, -71.0], [42.1, -71.0]])
    levels = level_matrix(coords)
    gallery = np.eye(4, dtype=np.float32)
    # query 0 (building 0) ranks buildings 3, 2, 0, 1; query 1 (building 1) ranks 1 first
    query = np.array([[0.1, 0.0, 0.5, 0.9], [0.0, 1.0, 0.2, 0.0]], dtype=np.float32)
    task = RetrievalTask("q->g", query, gallery, np.array([0, 1]), np.arange(4), levels, coords)
    scores = score_task(task, recall_at=(1, 2, 3), geo_metrics=True)
    far = [metres(tuple(coords[0]), tuple(coords[b])) for b in (3, 2)]
    assert scores["err@1_mean_m"] == pytest.approx(far[0] / 2, rel=1e-9)  # the core's key, unchanged
    assert scores["err@2_mean_m"] == pytest.approx(far[1] / 2, rel=1e-9)
    assert scores["err@3_mean_m"] == 0.0 and scores["SDM@1"] == pytest.approx(0.5 + 0.5 * 0.0, abs=1e-3)
    from dycl.metrics import evaluate_embeddings

    base = evaluate_embeddings(query, gallery, [0, 1], np.arange(4), levels, recall_at=(1, 2, 3),
                               coords=coords)
    assert {k: scores[k] for k in base} == base  # every existing key keeps its value
    assert set(scores) - set(base) == {"err@2_mean_m", "err@2_median_m", "err@3_mean_m", "err@3_median_m",
                                       "SDM@1", "SDM@2", "SDM@3"}
    blocked = spatial_scores([0, 1], np.arange(4), coords, (1, 2, 3), query, gallery, block=1)
    assert blocked == {k: scores[k] for k in blocked}
