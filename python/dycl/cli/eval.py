"""``dycl-eval`` (the engine: :mod:`dycl.evaluate`)."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from .common import CLIError, flag_errors, run_cli

_EVAL_EPILOG = """\
examples:
  dycl-eval --checkpoint runs/dycl/last.pt --data-dir DA-Campus --output runs/dycl/eval/metrics.json
  dycl-eval --checkpoint net.pth --data-dir DA-Campus --rerank msrerank   # the authors' net_state file
  dycl-eval --embeddings runs/dycl/embeddings --rerank msrerank --ks 20,62,292 --output rerank/metrics.json
  dycl-eval --embeddings runs/dycl/embeddings --data-dir DA-Campus --rerank msrerank --ks-from gallery
  dycl-eval --embeddings other_model.npz --thresholds 200 500 --plots figures/
  dycl-eval --embeddings runs/dycl/embeddings --compat authors --output paper-like/metrics.json
  dycl-eval --compare runs/a/metrics.json runs/b/metrics.json --labels A B --out map_by_scale.png
  dycl-eval --embeddings dyml_product.npz --exclude-self --rerank msrerank --ks 20,40,80

With --checkpoint, both tasks (satellite->drone, drone->satellite) of the --split
(default test) of --data-dir are scored and, with --output x/metrics.json, the
embeddings are saved in x/metrics.embeddings/ (or --save-embeddings DIR), so
that other re-ranking options can be scored with --embeddings, without the
network; two evaluations into one folder never share it. --output
metrics.json also writes metrics.md and metrics.csv.

--compat authors reproduces the numbers of the DyCL authors' released
evaluation, to compare with the paper: it counts H-AP by relevance value (two
levels with equal per-item relevance are counted twice, so H-AP can exceed 1)
and retrieves only the top g - 1 gallery items (each query's last-ranked item
is dropped from every metric). Neither is the metric's definition, so it is not
the default; the result files say "compat": "authors" next to every task.

Under torchrun (torchrun --nproc-per-node 4 -m dycl eval --checkpoint ... --output
x/metrics.json) each process embeds a shard of the images into
x/metrics.embeddings/shards/ and process 0 merges them (the one-process result);
run again after a crash, finished shards are kept. See docs/scale.md.

Single-domain hierarchical retrieval (DyML-Vehicle/Animal/Product and the like):
the query set is the gallery and each image is ranked against the others. Save
the task with dycl.tasks.single_domain_task(name, embeddings, ids, levels), ids
and levels from dycl.levels.from_hierarchy(fine, middle, coarse); the file then
carries exclude_self and dycl-eval --embeddings scores it that way. --exclude-self
forces it for a file whose query and gallery arrays are the same images. Scales
count from the finest label (scale 0: same fine class ... scale L-1: same coarsest).
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
    from ..metrics_authors import COMPAT_MODES, DEFINITIONS
    from ..rerank import VARIANTS
    from ..tasks import (  # no torch import: scoring embeddings files needs none
        KNN_SEARCHES,
        KS_SOURCES,
        RERANK_METHODS,
    )

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
    data.add_argument("--exclude-self", action="store_true",
                      help="with --embeddings: single-domain retrieval, the gallery is the query set and "
                           "each query is ranked against the others (its own row left out of metrics; "
                           "re-ranking on the items once). Files saved by single_domain_task need no flag")
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
    rr.add_argument("--ks-from", choices=KS_SOURCES, default="drone",
                    help="with --ks auto, whose images per building Eq. 6 counts: drone (default: the drone "
                         "view for both tasks, one set of ks per dataset as in the authors' release) or "
                         "gallery (each task's gallery view: 20,20,20 for drone->satellite on DA-Campus)")
    rr.add_argument("--k1", type=int, default=20, metavar="K", help="k-reciprocal neighbourhood (default 20)")
    rr.add_argument("--k2", type=int, default=6, metavar="K", help="query expansion size (default 6)")
    rr.add_argument("--lambda", dest="lambda_value", type=float, default=0.3, metavar="L",
                    help="weight of the original distance (default 0.3)")
    rr.add_argument("--knn", choices=KNN_SEARCHES, default="exact",
                    help="how re-ranking finds each item's nearest neighbours: exact (default; the Rust "
                         "core, results as always), faiss (FAISS flat index: exact up to float rounding), "
                         "faiss-ivf / faiss-ivf-sq8 / faiss-hnsw (approximate, for galleries of "
                         "millions; faiss-ivf-sq8 is the fastest on a CPU; tune with --knn-param), "
                         "torch (exact top-k on CUDA), torch-cpu. FAISS needs "
                         "pip install dycl[faiss]. The result files record the search and whether it was "
                         "exact")
    rr.add_argument("--knn-param", dest="knn_params", action="append", type=_knn_param, default=[],
                    metavar="KEY=VALUE",
                    help="an option of the --knn search, repeatable: nlist, nprobe (faiss-ivf, "
                         "faiss-ivf-sq8), k_factor (faiss-ivf-sq8), M, "
                         "ef_search, ef_construction (faiss-hnsw), device=cpu|cuda (faiss, torch), "
                         "block_rows (torch); e.g. --knn faiss-ivf --knn-param nprobe=64")

    out = p.add_argument_group("output")
    out.add_argument("--compat", choices=COMPAT_MODES, default=DEFINITIONS,
                     help="definitions (default: the metrics as defined) or authors (the authors' released "
                          "evaluation, to compare with the paper's numbers: H-AP by relevance value, can "
                          "exceed 1; last-ranked gallery item dropped; see below)")
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


