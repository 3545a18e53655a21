"""The synthetic campus: a procedurally generated world rendered in the DA-Campus layout.

* :mod:`.world` — :func:`campus_layout`: campuses, streets, buildings, coordinates (no images), from
  :mod:`.style` (colours, style fields, districts), :mod:`.campus` (street grid, blocks, lots),
  :mod:`.buildings` (parts, colours, roof details), :mod:`.geodesy` and :mod:`.streams` (RNG tags);
* :mod:`.raster` — top-down ground and orthophoto rasters of a campus, from :mod:`.land` (base land,
  streets, blocks, trees), :mod:`.painting` (the painter and its shapes) and :mod:`.shading`
  (textures, shadows, the orthophoto);
* :mod:`.render` — satellite tiles (orthophoto crops) and oblique drone views (perspective renderer),
  with :mod:`.camera`, :mod:`.mesh` (building faces) and :mod:`.scene` (a view's canvas and faces);
* :mod:`.generate` — :func:`generate_campus`, parallel and resumable, writing the dataset.

Each of world, raster and render re-exports the public names of its parts.
"""

from .generate import DEMO_DEFAULTS, generate_campus, image_paths
from .world import CampusLayout, campus_layout, enu_to_latlon

__all__ = [
    "DEMO_DEFAULTS",
    "CampusLayout",
    "campus_layout",
    "enu_to_latlon",
    "generate_campus",
    "image_paths",
]
