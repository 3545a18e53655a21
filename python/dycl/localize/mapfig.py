"""The map of a localization run (matplotlib, off-screen): estimates and truths over the orthophoto.

Drawn in the orthophoto's own CRS (the points are converted with pyproj), so
the picture is the map as it is; for an index without a GeoTIFF (tiles or a
split) the tile centres are drawn in longitude/latitude instead. Estimates
are crosses coloured by their error, truths green dots, errors grey lines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..plots import save_figure
from .estimate import Location
from .index import MapIndex


def _background(index: MapIndex, located: Sequence[Location]):
    """``(image, extent, to_xy)`` of the GeoTIFF holding most estimates, or None without one."""
    from pyproj import Transformer

    from ..data.geotiff import overview

    files = [s for s in index.sources if s.get("kind") == "geotiff" and Path(s["path"]).is_file()]
    if not files:
        return None
    counts = np.bincount(
        [int(index.source[loc.matches[0].tile]) for loc in located] or [0], minlength=len(index.sources)
    )
    best = max(files, key=lambda s: counts[index.sources.index(s)])
    image, extent, crs = overview(best["path"])
    transformer = Transformer.from_crs("EPSG:4326", crs, always_xy=True)

    def to_xy(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y = transformer.transform(np.asarray(lon), np.asarray(lat))
        return np.asarray(x), np.asarray(y)

    return image, extent, to_xy, Path(best["path"]).name


def map_figure(locations: Sequence[Location], index: MapIndex, summary: Mapping[str, Any]) -> Figure:
    """The figure of :func:`write_map`."""
    located = [loc for loc in locations if loc.ok]
    fig = Figure(figsize=(9.0, 8.0))
    ax = fig.add_subplot(1, 1, 1)
    background = _background(index, located)
    if background is not None:
        image, extent, to_xy, name = background
        ax.imshow(image, extent=extent, interpolation="bilinear")
        ax.ticklabel_format(useOffset=False, style="plain")
        ax.set_xlabel(f"{name}: map x (m)")
        ax.set_ylabel("map y (m)")
    else:

        def to_xy(lat, lon):
            return np.asarray(lon), np.asarray(lat)

        ax.scatter(index.coords[:, 1], index.coords[:, 0], s=4, c="#bbbbbb", label="tile centres")
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
        ax.set_aspect(1.0 / max(np.cos(np.radians(float(index.coords[:, 0].mean()))), 1e-3))
    est = np.array([[loc.latitude, loc.longitude] for loc in located]).reshape(-1, 2)
    ex, ey = to_xy(est[:, 0], est[:, 1])
    known = [i for i, loc in enumerate(located) if loc.truth is not None]
    if known:
        truth = np.array([located[i].truth for i in known])
        tx, ty = to_xy(truth[:, 0], truth[:, 1])
        for i, x, y in zip(known, tx, ty, strict=True):
            ax.plot([ex[i], x], [ey[i], y], color="#555555", linewidth=0.6, alpha=0.6)
        ax.scatter(tx, ty, s=10, c="#2ca02c", label="true position", zorder=3)
    errors = np.array([loc.error_m if loc.error_m is not None else np.nan for loc in located])
    colors = np.where(np.isnan(errors), 0.0, errors)
    points = ax.scatter(
        ex,
        ey,
        s=22,
        c=colors,
        cmap="autumn_r",
        marker="x",
        vmin=0.0,
        vmax=max(100.0, float(np.nanpercentile(errors, 90)) if known else 100.0),
        label="estimate",
        zorder=4,
    )
    if known:
        fig.colorbar(points, ax=ax, shrink=0.7, label="error (m)")
    title = f"{summary.get('located', len(located))} photos located"
    if "error_median_m" in summary:
        title += (
            f": median error {summary['error_median_m']:.1f} m, mean {summary['error_mean_m']:.1f} m "
            f"({summary.get('method', '')})"
        )
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    return fig


def write_map(
    path: str | Path, locations: Sequence[Location], index: MapIndex, summary: Mapping[str, Any]
) -> Path:
    """Draw :func:`map_figure` to ``path`` (PNG, written atomically)."""
    return save_figure(map_figure(locations, index, summary), path, dpi=100)


__all__ = ["map_figure", "write_map"]
