"""``dycl-index``, ``dycl-localize`` and ``dycl-export`` (the engines: :mod:`dycl.localize`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .common import flag_errors, run_cli

_INDEX_EPILOG = """\
examples:
  dycl-index --checkpoint runs/dycl/last.pt --geotiff orthophoto.tif --out map.dyclidx
  dycl-index --model model.onnx --geotiff a.tif b.tif --tile-m 160 --stride-m 40 --out map.dyclidx
  dycl-index --checkpoint last.pt --tiles tiles.csv --out map.dyclidx        # CSV: path,latitude,longitude
  dycl-index --checkpoint last.pt --data-dir DA-Campus --split test --out campus.dyclidx

A GeoTIFF may be in any CRS; tiles of --tile-m metres on the ground are cut every
--stride-m metres (defaults: the synthetic campus's training tiles, 160 m, and a
quarter of that). The index remembers the model: dycl-localize refuses it with
another one.
"""

_LOCALIZE_EPILOG = """\
examples:
  dycl-localize --demo                                  # synthetic campus, offline (trains the demo model)
  dycl-localize --index map.dyclidx --checkpoint runs/dycl/last.pt photos/ --out results/
  dycl-localize --index map.dyclidx --model model.onnx img1.jpg img2.jpg --truth truth.csv --out results/

Writes results.csv, topk.csv, results.geojson (RFC 7946: lon/lat), summary.json and
map.png into --out. The true position of a photo comes from its GPS EXIF
(--truth auto, the default, or exif) or from a CSV path,latitude,longitude.
"""


def _model_options(p: argparse.ArgumentParser, required: bool) -> None:
    which = p.add_argument_group("model (one of)").add_mutually_exclusive_group(required=required)
    which.add_argument(
        "--checkpoint", metavar="CKPT", help="a dycl-train last.pt (or the authors' net_state)"
    )
    which.add_argument(
        "--model", metavar="ONNX", help="an ONNX embedding model (dycl-export), run by ONNX Runtime"
    )
    g = p.add_argument_group("running the model")
    g.add_argument(
        "--backbone", metavar="NAME", help="backbone of a plain state dict (default: the checkpoint's)"
    )
    g.add_argument("--image-size", type=int, metavar="PX", help="input size (default: the model's)")
    g.add_argument(
        "--batch-size", type=int, default=64, metavar="IMAGES", help="images per forward pass (64)"
    )
    g.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA when available"
    )
    g.add_argument("--no-amp", dest="amp", action="store_false", help="no mixed precision on CUDA")
    g.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow a checkpoint that pickles Python objects (unpickling can run code)",
    )
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    g.add_argument("--overwrite", action="store_true", help="replace existing output files")


def _build_index_parser() -> argparse.ArgumentParser:
    from ..data.geotiff import DEFAULT_MIN_VALID, DEFAULT_STRIDE_M, DEFAULT_TILE_M

    p = argparse.ArgumentParser(
        prog="dycl-index",
        epilog=_INDEX_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Embed a satellite map (GeoTIFF, tile folder or dataset split) "
        "into a .dyclidx index for dycl-localize.",
    )
    _model_options(p, required=True)
    src = p.add_argument_group("the map (one of)").add_mutually_exclusive_group(required=True)
    src.add_argument("--geotiff", nargs="+", metavar="TIF", help="georeferenced orthophoto(s), any CRS")
    src.add_argument("--tiles", metavar="CSV", help="a CSV path,latitude,longitude of tile images")
    src.add_argument("--data-dir", metavar="PATH", help="a DA-Campus folder or manifest: its satellite view")
    g = p.add_argument_group("tiles")
    g.add_argument("--split", default="test", help="with --data-dir: the split (default test)")
    g.add_argument("--dataset-format", choices=("auto", "dacampus", "manifest"), default="auto")
    g.add_argument(
        "--tile-m",
        type=float,
        default=DEFAULT_TILE_M,
        metavar="M",
        help=f"tile side on the ground in metres (default {DEFAULT_TILE_M:g}; nominal for --tiles)",
    )
    g.add_argument(
        "--stride-m",
        type=float,
        default=DEFAULT_STRIDE_M,
        metavar="M",
        help=f"distance between tiles in metres (default {DEFAULT_STRIDE_M:g})",
    )
    g.add_argument(
        "--min-valid",
        type=float,
        default=DEFAULT_MIN_VALID,
        metavar="SHARE",
        help=f"keep tiles with at least this share of valid pixels (default {DEFAULT_MIN_VALID:g})",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="the index file to write (.dyclidx)")
    return p


def _fields(options: type) -> tuple[str, ...]:
    """The option names of an engine's options dataclass: the names its errors may start with."""
    import dataclasses

    return tuple(f.name for f in dataclasses.fields(options))


def _run_index(args: argparse.Namespace) -> int:
    from ..localize.run import IndexOptions, run_index

    with flag_errors(known=_fields(IndexOptions)):
        options = IndexOptions(
            checkpoint=args.checkpoint,
            model=args.model,
            backbone=args.backbone,
            image_size=args.image_size,
            batch_size=args.batch_size,
            device=args.device,
            amp=args.amp,
            trust_checkpoint=args.trust_checkpoint,
            progress=args.progress,
            out=args.out,
            geotiff=args.geotiff or (),
            tiles=args.tiles,
            data_dir=args.data_dir,
            split=args.split,
            dataset_format=args.dataset_format,
            tile_m=args.tile_m,
            stride_m=args.stride_m,
            min_valid=args.min_valid,
            overwrite=args.overwrite,
        )
        run_index(options)
    return 0


