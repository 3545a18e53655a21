"""``dycl-data synth|stats|show`` (the engine: :mod:`dycl.data`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .common import run_cli


def _data_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dycl-data", description="Datasets: render the synthetic campus, inspect a dataset folder.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{synth,stats,show}")

    synth = sub.add_parser("synth", help="render a synthetic campus dataset in the DA-Campus layout")
    synth.add_argument("out", help="output folder (new, empty, or an unfinished run of the same parameters)")
    synth.add_argument("--train-buildings", type=int, default=120, help="training buildings (default 120)")
    synth.add_argument("--test-buildings", type=int, default=60, help="test buildings (default 60)")
    synth.add_argument("--drone-views", type=int, default=24, help="drone views per building (default 24)")
    synth.add_argument("--image-size", type=int, default=128, help="image side in pixels (default 128)")
    synth.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    synth.add_argument("--workers", type=int, default=None, help="rendering processes (default: all CPUs)")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")

    stats = sub.add_parser("stats", help="buildings, images, levels, neighbours and Eq. 6 ks of a dataset")
    stats.add_argument("root", help="dataset folder (DA-Campus layout)")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a report")
    stats.add_argument("--thresholds", type=float, nargs="+", default=[200.0, 500.0], metavar="M",
                       help="level thresholds in metres (default 200 500)")
    stats.add_argument("--appearance", action="store_true",
                       help="also measure DESIGN §9 (colour-histogram similarity by level, drone vs tile)")

    show = sub.add_parser("show", help="contact sheet of one building: satellite tile + drone views")
    show.add_argument("root", help="dataset folder (DA-Campus layout)")
    show.add_argument("--building", required=True, help="building id (class_id)")
    show.add_argument("--out", required=True, help="PNG file to write")
    return parser


def _data_run(args: argparse.Namespace) -> int:
    import json

    if args.command == "synth":
        from ..data.synth import generate_campus

        out = generate_campus(args.out, args.train_buildings, args.test_buildings, args.drone_views,
                              args.image_size, args.seed, args.workers, progress=not args.quiet)
        images = (args.train_buildings + args.test_buildings) * (1 + args.drone_views)
        print(f"wrote {out}: {args.train_buildings} train + {args.test_buildings} test buildings, "
              f"{images} images of {args.image_size} px")
        return 0
    if args.command == "stats":
        from ..data.stats import dataset_stats, format_stats

        stats = dataset_stats(args.root, args.thresholds, appearance=args.appearance)
        print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
        return 0
    from ..data.stats import contact_sheet, find_building

    split = find_building(args.root, args.building)
    print(f"wrote {contact_sheet(split, args.building, args.out)}")
    return 0


def data_main(argv: Sequence[str] | None = None) -> int:
    """``dycl-data synth|stats|show`` (see ``dycl-data -h``)."""
    return run_cli("dycl-data", _data_parser, _data_run, argv)
