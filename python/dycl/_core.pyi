"""Type stubs for the compiled Rust extension ``dycl._core``.

Call these through the documented wrappers (:mod:`dycl.geo`,
:mod:`dycl.metrics`, :mod:`dycl.rerank`), which convert and validate inputs.
"""

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

__version__: str

# Every function releases the GIL, stops on Ctrl-C (KeyboardInterrupt) and turns a Rust panic into
# RuntimeError("internal error in dycl._core.<name>: ...; please report it"); a buffer that cannot be
# allocated raises MemoryError.

def available_memory() -> int | None: ...
def _panic_for_tests(message: str) -> None:
    """Panics inside the binding wrapper, so the tests can check the panic policy."""

def geodesic_distances(
    coords_a: npt.NDArray[np.float64], coords_b: npt.NDArray[np.float64] | None
) -> npt.NDArray[np.float64]: ...
def level_matrix(coords: npt.NDArray[np.float64], thresholds: list[float]) -> npt.NDArray[np.uint8]: ...

# --- metrics (dycl.metrics); per-query dict keys: n_levels (int), h_ap, asi, ndcg (q,) float64,
# average_precision (q, L) float64, first_relevant_rank / n_relevant (q, L) uint32 (0 = none),
# top1 (q,) uint32, and top1_error_m (q,) float64 when coords are given
def per_query(
    distances: npt.NDArray[np.float64],
    query_ids: npt.NDArray[np.int64],
    gallery_ids: npt.NDArray[np.int64],
    levels: npt.NDArray[np.uint8],
    coords: npt.NDArray[np.float64] | None = None,
    exclude_self: bool = False,
) -> dict[str, int | npt.NDArray[np.generic]]: ...
def per_query_embeddings(
    query_emb: npt.NDArray[np.float32],
    gallery_emb: npt.NDArray[np.float32],
    query_ids: npt.NDArray[np.int64],
    gallery_ids: npt.NDArray[np.int64],
    levels: npt.NDArray[np.uint8],
    coords: npt.NDArray[np.float64] | None = None,
    exclude_self: bool = False,
) -> dict[str, int | npt.NDArray[np.generic]]: ...
def ranked_gallery(distances: npt.NDArray[np.float64], k: int) -> npt.NDArray[np.uint32]: ...

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

# --- neighbour lists (dycl.knn); rows of the joint set (queries then gallery), L = min(k + 1, N)
def neighbour_lists(
    query_emb: npt.NDArray[np.float32],
    gallery_emb: npt.NDArray[np.float32],
    k: int,
    rows: tuple[int, int] | None = None,
    progress: Callable[[str, int, int], object] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(index (r, L), cosine distance (r, L), max cosine distance (r,)) of rows start..stop.

    Each call copies and normalises all N embeddings (N × d float32) before its rows.
    """
def k_reciprocal_neighbours(
    query_emb: npt.NDArray[np.float32],
    gallery_emb: npt.NDArray[np.float32],
    index: npt.NDArray[np.int64],
    distance: npt.NDArray[np.float32],
    max_distance: npt.NDArray[np.float32],
    k1: int,
    k2: int,
    lambda_value: float,
    progress: Callable[[str, int, int], object] | None = None,
) -> npt.NDArray[np.float32]: ...
def msrerank_neighbours(
    query_emb: npt.NDArray[np.float32],
    gallery_emb: npt.NDArray[np.float32],
    index: npt.NDArray[np.int64],
    distance: npt.NDArray[np.float32],
    max_distance: npt.NDArray[np.float32],
    ks: list[int],
    k2: int,
    lambda_value: float,
    variant: str,
    progress: Callable[[str, int, int], object] | None = None,
) -> npt.NDArray[np.float32]: ...

def k_reciprocal_neighbours_top(
    query_emb: npt.NDArray[np.float32],
    gallery_emb: npt.NDArray[np.float32],
    index: npt.NDArray[np.int64],
    distance: npt.NDArray[np.float32],
    max_distance: npt.NDArray[np.float32],
    k1: int,
    k2: int,
    lambda_value: float,
    top: int,
    progress: Callable[[str, int, int], object] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Each query's best ``top`` gallery items: (index (q, top), re-ranked distance (q, top))."""
def msrerank_neighbours_top(
    query_emb: npt.NDArray[np.float32],
    gallery_emb: npt.NDArray[np.float32],
    index: npt.NDArray[np.int64],
    distance: npt.NDArray[np.float32],
    max_distance: npt.NDArray[np.float32],
    ks: list[int],
    k2: int,
    lambda_value: float,
    variant: str,
    top: int,
    progress: Callable[[str, int, int], object] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """MSRerank's best ``top`` gallery items per query (as :func:`k_reciprocal_neighbours_top`)."""

# --- single-set re-ranking (dycl.single_set): the N items are queries and gallery; (N, N) float32
def k_reciprocal_single(
    dist: npt.NDArray[np.floating],
    k1: int,
    k2: int,
    lambda_value: float,
    progress: Callable[[str, int, int], object] | None = None,
) -> npt.NDArray[np.float32]: ...
def k_reciprocal_single_embeddings(
    embeddings: npt.NDArray[np.float32],
    k1: int,
    k2: int,
    lambda_value: float,
    progress: Callable[[str, int, int], object] | None = None,
) -> npt.NDArray[np.float32]: ...
def msrerank_single(
    dist: npt.NDArray[np.floating],
    ks: list[int],
    k2: int,
    lambda_value: float,
    variant: str,
    progress: Callable[[str, int, int], object] | None = None,
) -> npt.NDArray[np.float32]: ...
def msrerank_single_embeddings(
    embeddings: npt.NDArray[np.float32],
    ks: list[int],
    k2: int,
    lambda_value: float,
    variant: str,
    progress: Callable[[str, int, int], object] | None = None,
) -> npt.NDArray[np.float32]: ...
