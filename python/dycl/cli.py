"""Console entry points: ``dycl-data``, ``dycl-train``, ``dycl-eval``, ``dycl-experiment``.

Each command builds its ``argparse`` parser here and hands the parsed
arguments to its engine (:mod:`dycl.data`, :mod:`dycl.train`,
:mod:`dycl.evaluate`, :mod:`dycl.experiment`). :func:`run_cli` gives every
command the same behaviour on bad input: a one-line ``error: ...`` on stderr
and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


@contextlib.contextmanager
def _flag_errors(flags: dict[str, str] | None = None, known: Iterable[str] | None = None) -> Iterator[None]:
    """Say the command-line flag where an engine's ``ValueError`` names its argument.

    The engines own their checks and name arguments as the Python API does
    (``"lambda_value: must be in [0, 1], got 2.0"``); the command line only
    translates the name (``"--lambda: must be in [0, 1], got 2.0"``). ``flags``
    maps names whose flag differs; names in ``known`` become ``--name-with-dashes``.
    """
    flags = flags or {}
    try:
        yield
    except ValueError as exc:
        name, sep, rest = str(exc).partition(":")
        if sep and name in flags:
            raise CLIError(f"{flags[name]}:{rest}") from exc
        if sep and known is not None and name in known:
            raise CLIError(f"--{name.replace('_', '-')}:{rest}") from exc
        if sep and known is None and name.isidentifier():
            raise CLIError(f"--{name.replace('_', '-')}:{rest}") from exc
        raise


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
# (owned by the training engine: python/dycl/train/)


_TRAIN_EPILOG = """\
examples:
  dycl-train --demo                                   # synthetic campus, small CPU run, prints the tables
  dycl-train --data-dir DA-Campus --output runs/dycl  # the paper's recipe (ResNet-50, 20 epochs, batch 128)
  dycl-train --output runs/dycl --resume              # continue an interrupted run from runs/dycl/last.pt
  torchrun --nproc-per-node 4 -m dycl train --data-dir DA-Campus --output runs/ddp

