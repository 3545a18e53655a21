"""``generate_campus``: render a synthetic world to disk in the DA-Campus layout.

Buildings are rendered in parallel worker processes; every image depends only
on the parameters and its building (the campus raster is seeded by (seed,
campus), the drone cameras by (seed, class_id)), so the output is
byte-identical for a seed whatever the number of workers or the order in
which they finish. Images are written atomically and existing ones are kept,
so an interrupted run resumes where it stopped; the four list files are
written last.

Since version 2 each drone JPEG carries its camera's true GPS position in
its EXIF, and every campus's orthophoto is written as a georeferenced
GeoTIFF (:mod:`.georef`), so that localization can be tested end to end.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import time
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..._progress import stage_line, stderr_is_terminal
from ..exif import gps_exif
from .georef import camera_gps, orthophoto_paths, write_orthophoto
from .raster import build_campus_raster, raster_resolution
from .render import CampusScene, drone_view, satellite_tile, view_params
from .world import TAG_VIEWS, Building, CampusLayout, campus_layout

#: 2: drone JPEGs carry their camera's GPS in EXIF; campus orthophotos as GeoTIFFs (same pixels as 1).
GENERATOR_VERSION = 2
SPEC_FILE = "synth.json"
JPEG_QUALITY = 92
DEMO_DEFAULTS = {
    "train_buildings": 120,
    "test_buildings": 60,
    "drone_views": 24,
    "image_size": 128,
    "seed": 0,
}


def _positive_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    if not low <= int(value) <= high:
        raise ValueError(f"{name}: must be between {low} and {high}, got {value}")
    return int(value)


def image_paths(building: Building, drone_views: int) -> tuple[str, list[str]]:
    """Paths, relative to the platform folders, of a building's satellite tile and drone views."""
    cid = f"{building.class_id:04d}"
    width = max(2, len(str(drone_views - 1)))
    return (
        f"{building.split}/{cid}/{cid}.jpg",
        [f"{building.split}/{cid}/{cid}_{k:0{width}d}.jpg" for k in range(drone_views)],
    )


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _jpeg(image, exif=None) -> bytes:
    buffer = io.BytesIO()
    if exif is None:
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    else:
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY, exif=exif)
    return buffer.getvalue()


class _Renderer:
    """Per-process state: the layout and the rasters of the campuses in use (at most two kept)."""

    def __init__(self, spec: dict, out_dir: str):
        self.spec = spec
        self.out = Path(out_dir)
        self.layout: CampusLayout = campus_layout(
            spec["train_buildings"], spec["test_buildings"], spec["seed"]
        )
        self.res = raster_resolution(spec["image_size"])
        self.scenes: dict[int, CampusScene] = {}

    def scene(self, campus: int) -> CampusScene:
        if campus not in self.scenes:
            if len(self.scenes) >= 2:
                self.scenes.pop(next(iter(self.scenes)))
            self.scenes[campus] = CampusScene(self.layout, build_campus_raster(self.layout, campus, self.res))
        return self.scenes[campus]

    def render(self, index: int) -> int:
        """Render and write one building's images (skipping files already there); returns images written."""
        building = self.layout.buildings[index]
        size, views = self.spec["image_size"], self.spec["drone_views"]
        sat_rel, drone_rel = image_paths(building, views)
        sat_path = self.out / "satellite" / sat_rel
        drone_paths = [self.out / "drone" / rel for rel in drone_rel]
        if sat_path.is_file() and all(p.is_file() for p in drone_paths):
            return 0
        scene = self.scene(building.campus)
        written = 0
        if not sat_path.is_file():
            _write_atomic(sat_path, _jpeg(satellite_tile(scene.raster, building, size)))
            written += 1
        style = self.layout.campuses[building.campus].style
        rng = np.random.default_rng([self.spec["seed"], TAG_VIEWS, building.class_id])
        supersample = 2 if size <= 256 else 1
        for params, path in zip(
            view_params(rng, building, views, style.sun_azimuth, style.sun_elevation),
            drone_paths,
            strict=True,
        ):
            if not path.is_file():
                lat, lon, altitude, heading = camera_gps(params)
                exif = gps_exif(lat, lon, altitude=altitude, direction=heading)
                _write_atomic(path, _jpeg(drone_view(scene, building, params, size, supersample), exif))
                written += 1
        return written

    def write_orthophotos(self) -> int:
        """Write the GeoTIFF of every campus that has none yet; returns the files written."""
        written = 0
        for campus, rel in orthophoto_paths(self.layout).items():
            path = self.out / rel
            if not path.is_file():
                write_orthophoto(self.scene(campus).raster, path, _write_atomic)
                written += 1
        return written


_WORKER: _Renderer | None = None


def _init_worker(spec: dict, out_dir: str) -> None:
    global _WORKER
    _WORKER = _Renderer(spec, out_dir)


def _render_in_worker(indices: list[int]) -> int:
    assert _WORKER is not None
    return sum(_WORKER.render(i) for i in indices)


