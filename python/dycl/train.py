"""Training engine behind ``dycl-train`` (DESIGN §6, issue 5).

One run trains the siamese :class:`~dycl.models.EmbeddingNet` on the pairs of a
training split with a weighted combination of losses (the paper's
``dycl:0.2,cluster:0.1,happier:0.9`` by default) and evaluates both retrieval
tasks on the test split with the Rust core (:mod:`dycl.evaluate`).

What a run writes into its output folder (only rank 0 writes):

* ``config.json`` — the fully resolved configuration, the package version and
  a fingerprint of the data;
* ``last.pt`` — after every epoch, written atomically (temporary file +
  ``os.replace``): model, loss state (building proxies), optimisers,
  schedulers, GradScaler, RNG states, sampler state, epoch, configuration,
  last/best evaluation. Plain tensors and Python primitives only, so
  ``torch.load(weights_only=True)`` reads it and ``--weights last.pt`` works;
* ``metrics.json`` — the final evaluation, ``{"satellite->drone": {...},
  "drone->satellite": {...}}`` with the DESIGN §4 key names;
* ``embeddings/satellite_to_drone.npz``, ``embeddings/drone_to_satellite.npz`` —
  the final test embeddings in the DESIGN §7 layout, for re-scoring without
  the network (``dycl-eval``);
* ``log.jsonl`` — one JSON object per epoch (``"event": "epoch"``) and per
  evaluation (``"event": "eval"``);
* ``tensorboard/`` — TensorBoard scalars (loss terms, learning rates,
  images/s, evaluation metrics).

Reproducibility: every random choice is a pure function of the seed — the
network and proxies are initialised after ``torch.manual_seed(seed)``, the
batches of epoch ``e`` are a function of ``(seed, e)`` (the batch sampler),
and the augmentation of pair ``i`` in epoch ``e`` is drawn from a generator
seeded with ``(seed, e, i)``, independently of workers and ranks. A CPU run
stopped after any epoch and resumed with ``--resume`` therefore ends with
exactly the weights and metrics of an uninterrupted run.

Multi-GPU / multi-node: start with ``torchrun``; each rank embeds its share of
the global batch, the embeddings are gathered with gradients
(:func:`dycl.distributed.all_gather_with_grad`) so every loss sees the global
batch, and DistributedDataParallel averages the gradients. ``--batch-size``
is the global batch (pairs) and must divide by the number of ranks.
Evaluation runs on rank 0 while the other ranks wait. Every rank reads the
data and, with ``--resume``, ``last.pt``: on several nodes, keep the data and
the output folder on a shared filesystem.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import __version__
from ._files import atomic_open, json_safe, write_json_atomic, write_text_atomic
from ._validate import int_at_least
from .distributed import (
    DistInfo,
    all_gather_no_grad,
    all_gather_with_grad,
    barrier,
    cleanup,
    init_distributed,
)
from .evaluate import (
    TASKS,
    autocast_dtype,
    extract_embeddings,
    format_tables,
    save_task_embeddings,
    score_tasks,
)
from .geo import validate_thresholds
from .losses import (
    PAPER_LOSS,
    PROXY_OPTIMIZER,
    batch_levels,
    build_loss,
    make_proxy_optimizer,
    parse_loss_spec,
)
from .models import BACKBONES, build_model, freeze_batchnorm

# --------------------------------------------------------------------------- files of a run

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "last.pt"
METRICS_FILE = "metrics.json"
LOG_FILE = "log.jsonl"
TENSORBOARD_DIR = "tensorboard"
EMBEDDINGS_DIR = "embeddings"
#: Everything a run writes into its output folder (what ``--overwrite`` removes).
RUN_ARTIFACTS = (CONFIG_FILE, CHECKPOINT_FILE, METRICS_FILE, LOG_FILE, TENSORBOARD_DIR, EMBEDDINGS_DIR)
CHECKPOINT_FORMAT = "dycl-train-checkpoint/1"

DATASET_FORMATS = ("auto", "dacampus", "manifest")
SAMPLERS = ("random", "geo")
DEVICES = ("auto", "cpu", "cuda")
ROTATIONS = ("quarter", "any", "none")


# --------------------------------------------------------------------------- configuration


@dataclass
class TrainConfig:
    """Everything that defines a training run. Defaults follow the paper (DESIGN §6).

    Fields listed in :data:`RUNTIME_FIELDS` only say *how* a run executes
    (where, on what, how loudly); all the others define the experiment and
    must match when a run is resumed.
    """

    # data
    data_dir: str | None = None
    dataset_format: str = "auto"
    demo: bool = False
    # model
    backbone: str = "resnet50"
    embedding_dim: int = 512
    image_size: int = 256
    pretrained: bool = True
    weights: str | None = None
    trust_checkpoint: bool = False
    freeze_batchnorm: bool = True  # the paper's recipe
    # optimisation
    loss: str = PAPER_LOSS
    loss_options: dict[str, dict[str, Any]] | None = None  # e.g. {"dycl": {"scales": [1]}}, see build_loss
    epochs: int = 20
    batch_size: int = 128
    lr: float = 5e-5
    head_lr: float | None = None  # None: 2 × lr, the paper's ratio (1e-4 vs 5e-5)
    weight_decay: float = 1e-4
    proxy_lr: float = PROXY_OPTIMIZER["lr"]
    proxy_lr_min: float = PROXY_OPTIMIZER["lr_min"]
    sampler: str = "random"
    rotation: str = "quarter"
    thresholds: tuple[float, ...] = (200.0, 500.0)
    seed: int = 0
    max_steps_per_epoch: int | None = None
    # runtime
    output: str = ""
    device: str = "auto"
    amp: bool = True
    workers: int | None = None  # None: min(8, CPU count)
    eval_every: int = 0
    eval_batch_size: int | None = None  # None: 2 × batch_size
    stop_after_epoch: int | None = None
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["thresholds"] = list(self.thresholds)
        return out


#: Fields that do not change what is learned: free to differ when resuming.
#: ``pretrained``/``weights`` only initialise a fresh run; the data is compared
#: by its fingerprint, not by its path.
RUNTIME_FIELDS = frozenset({
    "data_dir", "dataset_format", "demo", "pretrained", "weights", "trust_checkpoint",
    "output", "device", "amp", "workers", "eval_every", "eval_batch_size", "stop_after_epoch", "progress",
})
CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))

#: The training configuration of ``--demo`` (on the synthetic campus with the generator's
#: ``DEMO_DEFAULTS``), chosen so that the whole demo finishes in a few minutes on 2 CPU
#: cores while clearly learning (measured: docs/demo.md).
DEMO_TRAINING = {
    "backbone": "resnet18",
    "pretrained": False,  # runs offline; random initialisation learns the synthetic campus
    "embedding_dim": 128,
    "image_size": 64,  # measured: as good as 96 px on the synthetic campus, 2.25x cheaper
    "epochs": 2,
    "batch_size": 32,
    "lr": 1e-4,  # 5e-4 and more collapse the DyCL term from random initialisation
    "workers": 1,
}
DEMO_OUTPUT = "dycl-demo"


def _check_float(name: str, value: object, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or (v <= 0 if positive else v < 0):
        kind = "positive" if positive else "non-negative"
        raise ValueError(f"{name}: expected a {kind} finite number, got {v}")
    return v


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
    return str(value)


def check_loss_options(spec: str, options: Mapping[str, Any] | None, levels: int,
                       embedding_dim: int) -> dict[str, dict[str, Any]] | None:
    """Per-loss constructor options of ``spec`` (``build_loss(options=...)``), as plain JSON values.

    Checked by building the loss once (on 2 dummy buildings), so a bad option is a
    ``ValueError`` before anything is written. E.g. ``{"dycl": {"scales": [1]}}``
    trains DyCL at the middle scale only (the single-scale runs of the paper's Fig. 6).
    """
    if options is None:
        return None
    if not isinstance(options, Mapping) or not all(
            isinstance(k, str) and isinstance(v, Mapping) for k, v in options.items()):
        raise ValueError(f"loss_options: expected {{loss name: {{option: value}}}}, got {options!r}")
    try:
        plain = json.loads(json.dumps(options))  # stored in config.json and the checkpoint
    except (TypeError, ValueError):
        raise ValueError(f"loss_options: not JSON-compatible: {options!r}") from None
    try:
        build_loss(spec, num_buildings=2, embedding_dim=embedding_dim, levels=levels, options=plain)
    except ValueError as exc:
        raise ValueError(f"loss_options: {exc}") from None
    return plain


def validate_config(config: TrainConfig) -> TrainConfig:
    """Check every field and fill the derived defaults; returns a new, fully resolved config.

    Raises ``ValueError`` naming the option for anything out of range (the
    data-dependent checks happen when the data is read).
    """
    c = dataclasses.replace(config)
    c.dataset_format = _check_choice("dataset_format", c.dataset_format, DATASET_FORMATS)
    if not c.demo and not c.data_dir:
        raise ValueError("data_dir: no training data given (pass --data-dir DIR, or --demo)")
    if c.backbone not in BACKBONES:
        raise ValueError(f"backbone: unknown backbone {c.backbone!r}; choose one of {', '.join(BACKBONES)}")
    c.embedding_dim = int_at_least("embedding_dim", c.embedding_dim, 1)
    c.image_size = int_at_least("image_size", c.image_size, 16)
    parse_loss_spec(c.loss)  # unknown names and bad weights fail here, before anything is written
    c.epochs = int_at_least("epochs", c.epochs, 1)
    c.batch_size = int_at_least("batch_size", c.batch_size, 2)
    c.lr = _check_float("lr", c.lr)
    c.head_lr = 2.0 * c.lr if c.head_lr is None else _check_float("head_lr", c.head_lr)
    c.weight_decay = _check_float("weight_decay", c.weight_decay, positive=False)
    c.proxy_lr = _check_float("proxy_lr", c.proxy_lr)
    c.proxy_lr_min = _check_float("proxy_lr_min", c.proxy_lr_min, positive=False)
    c.sampler = _check_choice("sampler", c.sampler, SAMPLERS)
    c.rotation = _check_choice("rotation", c.rotation, ROTATIONS)
    c.thresholds = tuple(validate_thresholds(c.thresholds))
    c.loss_options = check_loss_options(c.loss, c.loss_options, len(c.thresholds) + 1, c.embedding_dim)
    c.seed = int_at_least("seed", c.seed, 0)
    if c.max_steps_per_epoch is not None:
        c.max_steps_per_epoch = int_at_least("max_steps_per_epoch", c.max_steps_per_epoch, 1)
    if not c.output:
        raise ValueError("output: no output folder given (pass --output DIR)")
    c.device = _check_choice("device", c.device, DEVICES)
    c.workers = min(8, os.cpu_count() or 1) if c.workers is None else int_at_least("workers", c.workers, 0)
    c.eval_every = int_at_least("eval_every", c.eval_every, 0)
    c.eval_batch_size = (2 * c.batch_size if c.eval_batch_size is None
                         else int_at_least("eval_batch_size", c.eval_batch_size, 1))
    if c.stop_after_epoch is not None:
        c.stop_after_epoch = int_at_least("stop_after_epoch", c.stop_after_epoch, 1)
    if c.weights is not None and not Path(c.weights).is_file():
        raise ValueError(f"weights: no such file: {c.weights}")
    return c


def config_from_dict(values: Mapping[str, Any]) -> TrainConfig:
    """Rebuild a :class:`TrainConfig` from ``config.json`` / a checkpoint (unknown keys are ignored)."""
    kwargs = {k: v for k, v in values.items() if k in CONFIG_FIELDS}
    if "thresholds" in kwargs:
        kwargs["thresholds"] = tuple(float(t) for t in kwargs["thresholds"])
    return TrainConfig(**kwargs)


def _describe(value: object) -> str:
    return "default" if value is None else repr(value)


def merge_resumed_config(saved: Mapping[str, Any], overrides: Mapping[str, Any]) -> TrainConfig:
    """The configuration of a resumed run: the checkpoint's, with the runtime options overridden.

    An option that defines the experiment may be repeated on the command line
    but must then equal the checkpoint's value; otherwise this raises
    ``ValueError`` naming the first difference.
    """
    base = validate_config(config_from_dict(saved))
    # A stop point belongs to the invocation that asked for it, not to the run.
    merged = dataclasses.replace(base, stop_after_epoch=None)
    for name, value in overrides.items():
        if name not in CONFIG_FIELDS:
            raise ValueError(f"{name}: not a training option")
        if name in RUNTIME_FIELDS:
            setattr(merged, name, value)
            continue
        # Compare resolved values, so that e.g. "--head-lr 1e-4" matches a derived 2 × 5e-5.
        probe = validate_config(dataclasses.replace(base, **{name: value}))
        if getattr(probe, name) != getattr(base, name):
            raise ValueError(
                f"{name}: the checkpoint was trained with {name}={_describe(getattr(base, name))}, "
                f"not {_describe(getattr(probe, name))}; a checkpoint from another configuration "
                "cannot be resumed (start a new run in another --output)"
            )
    return validate_config(merged)


# --------------------------------------------------------------------------- data


def demo_data_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ``--demo`` keeps its synthetic campus: under ``$DYCL_CACHE`` or ``~/.cache/dycl``."""
    from .data.synth import DEMO_DEFAULTS as p

    root = Path(cache_dir or os.environ.get("DYCL_CACHE") or Path.home() / ".cache" / "dycl")
    name = (f"demo-campus-{p['train_buildings']}-{p['test_buildings']}-{p['drone_views']}"
            f"-{p['image_size']}px-seed{p['seed']}")
    return root / name


def ensure_demo_campus(cache_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Generate the demo campus into the cache unless it is already there; returns its folder.

    Generation goes to ``<folder>.partial`` (which a later call completes if it
    was interrupted), renamed at the end: the folder itself is always complete.
    """
    from .data.synth import DEMO_DEFAULTS, generate_campus

    target = demo_data_dir(cache_dir)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.partial")
    print(f"dycl-train: generating the demo campus in {target} (once)", file=sys.stderr)
    generate_campus(tmp, progress=progress, **DEMO_DEFAULTS)
    try:
        os.replace(tmp, target)
    except OSError:
        if not target.is_dir():  # another process won the race: keep theirs
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def dataset_format(data_dir: str | os.PathLike, declared: str = "auto") -> str:
    """``"dacampus"`` for a folder, ``"manifest"`` for a CSV file (``declared`` wins unless ``"auto"``)."""
    if declared != "auto":
        return declared
    return "manifest" if Path(data_dir).is_file() else "dacampus"


def read_splits(config: TrainConfig):
    """The train and test :class:`~dycl.data.Split` of the configured dataset."""
    from .data import check_disjoint, read_dacampus, read_manifest

    path = Path(config.data_dir)
    if not path.exists():
        raise ValueError(f"data_dir: {path} does not exist")
    fmt = dataset_format(path, config.dataset_format)
    reader = read_manifest if fmt == "manifest" else read_dacampus
    if fmt == "dacampus" and not path.is_dir():
        raise ValueError(f"data_dir: {path} is not a folder in the DA-Campus layout")
    train, test = reader(path, "train"), reader(path, "test")
    check_disjoint(train, test)
    for split in (train, test):
        if split.num_buildings < 2 or split.num_drone == 0:
            raise ValueError(
                f"data_dir: the {split.name} split of {path} has {split.num_buildings} buildings and "
                f"{split.num_drone} drone images; training and evaluation need at least 2 buildings "
                "with drone views"
            )
    return train, test


def data_fingerprint(train, test) -> dict[str, Any]:
    """Sizes and a hash of the building ids, coordinates and images per building of both splits.

    Stored in ``config.json`` and the checkpoint; a resumed run must see the same data.
    """
    import hashlib

    digest = hashlib.sha256()
    sizes: dict[str, int] = {}
    for split in (train, test):
        ids = np.asarray(split.building_ids)
        digest.update(split.name.encode())
        digest.update(("\x1f".join(map(str, ids.tolist()))).encode())
        digest.update(np.ascontiguousarray(split.coords, dtype=np.float64).tobytes())
        digest.update(np.ascontiguousarray(split.drone_counts(), dtype=np.int64).tobytes())
        sizes[f"{split.name}_buildings"] = int(split.num_buildings)
        sizes[f"{split.name}_drone_images"] = int(split.num_drone)
    return {**sizes, "sha256": digest.hexdigest()[:16]}


class SeededAugmentation(Dataset):
    """Wraps a dataset so that item ``i`` of epoch ``e`` is drawn with a generator seeded by ``(seed, e, i)``.

    The random transforms (torchvision v2 draws from the global torch
    generator) then do not depend on the order in which items are loaded,
    the number of DataLoader workers or the number of ranks. The caller's RNG
    state is restored after each item. Set :attr:`epoch` before creating the
    epoch's DataLoader iterator (workers receive a copy of the dataset then).
    """

    def __init__(self, base: Dataset, seed: int) -> None:
        self.base = base
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def item_seed(self, index: int) -> int:
        return int(np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(1, np.uint64)[0]
                   & 0x7FFF_FFFF_FFFF_FFFF)

    def __getitem__(self, index: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.item_seed(index))
            return self.base[index]


# --------------------------------------------------------------------------- small helpers


def _plain(value: Any) -> Any:
    """Checkpoint-safe copy: NumPy values become lists and Python scalars (for ``weights_only`` loading)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_checkpoint_atomic(path: Path, state: Mapping[str, Any]) -> None:
    """``torch.save`` to a temporary file, flushed to disk, then renamed over ``path``."""
    with atomic_open(path, "wb", fsync=True) as handle:
        torch.save(dict(state), handle)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Read a ``last.pt`` written by this module (tensors and primitives only)."""
    if not path.is_file():
        raise ValueError(f"resume: no checkpoint at {path} (drop --resume to start a new run)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"resume: cannot read the checkpoint {path} ({first})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"resume: {path} is not a dycl-train checkpoint")
    return state


def _capture_rng(cuda: bool) -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": _plain(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if cuda:
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _mean_h_ap(results: Mapping[str, Mapping[str, Any]]) -> float:
    values = [float(results[t]["H-AP"]) for t in TASKS if t in results]
    return float(np.mean(values)) if values else float("nan")


# --------------------------------------------------------------------------- output folder


def truncate_log(path: Path, epoch: int) -> None:
    """Drop the records of epochs after ``epoch`` (logged by a run that died before checkpointing them)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut off by the crash
        if isinstance(record, dict) and int(record.get("epoch", 0)) <= epoch:
            kept.append(line)
    write_text_atomic(path, "".join(f"{line}\n" for line in kept))


def check_output(output: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to touch an existing run unless asked; read-only (nothing is created here)."""
    if resume and overwrite:
        raise ValueError("resume: --resume and --overwrite contradict each other; pass one of them")
    if output.exists() and not output.is_dir():
        raise ValueError(f"output: {output} exists and is not a folder")
    if resume:
        if not (output / CHECKPOINT_FILE).is_file():
            raise ValueError(
                f"resume: no checkpoint at {output / CHECKPOINT_FILE} (drop --resume to start a new run)"
            )
        return
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise ValueError(
            f"output: {output} is not empty; pass --resume to continue the run there "
            "or --overwrite to replace it"
        )


def clear_run(output: Path) -> None:
    """Remove a previous run's files (only those this module writes) before ``--overwrite``."""
    for name in RUN_ARTIFACTS:
        path = output / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


# --------------------------------------------------------------------------- the trainer


@dataclass
class EpochStats:
    epoch: int
    steps: int
    loss: float
    terms: dict[str, float]
    images_per_s: float
    seconds: float
    lr: dict[str, float] = field(default_factory=dict)


class Trainer:
    """Model, losses, optimisers, data and the loops of one run.

    Build it with a validated :class:`TrainConfig`, the two splits and the
    process's :class:`~dycl.distributed.DistInfo`. :meth:`fit` runs the
    remaining epochs; :meth:`train_step` and :meth:`epoch_loader` are public
    for tests and custom loops.
    """

    def __init__(self, config: TrainConfig, train_split, test_split, dist: DistInfo,
                 resume_state: Mapping[str, Any] | None = None) -> None:
        from .data import PairDataset, make_batch_sampler, train_transforms

        self.config = config
        self.train_split = train_split
        self.test_split = test_split
        self.dist = dist
        self.device = dist.device
        self.on_cuda = self.device.type == "cuda"
        self.amp_dtype = autocast_dtype(self.device, config.amp)
        self.n_levels = len(config.thresholds) + 1
        self.output = Path(config.output)

        if config.batch_size % dist.world_size:
            raise ValueError(
                f"batch_size: the global batch ({config.batch_size} pairs) must divide by the number of "
                f"processes ({dist.world_size})"
            )
        if config.batch_size > train_split.num_pairs:
            raise ValueError(
                f"batch_size: {config.batch_size} pairs is larger than the training set "
                f"({train_split.num_pairs} pairs in {config.data_dir})"
            )

        # Data: batches are a function of (seed, epoch); augmentations of (seed, epoch, pair).
        # The samplers take the per-rank batch; rank r gets the r-th slice of each global batch.
        options = {"drop_last": True} if config.sampler == "random" else {}
        self.sampler = make_batch_sampler(
            config.sampler, train_split, config.batch_size // dist.world_size, seed=config.seed,
            rank=dist.rank, world_size=dist.world_size, thresholds=config.thresholds, **options,
        )
        base = PairDataset(
            train_split,
            satellite_transform=train_transforms("satellite", config.image_size, rotation=config.rotation),
            drone_transform=train_transforms("drone", config.image_size, rotation=config.rotation),
        )
        self.dataset = SeededAugmentation(base, config.seed)
        self.steps_per_epoch = len(self.sampler)
        if config.max_steps_per_epoch is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, config.max_steps_per_epoch)
        if self.steps_per_epoch < 1:
            raise ValueError(f"batch_size: {config.batch_size} pairs leaves no full batch in an epoch")
        self.total_steps = self.steps_per_epoch * config.epochs

        # Model and loss: initialised from the seed, identically on every rank.
        torch.manual_seed(config.seed)
        fresh = resume_state is None
        self.model = build_model(
            config.backbone, embedding_dim=config.embedding_dim,
            pretrained=config.pretrained and fresh, weights=config.weights if fresh else None,
            trusted=config.trust_checkpoint,
        )
        if config.freeze_batchnorm:
            freeze_batchnorm(self.model)
        self.model.to(self.device)
        if self.on_cuda:
            self.model.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
        self.loss = build_loss(
            config.loss, num_buildings=train_split.num_buildings,
            embedding_dim=config.embedding_dim, levels=self.n_levels, options=config.loss_options,
        ).to(self.device)  # before the proxy optimiser (see dycl.losses.cluster)
        self.level_table = torch.as_tensor(train_split.levels(config.thresholds), dtype=torch.long,
                                           device=self.device)

        head = list(self.model.fc.parameters())
        head_ids = {id(p) for p in head}
        backbone = [p for p in self.model.parameters() if p.requires_grad and id(p) not in head_ids]
        self.optimizer = torch.optim.Adam(
            [{"params": backbone, "lr": config.lr, "name": "backbone"},
             {"params": head, "lr": config.head_lr, "name": "head"}],
            weight_decay=config.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.total_steps)
        proxies = self.loss.proxy_parameters()
        self.proxy_optimizer = self.proxy_scheduler = None
        if proxies:
            self.proxy_optimizer, self.proxy_scheduler = make_proxy_optimizer(
                proxies, self.total_steps, lr=config.proxy_lr, lr_min=config.proxy_lr_min)
        # fp16 needs loss scaling; bf16 and float32 do not.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        self.train_model: nn.Module = self.model
        if dist.distributed:
            # Frozen BatchNorm changes no buffers, so there is nothing to broadcast; trained
            # BatchNorm normalises with per-rank batch statistics (DDP's usual behaviour) and
            # takes rank 0's running statistics. The proxies stay outside DDP.
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.on_cuda else None,
                broadcast_buffers=not config.freeze_batchnorm,
            )

        self.epoch = 0  # completed epochs
        self.global_step = 0
        self.last_metrics: dict[str, Any] | None = None
        self.best_metrics: dict[str, Any] | None = None
        self.best_epoch: int | None = None
        if resume_state is not None:
            self.load_state(resume_state)

    # ----------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": __version__,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "config": self.config.to_dict(),
            "data": data_fingerprint(self.train_split, self.test_split),
            "model": self.model.state_dict(),
            "loss": self.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "proxy_optimizer": self.proxy_optimizer.state_dict() if self.proxy_optimizer else None,
            "proxy_scheduler": self.proxy_scheduler.state_dict() if self.proxy_scheduler else None,
            "scaler": self.scaler.state_dict(),
            "sampler": _plain(self.sampler.state_dict()),
            "rng": _capture_rng(self.on_cuda),
            "metrics": {"last": json_safe(self.last_metrics), "best": json_safe(self.best_metrics),
                        "best_epoch": self.best_epoch},
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.proxy_optimizer is not None:
            self.proxy_optimizer.load_state_dict(state["proxy_optimizer"])
            self.proxy_scheduler.load_state_dict(state["proxy_scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        saved_sampler = state["sampler"]
        if saved_sampler.get("world_size") == self.dist.world_size:
            self.sampler.load_state_dict(saved_sampler)
        # else: resumed on another number of processes; the schedule is a function of (seed, epoch).
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        metrics = state.get("metrics") or {}
        self.last_metrics = metrics.get("last")
        self.best_metrics = metrics.get("best")
        self.best_epoch = metrics.get("best_epoch")
        _restore_rng(state["rng"])

    # ----------------------------------------------------------------- training

    def epoch_loader(self, epoch: int) -> DataLoader:
        """The DataLoader of ``epoch`` (0-based): this rank's share of the epoch's global batches."""
        from .data import loader_generator, seed_worker

        self.sampler.set_epoch(epoch)
        self.dataset.epoch = epoch
        workers = self.config.workers or 0
        return DataLoader(
            self.dataset,
            batch_sampler=self.sampler,
            num_workers=workers,
            pin_memory=self.on_cuda,
            worker_init_fn=seed_worker if workers else None,
            generator=loader_generator(self.config.seed, epoch, self.dist.rank),
            persistent_workers=False,
        )

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=self.on_cuda)
        if self.on_cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def batch_loss(self, batch) -> torch.Tensor:
        """The loss of the global batch that this rank's share ``batch`` belongs to (with its graph).

        Every rank embeds its share; the embeddings are gathered with gradients
        and every rank computes the same loss on the global batch (see
        :mod:`dycl.distributed`).
        """
        satellite, drone, labels = batch[0], batch[1], batch[2]
        satellite, drone = self._to_device(satellite), self._to_device(drone)
        labels = labels.to(self.device, non_blocking=self.on_cuda).long()
        self.train_model.train()
        amp = self.amp_dtype is not None
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=amp):
            emb_sat, emb_drone = self.train_model(satellite, drone)
        emb_sat = all_gather_with_grad(emb_sat.float())
        emb_drone = all_gather_with_grad(emb_drone.float())
        labels = all_gather_no_grad(labels)
        levels = batch_levels(self.level_table, labels, labels)
        return self.loss(emb_sat, emb_drone, levels, labels, labels)

    def train_step(self, batch) -> torch.Tensor:
        """One optimisation step on this rank's share of a global batch; returns the global loss, detached."""
        loss = self.batch_loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        if self.proxy_optimizer is not None:
            self.proxy_optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        if self.proxy_optimizer is not None:
            self.scaler.step(self.proxy_optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.proxy_scheduler is not None:
            self.proxy_scheduler.step()
        self.global_step += 1
        return loss.detach()

    def current_lrs(self) -> dict[str, float]:
        groups = self.optimizer.param_groups
        lrs = {group.get("name", str(i)): float(group["lr"]) for i, group in enumerate(groups)}
        if self.proxy_optimizer is not None:
            lrs["proxies"] = float(self.proxy_optimizer.param_groups[0]["lr"])
        return lrs

    def train_epoch(self, epoch: int, writer=None) -> EpochStats:
        """Train one epoch (0-based ``epoch``) and return its statistics (global batch)."""
        from tqdm.auto import tqdm

        cfg = self.config
        show = cfg.progress and self.dist.is_main
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                   disable=not show, dynamic_ncols=True, file=sys.stderr)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        term_sums: dict[str, torch.Tensor] = {}
        images_per_step = 2 * cfg.batch_size  # a satellite and a drone image per pair, all ranks
        start = time.perf_counter()
        steps = 0
        loader = self.epoch_loader(epoch)
        iterator: Iterator = iter(loader)
        try:
            for batch in iterator:
                loss = self.train_step(batch)
                steps += 1
                loss_sum += loss.double()
                for name, value in self.loss.last_terms.items():
                    term_sums[name] = term_sums.get(name, torch.zeros_like(loss_sum)) + value.double()
                if show and (steps % 5 == 0 or steps == self.steps_per_epoch or steps == 1):
                    elapsed = time.perf_counter() - start
                    rate = steps * images_per_step / elapsed
                    bar.set_postfix(loss=f"{float(loss):.4f}", img_s=f"{rate:.1f}")
                if writer is not None and (steps % 10 == 0 or steps == 1):
                    writer.add_scalar("train/loss_step", float(loss), self.global_step)
                bar.update(1)
                if steps >= self.steps_per_epoch:
                    break
        finally:
            del iterator
            bar.close()
        seconds = time.perf_counter() - start
        mean_loss = float(loss_sum) / max(steps, 1)
        if not math.isfinite(mean_loss):
            raise ValueError(
                f"training diverged in epoch {epoch + 1}: the loss is {mean_loss}; lower --lr "
                f"(the checkpoint of the previous epoch is kept)"
            )
        return EpochStats(
            epoch=epoch + 1, steps=steps, loss=mean_loss,
            terms={k: float(v) / max(steps, 1) for k, v in term_sums.items()},
            images_per_s=steps * images_per_step / seconds if seconds > 0 else float("nan"),
            seconds=seconds, lr=self.current_lrs(),
        )

    # ----------------------------------------------------------------- evaluation

    def embed_test_split(self) -> tuple[np.ndarray, np.ndarray]:
        """Satellite ``(B, d)`` and drone ``(N, d)`` embeddings of the test split (this process only)."""
        from .data import drone_set, eval_transforms, satellite_set

        cfg = self.config
        transform = eval_transforms(cfg.image_size)
        show = cfg.progress and self.dist.is_main
        kwargs = dict(batch_size=cfg.eval_batch_size, device=self.device, amp=cfg.amp,
                      workers=cfg.workers or 0, progress=show)
        sat = extract_embeddings(self.model, satellite_set(self.test_split, transform),
                                 desc="embedding satellite", **kwargs)
        drone = extract_embeddings(self.model, drone_set(self.test_split, transform),
                                   desc="embedding drone", **kwargs)
        return sat, drone

    def evaluate(self) -> tuple[dict[str, dict[str, float]], np.ndarray, np.ndarray]:
        """Embed the test split and score both tasks (call on the main process)."""
        sat, drone = self.embed_test_split()
        return score_tasks(sat, drone, self.test_split, self.config.thresholds), sat, drone

    def _record_eval(self, results: dict[str, dict[str, float]]) -> None:
        self.last_metrics = results
        if self.best_metrics is None or _mean_h_ap(results) > _mean_h_ap(self.best_metrics):
            self.best_metrics = results
            self.best_epoch = self.epoch

    # ----------------------------------------------------------------- the loop

    def fit(self) -> dict[str, dict[str, float]] | None:
        """Train the remaining epochs, checkpointing after each; evaluate at the end.

        Returns the final metrics on the main process (None on other ranks,
        and when ``stop_after_epoch`` ends the run early).
        """
        cfg = self.config
        main = self.dist.is_main
        writer = log = None
        if main:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a crashed run logged after its last checkpoint.
            writer = SummaryWriter(str(self.output / TENSORBOARD_DIR), purge_step=self.global_step or None)
            log = open(self.output / LOG_FILE, "a", encoding="utf-8")
        try:
            while self.epoch < cfg.epochs:
                if cfg.stop_after_epoch is not None and self.epoch >= cfg.stop_after_epoch:
                    if main:
                        print(f"dycl-train: stopped after epoch {self.epoch} as asked; "
                              "continue with --resume", file=sys.stderr)
                    return None
                stats = self.train_epoch(self.epoch, writer)
                self.epoch += 1
                final = self.epoch == cfg.epochs
                results = None
                if main and (final or (cfg.eval_every and self.epoch % cfg.eval_every == 0)):
                    results, sat, drone = self.evaluate()
                    self._record_eval(results)
                if main:
                    # Log, then checkpoint: lines of an epoch whose checkpoint never landed are
                    # dropped on resume (see truncate_log), so no epoch is logged twice.
                    self._log_epoch(stats, writer, log)
                    if results is not None:
                        self._log_eval(results, writer, log)
                    save_checkpoint_atomic(self.output / CHECKPOINT_FILE, self.state_dict())
                    if results is not None and not final:
                        summary = ", ".join(f"{t} H-AP {100 * results[t]['H-AP']:.2f}" for t in TASKS)
                        print(f"dycl-train: epoch {self.epoch}: {summary}", file=sys.stderr)
                    if final:
                        self._write_final(results, sat, drone)
                barrier()
            if main and not (self.output / METRICS_FILE).is_file():
                # Resumed after the last checkpoint but before metrics.json was written.
                results, sat, drone = self.evaluate()
                self._record_eval(results)
                self._write_final(results, sat, drone)
            barrier()
            return self.last_metrics if main else None
        finally:
            if writer is not None:
                writer.close()
            if log is not None:
                log.close()

    def _write_final(self, results, sat: np.ndarray, drone: np.ndarray) -> None:
        write_json_atomic(self.output / METRICS_FILE, {task: results[task] for task in TASKS})
        save_task_embeddings(self.output / EMBEDDINGS_DIR, sat, drone, self.test_split,
                             self.config.thresholds)

    def _log_epoch(self, stats: EpochStats, writer, log) -> None:
        record = {"event": "epoch", "epoch": stats.epoch, "step": self.global_step, "loss": stats.loss,
                  "terms": stats.terms, "lr": stats.lr, "images_per_s": stats.images_per_s,
                  "seconds": stats.seconds, "time": time.time()}
        log.write(json.dumps(json_safe(record)) + "\n")
        log.flush()
        # Every TensorBoard scalar is indexed by the global step (so purge_step works on resume).
        writer.add_scalar("train/loss_epoch", stats.loss, self.global_step)
        writer.add_scalar("train/epoch", stats.epoch, self.global_step)
        for name, value in stats.terms.items():
            writer.add_scalar(f"train/loss_{name}", value, self.global_step)
        for name, value in stats.lr.items():
            writer.add_scalar(f"lr/{name}", value, self.global_step)
        writer.add_scalar("train/images_per_s", stats.images_per_s, self.global_step)
        writer.flush()

    def _log_eval(self, results, writer, log) -> None:
        record = {"event": "eval", "epoch": self.epoch, "step": self.global_step, **results}
        log.write(json.dumps(json_safe(record)) + "\n")
        log.flush()
        for task, metrics in results.items():
            tag = task.replace("->", "_to_")
            for key in ("H-AP", "ASI", "NDCG", "mAP_overall", "R@1_overall", "err@1_mean_m"):
                if key in metrics and metrics[key] is not None and math.isfinite(float(metrics[key])):
                    writer.add_scalar(f"eval_{tag}/{key}", float(metrics[key]), self.global_step)
        writer.flush()


# --------------------------------------------------------------------------- entry point


_INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, FileExistsError)


