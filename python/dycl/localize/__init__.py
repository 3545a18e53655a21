"""Localization: where was this drone photo taken? Positions and errors in metres on a georeferenced map.

* :mod:`.index` — the map index (``.dyclidx``): tile embeddings, centres, footprints, the model's fingerprint;
* :mod:`.localizer` — :class:`Localizer`: ``from_checkpoint`` / ``from_onnx``, ``index_geotiff`` /
  ``index_tiles`` / ``index_split``, ``use_index``, ``locate(images) -> list[Location]``;
* :mod:`.estimate` — the search (ranked by the Rust core), the estimates, errors and summary;
* :mod:`.truth` — true positions from GPS EXIF or a CSV;
* :mod:`.outputs`, :mod:`.mapfig`, :mod:`.report` — results.csv, topk.csv, results.geojson, summary.json,
  map.png and the printed table;
* :mod:`.run` — the engines of ``dycl-index``, ``dycl-localize`` and ``dycl-export``; :mod:`.demo` —
  ``dycl-localize --demo``.

The definitions are in docs/localize.md and DESIGN §10.
"""

from .estimate import DEFAULT_METHOD, Location, Match, summarize
from .index import MapIndex, read_index
from .localizer import Localizer, locate_embeddings, random_index

__all__ = [
    "DEFAULT_METHOD",
    "Localizer",
    "Location",
    "MapIndex",
    "Match",
    "locate_embeddings",
    "random_index",
    "read_index",
    "summarize",
]
