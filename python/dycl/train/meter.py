"""What an epoch logs, kept on the device: no host-device sync per step.

Reading a CUDA tensor on the host (``float(loss)``) waits for every kernel
queued before it, so a loop that logs the loss of each step stalls the GPU
once per step. :class:`EpochMeter` stores each step's loss and loss terms in
device buffers and copies them to the host once, when the epoch ends. A
progress bar gets :meth:`EpochMeter.latest`: the newest value whose
asynchronous copy has already arrived, never waiting for the device.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch


@dataclass
class EpochLog:
    """An epoch's per-step values on the host (float64), and their means."""

    losses: list[float]
    terms: dict[str, list[float]]

    @property
    def steps(self) -> int:
        return len(self.losses)

    @staticmethod
    def _mean(values: list[float]) -> float:
        total = 0.0
        for v in values:  # in step order, as a running float64 sum would add them
            total += v
        return total / max(len(values), 1)

    @property
    def mean_loss(self) -> float:
        return self._mean(self.losses)

    def mean_terms(self) -> dict[str, float]:
        return {name: self._mean(values) for name, values in self.terms.items()}


class EpochMeter:
    """Per-step losses and loss terms of one epoch, accumulated where they were computed."""

    def __init__(self, capacity: int, device: torch.device) -> None:
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self.losses = torch.zeros(self.capacity, dtype=torch.float64, device=self.device)
        self.terms: dict[str, torch.Tensor] = {}
        self.count = 0
        self._latest: float | None = None
        self._pending: tuple[torch.Tensor, torch.cuda.Event] | None = None

    def add(self, loss: torch.Tensor, terms: Mapping[str, torch.Tensor]) -> None:
        """Record one step (0-d tensors on the device; copied there, nothing is read on the host)."""
        if self.count >= self.capacity:
            raise ValueError(f"EpochMeter: more than {self.capacity} steps in an epoch")
        self.losses[self.count] = loss.detach()
        for name, value in terms.items():
            buffer = self.terms.get(name)
            if buffer is None:
                buffer = self.terms[name] = torch.zeros_like(self.losses)
            buffer[self.count] = value.detach()
        self.count += 1

    def latest(self) -> float | None:
        """A recent loss for a progress bar: on CUDA the newest one already copied to the host (no wait)."""
        if self.count == 0:
            return None
        if self.device.type != "cuda":
            return float(self.losses[self.count - 1])
        if self._pending is not None and self._pending[1].query():
            self._latest = float(self._pending[0])
            self._pending = None
        if self._pending is None:
            host = torch.empty((), dtype=torch.float64, pin_memory=True)
            host.copy_(self.losses[self.count - 1], non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending = (host, event)
        return self._latest

    def finish(self) -> EpochLog:
        """Everything recorded, copied to the host in one transfer."""
        n = self.count
        rows = torch.stack([self.losses[:n], *(buffer[:n] for buffer in self.terms.values())]).cpu()
        values = rows.tolist()
        return EpochLog(losses=values[0], terms=dict(zip(self.terms, values[1:], strict=True)))


__all__ = ["EpochLog", "EpochMeter"]
