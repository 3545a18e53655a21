"""Type stubs for the compiled Rust extension ``dycl._core``.

Call these through the documented wrappers (:mod:`dycl.geo`,
:mod:`dycl.metrics`, :mod:`dycl.rerank`), which convert and validate inputs.
"""

import numpy as np
import numpy.typing as npt

__version__: str

def geodesic_distances(
    coords_a: npt.NDArray[np.float64], coords_b: npt.NDArray[np.float64] | None
) -> npt.NDArray[np.float64]: ...
def level_matrix(coords: npt.NDArray[np.float64], thresholds: list[float]) -> npt.NDArray[np.uint8]: ...
