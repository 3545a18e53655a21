"""Console entry points: ``dycl-data``, ``dycl-train``, ``dycl-eval``, ``dycl-experiment``.

Each command builds its ``argparse`` parser here and hands the parsed
arguments to its engine (:mod:`dycl.data`, :mod:`dycl.train`,
:mod:`dycl.evaluate`, :mod:`dycl.experiment`). :func:`run_cli` gives every
command the same behaviour on bad input: a one-line ``error: ...`` on stderr
and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def run_cli(
    prog: str,
    build_parser: Callable[[], argparse.ArgumentParser],
    run: Callable[[argparse.Namespace], int | None],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse ``argv``, call ``run`` and map expected failures to exit code 2.

    ``ValueError``, ``FileNotFoundError`` and :class:`CLIError` are the
    expected failures of bad input; they print ``prog: error: message``.
    ``KeyboardInterrupt`` exits with 130. Anything else is a bug and keeps its
    traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = run(args)
    except (CLIError, ValueError, FileNotFoundError, NotADirectoryError, FileExistsError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


# --------------------------------------------------------------------------- dycl-data
# (owned by the data layer: python/dycl/data/)


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
        from .data.synth import generate_campus

        out = generate_campus(args.out, args.train_buildings, args.test_buildings, args.drone_views,
                              args.image_size, args.seed, args.workers, progress=not args.quiet)
        images = (args.train_buildings + args.test_buildings) * (1 + args.drone_views)
        print(f"wrote {out}: {args.train_buildings} train + {args.test_buildings} test buildings, "
              f"{images} images of {args.image_size} px")
        return 0
    if args.command == "stats":
        from .data.stats import dataset_stats, format_stats

        stats = dataset_stats(args.root, args.thresholds, appearance=args.appearance)
        print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
        return 0
    from .data.stats import contact_sheet, find_building

    split = find_building(args.root, args.building)
    print(f"wrote {contact_sheet(split, args.building, args.out)}")
    return 0


def data_main(argv: Sequence[str] | None = None) -> int:
    """``dycl-data synth|stats|show`` (see ``dycl-data -h``)."""
    return run_cli("dycl-data", _data_parser, _data_run, argv)


# --------------------------------------------------------------------------- dycl-train
# (owned by the training engine: python/dycl/train.py)


_TRAIN_EPILOG = """\
examples:
  dycl-train --demo                                   # synthetic campus, small CPU run, prints the tables
  dycl-train --data-dir DA-Campus --output runs/dycl  # the paper's recipe (ResNet-50, 20 epochs, batch 128)
  dycl-train --output runs/dycl --resume              # continue an interrupted run from runs/dycl/last.pt
  torchrun --nproc-per-node 4 -m dycl.train --data-dir DA-Campus --output runs/ddp