def _all_ranks(dist: DistInfo, step):
    """Run ``step()`` on every rank; if it rejects its input on any rank, raise on all of them.

    Without this, one rank failing on bad input would leave the others
    waiting in the next collective until the timeout.
    """
    error: BaseException | None = None
    result = None
    try:
        result = step()
    except _INPUT_ERRORS as exc:
        error = exc
    if dist.distributed:
        import torch.distributed as tdist

        flag = torch.tensor([0 if error is None else 1], device=dist.device)
        tdist.all_reduce(flag, op=tdist.ReduceOp.MAX)
        if error is None and int(flag.item()):
            raise ValueError("another process of this run rejected its input (see its message)")
    if error is not None:
        raise error
    return result


def random_embedding_baseline(test_split, dim: int, thresholds, seed: int = 0) -> dict[str, dict[str, float]]:
    """Scores of random unit embeddings on ``test_split``: the chance level a trained model must beat."""
    rng = np.random.default_rng(seed)
    sat = rng.standard_normal((test_split.num_buildings, dim)).astype(np.float32)
    drone = rng.standard_normal((test_split.num_drone, dim)).astype(np.float32)
    return score_tasks(sat, drone, test_split, thresholds)


def prepare_run(overrides: Mapping[str, Any], resume: bool = False, overwrite: bool = False):
    """Resolve and check a run's configuration and data; writes nothing.

    Returns ``(config, checkpoint_state_or_None)``; the data is read by the caller.
    Raises ``ValueError`` (one-line messages) for every kind of bad input.
    """
    unknown = set(overrides) - set(CONFIG_FIELDS)
    if unknown:
        raise ValueError(f"{sorted(unknown)[0]}: not a training option")
    demo = bool(overrides.get("demo", False))
    output = overrides.get("output") or (DEMO_OUTPUT if demo else None)
    if not output:
        raise ValueError("output: no output folder given (pass --output DIR)")
    output_path = Path(output)
    check_output(output_path, resume, overwrite)
    given = {**overrides, "output": str(output_path)}
    state = None
    if resume:
        state = read_checkpoint(output_path / CHECKPOINT_FILE)
        config = merge_resumed_config(state["config"], given)
    else:
        base = TrainConfig(**(DEMO_TRAINING if demo else {}))
        config = validate_config(dataclasses.replace(base, **given))
    return config, state