def _knn_param(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` of ``--knn-param``; integer values become ints."""
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. nprobe=64), got {text!r}")
    return key, int(value) if value.lstrip("-").isdigit() else value


#: dycl-eval flags whose names differ from the engine's argument names (the others: ``_`` -> ``-``).
_EVAL_FLAGS = {"lambda_value": "--lambda", "variant": "--msrerank-variant",
               "msrerank_variant": "--msrerank-variant", "knn_params": "--knn-param", "params": "--knn-param",
               **{o: f"--knn-param {o}" for o in ("index", "nlist", "nprobe", "M", "ef_search",
                                                   "ef_construction", "device", "block_rows")}}


def _run_eval(args: argparse.Namespace) -> int:
    from ..evaluate import EvalOptions, run_compare, run_eval
    from ..metrics_authors import AUTHORS, AUTHORS_COMPAT_MESSAGE, DEFINITIONS, AuthorsCompatWarning
    from ..tasks import RerankConfig

    if args.compare:
        if args.compat != DEFINITIONS:
            raise CLIError("--compat: not used with --compare (each metrics file says how it was scored)")
        run_compare(args.compare, labels=args.labels, out_png=args.out, plots=args.plots, metric=args.metric)
        return 0
    if args.labels or args.out:
        raise CLIError("--labels/--out: only used with --compare")
    if args.rerank == "none" and (args.knn != "exact" or args.knn_params):
        raise CLIError("--knn/--knn-param: only used with --rerank k-reciprocal or msrerank")
    with flag_errors(_EVAL_FLAGS):
        rerank = RerankConfig(method=args.rerank, variant=args.msrerank_variant, ks=args.ks, k1=args.k1,
                              k2=args.k2, lambda_value=args.lambda_value, ks_from=args.ks_from,
                              knn=args.knn, knn_params=tuple(args.knn_params))
        options = EvalOptions(
            checkpoint=args.checkpoint, embeddings=args.embeddings, data_dir=args.data_dir,
            dataset_format=args.dataset_format, split=args.split, backbone=args.backbone,
            image_size=args.image_size, batch_size=args.batch_size, device=args.device, workers=args.workers,
            amp=args.amp, trust_checkpoint=args.trust_checkpoint, thresholds=args.thresholds, rerank=rerank,
            recall_at=tuple(args.recall_at), output=args.output, save_embeddings=args.save_embeddings,
            overwrite=args.overwrite, plots=args.plots, plot_queries=args.plot_queries,
            plot_top_k=args.plot_top_k, map_building=args.map_building, shift_ks=args.shift_ks,
            progress=args.progress, compat=args.compat, exclude_self=args.exclude_self,
        )
    with warnings.catch_warnings():
        if options.compat == AUTHORS:
            # said once, as one line, instead of a warning per scored task
            print(f"dycl-eval: warning: {AUTHORS_COMPAT_MESSAGE}", file=sys.stderr)
            warnings.simplefilter("ignore", AuthorsCompatWarning)
        run_eval(options)
    return 0


def eval_main(argv: Sequence[str] | None = None) -> int:
    """``dycl-eval``: see ``dycl-eval --help`` and :mod:`dycl.evaluate`."""
    return run_cli("dycl-eval", _build_eval_parser, _run_eval, argv)