Writes into --output: config.json, last.pt (after every epoch), metrics.json and
embeddings/*.npz (final evaluation of satellite->drone and drone->satellite),
log.jsonl and tensorboard/. Options not given keep the paper's defaults (or, with
--demo, the demo's); with --resume they come from the checkpoint, and options that
change the experiment must then match it.
"""


def _build_train_parser() -> argparse.ArgumentParser:
    from .losses import PAPER_LOSS

    p = argparse.ArgumentParser(
        prog="dycl-train",
        description="Train the DyCL embedding network (DESIGN §6) and evaluate both retrieval tasks.",
        epilog=_TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=None,  # None = "not given": defaults are resolved by dycl.train
    )
    data = p.add_argument_group("data")
    data.add_argument("--data-dir", metavar="PATH",
                      help="dataset: a folder in the DA-Campus layout, or a manifest CSV file")
    data.add_argument("--dataset-format", choices=("auto", "dacampus", "manifest"),
                      help="how to read --data-dir (default auto: a folder is DA-Campus, a file a manifest)")
    data.add_argument("--demo", action="store_true", default=None,
                      help="generate the synthetic campus into $DYCL_CACHE (default ~/.cache/dycl) if needed "
                           "and train a small configuration that runs in minutes on a CPU "
                           "(ResNet-18 from scratch, 96 px, 4 epochs; output defaults to ./dycl-demo)")
    data.add_argument("--sampler", choices=("random", "geo"),
                      help="batch composition: random pairs, or geo (nearby buildings together) "
                           "(default random)")
    data.add_argument("--thresholds", type=float, nargs="+", metavar="M",
                      help="level thresholds in metres, ascending (default 200 500: 3 positive levels)")
    data.add_argument("--rotation", choices=("quarter", "any", "none"),
                      help="random rotation of satellite tiles: multiples of 90 degrees, any angle, or "
                           "none (default quarter)")

    model = p.add_argument_group("model")
    model.add_argument("--backbone", help="resnet50 (default), resnet18, resnet34, vit_small_patch14_dinov2 "
                                          "or vit_base_patch14_dinov2")
    model.add_argument("--embedding-dim", type=int, metavar="D", help="embedding size (default 512)")
    model.add_argument("--image-size", type=int, metavar="PX", help="input size in pixels (default 256)")
    model.add_argument("--no-pretrained", dest="pretrained", action="store_false", default=None,
                       help="random initialisation instead of ImageNet (ResNet) / DINOv2 (ViT) weights")
    model.add_argument("--weights", metavar="FILE",
                       help="initial weights from a local file: backbone-only (torchvision/timm) or a full "
                            "checkpoint (a last.pt, the authors' net_state); nothing is downloaded")
    model.add_argument("--trust-checkpoint", action="store_true", default=None,
                       help="allow a --weights file that pickles Python objects (unpickling can run code)")

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--loss", metavar="SPEC",
                     help=f"weighted losses, e.g. {PAPER_LOSS} (the default); names: dycl, cluster, happier, "
                          "infonce, triplet, contrastive, multisimilarity, normsoftmax, sigmatriplet")
    opt.add_argument("--epochs", type=int, help="training epochs (default 20)")
    opt.add_argument("--batch-size", type=int, metavar="PAIRS",
                     help="global batch in satellite-drone pairs, over all processes (default 128)")
    opt.add_argument("--lr", type=float,
                     help="Adam learning rate of the backbone (default 5e-5), cosine schedule")
    opt.add_argument("--head-lr", type=float, help="learning rate of the embedding head (default 2 x --lr)")
    opt.add_argument("--weight-decay", type=float, help="Adam weight decay (default 1e-4)")
    opt.add_argument("--proxy-lr", type=float,
                     help="Adam learning rate of the building proxies (default 10, cosine to --proxy-lr-min)")
    opt.add_argument("--proxy-lr-min", type=float, help="final proxy learning rate (default 0.1)")
    opt.add_argument("--seed", type=int, help="seed of initialisation, batches and augmentations (default 0)")
    opt.add_argument("--max-steps-per-epoch", type=int, metavar="N",
                     help="cap the steps of every epoch (quick runs; default: the whole training set)")

    run = p.add_argument_group("run")
    run.add_argument("--output", metavar="DIR", help="run folder (required unless --demo)")
    run.add_argument("--resume", action="store_true", default=False,
                     help="continue the run in --output from its last.pt")
    run.add_argument("--overwrite", action="store_true", default=False,
                     help="replace the run files in a non-empty --output")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"),
                     help="auto (default): CUDA when available; under torchrun each process uses "
                          "cuda:LOCAL_RANK")
    run.add_argument("--no-amp", dest="amp", action="store_false", default=None,
                     help="no mixed precision on CUDA (default: bf16 where supported, else fp16 with "
                          "loss scaling)")
    run.add_argument("--workers", type=int, help="DataLoader worker processes (default min(8, CPU count))")
    run.add_argument("--eval-every", type=int, metavar="N",
                     help="also evaluate after every N epochs (default 0: only after the last epoch)")
    run.add_argument("--eval-batch-size", type=int, metavar="IMAGES",
                     help="images per forward pass when embedding the test split (default 2 x --batch-size)")
    run.add_argument("--stop-after-epoch", type=int, metavar="N",
                     help="stop once N epochs are done (e.g. to fit a job time limit); continue with "
                          "--resume")
    run.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                     help="no progress bars")
    return p


def _run_train(args: argparse.Namespace) -> int:
    from .train import CONFIG_FIELDS, run_training

    options = {k: v for k, v in vars(args).items() if v is not None and k not in ("resume", "overwrite")}
    try:
        run_training(options, resume=args.resume, overwrite=args.overwrite)
    except ValueError as exc:
        # The engine names options by their field name ("batch_size: ..."); say the flag instead.
        name, sep, rest = str(exc).partition(":")
        if sep and (name in CONFIG_FIELDS or name in ("resume", "overwrite")):
            raise CLIError(f"--{name.replace('_', '-')}:{rest}") from exc
        raise
    return 0


def train_main(argv: Sequence[str] | None = None) -> int:
    """``dycl-train``: see ``dycl-train --help`` and :mod:`dycl.train`."""
    return run_cli("dycl-train", _build_train_parser, _run_train, argv)


# --------------------------------------------------------------------------- dycl-eval
# (owned by the evaluation engine: python/dycl/evaluate.py)


def eval_main(argv: Sequence[str] | None = None) -> int:
    raise SystemExit("dycl-eval: not implemented yet")


# --------------------------------------------------------------------------- dycl-experiment
# (owned by the experiment suite: python/dycl/experiment.py)


def experiment_main(argv: Sequence[str] | None = None) -> int:
    raise SystemExit("dycl-experiment: not implemented yet")