def _build_localize_parser() -> argparse.ArgumentParser:
    from ..localize.estimate import (
        DEFAULT_METHOD,
        DEFAULT_RADIUS_M,
        DEFAULT_TEMPERATURE,
        DEFAULT_TOP_K,
        METHODS,
    )

    p = argparse.ArgumentParser(
        prog="dycl-localize",
        epilog=_LOCALIZE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Where were these drone photos taken? Positions (and errors in "
        "metres when the truth is known) on an indexed satellite map.",
    )
    p.add_argument("images", nargs="*", metavar="IMAGES_OR_FOLDERS", help="photos, or folders of photos")
    p.add_argument(
        "--demo",
        action="store_true",
        help="the whole job on the synthetic campus (offline; trains the demo model if needed)",
    )
    p.add_argument("--index", metavar="FILE", help="a .dyclidx file made by dycl-index")
    _model_options(p, required=False)
    g = p.add_argument_group("estimate")
    g.add_argument(
        "--top-k",
        type=int,
        default=DEFAULT_TOP_K,
        metavar="K",
        help=f"tiles kept per photo (default {DEFAULT_TOP_K})",
    )
    g.add_argument(
        "--estimate",
        choices=METHODS,
        default=DEFAULT_METHOD,
        help=f"weighted: similarity-weighted mean of the top-k centres within --radius-m of the best "
        f"tile; top1: the best tile's centre (default {DEFAULT_METHOD}, measured better)",
    )
    g.add_argument(
        "--radius-m",
        type=float,
        default=DEFAULT_RADIUS_M,
        metavar="M",
        help=f"weighted: tiles farther than this from the best one are left out ({DEFAULT_RADIUS_M:g})",
    )
    g.add_argument(
        "--temperature",
        type=float,
        default=DEFAULT_TEMPERATURE,
        metavar="T",
        help=f"weighted: weights exp((s - s_best) / T) (default {DEFAULT_TEMPERATURE:g})",
    )
    g.add_argument(
        "--truth",
        default="auto",
        metavar="auto|exif|none|CSV",
        help="true positions: GPS EXIF where present (auto), EXIF asked for (exif: warn per photo "
        "without), none, or a CSV path,latitude,longitude",
    )
    p.add_argument("--no-map", dest="draw_map", action="store_false", help="do not draw map.png")
    p.add_argument("--out", metavar="DIR", help="folder for the results (--demo: dycl-demo/localize)")
    return p


def _run_localize(args: argparse.Namespace) -> int:
    from ..localize.run import LocalizeOptions, run_localize

    if args.demo:
        from ..localize.demo import run_demo

        with flag_errors(known=("out",)):
            run_demo(args.out, progress=args.progress)
        return 0
    with flag_errors({"method": "--estimate", "images": "IMAGES_OR_FOLDERS"}, known=_fields(LocalizeOptions)):
        options = LocalizeOptions(
            checkpoint=args.checkpoint,
            model=args.model,
            backbone=args.backbone,
            image_size=args.image_size,
            batch_size=args.batch_size,
            device=args.device,
            amp=args.amp,
            trust_checkpoint=args.trust_checkpoint,
            progress=args.progress,
            index=args.index or "",
            images=args.images,
            out=args.out or "",
            top_k=args.top_k,
            method=args.estimate,
            radius_m=args.radius_m,
            temperature=args.temperature,
            truth=args.truth,
            draw_map=args.draw_map,
            overwrite=args.overwrite,
        )
        run_localize(options)
    return 0


def _build_export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dycl-export",
        description="Export a checkpoint's network to ONNX (opset 18, dynamic batch axis) "
        "for ONNX Runtime; the result is checked against torch.",
    )
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="a dycl-train last.pt")
    p.add_argument("--onnx", required=True, metavar="FILE", help="the .onnx file to write")
    p.add_argument(
        "--backbone", metavar="NAME", help="backbone of a plain state dict (default: the checkpoint's)"
    )
    p.add_argument("--image-size", type=int, metavar="PX", help="input size (default: the checkpoint's)")
    p.add_argument("--trust-checkpoint", action="store_true", help="allow a checkpoint that pickles objects")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --onnx file")
    return p


def _run_export(args: argparse.Namespace) -> int:
    from ..localize.run import run_export

    with flag_errors(known=("checkpoint", "onnx", "image_size", "backbone", "overwrite")):
        run_export(
            args.checkpoint,
            args.onnx,
            image_size=args.image_size,
            backbone=args.backbone,
            trusted=args.trust_checkpoint,
            overwrite=args.overwrite,
        )
    return 0


def index_main(argv: Sequence[str] | None = None) -> int:
    """``dycl-index``: see ``dycl-index --help`` and :mod:`dycl.localize.run`."""
    return run_cli("dycl-index", _build_index_parser, _run_index, argv)


def localize_main(argv: Sequence[str] | None = None) -> int:
    """``dycl-localize``: see ``dycl-localize --help`` and :mod:`dycl.localize`."""
    return run_cli("dycl-localize", _build_localize_parser, _run_localize, argv)


def export_main(argv: Sequence[str] | None = None) -> int:
    """``dycl-export``: see ``dycl-export --help`` and :func:`dycl.localize.run.run_export`."""
    return run_cli("dycl-export", _build_export_parser, _run_export, argv)
