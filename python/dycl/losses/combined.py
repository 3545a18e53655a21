"""Loss registry and weighted combinations parsed from a spec string (``--loss``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .base import PairLoss
from .cluster import ClusterLoss
from .contrastive import ContrastiveLoss
from .csl import CSLLoss, csl_margins
from .dycl import DyCLLoss, default_margins
from .happier import HAPPIERLoss
from .infonce import InfoNCELoss
from .instance import InstanceLoss
from .multi_similarity import MultiSimilarityLoss
from .normalized_softmax import NormalizedSoftmaxLoss
from .sigma_multi_similarity import SigmaMultiSimilarityLoss
from .sigma_triplet import SigmaTripletLoss
from .soft_margin_triplet import SoftMarginTripletLoss
from .triplet import TripletLoss

#: The paper's default combination (DESIGN §6).
PAPER_LOSS = "dycl:0.2,cluster:0.1,happier:0.9"


@dataclass(frozen=True)
class _Context:
    num_buildings: int | None
    embedding_dim: int | None
    levels: int
    level_table: Any | None = None


def _needs(ctx: _Context, name: str) -> tuple[int, int]:
    if ctx.num_buildings is None or ctx.embedding_dim is None:
        raise ValueError(
            f"loss: {name!r} learns building proxies; build_loss needs num_buildings and embedding_dim"
        )
    return ctx.num_buildings, ctx.embedding_dim


def _make_dycl(ctx: _Context, **kw: Any) -> PairLoss:
    kw.setdefault("margins", default_margins(ctx.levels))
    if len(kw["margins"]) != ctx.levels:
        raise ValueError(
            f"margins: need one margin per positive level (L = {ctx.levels}), got {len(kw['margins'])}"
        )
    return DyCLLoss(**kw)


def _make_csl(ctx: _Context, **kw: Any) -> PairLoss:
    num_buildings, embedding_dim = _needs(ctx, "CSLLoss")
    if ctx.level_table is None:
        raise ValueError("loss: 'csl' compares with the proxies of every scale; build_loss needs level_table "
                         "(the training buildings' (B, B) levels)")
    table = torch.as_tensor(ctx.level_table)
    if tuple(table.shape) != (num_buildings, num_buildings):
        raise ValueError(f"level_table: expected shape ({num_buildings}, {num_buildings}) (num_buildings), "
                         f"got {tuple(table.shape)}")
    kw.setdefault("margins", csl_margins(ctx.levels))
    return CSLLoss(level_table=table, embedding_dim=embedding_dim, **kw)


def _make_proxy(cls: type[ClusterLoss] | type[InstanceLoss]) -> Callable[..., PairLoss]:
    def make(ctx: _Context, **kw: Any) -> PairLoss:
        num_buildings, embedding_dim = _needs(ctx, cls.__name__)
        return cls(num_buildings=num_buildings, embedding_dim=embedding_dim, **kw)
    return make


def _make_multiscale(cls: type[SigmaTripletLoss] | type[SigmaMultiSimilarityLoss]) -> Callable[..., PairLoss]:
    def make(ctx: _Context, **kw: Any) -> PairLoss:
        kw.setdefault("num_levels", ctx.levels)
        return cls(**kw)
    return make


#: name -> factory(context, **options). Aliases map to the same factory.
LOSSES: dict[str, Callable[..., PairLoss]] = {
    "dycl": _make_dycl,
    "cluster": _make_proxy(ClusterLoss),
    "happier": lambda ctx, **kw: HAPPIERLoss(**kw),
    "infonce": lambda ctx, **kw: InfoNCELoss(**kw),
    "triplet": lambda ctx, **kw: TripletLoss(**kw),
    "contrastive": lambda ctx, **kw: ContrastiveLoss(**kw),
    "multisimilarity": lambda ctx, **kw: MultiSimilarityLoss(**kw),
    "normsoftmax": _make_proxy(NormalizedSoftmaxLoss),
    "sigmatriplet": _make_multiscale(SigmaTripletLoss),
    "sigmams": _make_multiscale(SigmaMultiSimilarityLoss),
    "softmargintriplet": lambda ctx, **kw: SoftMarginTripletLoss(**kw),
    "instance": _make_proxy(InstanceLoss),
    "csl": _make_csl,
}
ALIASES = {
    "ms": "multisimilarity",
    "multi_similarity": "multisimilarity",
    "multi-similarity": "multisimilarity",
    "normalized_softmax": "normsoftmax",
    "normalised_softmax": "normsoftmax",
    "sigma_triplet": "sigmatriplet",
    "sigma-triplet": "sigmatriplet",
    "sigma_ms": "sigmams",
    "sigma-ms": "sigmams",
    "multisimilarity_multiscale": "sigmams",
    "clustering": "cluster",
    "soft_margin_triplet": "softmargintriplet",
    "soft-margin-triplet": "softmargintriplet",
    "weighted_soft_margin": "softmargintriplet",
    "instance_loss": "instance",
    "cross_scale": "csl",
    "ntxent": "infonce",
}


def canonical_loss_name(name: str) -> str:
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in LOSSES:
        raise ValueError(f"loss: unknown loss {name.strip()!r}; known losses: {', '.join(LOSSES)}")
    return key


def parse_loss_spec(spec: str) -> list[tuple[str, float]]:
    """``"dycl:0.2,cluster:0.1,happier:0.9"`` → ``[("dycl", 0.2), ("cluster", 0.1), ("happier", 0.9)]``.

    A term without ``:weight`` has weight 1. Names are case-insensitive and may
    be aliases; weights must be finite and positive; a loss may appear once.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"loss: expected a spec like {PAPER_LOSS!r}, got {spec!r}")
    terms: list[tuple[str, float]] = []
    for raw in spec.split(","):
        part = raw.strip()
        if not part:
            raise ValueError(f"loss: empty term in {spec!r}")
        name, sep, weight_text = part.partition(":")
        key = canonical_loss_name(name)
        weight = 1.0
        if sep:
            try:
                weight = float(weight_text)
            except ValueError:
                raise ValueError(
                    f"loss: weight of {name.strip()!r} is not a number: {weight_text.strip()!r}"
                ) from None
            if not math.isfinite(weight) or weight <= 0:
                raise ValueError(
                    f"loss: weight of {name.strip()!r} must be a positive finite number, "
                    f"got {weight_text.strip()}"
                )
        if any(key == existing for existing, _ in terms):
            raise ValueError(f"loss: {key!r} appears more than once in {spec!r}")
        terms.append((key, weight))
    return terms


