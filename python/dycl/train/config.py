"""The configuration of a training run: options, their checks, resuming, the demo's settings.

:class:`TrainConfig` holds every option of ``dycl-train`` (defaults follow the
paper, DESIGN §6). :func:`prepare_run` resolves the options of one invocation
(fresh, ``--demo`` or ``--resume``) into a checked configuration before
anything is written; :func:`data_fingerprint` ties a run to its data.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._files import check_writable
from .._validate import int_at_least
from ..data import DATASET_FORMATS
from ..data.loading import default_workers
from ..geo import validate_thresholds
from ..losses import PAPER_LOSS, PROXY_OPTIMIZER, build_loss, parse_loss_spec
from ..models import BACKBONES
from ..runs import CHECKPOINT_FILE, check_output, read_checkpoint
from .schedule import RELEASE_EPOCHS, RELEASE_WARMUP, SCHEDULES

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
    schedule: str = "paper"  # or "release": cosine per epoch over schedule_epochs, backbone warm-up
    schedule_epochs: int | None = None  # release: T_max in epochs (None: 300, its README command)
    warmup_epochs: int | None = None  # epochs with the backbone held (None: 5 for release, 0 for paper)
    sampler: str = "random"
    rotation: str = "quarter"
    thresholds: tuple[float, ...] = (200.0, 500.0)
    seed: int = 0
    max_steps_per_epoch: int | None = None
    # runtime
    output: str = ""
    device: str = "auto"
    amp: bool = True
    workers: int | None = None  # None: dycl.data.loading.default_workers() (CPUs per process on the node - 1)
    deterministic: bool = False  # bit-exact CUDA reruns (slower), see dycl.train.reproducibility
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
    "output", "device", "amp", "workers", "deterministic", "eval_every", "eval_batch_size",
    "stop_after_epoch", "progress",
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
        dummy_table = np.diag([levels, levels])  # two buildings farther apart than every threshold
        build_loss(spec, num_buildings=2, embedding_dim=embedding_dim, levels=levels, options=plain,
                   level_table=dummy_table)
    except ValueError as exc:
        raise ValueError(f"loss_options: {exc}") from None
    return plain


def _check_schedule(c: TrainConfig) -> None:
    """``schedule``, ``schedule_epochs`` and ``warmup_epochs``, with the release's defaults filled in."""
    c.schedule = _check_choice("schedule", c.schedule, SCHEDULES)
    if c.schedule == "paper" and c.schedule_epochs is not None:
        raise ValueError("schedule_epochs: only used with schedule 'release' (the paper's cosine runs over "
                         "the steps of the run)")
    if c.schedule == "release":
        c.schedule_epochs = int_at_least("schedule_epochs", RELEASE_EPOCHS if c.schedule_epochs is None
                                         else c.schedule_epochs, 1)
    default_warmup = RELEASE_WARMUP if c.schedule == "release" else 0
    c.warmup_epochs = int_at_least("warmup_epochs", default_warmup if c.warmup_epochs is None
                                   else c.warmup_epochs, 0)


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
    _check_schedule(c)
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
    c.workers = default_workers() if c.workers is None else int_at_least("workers", c.workers, 0)
    c.deterministic = bool(c.deterministic)
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


# --------------------------------------------------------------------------- the demo


def demo_data_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ``--demo`` keeps its synthetic campus: under ``$DYCL_CACHE`` or ``~/.cache/dycl``."""
    from ..data.synth import DEMO_DEFAULTS as p
    from ..data.synth.generate import GENERATOR_VERSION

    root = Path(cache_dir or os.environ.get("DYCL_CACHE") or Path.home() / ".cache" / "dycl")
    # The generator's version is in the name: a campus cached by an older generator (no GPS EXIF,
    # no GeoTIFF) stays where it is and a complete one is generated next to it.
    name = (f"demo-campus-{p['train_buildings']}-{p['test_buildings']}-{p['drone_views']}"
            f"-{p['image_size']}px-seed{p['seed']}-v{GENERATOR_VERSION}")
    return root / name


def ensure_demo_campus(cache_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Generate the demo campus into the cache unless it is already there; returns its folder.

    Generation goes to ``<folder>.partial`` (which a later call completes if it
    was interrupted), renamed at the end: the folder itself is always complete.
    """
    from ..data.synth import DEMO_DEFAULTS, generate_campus

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


# --------------------------------------------------------------------------- the data and the invocation


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


def prepare_run(overrides: Mapping[str, Any], resume: bool = False, overwrite: bool = False):
    """Resolve and check a run's configuration and its output folder; writes nothing.

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
    check_writable(output_path, "output")  # a read-only folder fails now, not after the first epoch
    return config, state


__all__ = [
    "CONFIG_FIELDS",
    "DATASET_FORMATS",
    "DEMO_OUTPUT",
    "DEMO_TRAINING",
    "DEVICES",
    "RUNTIME_FIELDS",
    "TrainConfig",
    "check_loss_options",
    "config_from_dict",
    "data_fingerprint",
    "demo_data_dir",
    "ensure_demo_campus",
    "merge_resumed_config",
    "prepare_run",
    "validate_config",
]