def run_training(overrides: Mapping[str, Any], resume: bool = False, overwrite: bool = False,
                 out=None) -> dict[str, dict[str, float]] | None:
    """Run ``dycl-train``: configure, train, evaluate. ``overrides`` are the options given explicitly.

    Under ``torchrun`` every rank calls this; only rank 0 writes files. Returns
    the final metrics on rank 0 (None elsewhere or when stopped early).
    Bad input raises ``ValueError`` before anything is written.
    """
    out = sys.stdout if out is None else out  # the tables go here
    device = overrides.get("device", "auto")
    _check_choice("device", device, DEVICES)
    dist = init_distributed(device=device)
    try:
        config, state = _all_ranks(dist, lambda: prepare_run(overrides, resume=resume, overwrite=overwrite))
        if config.demo and not config.data_dir:
            if dist.is_main:  # one process renders the campus, the others wait for it
                ensure_demo_campus(progress=config.progress)
            barrier()
            config.data_dir = str(demo_data_dir())

        def build() -> tuple[Trainer, dict[str, Any]]:
            train_split, test_split = read_splits(config)
            fingerprint = data_fingerprint(train_split, test_split)
            if state is not None and state.get("data") != fingerprint:
                raise ValueError(
                    f"data_dir: {config.data_dir} is not the data the checkpoint was trained on "
                    f"(checkpoint: {state.get('data')}, now: {fingerprint})"
                )
            return Trainer(config, train_split, test_split, dist, resume_state=state), fingerprint

        trainer, fingerprint = _all_ranks(dist, build)
        test_split = trainer.test_split
        output = Path(config.output)
        if dist.is_main:
            if overwrite:
                clear_run(output)
            output.mkdir(parents=True, exist_ok=True)
            amp_name = str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else None
            resolved = {**config.to_dict(), "version": __version__, "data": fingerprint,
                        "world_size": dist.world_size, "device_used": str(dist.device),
                        "amp_dtype": amp_name, "steps_per_epoch": trainer.steps_per_epoch}
            write_json_atomic(output / CONFIG_FILE, resolved)
            if resume:
                truncate_log(output / LOG_FILE, trainer.epoch)
                print(f"dycl-train: resuming {output} after epoch {trainer.epoch} of {config.epochs}",
                      file=sys.stderr)
        barrier()
        results = trainer.fit()
        if dist.is_main and results is not None:
            print(format_tables(results), file=out)
            if config.demo:
                baseline = random_embedding_baseline(test_split, config.embedding_dim, config.thresholds)
                print("\nFor comparison, random embeddings on the same test split:\n", file=out)
                print(format_tables(baseline), file=out)
            print(f"\nrun folder: {output} ({METRICS_FILE}, {CHECKPOINT_FILE}, {EMBEDDINGS_DIR}/, "
                  f"{LOG_FILE}, {TENSORBOARD_DIR}/)", file=out)
        return results
    finally:
        cleanup()


__all__ = [
    "CHECKPOINT_FILE",
    "CONFIG_FIELDS",
    "CONFIG_FILE",
    "DEMO_TRAINING",
    "EMBEDDINGS_DIR",
    "LOG_FILE",
    "METRICS_FILE",
    "RUNTIME_FIELDS",
    "SeededAugmentation",
    "TENSORBOARD_DIR",
    "TrainConfig",
    "Trainer",
    "check_output",
    "data_fingerprint",
    "demo_data_dir",
    "ensure_demo_campus",
    "merge_resumed_config",
    "prepare_run",
    "random_embedding_baseline",
    "read_splits",
    "run_training",
    "truncate_log",
    "validate_config",
]


if __name__ == "__main__":  # ``torchrun --nproc-per-node N -m dycl.train ...`` = dycl-train on N processes
    from .cli import train_main

    raise SystemExit(train_main())
