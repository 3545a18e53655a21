"""Type stubs for the compiled Rust extension ``dycl._core``.

Call these through the documented wrappers (:mod:`dycl.geo`,
:mod:`dycl.metrics`, :mod:`dycl.rerank`), which convert and validate inputs.
"""

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

__version__: str

def geodesic_distances(
    coords_a: npt.NDArray[np.float64], coords_b: npt.NDArray[np.float64] | None
) -> npt.NDArray[np.float64]: ...
def level_matrix(coords: npt.NDArray[np.float64], thresholds: list[float]) -> npt.NDArray[np.uint8]: ...

# --- re-ranking (dycl.rerank); distance blocks are float32 or float64, read in place
def k_reciprocal(
    q_g_dist: npt.NDArray[np.floating],
    q_q_dist: npt.NDArray[np.floating],
    g_g_dist: npt.NDArray[np.floating],
    k1: int,
    k2: int,
    lambda_value: float,
    progress: Callable[[str, int, int], object] | None = None,
) -> npt.NDArray[np.float32]: ...
def k_reciprocal_embeddings(
    query_emb: npt.NDArray[np.float32],
    gallery_emb: npt.NDArray[np.float32],
    k1: int,
    k2: int,
    lambda_value: float,
    progress: Callable[[str, int, int], object] | None = None,
) -> npt.NDArray[np.float32]: ...
def msrerank(
    q_g_dist: npt.NDArray[np.floating],
    q_q_dist: npt.NDArray[np.floating],
    g_g_dist: npt.NDArray[np.floating],
    ks: list[int],
    k2: int,
    lambda_value: float,
    variant: str,
    progress: Callable[[str, int, int], object] | None = None,
) -> npt.NDArray[np.float32]: ...
def msrerank_embeddings(
    query_emb: npt.NDArray[np.float32],
    gallery_emb: npt.NDArray[np.float32],
    ks: list[int],
    k2: int,
    lambda_value: float,
    variant: str,
    progress: Callable[[str, int, int], object] | None = None,
) -> npt.NDArray[np.float32]: ...