def _check_out_dir(out: Path, spec: dict) -> None:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        return
    spec_path = out / SPEC_FILE
    if not spec_path.is_file():
        raise FileExistsError(
            f"{out}: folder is not empty and holds no {SPEC_FILE}; choose an empty or new folder"
        )
    try:
        existing = json.loads(spec_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{spec_path}: unreadable ({exc})") from None
    if existing != spec:
        changed = sorted(k for k in set(spec) | set(existing) if spec.get(k) != existing.get(k))
        raise FileExistsError(
            f"{out}: holds a synthetic set made with other parameters ({', '.join(changed)}); "
            "choose another folder"
        )


def _chunks(indices: list[int], size: int) -> Iterable[list[int]]:
    for i in range(0, len(indices), size):
        yield indices[i : i + size]


def generate_campus(
    out_dir: str | os.PathLike,
    train_buildings: int = 120,
    test_buildings: int = 60,
    drone_views: int = 24,
    image_size: int = 128,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Render a synthetic campus dataset in the DA-Campus layout (DESIGN §7, §9).

    Writes ``<out_dir>/satellite/{train,test}.txt``, ``<out_dir>/drone/{train,test}.txt``
    (header ``path class_id latitude longitude``), one satellite tile and
    ``drone_views`` drone views per building as JPEG files (each drone view
    with its camera's GPS position in EXIF), each campus's orthophoto as a
    GeoTIFF in its UTM zone (``<out_dir>/orthophoto/{split}-NN.tif``) and
    ``<out_dir>/synth.json`` with the parameters. Class ids are 1..N (train)
    and N+1..N+M (test). Re-running with the same parameters on the same
    folder completes an interrupted run.

    Args:
        out_dir: output folder (new, empty, or an unfinished run with the same parameters).
        train_buildings, test_buildings: buildings per split (from different campuses).
        drone_views: drone views per building, at evenly spaced headings over 360 degrees.
        image_size: side of every (square) image in pixels.
        seed: the world; same seed and parameters give byte-identical files.
        workers: rendering processes (default: the CPUs available to this process).
        progress: show a tqdm progress bar.

    Returns:
        The output folder.
    """
    spec = {
        "generator": "dycl.data.synth",
        "version": GENERATOR_VERSION,
        "train_buildings": _positive_int("train_buildings", train_buildings, 1, 100_000),
        "test_buildings": _positive_int("test_buildings", test_buildings, 1, 100_000),
        "drone_views": _positive_int("drone_views", drone_views, 1, 360),
        "image_size": _positive_int("image_size", image_size, 16, 1024),
        "seed": _positive_int("seed", seed, 0, 2**63 - 1),
    }
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = _positive_int("workers", workers, 1, 1024)
    out = Path(out_dir)
    _check_out_dir(out, spec)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / SPEC_FILE, (json.dumps(spec, indent=2, sort_keys=True) + "\n").encode())

    layout = campus_layout(spec["train_buildings"], spec["test_buildings"], spec["seed"])
    # Campus by campus, so that a worker needs few campus rasters at a time.
    order = sorted(range(len(layout.buildings)), key=lambda i: (layout.buildings[i].campus, i))
    # A bar on a terminal; in a log file one closing line instead of thousands of \r updates.
    bar = tqdm(total=len(order), unit="building", desc="synth", dynamic_ncols=True,
               disable=not (progress and stderr_is_terminal()))
    start = time.perf_counter()
    renderer = _Renderer(spec, str(out))
    renderer.layout = layout
    try:
        if workers == 1 or len(order) == 1:
            written = _render_here(renderer, order, bar)
        else:
            written = _render_in_pool(spec, out, order, workers, bar)
        bar.set_postfix(images=written)
    finally:
        bar.close()
    if progress and bar.disable:
        stage_line("synth", len(order), len(order), f"buildings ({written} images)",
                   time.perf_counter() - start)
    # In this process (no GDAL in forked workers); the single-process path reuses its campus rasters.
    renderer.write_orthophotos()

    _write_lists(out, layout, spec["drone_views"])
    return out


def _render_here(renderer: _Renderer, order: list[int], bar: tqdm) -> int:
    """Render the buildings ``order`` in this process; returns the images written."""
    written = 0
    for index in order:
        written += renderer.render(index)
        bar.update(1)
    return written


def _render_in_pool(spec: dict, out: Path, order: list[int], workers: int, bar: tqdm) -> int:
    """Render the buildings ``order`` in ``workers`` processes, a few buildings per task; returns the
    images written. On an error (or Ctrl-C) the tasks not started are cancelled."""
    written = 0
    chunk = max(1, min(4, len(order) // (workers * 4)))
    # fork where the platform has it: workers then need no re-import of the caller's main module
    # (scripts without an ``if __name__ == "__main__"`` guard work) and start instantly; they use
    # only NumPy and Pillow. Elsewhere spawn (the caller's script needs the usual guard).
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(spec, str(out))
    ) as pool:
        pending = {pool.submit(_render_in_worker, c): len(c) for c in _chunks(order, chunk)}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    written += future.result()
                    bar.update(pending.pop(future))
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return written


def _write_lists(out: Path, layout: CampusLayout, drone_views: int) -> None:
    """The four DA-Campus list files (written after every image exists)."""
    header = "path class_id latitude longitude\n"
    for split in ("train", "test"):
        sat_lines, drone_lines = [header], [header]
        for building in layout.split_buildings(split):
            sat_rel, drone_rel = image_paths(building, drone_views)
            where = f"{building.class_id} {building.lat:.8f} {building.lon:.8f}\n"
            sat_lines.append(f"{sat_rel} {where}")
            drone_lines.extend(f"{rel} {where}" for rel in drone_rel)
        _write_atomic(out / "satellite" / f"{split}.txt", "".join(sat_lines).encode())
        _write_atomic(out / "drone" / f"{split}.txt", "".join(drone_lines).encode())
