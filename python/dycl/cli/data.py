"""``dycl-data synth|shapes|stats|show`` (the engine: :mod:`dycl.data`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .common import run_cli


def _data_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dycl-data", description="Datasets: render the synthetic campus, inspect a dataset folder.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{synth,shapes,stats,show}")

    synth = sub.add_parser("synth", help="render a synthetic campus dataset in the DA-Campus layout")
    synth.add_argument("out", help="output folder (new, empty, or an unfinished run of the same parameters)")
    synth.add_argument("--train-buildings", type=int, default=120, help="training buildings (default 120)")
    synth.add_argument("--test-buildings", type=int, default=60, help="test buildings (default 60)")
    synth.add_argument("--drone-views", type=int, default=24, help="drone views per building (default 24)")
    synth.add_argument("--image-size", type=int, default=128, help="image side in pixels (default 128)")
    synth.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    synth.add_argument("--workers", type=int, default=None, help="rendering processes (default: all CPUs)")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")

    shapes = sub.add_parser(
        "shapes", help="write the synthetic hierarchical set (shape family > colour > pattern)",
        description="Tiny deterministic images for single-domain hierarchical retrieval (Table IV's "
                    "setting): 36 fine classes (3 families x 3 colours x 4 patterns). Writes "
                    "OUT/images/*.png and OUT/shapes.csv (path,label_path,split), read by "
                    "dycl.data.hierarchy.read_hierarchy_manifest.")
    shapes.add_argument("out", help="output folder")
    shapes.add_argument("--images-per-class", type=int, default=4, help="images per fine class (default 4)")
    shapes.add_argument("--test-per-class", type=int, default=2,
                        help="of those, how many go to the test split (default 2)")
    shapes.add_argument("--image-size", type=int, default=32, help="image side in pixels (default 32)")
    shapes.add_argument("--seed", type=int, default=0, help="seed (default 0)")

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
    if args.command == "shapes":
        from ..data.shapes import write_shapes

        manifest = write_shapes(args.out, args.images_per_class, args.image_size, args.seed,
                                args.test_per_class)
        print(f"wrote {manifest}: 36 classes x {args.images_per_class} images of {args.image_size} px")
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
    """``dycl-data synth|shapes|stats|show`` (see ``dycl-data -h``)."""
    return run_cli("dycl-data", _data_parser, _data_run, argv)
