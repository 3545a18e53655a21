"""The synthetic campus: a procedurally generated world rendered in the DA-Campus layout.

* :mod:`.world` — campuses, streets, buildings, coordinates and style fields (no images);
* :mod:`.raster` — top-down ground and orthophoto rasters of a campus;
* :mod:`.render` — satellite tiles (orthophoto crops) and oblique drone views (perspective renderer);
* :mod:`.generate` — :func:`generate_campus`, parallel and resumable, writing the dataset.
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
