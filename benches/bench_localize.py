"""Speed of localization on CPU: index 10,000 map tiles, localize 1,000 photos; network vs search time.

Usage::

    python benches/bench_localize.py [--checkpoint dycl-demo/last.pt] [--tiles-per-side 100] [--queries 1000]

A 1030 x 1030 px GeoTIFF (1 m pixels, UTM) is cut into 40 m tiles every 10 m
(100 x 100 = 10,000 tiles); 1,000 photos are crops of it saved as JPEG with
GPS EXIF. The network is the demo's (ResNet-18, 128-d, 64 px input: the
checkpoint when given, else the same architecture with random weights — the
time does not depend on the weights). Times come from
:attr:`dycl.localize.Localizer.seconds`: reading (GeoTIFF windows, JPEG decoding),
network (:func:`dycl.embed.extract_embeddings`), search (cosine GEMM +
top-k ranking in the Rust core) and estimate (weighted positions, errors).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _write_map(path: Path, side: int) -> None:
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(0)
    # smooth-ish colours (blocks of 8 px) so that JPEG crops are realistic to decode
    small = rng.integers(0, 255, (3, side // 8 + 1, side // 8 + 1), dtype=np.uint8)
    data = np.repeat(np.repeat(small, 8, axis=1), 8, axis=2)[:, :side, :side]
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32619", "transform": Affine(1.0, 0.0, 330_000.0, 0.0, -1.0, 4_693_000.0),
               "tiled": True, "compress": "deflate"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.ascontiguousarray(data))


def _write_photos(folder: Path, tif: Path, count: int) -> None:
    import rasterio
    from PIL import Image
    from pyproj import Transformer

    from dycl.data.exif import gps_exif

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    with rasterio.open(tif) as src:
        image = np.moveaxis(src.read(), 0, 2)
        to_wgs84 = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True)
        for i in range(count):
            col, row = (int(v) for v in rng.integers(0, src.width - 64, 2))
            x, y = src.transform @ (col + 32, row + 32)
            lon, lat = to_wgs84.transform(x, y)
            crop = Image.fromarray(image[row:row + 64, col:col + 64])
            crop.save(folder / f"photo_{i:04d}.jpg", "JPEG", quality=92, exif=gps_exif(lat, lon))


def _localizer(checkpoint: str | None):
    import torch

    from dycl.localize import Localizer
    from dycl.models import build_model
    from dycl.models.deploy import model_fingerprint

    if checkpoint:
        return Localizer.from_checkpoint(checkpoint, device="cpu", batch_size=64, progress=False)
    torch.manual_seed(0)
    model = build_model("resnet18", embedding_dim=128, pretrained=False).eval()
    return Localizer(model, 64, model_fingerprint(model, 64), "resnet18, 128-d, 64 px (random weights)",
                     device="cpu", batch_size=64, progress=False)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="a dycl-train last.pt (default: the demo's network, random weights)")
    p.add_argument("--tiles-per-side", type=int, default=100)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tif = root / "map.tif"
        _write_map(tif, 40 + 10 * (args.tiles_per_side - 1))
        _write_photos(root / "photos", tif, args.queries)
        loc = _localizer(args.checkpoint)
        start = time.perf_counter()
        index = loc.index_geotiff(tif, tile_m=40.0, stride_m=10.0)
        index_wall = time.perf_counter() - start
        indexing = dict(loc.seconds)
        loc.seconds = {k: 0.0 for k in loc.seconds}
        start = time.perf_counter()
        found = loc.locate([root / "photos"], top_k=10)
        locate_wall = time.perf_counter() - start
        querying = dict(loc.seconds)
    network = indexing["network"] + querying["network"]
    figures = {
        "model": loc.description, "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "tiles": len(index), "queries": len(found),
        "index": {"wall_s": index_wall, **indexing}, "localize": {"wall_s": locate_wall, **querying},
        "network_s": network, "search_s": querying["search"], "estimate_s": querying["estimate"],
        "search_share_of_network": querying["search"] / network,
        "search_and_estimate_share_of_network": (querying["search"] + querying["estimate"]) / network,
    }
    print(f"model: {loc.description}; {torch.get_num_threads()} torch threads")
    print(f"index {len(index)} tiles: {index_wall:.1f} s (reading {indexing['reading']:.1f} s, network "
          f"{indexing['network']:.1f} s)")
    print(f"localize {len(found)} photos: {locate_wall:.1f} s (reading {querying['reading']:.1f} s, network "
          f"{querying['network']:.1f} s, search {querying['search']:.3f} s, "
          f"estimate {querying['estimate']:.3f} s)")
    print(f"search / network time: {100 * figures['search_share_of_network']:.2f} % "
          f"(search + estimate: {100 * figures['search_and_estimate_share_of_network']:.2f} %)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["search_share_of_network"] < 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
