"""Where the photos really were taken, when that is known: GPS EXIF or a CSV ``path,latitude,longitude``.

``truth`` options (``dycl-localize --truth``):

* ``"auto"`` (default) — each photo's GPS EXIF where it has one; photos without are
  simply not scored (one note if none has any, a warning per photo if only some have);
* ``"exif"`` — GPS EXIF is asked for: a warning names every photo without it;
* ``"none"`` — no truth, no errors;
* a path — a CSV ``path,latitude,longitude`` (paths from the CSV's folder, or bare
  file names when unique); a warning names every photo the CSV does not list.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from ..data.exif import read_gps
from ..data.images import read_truth_csv, truth_for

TRUTH_MODES = ("auto", "exif", "none")
Truth = tuple[tuple[float, float] | None, str]


def check_truth(truth: str | os.PathLike | None) -> str | os.PathLike | None:
    """``truth`` unchanged when it is a mode or an existing file; ``ValueError`` otherwise."""
    if truth is None or str(truth) in TRUTH_MODES:
        return truth
    if not Path(truth).is_file():
        raise ValueError(
            f"truth: expected {', '.join(TRUTH_MODES)} or a CSV file, got {str(truth)!r} (no such file)"
        )
    return truth


def _exif_truths(paths: Sequence[Path], asked: bool, warn: Callable[[str], None]) -> list[Truth]:
    out: list[Truth] = []
    missing: list[Path] = []
    for p in paths:
        try:
            fix = read_gps(p)
        except ValueError:
            fix = None
        out.append(((fix.latitude, fix.longitude), "exif") if fix is not None else (None, ""))
        if fix is None:
            missing.append(p)
    if missing and (asked or len(missing) < len(paths)):
        for p in missing:
            warn(f"{p}: no GPS position in its EXIF; its error is not computed")
    elif missing and paths:
        warn(
            f"none of the {len(paths)} photos has a GPS position in its EXIF: errors are not computed "
            "(pass --truth CSV to give the true positions)"
        )
    return out


def truths_for(
    paths: Sequence[Path], truth: str | os.PathLike | None, warn: Callable[[str], None]
) -> list[Truth]:
    """``[(latitude, longitude) or None, source]`` of each photo, by the ``truth`` option (module docs)."""
    check_truth(truth)
    if truth is None or str(truth) == "none":
        return [(None, "") for _ in paths]
    if str(truth) in ("auto", "exif"):
        return _exif_truths(paths, str(truth) == "exif", warn)
    table = read_truth_csv(truth)
    out: list[Truth] = []
    for p in paths:
        found = truth_for(table, p)
        if found is None:
            warn(f"{p}: not listed in {truth}; its error is not computed")
        out.append((found, "csv") if found is not None else (None, ""))
    return out


__all__ = ["TRUTH_MODES", "check_truth", "truths_for"]