class CombinedLoss(nn.Module):
    """Weighted sum of losses sharing the calling convention.

    ``forward(emb_a, emb_b, levels, labels_a, labels_b)`` returns the total
    ``Σ w_t · loss_t``; the unweighted, detached term values of the last call are
    in :attr:`last_terms` (name → 0-d tensor; call ``float()`` when logging — no
    device sync is forced here). The terms are in :attr:`losses` (an
    ``nn.ModuleDict``), so ``state_dict()`` carries the proxies for checkpoints.
    """

    def __init__(self, terms: Sequence[tuple[str, float, nn.Module]]):
        super().__init__()
        if not terms:
            raise ValueError("loss: no terms")
        self.losses = nn.ModuleDict({name: module for name, _, module in terms})
        self.weights: dict[str, float] = {name: float(weight) for name, weight, _ in terms}
        self.last_terms: dict[str, torch.Tensor] = {}

    @property
    def spec(self) -> str:
        """Canonical spec string, e.g. ``"dycl:0.2,cluster:0.1,happier:0.9"``."""
        return ",".join(f"{name}:{self.weights[name]:g}" for name in self.losses)

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}"

    def set_value_checks(self, enabled: bool) -> None:
        """Switch the terms' value checks (:attr:`PairLoss.check_values`: level and label ranges) on or off.

        Each is a host-device sync; a training loop that checked its level table
        and labels once turns them off, shape and dtype checks stay.
        """
        for module in self.losses.values():
            if isinstance(module, PairLoss):
                module.check_values = bool(enabled)

    def proxy_parameters(self) -> list[nn.Parameter]:
        """Parameters of proxy-based terms, for their own optimiser (see ``make_proxy_optimizer``)."""
        params: list[nn.Parameter] = []
        for module in self.losses.values():
            if hasattr(module, "proxy_parameters"):
                params.extend(module.proxy_parameters())
        return params

    def classifier_parameters(self) -> list[nn.Parameter]:
        """Parameters of classifier terms (the instance loss): trained with the network's head."""
        params: list[nn.Parameter] = []
        for module in self.losses.values():
            if hasattr(module, "classifier_parameters"):
                params.extend(module.classifier_parameters())
        return params

    def forward(
        self,
        emb_a: torch.Tensor,
        emb_b: torch.Tensor,
        levels: torch.Tensor | None = None,
        labels_a: torch.Tensor | None = None,
        labels_b: torch.Tensor | None = None,
    ) -> torch.Tensor:
        total = None
        values: dict[str, torch.Tensor] = {}
        for name, module in self.losses.items():
            value = module(emb_a, emb_b, levels, labels_a, labels_b)
            values[name] = value.detach()
            weighted = self.weights[name] * value
            total = weighted if total is None else total + weighted
        self.last_terms = values
        return total


def build_loss(
    spec: str = PAPER_LOSS,
    *,
    num_buildings: int | None = None,
    embedding_dim: int | None = None,
    levels: int = 3,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    level_table: Any | None = None,
) -> CombinedLoss:
    """Build a :class:`CombinedLoss` from a spec string.

    Args:
        spec: comma-separated ``name[:weight]`` terms; names in :data:`LOSSES`
            (aliases in :data:`ALIASES`). Default: the paper's ``dycl:0.2,cluster:0.1,happier:0.9``.
        num_buildings, embedding_dim: needed by proxy and classifier losses (``cluster``, ``normsoftmax``,
            ``csl``, ``instance``).
        levels: ``L``, the number of positive levels (3 for thresholds (200, 500)).
            DyCL gets one margin per level (paper's margins for L = 3, see
            :func:`~dycl.losses.dycl.default_margins` otherwise); Σ-Triplet and Σ-MS one scale per level.
        options: per-loss constructor keywords,
            e.g. ``{"dycl": {"scale": 16}, "infonce": {"temperature": 0.1}}``.
        level_table: ``(B, B)`` levels between the training buildings, needed by ``csl`` (its
            proxies are compared scale by scale).

    Raises:
        ValueError: unknown name, bad weight, duplicate term, missing sizes, bad options.
    """
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"levels: expected a positive number of levels, got {levels!r}")
    ctx = _Context(num_buildings=num_buildings, embedding_dim=embedding_dim, levels=levels,
                   level_table=level_table)
    opts = {canonical_loss_name(k): dict(v) for k, v in (options or {}).items()}
    terms = parse_loss_spec(spec)
    unused = set(opts) - {name for name, _ in terms}
    if unused:
        raise ValueError(f"options: given for losses not in the spec: {', '.join(sorted(unused))}")
    built = []
    for name, weight in terms:
        try:
            module = LOSSES[name](ctx, **opts.get(name, {}))
        except TypeError as exc:
            raise ValueError(f"options: bad options for {name!r} ({exc})") from None
        built.append((name, weight, module))
    return CombinedLoss(built)
