"""``dycl-train`` as a function: configure, read the data, train, evaluate, print the tables.

Under ``torchrun`` every rank calls :func:`run_training`; only rank 0 writes
files. Every rank reads the data and, with ``--resume``, ``last.pt``: on
several nodes, keep the data and the output folder on a shared filesystem.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import __version__
from .._files import FolderLock, remove_stale_temporaries, write_json_atomic
from ..data import open_train_test
from ..distributed import DistInfo, all_ranks, barrier, cleanup, init_distributed
from ..runs import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    EMBEDDINGS_DIR,
    LOG_FILE,
    METRICS_FILE,
    TENSORBOARD_DIR,
    check_output,
    clear_run,
    truncate_log,
)
from ..tables import format_tables
from ..tasks import random_embedding_baseline
from .config import (
    DEVICES,
    TrainConfig,
    _check_choice,
    data_fingerprint,
    demo_data_dir,
    ensure_demo_campus,
    prepare_run,
)
from .trainer import Trainer

_INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, FileExistsError)


def _all_ranks(dist: DistInfo, step):
    """Run ``step()`` on every rank; if it rejects its input on any rank, raise on all of them.

    Without this, one rank failing on bad input would leave the others
    waiting in the next collective until the timeout.
    """
    return all_ranks(step, errors=_INPUT_ERRORS, peer_error=lambda: ValueError(
        "another process of this run rejected its input (see its message)"))


def _write_config(config: TrainConfig, trainer: Trainer, dist: DistInfo, fingerprint: dict[str, Any]) -> None:
    amp_name = str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else None
    resolved = {**config.to_dict(), "version": __version__, "data": fingerprint,
                "world_size": dist.world_size, "device_used": str(dist.device),
                "amp_dtype": amp_name, "steps_per_epoch": trainer.steps_per_epoch}
    write_json_atomic(Path(config.output) / CONFIG_FILE, resolved)


def _print_final(config: TrainConfig, results, test_split, out) -> None:
    print(format_tables(results), file=out)
    if config.demo:
        baseline = random_embedding_baseline(test_split, config.embedding_dim, config.thresholds)
        print("\nFor comparison, random embeddings on the same test split:\n", file=out)
        print(format_tables(baseline), file=out)
    print(f"\nrun folder: {config.output} ({METRICS_FILE}, {CHECKPOINT_FILE}, {EMBEDDINGS_DIR}/, "
          f"{LOG_FILE}, {TENSORBOARD_DIR}/)", file=out)


def _prepare_output(config: TrainConfig, trainer: Trainer, dist: DistInfo, fingerprint: dict[str, Any],
                    resume: bool, overwrite: bool, held: contextlib.ExitStack) -> None:
    """Lock the run folder for this process (held until the run ends), then write its config."""
    output = Path(config.output)
    held.enter_context(FolderLock(output, "output"))
    check_output(output, resume, overwrite)  # again, under the lock: another run may have written meanwhile
    for folder in (output, output / EMBEDDINGS_DIR):  # of a process killed while writing (none is live:
        remove_stale_temporaries(folder)             # we hold the lock)
    if overwrite:
        clear_run(output)
    _write_config(config, trainer, dist, fingerprint)
    if resume:
        truncate_log(output / LOG_FILE, trainer.epoch)
        print(f"dycl-train: resuming {output} after epoch {trainer.epoch} of {config.epochs}",
              file=sys.stderr)


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
            train_split, test_split = open_train_test(config.data_dir, config.dataset_format)
            fingerprint = data_fingerprint(train_split, test_split)
            if state is not None and state.get("data") != fingerprint:
                raise ValueError(
                    f"data_dir: {config.data_dir} is not the data the checkpoint was trained on "
                    f"(checkpoint: {state.get('data')}, now: {fingerprint})"
                )
            return Trainer(config, train_split, test_split, dist, resume_state=state), fingerprint

        trainer, fingerprint = _all_ranks(dist, build)
        with contextlib.ExitStack() as held:
            # Every rank learns if rank 0 cannot have the folder (another writer holds it).
            def prepare() -> None:
                if dist.is_main:
                    _prepare_output(config, trainer, dist, fingerprint, resume, overwrite, held)

            _all_ranks(dist, prepare)
            results = trainer.fit()
            if dist.is_main and results is not None:
                _print_final(config, results, trainer.test_split, out)
        return results
    finally:
        cleanup()


__all__ = ["run_training"]
