"""What makes a resumed run the same run: random-number states, and the deterministic switch.

**CPU.** Every random choice is a function of the seed (see
:mod:`dycl.train.trainer`) and the random generators' states are saved in the
checkpoint (:func:`capture_rng`, :func:`restore_rng`): a CPU run stopped after
any epoch and resumed ends with exactly the weights and metrics of an
uninterrupted one. The tests hold this bit for bit.

**CUDA.** A resumed run is *statistically* equivalent, not bit-exact. cuDNN
picks its convolution kernels by timing them (``cudnn.benchmark``, on by
default for the speed), and some backward kernels add in a varying order (the
stem's overlapping max-pool and other atomic additions), so two runs of the
same configuration already differ in the last bits after one step, and the
difference then grows like any rounding noise. Metrics of a resumed run fall
within the run-to-run spread of uninterrupted runs; they are not equal to them.

The ``deterministic`` option (``dycl-train --deterministic``) is for tests and
for checking a suspicion, not for production runs: it turns benchmarking off,
asks PyTorch for deterministic algorithms (warning, once each, about any
operation that has none), configures cuBLAS's workspace for reproducible
results, and swaps the max-pool for
:class:`~dycl.models.DeterministicMaxPool2d`. It costs speed. A CPU run is
unaffected by it.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..runs import plain


def use_deterministic_algorithms() -> None:
    """Process-wide settings for bit-exact CUDA reruns (see the module docstring).

    cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG`` before its first call; a value
    already set in the environment is kept.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def capture_rng(cuda: bool) -> dict[str, Any]:
    """The states of Python's, NumPy's, torch's (and CUDA's) generators, checkpoint-safe."""
    state = {"python": random.getstate(), "numpy": plain(np.random.get_state()),
             "torch": torch.get_rng_state()}
    if cuda:
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Undo :func:`capture_rng` (CUDA states only onto the same number of devices)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


__all__ = ["capture_rng", "restore_rng", "use_deterministic_algorithms"]
