"""``dycl-train`` (the engine: :mod:`dycl.train`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .common import flag_errors, run_cli

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
    from ..losses import PAPER_LOSS

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
                          "infonce, triplet, softmargintriplet, contrastive, multisimilarity, sigmams, "
                          "normsoftmax, instance, sigmatriplet, csl")
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
    opt.add_argument("--schedule", choices=("paper", "release"),
                     help="paper (default): cosine to 0 over every step of the run; release: the authors' "
                          "code, cosine per epoch over --schedule-epochs, backbone held for --warmup-epochs")
    opt.add_argument("--schedule-epochs", type=int, metavar="N",
                     help="with --schedule release: length of the cosine in epochs (default 300, the "
                          "release's max_iter)")
    opt.add_argument("--warmup-epochs", type=int, metavar="N",
                     help="epochs with the backbone held while the head and proxies train (default 5 with "
                          "--schedule release, else 0)")
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
    run.add_argument("--workers", type=int,
                     help="DataLoader worker processes per training process (default: the CPUs divided by "
                          "the processes on the node, minus one; kept alive across epochs)")
    run.add_argument("--deterministic", action="store_true", default=None,
                     help="bit-exact reruns on CUDA, slower: no cuDNN benchmarking, deterministic algorithms "
                          "(for tests; CPU runs are always exact)")
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
    from ..train import CONFIG_FIELDS, run_training

    options = {k: v for k, v in vars(args).items() if v is not None and k not in ("resume", "overwrite")}
    with flag_errors(known=(*CONFIG_FIELDS, "resume", "overwrite")):
        run_training(options, resume=args.resume, overwrite=args.overwrite)
    return 0


def train_main(argv: Sequence[str] | None = None) -> int:
    """``dycl-train``: see ``dycl-train --help`` and :mod:`dycl.train`."""
    return run_cli("dycl-train", _build_train_parser, _run_train, argv)
