"""``dycl-localize --demo``: the whole job offline on the synthetic campus.

1. the demo campus (generated once into the cache, as ``dycl-train --demo`` does);
2. the demo run's checkpoint ``dycl-demo/last.pt`` (trained with ``dycl-train --demo`` if missing);
3. the test area's orthophoto GeoTIFF(s) cut into tiles and indexed;
4. every test drone photo localized, its true position read from its GPS EXIF;
5. the errors of both estimates next to random embeddings (the chance level) and next to the
   error floor of this data (the distance from each camera to the building it looks at);
6. ``results.csv``, ``results.geojson``, ``summary.json``, ``map.png`` in ``dycl-demo/localize/``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .._files import FolderLock, check_writable
from ..geo import geodesic_distances
from .estimate import DEFAULT_METHOD, METHODS, summarize
from .localizer import Localizer, locate_embeddings, random_index
from .outputs import write_outputs
from .report import format_summary
from .truth import truths_for

DEMO_RESULTS = "localize"


def _demo_checkpoint(progress: bool, log: TextIO) -> Path:
    """``dycl-demo/last.pt``, trained first with the demo's recipe when there is none."""
    from ..runs import CHECKPOINT_FILE
    from ..train.config import DEMO_OUTPUT
    from ..train.run import run_training

    run = Path(DEMO_OUTPUT)
    checkpoint = run / CHECKPOINT_FILE
    if checkpoint.is_file():
        return checkpoint
    if run.exists() and any(p.name != ".dycl.lock" for p in run.iterdir()):
        raise ValueError(
            f"checkpoint: {run} exists but holds no {CHECKPOINT_FILE}; finish that run "
            "(dycl-train --demo --resume) or replace it (dycl-train --demo --overwrite)"
        )
    print(f"dycl-localize: no {checkpoint}; training the demo model first (dycl-train --demo)", file=log)
    run_training({"demo": True, "progress": progress}, out=log)
    return checkpoint


def _floor(photos: list[Path], truths: list, split) -> dict[str, float]:
    """Error of the ideal retrieval: each photo placed on the centre of the building it shows."""
    errors = [
        float(geodesic_distances(np.array([t]), split.coords[[b]])[0, 0])
        for (t, _), b in zip(truths, split.drone_buildings, strict=True)
        if t is not None
    ]
    return {"median_m": float(np.median(errors)), "mean_m": float(np.mean(errors))} if errors else {}


def run_demo(
    out_dir: str | Path | None = None,
    progress: bool = True,
    out: TextIO | None = None,
    log: TextIO | None = None,
) -> dict[str, Any]:
    """Run the demo (module docs); returns ``{label: summary}`` of the printed table."""
    from ..data import open_split
    from ..train.config import DEMO_OUTPUT, ensure_demo_campus

    out, log = out or sys.stdout, log or sys.stderr
    folder = Path(out_dir) if out_dir is not None else Path(DEMO_OUTPUT) / DEMO_RESULTS
    check_writable(folder, "out")
    campus = ensure_demo_campus(progress=progress)
    maps = sorted((campus / "orthophoto").glob("test-*.tif"))
    if not maps:
        raise ValueError(f"data_dir: {campus} has no orthophoto/test-*.tif (made by an older generator?)")
    checkpoint = _demo_checkpoint(progress, log)

    def warn(line: str) -> None:
        print(f"dycl-localize: warning: {line}", file=log)

    with FolderLock(folder, "out"):
        loc = Localizer.from_checkpoint(checkpoint, progress=progress, warn=warn)
        index = loc.index_geotiff(maps)
        index.save(folder / "test.dyclidx")
        split = open_split(campus, "test")
        photos = list(split.drone_paths)
        emb, reasons = loc.embed_files(photos, "embedding photos")
        if any(reasons):
            raise ValueError(
                f"data_dir: {sum(map(bool, reasons))} demo photos cannot be decoded; regenerate {campus}"
            )
        truths = truths_for(photos, "exif", warn)
        names = [str(p) for p in photos]
        results = {
            m: locate_embeddings(emb, names, truths, index, method=m, seconds=loc.seconds) for m in METHODS
        }
        rng = np.random.default_rng(0)
        noise = rng.standard_normal(emb.shape).astype(np.float32)
        chance = locate_embeddings(noise, names, truths, random_index(index, seed=1), method=DEFAULT_METHOD)
        order = [DEFAULT_METHOD] + [m for m in METHODS if m != DEFAULT_METHOD]
        table = {f"model, {m}": summarize(results[m], index) for m in order}
        table["random embeddings"] = summarize(chance, index)
        floor = _floor(photos, truths, split)
        summary = {
            **table[f"model, {DEFAULT_METHOD}"],
            "seconds": dict(loc.seconds),
            "error_floor": floor,
            "settings": {
                "checkpoint": str(checkpoint),
                "model": loc.description,
                "maps": [str(m) for m in maps],
                "method": DEFAULT_METHOD,
            },
        }
        written = write_outputs(folder, results[DEFAULT_METHOD], index, summary)
    print(
        f"dycl-localize --demo: {len(index)} tiles of {', '.join(m.name for m in maps)} indexed with "
        f"{loc.description}; {len(photos)} test drone photos localized\n",
        file=out,
    )
    print(format_summary(table), file=out)
    if floor:
        print(
            f"\nerror floor of this data (each photo placed on the centre of the building it looks at; the "
            f"camera is metres away from it): median {floor['median_m']:.1f} m, mean {floor['mean_m']:.1f} m",
            file=out,
        )
    s = loc.seconds
    print(
        f"times: reading {s['reading']:.1f} s, network {s['network']:.1f} s, search {s['search']:.2f} s, "
        f"estimate {s['estimate']:.2f} s",
        file=out,
    )
    print(f"\nwrote {folder / 'test.dyclidx'}, {', '.join(p.name for p in written)} in {folder}", file=out)
    return table


__all__ = ["DEMO_RESULTS", "run_demo"]
