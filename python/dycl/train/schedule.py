"""Learning-rate schedules of a run: the paper's, and the authors' release's (``--schedule``).

* ``"paper"`` (default, DESIGN §6): cosine annealing to 0 over every optimisation step
  of the run (``epochs × steps_per_epoch``), stepped after each step; the proxies' Adam
  anneals from ``proxy_lr`` to ``proxy_lr_min`` over the same steps.
* ``"release"``: what the authors' code does (``config/optimizer/da_campus.yaml`` and
  ``dycl/engine/train.py``, ``base_training_loop.py`` of the DyCL release). The cosine
  runs over ``schedule_epochs`` *epochs* (``max_iter``: 300 in its README command) and
  is stepped once per epoch, and not at all during the ``warmup_epochs`` (5) warm-up
  epochs. During warm-up the backbone is held — its optimiser step is skipped, so
  neither its weights nor its Adam state move — while the head and the proxies train.
  With 20 epochs of 300 the rate is still ≈ 99 % of its start at the end.

Learning rate of the backbone and the head during epoch ``e`` (0-based), base rate ``η``:

* paper, step ``t`` of the run (0-based): ``η (1 + cos(π t / T)) / 2``, ``T = epochs × steps_per_epoch``;
* release: ``η (1 + cos(π max(0, e − w) / E)) / 2``, ``E = schedule_epochs``, ``w = warmup_epochs``;
  the proxies likewise between ``proxy_lr`` and ``proxy_lr_min``.

``warmup_epochs`` may also be given with the paper's schedule: the backbone is then held
for those epochs while the per-step cosine runs on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

#: ``--schedule`` choices.
SCHEDULES = ("paper", "release")
#: The release's README command: ``experience.max_iter=300 experience.warmup_step=5``.
RELEASE_EPOCHS = 300
RELEASE_WARMUP = 5


@dataclass(frozen=True)
class Schedule:
    """When the learning rates change and when the backbone is held, for one run."""

    kind: str
    steps_per_epoch: int
    epochs: int
    schedule_epochs: int | None = None
    warmup_epochs: int = 0

    @property
    def per_step(self) -> bool:
        """Whether the schedulers step after every optimisation step (paper) or once per epoch (release)."""
        return self.kind == "paper"

    @property
    def horizon(self) -> int:
        """``T_max`` of the cosine: steps of the run (paper) or ``schedule_epochs`` epochs (release)."""
        if self.per_step:
            return self.steps_per_epoch * self.epochs
        return int(self.schedule_epochs or RELEASE_EPOCHS)

    def lr_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.CosineAnnealingLR:
        """Cosine annealing to 0 over :attr:`horizon` (the backbone's and the head's rates)."""
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.horizon, eta_min=0.0)

    def backbone_held(self, epoch: int) -> bool:
        """True during the warm-up epochs (0-based ``epoch`` < ``warmup_epochs``)."""
        return epoch < self.warmup_epochs

    def hold_backbone(self, optimizer: torch.optim.Optimizer, epoch: int) -> None:
        """During warm-up, drop the gradients of the ``"backbone"`` group: Adam then skips those parameters.

        Call between ``backward()`` and the optimiser step. (Gradients are still computed, as in the
        release, so that a distributed run reduces the same tensors in every epoch.)
        """
        if not self.backbone_held(epoch):
            return
        for group in optimizer.param_groups:
            if group.get("name") == "backbone":
                for param in group["params"]:
                    param.grad = None

    def after_step(self, schedulers: Iterable[torch.optim.lr_scheduler.LRScheduler | None]) -> None:
        """After every optimisation step: the paper's schedule moves on."""
        if self.per_step:
            _step(schedulers)

    def after_epoch(self, schedulers: Iterable[torch.optim.lr_scheduler.LRScheduler | None],
                    epochs_done: int) -> None:
        """After each epoch (``epochs_done`` includes it): the release's schedule moves on, not in warm-up."""
        if not self.per_step and epochs_done > self.warmup_epochs:
            _step(schedulers)

    def describe(self) -> str:
        """E.g. ``"release (cosine per epoch over 300 epochs, backbone held 5 epochs)"``."""
        held = f", backbone held {self.warmup_epochs} epochs" if self.warmup_epochs else ""
        if self.per_step:
            return f"paper (cosine per step over {self.horizon} steps{held})"
        return f"release (cosine per epoch over {self.horizon} epochs, not stepped in warm-up{held})"


def _step(schedulers: Iterable[torch.optim.lr_scheduler.LRScheduler | None]) -> None:
    for scheduler in schedulers:
        if scheduler is not None:
            scheduler.step()


def schedule_of(config, steps_per_epoch: int) -> Schedule:
    """The :class:`Schedule` of a validated :class:`~dycl.train.TrainConfig`."""
    return Schedule(kind=config.schedule, steps_per_epoch=steps_per_epoch, epochs=config.epochs,
                    schedule_epochs=config.schedule_epochs, warmup_epochs=config.warmup_epochs)


__all__ = ["RELEASE_EPOCHS", "RELEASE_WARMUP", "SCHEDULES", "Schedule", "schedule_of"]
