"""Experiment plans: the data, the shared training settings, the configurations, seeds and re-rankings.

A **suite** names what to run; :mod:`dycl.experiment.runner` runs it and
:mod:`dycl.experiment.report` turns the finished runs into tables and figures.
Each (configuration, seed) is one ``dycl-train`` run, re-scored from its saved
embeddings with every re-ranking of :data:`RERANKINGS`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..losses import PAPER_LOSS
from ..metrics import PAPER_SCALE_NAMES
from ..tasks import RerankConfig


@dataclass(frozen=True)
class CampusSpec:
    """A synthetic campus (:func:`dycl.data.synth.generate_campus` parameters)."""

    train_buildings: int
    test_buildings: int
    drone_views: int
    image_size: int
    seed: int = 0

    @property
    def folder_name(self) -> str:
        return (f"campus-{self.train_buildings}-{self.test_buildings}-{self.drone_views}v-"
                f"{self.image_size}px-seed{self.seed}")


@dataclass(frozen=True)
class RunConfig:
    """One trained configuration: what differs between the runs of a suite.

    ``key`` names the run folders; ``label`` is the name in tables and figures; ``training``
    overrides the suite's shared training settings for this configuration only (``dycl-train``
    option names, e.g. ``{"schedule": "release"}``).
    """

    key: str
    label: str
    loss: str
    loss_options: Mapping[str, Mapping[str, Any]] | None = None
    sampler: str = "random"
    note: str = ""
    training: Mapping[str, Any] | None = None

    def overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {"loss": self.loss, "sampler": self.sampler}
        if self.loss_options:
            out["loss_options"] = json.loads(json.dumps(self.loss_options))  # plain dicts and lists
        if self.training:
            out.update(json.loads(json.dumps(self.training)))
        return out


#: Re-rankings every run is scored with: file stem -> (table label, configuration).
#: ``ks=None``: Eq. 6 from the training split (``--ks auto``).
RERANKINGS: dict[str, tuple[str, RerankConfig]] = {
    "none": ("none", RerankConfig()),
    "k-reciprocal": ("k-reciprocal", RerankConfig(method="k-reciprocal")),
    "msrerank-paper": ("MSRerank (paper)", RerankConfig(method="msrerank", variant="paper")),
    "msrerank-reference": ("MSRerank (reference)", RerankConfig(method="msrerank", variant="reference")),
}


@dataclass(frozen=True)
class Sweep:
    """A parameter swept over configurations (the paper's Fig. 8): its name, ``(config, value)`` points."""

    parameter: str
    points: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Suite:
    """An experiment plan. ``groups`` name the comparisons of the report (keys of ``configs``):

    * ``"methods"`` — Tables II/III: one row per method;
    * ``"scales"`` — Fig. 6: single-scale runs, then the multi-scale run (last);
    * ``"scales_dycl"`` — the same shape for an extra comparison (single-scale DyCL terms);
    * ``"sampler"`` — batch composition: the ``random`` run, then the ``geo`` run;
    * ``"release"`` — the authors' release's training choices: HAPPIER, DyCL+HAPPIER, DyCL, then
      the same with the release's DyCL normalisation and with its schedule.

    ``sweeps`` name the parameter sweeps of Fig. 8 (:class:`Sweep`).
    """

    name: str
    description: str
    campus: CampusSpec | None  # None: the data comes from --data-dir
    training: Mapping[str, Any]
    configs: tuple[RunConfig, ...]
    seeds: tuple[int, ...]
    groups: Mapping[str, tuple[str, ...]]
    rerankings: tuple[str, ...] = tuple(RERANKINGS)
    sweeps: Mapping[str, Sweep] = field(default_factory=dict)
    #: Seeds of the Table IV entry (single-domain shapes, :mod:`dycl.experiment.table4`); () for none.
    table4_seeds: tuple[int, ...] = ()
    #: Seconds per training epoch measured in the pilot (for the ETA before any run has finished).
    expected_epoch_s: float | None = None

    def config(self, key: str) -> RunConfig:
        for c in self.configs:
            if c.key == key:
                return c
        raise ValueError(f"suite {self.name}: no configuration {key!r}")

    def runs(self) -> list[RunSpec]:
        """Every (configuration, seed), seed by seed: an interrupted suite has all configurations early."""
        return [RunSpec(config=c, seed=s) for s in self.seeds for c in self.configs]

    @property
    def epochs(self) -> int:
        return int(self.training.get("epochs", 20))


@dataclass(frozen=True)
class RunSpec:
    config: RunConfig
    seed: int

    @property
    def name(self) -> str:
        return f"{self.config.key}/seed{self.seed}"

    def folder(self, output: Path) -> Path:
        return output / self.config.key / f"seed{self.seed}"


_DYCL = "dycl:0.2,cluster:0.1"  # the paper's recipe without HAPPIER
# HAPPIER's own recipe (its release); the paper's DyCL+HAPPIER adds 0.2 DyCL to it.
_HAPPIER = "happier:0.9,cluster:0.1"


def _method_configs() -> tuple[RunConfig, ...]:
    """Tables II/III: the single-scale baselines, then the multi-scale methods."""
    return (
        RunConfig("infonce", "InfoNCE", "infonce"),
        RunConfig("triplet", "Triplet", "triplet", note="same-building triplets; also S⁰ of Fig. 6"),
        RunConfig("softmargintriplet", "Soft-Margin Triplet", "softmargintriplet"),
        RunConfig("contrastive", "Contrastive", "contrastive"),
        RunConfig("multisimilarity", "Multi-Similarity", "multisimilarity"),
        RunConfig("normsoftmax", "Normalised Softmax", "normsoftmax"),
        RunConfig("instance", "Instance loss", "instance"),
        RunConfig("sigmatriplet", "Σ-Triplet", "sigmatriplet"),
        RunConfig("sigmams", "Σ-Multi-Similarity", "sigmams", note="a Multi-Similarity term per scale"),
        RunConfig("csl", "CSL", "csl"),
        RunConfig("happier", "HAPPIER", _HAPPIER, note="0.9 H-AP surrogate + 0.1 clustering, its recipe"),
        RunConfig("dycl", "DyCL", _DYCL, note="DyCL (Eq. 4) + clustering (Eq. 5), the paper's weights"),
        RunConfig("dycl-happier", "DyCL+HAPPIER", PAPER_LOSS, note="full loss: HAPPIER + 0.2 DyCL"),
    )


def _scale_configs() -> tuple[RunConfig, ...]:
    """Fig. 6: single-scale Triplet at S¹ and S² (S⁰ is the Triplet baseline); DyCL's variant as an extra."""
    triplet = tuple(
        RunConfig(f"triplet-scale{s}", f"Triplet at S{s} ({PAPER_SCALE_NAMES[s]})", "sigmatriplet",
                  loss_options={"sigmatriplet": {"scales": [s]}},
                  note=f"the Σ-Triplet term of scale {s} alone: positives within scale {s}")
        for s in (1, 2)
    )
    dycl = tuple(
        RunConfig(f"dycl-scale{s}", f"extra: DyCL term S{s} only", _DYCL,
                  loss_options={"dycl": {"scales": [s]}},
                  note=f"not the paper's Fig. 6: only the DyCL term of scale {s} (its positives against the "
                       "level-0 items; nearer non-positives are ignored)")
        for s in range(len(PAPER_SCALE_NAMES))
    )
    return triplet + dycl


#: Fig. 8 sweeps on the full loss: τ (DyCL's scale) and λ₁ (DyCL's weight); 32 and 0.2 are dycl-happier.
_TAUS = (16.0, 64.0)
_LAMBDAS = (0.1, 0.4)


def _sweep_configs() -> tuple[RunConfig, ...]:
    taus = tuple(RunConfig(f"dycl-happier-tau{t:g}", f"DyCL+HAPPIER, τ = {t:g}", PAPER_LOSS,
                           loss_options={"dycl": {"scale": t}}, note="Fig. 8: DyCL's τ") for t in _TAUS)
    lambdas = tuple(RunConfig(f"dycl-happier-l{w:g}", f"DyCL+HAPPIER, λ₁ = {w:g}",
                              f"dycl:{w:g},cluster:0.1,happier:0.9", note="Fig. 8: DyCL's weight λ₁")
                    for w in _LAMBDAS)
    return taus + lambdas


#: The release's schedule shrunk with the run (DESIGN §6's 20 epochs -> the suite's epochs): its
#: 300-epoch cosine and 5 warm-up epochs scaled by epochs / 20 (75 and 1 at 5 epochs).
def _release_training(epochs: int) -> dict[str, Any]:
    return {"schedule": "release", "schedule_epochs": max(1, round(300 * epochs / 20)),
            "warmup_epochs": max(1, round(5 * epochs / 20))}


def _release_configs(epochs: int) -> tuple[RunConfig, ...]:
    """The two training choices of the authors' release, each where it can change a paper's comparison."""
    batch = {"dycl": {"normalize": "batch"}}
    release = _release_training(epochs)
    return (
        RunConfig("dycl-normbatch", "DyCL, release normalisation", _DYCL, loss_options=batch,
                  note="DyCL's similarities from features normalised over the batch (F.normalize(x, dim=0))"),
        RunConfig("dycl-happier-normbatch", "DyCL+HAPPIER, release normalisation", PAPER_LOSS,
                  loss_options=batch, note="the full loss with the release's DyCL normalisation"),
        RunConfig("happier-release", "HAPPIER, release schedule", _HAPPIER, training=release,
                  note="cosine stepped per epoch over 15x the run, backbone held the first quarter of it"),
        RunConfig("dycl-happier-release", "DyCL+HAPPIER, release schedule", PAPER_LOSS, training=release,
                  note="the full loss with the release's schedule"),
    )


def _paper_configs(epochs: int) -> tuple[RunConfig, ...]:
    geo = (RunConfig("dycl-geo", "DyCL, geo sampler", _DYCL, sampler="geo"),)
    return _method_configs() + _scale_configs() + geo + _sweep_configs() + _release_configs(epochs)


_PAPER_GROUPS = {
    "methods": tuple(c.key for c in _method_configs()),
    "scales": ("triplet", "triplet-scale1", "triplet-scale2", "sigmatriplet"),
    "scales_dycl": ("dycl-scale0", "dycl-scale1", "dycl-scale2", "dycl"),
    "sampler": ("dycl", "dycl-geo"),
    # the paper's comparisons with the paper's choices, then with each of the release's
    "release": ("happier", "dycl-happier", "dycl", "dycl-normbatch", "dycl-happier-normbatch",
                "happier-release", "dycl-happier-release"),
}

_PAPER_SWEEPS = {
    "tau": Sweep("τ (DyCL scale)", tuple(sorted(
        [(f"dycl-happier-tau{t:g}", t) for t in _TAUS] + [("dycl-happier", 32.0)], key=lambda p: p[1]))),
    "lambda": Sweep("λ₁ (DyCL weight)", tuple(sorted(
        [(f"dycl-happier-l{w:g}", w) for w in _LAMBDAS] + [("dycl-happier", 0.2)], key=lambda p: p[1]))),
}

#: The paper in miniature on a 2-core CPU (measured: docs/results.md).
PAPER_MINI = Suite(
    name="paper-mini",
    description="Tables II/III, Figs. 6-8, the release's training choices and the sampler question on a "
                "synthetic campus, ResNet-18 from scratch at 48 px on a CPU; Table IV on synthetic shapes",
    # 440 buildings on 4 campuses: the test campus is large enough that the 500 m scale is not most
    # of it (about 49 of 200 buildings), 16 views keep an epoch at 120 steps.
    campus=CampusSpec(train_buildings=240, test_buildings=200, drone_views=16, image_size=96, seed=0),
    # Pilots (docs/results.md): 48 px learns as fast per epoch as 64 px at 2.2x less compute
    # (24-36 s per epoch on two cores); 5 epochs of the cosine schedule fit the budget; a backbone lr
    # of 2e-4 or 4e-4 instead of 1e-4 hurts every method, the full loss most (experiments/pilot).
    training={
        "backbone": "resnet18", "pretrained": False, "embedding_dim": 128, "image_size": 48, "epochs": 5,
        "batch_size": 32, "lr": 1e-4, "thresholds": [200.0, 500.0], "workers": 1,
    },
    configs=_paper_configs(5),
    seeds=(0, 1, 2),  # three seeds at least: t intervals over seeds need n - 1 >= 2 degrees of freedom
    groups=_PAPER_GROUPS,
    sweeps=_PAPER_SWEEPS,
    table4_seeds=(0, 1, 2),
    expected_epoch_s=30.0,
)

#: The same comparisons at the paper's scale (DA-Campus, GPU): pass --data-dir.
PAPER_FULL = Suite(
    name="paper-full",
    description="the same comparisons on DA-Campus with the paper's hyper-parameters (ResNet-50 ImageNet, "
                "256 px, batch 128, 20 epochs); needs --data-dir and a GPU",
    campus=None,
    training={
        "backbone": "resnet50", "pretrained": True, "embedding_dim": 512, "image_size": 256, "epochs": 20,
        "batch_size": 128, "lr": 5e-5, "thresholds": [200.0, 500.0],
    },
    configs=_paper_configs(20),
    seeds=(0, 1, 2),
    groups=_PAPER_GROUPS,
    sweeps=_PAPER_SWEEPS,
)

#: Two one-step runs on a tiny campus: checks the whole pipeline in under a minute.
SMOKE = Suite(
    name="smoke",
    description="two one-step runs on a tiny campus (pipeline check)",
    campus=CampusSpec(train_buildings=8, test_buildings=6, drone_views=4, image_size=32, seed=0),
    training={
        "backbone": "resnet18", "pretrained": False, "embedding_dim": 16, "image_size": 32, "epochs": 1,
        "batch_size": 8, "lr": 1e-4, "thresholds": [100.0, 200.0], "max_steps_per_epoch": 1, "workers": 0,
    },
    configs=(RunConfig("infonce", "InfoNCE", "infonce"),
             RunConfig("dycl-happier", "DyCL+HAPPIER", PAPER_LOSS)),
    seeds=(0,),
    groups={"methods": ("infonce", "dycl-happier")},
)

SUITES: dict[str, Suite] = {s.name: s for s in (PAPER_MINI, PAPER_FULL, SMOKE)}


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise ValueError(f"suite: unknown suite {name!r}; known suites: {', '.join(SUITES)}")
    return SUITES[name]


__all__ = [
    "PAPER_FULL",
    "PAPER_MINI",
    "RERANKINGS",
    "SMOKE",
    "SUITES",
    "CampusSpec",
    "RunConfig",
    "RunSpec",
    "Suite",
    "Sweep",
    "get_suite",
]
