"""DyCL: distance-aware cross-view geo-localization.

Submodules:

* :mod:`dycl.geo` — geodesic distances and relevance levels between buildings;
* :mod:`dycl.metrics` — H-AP, ASI, NDCG, per-scale mAP / Recall@K (Rust core);
* :mod:`dycl.rerank` — k-reciprocal re-ranking and MSRerank (Rust core);
* :mod:`dycl.reference` — slow, readable NumPy versions of the metrics and the
  re-ranking, the definitions the fast paths are tested against;
* :mod:`dycl.data`, :mod:`dycl.models`, :mod:`dycl.losses` — the PyTorch side;
* :mod:`dycl.embed`, :mod:`dycl.tasks`, :mod:`dycl.tables`, :mod:`dycl.runs` — embedding, the
  retrieval task, result tables, the run folder;
* :mod:`dycl.spatial_metrics` — err@k and DenseUAV's SDM@K from rankings and geodesic distances;
* :mod:`dycl.train`, :mod:`dycl.evaluate`, :mod:`dycl.experiment`, :mod:`dycl.cli` — engines and commands;
* :mod:`dycl.localize` — where was a photo taken: map indexes, positions and errors in metres, ONNX.

Torch is imported lazily by the submodules that need it, so ``import dycl``
and the evaluation core stay light.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dycl")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