Writes into --output: config.json, last.pt (after every epoch), metrics.json and
embeddings/*.npz (final evaluation of satellite->drone and drone->satellite),
log.jsonl and tensorboard/. Options not given keep the paper's defaults (or, with
--demo, the demo's); with --resume they come from the checkpoint, and options that
change the experiment must then match it.
"""


def _json_object(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


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
                           "(ResNet-18 from scratch, 64 px, 2 epochs; output defaults to ./dycl-demo)")
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
    model.add_argument("--train-batchnorm", dest="freeze_batchnorm", action="store_false", default=None,
                       help="update BatchNorm statistics and affine parameters during training "
                            "(default: frozen, as in the paper)")
    model.add_argument("--trust-checkpoint", action="store_true", default=None,
                       help="allow a --weights file that pickles Python objects (unpickling can run code)")

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--loss", metavar="SPEC",
                     help=f"weighted losses, e.g. {PAPER_LOSS} (the default); names: dycl, cluster, happier, "
                          "infonce, triplet, contrastive, multisimilarity, normsoftmax, sigmatriplet")
    opt.add_argument("--loss-options", type=_json_object, metavar="JSON",
                     help='per-loss options as JSON, e.g. \'{"dycl": {"scales": [1]}}\' (DyCL at the middle '
                          'scale only) or \'{"infonce": {"temperature": 0.1}}\'')
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
    with _flag_errors(known=(*CONFIG_FIELDS, "resume", "overwrite")):
        run_training(options, resume=args.resume, overwrite=args.overwrite)
    return 0


def train_main(argv: Sequence[str] | None = None) -> int:
    """``dycl-train``: see ``dycl-train --help`` and :mod:`dycl.train`."""
    return run_cli("dycl-train", _build_train_parser, _run_train, argv)


# --------------------------------------------------------------------------- dycl-eval
# (owned by the evaluation engine: python/dycl/evaluate.py)


_EVAL_EPILOG = """\
examples:
  dycl-eval --checkpoint runs/dycl/last.pt --data-dir DA-Campus --output runs/dycl/eval/metrics.json
  dycl-eval --checkpoint net.pth --data-dir DA-Campus --rerank msrerank   # the authors' net_state file
  dycl-eval --embeddings runs/dycl/embeddings --rerank msrerank --ks 20,62,292 --output rerank/metrics.json
  dycl-eval --embeddings other_model.npz --thresholds 200 500 --plots figures/
  dycl-eval --compare runs/a/metrics.json runs/b/metrics.json --labels A B --out map_by_scale.png

With --checkpoint, both tasks (satellite->drone, drone->satellite) of the --split
(default test) of --data-dir are scored and, with --output x/metrics.json, the
embeddings are saved in x/metrics.embeddings/ (or --save-embeddings DIR), so
that other re-ranking options can be scored with --embeddings, without the
network; two evaluations into one folder never share it. --output
metrics.json also writes metrics.md and metrics.csv.
"""


def _ks_option(text: str) -> tuple[int, ...] | None:
    if text == "auto":
        return None
    try:
        ks = tuple(int(k) for k in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto' or comma-separated integers, got {text!r}") from None
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError(f"ks must be positive integers, got {text!r}")
    return ks


def _build_eval_parser() -> argparse.ArgumentParser:
    from .rerank import VARIANTS
    from .tasks import RERANK_METHODS  # no torch import: scoring embeddings files does not need it

    p = argparse.ArgumentParser(
        prog="dycl-eval",
        description="Score a checkpoint or saved embeddings on the distance-aware retrieval tasks "
                    "(H-AP, ASI, NDCG, mAP/R@K per scale), with optional re-ranking, tables and figures.",
        epilog=_EVAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_argument_group("what to score (one of)")
    which = source.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", metavar="CKPT",
                       help="a dycl-train last.pt, or the authors' released net_state file (with --data-dir)")
    which.add_argument("--embeddings", metavar="NPZ",
                       help="a DESIGN §7 .npz (query, gallery, query_ids, gallery_ids, levels or coords), or "
                            "a folder with satellite_to_drone.npz / drone_to_satellite.npz")
    which.add_argument("--compare", metavar="JSON", nargs="+",
                       help="metrics files to compare in per-scale mAP bars (with --out PNG or --plots DIR)")

    data = p.add_argument_group("data and model")
    data.add_argument("--data-dir", metavar="PATH",
                      help="dataset (DA-Campus folder or manifest CSV): the images for --checkpoint; with "
                           "--embeddings optional (Eq. 6 ks from its training split, images in figures)")
    data.add_argument("--dataset-format", choices=("auto", "dacampus", "manifest"), default="auto",
                      help="how to read --data-dir (default auto)")
    data.add_argument("--split", default="test", help="the evaluated split of --data-dir (default test)")
    data.add_argument("--thresholds", type=float, nargs="+", metavar="M",
                      help="level thresholds in metres (default: the checkpoint's, the file's, else 200 500)")
    data.add_argument("--backbone", metavar="NAME",
                      help="backbone of the checkpoint, as in dycl-train (default: our checkpoint's config, "
                           "else resnet50)")
    data.add_argument("--image-size", type=int, metavar="PX",
                      help="input size (default: the checkpoint's config, else 256)")
    data.add_argument("--batch-size", type=int, metavar="IMAGES",
                      help="images per forward pass (default: the training run's eval batch, else 128)")
    data.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                      help="auto (default): CUDA when available")
    data.add_argument("--workers", type=int, metavar="N",
                      help="DataLoader worker processes (default min(8, CPU count))")
    data.add_argument("--no-amp", dest="amp", action="store_false", help="no mixed precision on CUDA")
    data.add_argument("--trust-checkpoint", action="store_true",
                      help="allow a checkpoint that pickles Python objects (unpickling can run code)")

    rr = p.add_argument_group("re-ranking")
    rr.add_argument("--rerank", choices=RERANK_METHODS, default="none", help="default none")
    rr.add_argument("--msrerank-variant", choices=VARIANTS, default="paper",
                    help="paper (Algorithm 1, default) or reference (the authors' released code)")
    rr.add_argument("--ks", type=_ks_option, default=None, metavar="auto|K0,K1,...",
                    help="MSRerank neighbourhood per scale; auto (default) = Eq. 6 from the training split "
                         "of --data-dir, else from the gallery")
    rr.add_argument("--k1", type=int, default=20, metavar="K", help="k-reciprocal neighbourhood (default 20)")
    rr.add_argument("--k2", type=int, default=6, metavar="K", help="query expansion size (default 6)")
    rr.add_argument("--lambda", dest="lambda_value", type=float, default=0.3, metavar="L",
                    help="weight of the original distance (default 0.3)")

    out = p.add_argument_group("output")
    out.add_argument("--recall-at", type=int, nargs="+", default=[1, 5, 10], metavar="K",
                     help="the K of Recall@K (default 1 5 10)")
    out.add_argument("--output", metavar="JSON", help="metrics file (+ .md and .csv next to it)")
    out.add_argument("--save-embeddings", metavar="DIR",
                     help="with --checkpoint: where to save the embeddings (default: next to --output, named "
                          "after it: metrics.json -> metrics.embeddings/)")
    out.add_argument("--overwrite", action="store_true", help="replace existing result files")
    out.add_argument("--plots", metavar="DIR", help="write the PNG figures into DIR")
    out.add_argument("--out", metavar="PNG", help="with --compare: the bar chart file")
    out.add_argument("--labels", nargs="+", metavar="NAME", help="with --compare: one label per file")
    out.add_argument("--metric", choices=("mAP", "R@1"), default="mAP",
                     help="with --compare: the per-scale metric (default mAP)")
    out.add_argument("--plot-queries", type=int, default=4, metavar="N",
                     help="queries in the ranked-list figures (default 4)")
    out.add_argument("--plot-top-k", type=int, default=10, metavar="K",
                     help="results per query in the ranked-list figures (default 10)")
    out.add_argument("--map-building", metavar="ID",
                     help="the building at the centre of the map (default: the one with most neighbours)")
    out.add_argument("--shift-ks", type=_ks_option, default=None, metavar="K,K,...",
                     help="k values of the rank-shift figure (default 20,62,292)")
    out.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return p


#: dycl-eval flags whose names differ from the engine's argument names (the others: ``_`` -> ``-``).
_EVAL_FLAGS = {"lambda_value": "--lambda", "variant": "--msrerank-variant",
               "msrerank_variant": "--msrerank-variant"}


def _run_eval(args: argparse.Namespace) -> int:
    from .evaluate import EvalOptions, run_compare, run_eval
    from .tasks import RerankConfig

    if args.compare:
        run_compare(args.compare, labels=args.labels, out_png=args.out, plots=args.plots, metric=args.metric)
        return 0
    if args.labels or args.out:
        raise CLIError("--labels/--out: only used with --compare")
    with _flag_errors(_EVAL_FLAGS):
        rerank = RerankConfig(method=args.rerank, variant=args.msrerank_variant, ks=args.ks, k1=args.k1,
                              k2=args.k2, lambda_value=args.lambda_value)
        options = EvalOptions(
            checkpoint=args.checkpoint, embeddings=args.embeddings, data_dir=args.data_dir,
            dataset_format=args.dataset_format, split=args.split, backbone=args.backbone,
            image_size=args.image_size, batch_size=args.batch_size, device=args.device, workers=args.workers,
            amp=args.amp, trust_checkpoint=args.trust_checkpoint, thresholds=args.thresholds, rerank=rerank,
            recall_at=tuple(args.recall_at), output=args.output, save_embeddings=args.save_embeddings,
            overwrite=args.overwrite, plots=args.plots, plot_queries=args.plot_queries,
            plot_top_k=args.plot_top_k, map_building=args.map_building, shift_ks=args.shift_ks,
            progress=args.progress,
        )
    run_eval(options)
    return 0


def eval_main(argv: Sequence[str] | None = None) -> int:
    """``dycl-eval``: see ``dycl-eval --help`` and :mod:`dycl.evaluate`."""
    return run_cli("dycl-eval", _build_eval_parser, _run_eval, argv)


# --------------------------------------------------------------------------- dycl-experiment
# (owned by the experiment suite: python/dycl/experiment/)


_EXPERIMENT_EPILOG = """\
examples:
  dycl-experiment list --suite paper-mini                    # the plan
  dycl-experiment list --suite paper-mini --output runs/     # the plan, each run's state and the ETA
  dycl-experiment run --suite paper-mini --output runs/      # run (or continue) everything, then report
  dycl-experiment report --output runs/ --docs docs/         # tables + figures from what has finished
  dycl-experiment run --suite paper-full --data-dir DA-Campus --output runs-full --device cuda

run is resumable: finished runs are skipped, an interrupted training continues from
its last epoch (dycl-train --resume), missing re-rankings are scored from the saved
embeddings. Everything goes under --output (the synthetic campus in data/, one
folder per run, the report in report/).
"""


def _build_experiment_parser() -> argparse.ArgumentParser:
    from .experiment import SUITES

    p = argparse.ArgumentParser(
        prog="dycl-experiment",
        description="The paper in miniature: run the comparisons of Tables II/III and Fig. 6 as a resumable "
                    "suite of dycl-train runs, score every run with each re-ranking, and write the report.",
        epilog=_EXPERIMENT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{list,run,report}")
    names = ", ".join(SUITES)

    def common(cmd: argparse.ArgumentParser, output_required: bool) -> None:
        cmd.add_argument("--suite", default="paper-mini", metavar="NAME",
                         help=f"the experiment plan: {names} (default paper-mini)")
        cmd.add_argument("--output", required=output_required, metavar="DIR",
                         help="the suite folder (data, runs, report)")
        cmd.add_argument("--data-dir", metavar="PATH",
                         help="a dataset instead of the suite's synthetic campus (required by paper-full)")

    listing = sub.add_parser("list", help="show the plan (and, with --output, each run's state and the ETA)")
    common(listing, output_required=False)
    run = sub.add_parser("run", help="run every unfinished run, score the re-rankings, write the report")
    common(run, output_required=True)
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                     help="training device (default auto: CUDA when available)")
    run.add_argument("--workers", type=int, metavar="N",
                     help="DataLoader workers per run (default: the suite's setting)")
    run.add_argument("--max-runs", type=int, metavar="N",
                     help="train at most N runs in this call, then stop (continue with the same command)")
    run.add_argument("--no-report", dest="report", action="store_false", help="do not regenerate the report")
    run.add_argument("--docs", metavar="DIR",
                     help="also update DIR/results.md (its generated block) and DIR/img/results_*.png")
    report = sub.add_parser("report", help="regenerate the report from the finished runs under --output")
    common(report, output_required=True)
    report.add_argument("--docs", metavar="DIR",
                        help="also update DIR/results.md (its generated block) and DIR/img/results_*.png")
    return p


def _run_experiment(args: argparse.Namespace) -> int:
    from .experiment import format_plan, get_suite, run_suite, suite_states, write_report

    suite = get_suite(args.suite)
    if args.command == "list":
        states = None
        if args.output is not None:
            states = suite_states(suite, args.output, args.data_dir)
        print(format_plan(suite, states, output=args.output))
        return 0
    if args.command == "report":
        written = write_report(suite, args.output, data_dir=args.data_dir, docs=args.docs)
        print(f"wrote {', '.join(str(p) for p in written.values())}")
        return 0
    for flag, value in (("--workers", args.workers), ("--max-runs", args.max_runs)):
        if value is not None and value < 0:
            raise CLIError(f"{flag}: must be >= 0, got {value}")
    states = run_suite(suite, args.output, data_dir=args.data_dir, device=args.device, workers=args.workers,
                       max_runs=args.max_runs, report=args.report, docs=args.docs, progress=True)
    failed = [s for s in states if s.state == "failed"]
    if failed:
        raise CLIError(f"{len(failed)} run(s) failed, first {failed[0].run.name}: {failed[0].message}")
    return 0


def experiment_main(argv: Sequence[str] | None = None) -> int:
    """``dycl-experiment list|run|report`` (see ``dycl-experiment -h`` and :mod:`dycl.experiment`)."""
    import os

    # OpenMP threads that spin while waiting for each other waste most of their time when other
    # processes share the cores (a ResNet-18 step at 48 px: 4.2 s spinning vs 0.72 s passive on two busy
    # cores). Read when torch starts, so set before anything imports it; an explicit setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return run_cli("dycl-experiment", _build_experiment_parser, _run_experiment, argv)


_COMMANDS = {"train": train_main, "eval": eval_main, "data": data_main, "experiment": experiment_main}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dycl COMMAND ...`` (and ``torchrun -m dycl train ...``): dispatch to a command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in _COMMANDS:
        known = ", ".join(_COMMANDS)
        if args and args[0] not in ("-h", "--help"):
            print(f"dycl: error: unknown command {args[0]!r}; expected one of {known}", file=sys.stderr)
            return 2
        print(f"usage: python -m dycl {{{','.join(_COMMANDS)}}} ...\n\n"
              "Runs dycl-train, dycl-eval, dycl-data or dycl-experiment; e.g. under torchrun:\n"
              "  torchrun --nproc-per-node 4 -m dycl train --data-dir DA-Campus --output runs/ddp")
        return 0 if args else 2
    return _COMMANDS[args[0]](args[1:])
