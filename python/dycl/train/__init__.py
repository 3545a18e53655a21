"""Training engine behind ``dycl-train`` (DESIGN §6).

One run trains the siamese :class:`~dycl.models.EmbeddingNet` on the pairs of a
training split with a weighted combination of losses (the paper's
``dycl:0.2,cluster:0.1,happier:0.9`` by default) and evaluates both retrieval
tasks on the test split with the Rust core. What a run writes is the run-folder
contract of :mod:`dycl.runs`.

* :mod:`dycl.train.config` — :class:`TrainConfig`, its checks, resuming, the demo;
* :mod:`dycl.train.trainer` — :class:`Trainer`, the loop, checkpoints, evaluation;
* :mod:`dycl.train.schedule` — the learning-rate schedules (the paper's, the release's) and the warm-up;
* :mod:`dycl.train.run` — :func:`run_training`, the command as a function;
* :mod:`dycl.train.data` — the persistent loader, augmentation seeding, batches on the device;
* :mod:`dycl.train.meter` — what an epoch logs, kept on the device until it ends;
* :mod:`dycl.train.reproducibility` — RNG states, resume semantics on CUDA, ``--deterministic``.

Multi-GPU: ``torchrun --nproc-per-node N -m dycl train ...`` (see :mod:`dycl.__main__`).
"""

from .config import (
    CONFIG_FIELDS,
    DEMO_TRAINING,
    RUNTIME_FIELDS,
    TrainConfig,
    data_fingerprint,
    demo_data_dir,
    ensure_demo_campus,
    merge_resumed_config,
    prepare_run,
    validate_config,
)
from .run import run_training
from .schedule import SCHEDULES, Schedule
from .trainer import SeededAugmentation, Trainer

__all__ = [
    "CONFIG_FIELDS",
    "DEMO_TRAINING",
    "RUNTIME_FIELDS",
    "SCHEDULES",
    "Schedule",
    "SeededAugmentation",
    "TrainConfig",
    "Trainer",
    "data_fingerprint",
    "demo_data_dir",
    "ensure_demo_campus",
    "merge_resumed_config",
    "prepare_run",
    "run_training",
    "validate_config",
]
