"""Guards of the Rust core (dycl._core) that keep the interpreter alive.

A buffer that cannot be allocated must raise ``MemoryError`` (it used to abort
the process), a neighbourhood size beyond the data must behave like ``N - 1``,
a Rust panic must be an ordinary ``Exception``, and long calls must stop on
Ctrl-C. The risky cases run in a fresh interpreter, so a regression fails the
test instead of killing the test run; that interpreter is also limited in
address space, so a regression cannot take the machine's memory either.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import dycl
import dycl.geo
import dycl.metrics
import dycl.rerank

PYTHON_DIR = Path(dycl.__file__).resolve().parent.parent

#: Address space the isolated interpreter may add to what it has after its imports.
HEADROOM_BYTES = 16 << 30

PRELUDE = f"""
import resource
import numpy as np
import dycl
import dycl.geo
import dycl.metrics
import dycl.rerank
from dycl import _core

def _address_space():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0

_soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
_limit = _address_space() + {HEADROOM_BYTES}
if _hard == resource.RLIM_INFINITY or _hard > _limit:
    resource.setrlimit(resource.RLIMIT_AS, (_limit, _hard))

def expect_memory_error(call):
    try:
        call()
    except MemoryError as exc:
        print(f"MemoryError: {{exc}}")
    else:
        print("no error")
"""


def run_isolated(
    code: str, timeout: float = 120.0, headroom: int = HEADROOM_BYTES
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (after :data:`PRELUDE`) in a fresh interpreter with two rayon threads and
    ``headroom`` bytes of address space beyond what its imports took."""
    env = dict(os.environ, RAYON_NUM_THREADS="2", PYTHONPATH=str(PYTHON_DIR))
    prelude = PRELUDE.replace(str(HEADROOM_BYTES), str(headroom))
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout, env=env,
    )


def assert_memory_error(code: str, *fragments: str) -> str:
    """``code`` raised MemoryError with every fragment in its message, and the interpreter lived on."""
    done = run_isolated(code + "\nprint('interpreter alive')\n")
    assert done.returncode == 0, f"exit code {done.returncode}\n{done.stdout}\n{done.stderr[-2000:]}"
    assert "MemoryError: " in done.stdout, done.stdout + done.stderr[-2000:]
    for fragment in fragments:
        assert fragment in done.stdout, done.stdout
    assert "interpreter alive" in done.stdout
    return done.stdout


# --------------------------------------------------------------------------- allocations: geo

#: 12M buildings (192 MB of coordinates, zero pages): a 12M × 12M float64 matrix is 1.15 PB.
MANY_COORDS = "coords = np.zeros((12_000_000, 2))\n"

#: Rows of one coordinate with zero strides (no memory behind them), for the core called directly.
BROADCAST = "def rows(n):\n    return np.broadcast_to(np.array([[22.3, 114.2]]), (n, 2))\n"


def test_geodesic_matrix_too_big_raises_memory_error():
    out = assert_memory_error(
        MANY_COORDS + "expect_memory_error(lambda: dycl.geo.geodesic_distances(coords, coords))",
        "geodesic_distances: the distance matrix of 12000000 × 12000000 × f64 (1.2 PB)",
        "pass fewer coordinates per call",
    )
    assert "no error" not in out


def test_geodesic_self_matrix_too_big_raises_memory_error():
    assert_memory_error(
        MANY_COORDS + "expect_memory_error(lambda: dycl.geo.geodesic_distances(coords))",
        "geodesic_distances: the distance matrix of 12000000 × 12000000 × f64",
    )


def test_level_matrix_too_big_raises_memory_error():
    # 2^25 buildings: a 1.1 PB uint8 matrix
    assert_memory_error(
        BROADCAST + "expect_memory_error(lambda: _core.level_matrix(rows(1 << 25), [200.0, 500.0]))",
        "level_matrix: the level matrix of 33554432 × 33554432 × u8 (1.1 PB)",
        "pass fewer buildings per call",
    )


def test_geo_sizes_that_overflow_raise_memory_error():
    # 2^33 × 2^33 cells overflow 64 bits: refused before the inputs are even scanned
    assert_memory_error(
        BROADCAST
        + "expect_memory_error(lambda: _core.geodesic_distances(rows(1 << 33), rows(1 << 33)))\n"
        + "expect_memory_error(lambda: _core.level_matrix(rows(1 << 33), [200.0]))",
        "exceeds the address space",
    )


# --------------------------------------------------------------------------- allocations: metrics

#: 2^45 queries with zero strides: their per-query buffers alone would be 256 TiB.
MANY_QUERIES = """
n = 1 << 45
levels = np.array([[2, 1], [1, 2]], dtype=np.uint8)
query_ids = np.broadcast_to(np.int64(0), (n,))
gallery_ids = np.array([0, 1], dtype=np.int64)
"""


def test_metrics_with_impossibly_many_queries_raise_memory_error():
    assert_memory_error(
        MANY_QUERIES
        + "dist = np.broadcast_to(np.array([[0.5, 0.25]]), (n, 2))\n"
        + "expect_memory_error(lambda: _core.per_query(dist, query_ids, gallery_ids, levels))\n"
        + "emb = np.broadcast_to(np.array([[1.0, 0.0]], dtype=np.float32), (n, 2))\n"
        + "gallery = np.eye(2, dtype=np.float32)\n"
        + "expect_memory_error(\n"
        + "    lambda: _core.per_query_embeddings(emb, gallery, query_ids, gallery_ids, levels))\n",
        "metrics: the checked ids of 35184372088832 × usize",
        "pass fewer queries per call",
    )


def test_ranked_gallery_too_big_raises_memory_error():
    # a (2^58, 2) uint32 result is 2.3 EB: refused before the distances are scanned
    assert_memory_error(
        "dist = np.broadcast_to(np.array([[0.5, 0.25]]), (1 << 58, 2))\n"
        + "expect_memory_error(lambda: _core.ranked_gallery(dist, 2))\n",
        "metrics: the per-query results of 288230376151711744 × 2 × u32 (2.3 EB)",
    )


# --------------------------------------------------------------------------- metrics stream query blocks


def test_metrics_from_embeddings_never_hold_the_query_by_gallery_matrix():
    # 16k x 10k float32 distances are 640 MB; the interpreter may only add 512 MiB of address space.
    done = run_isolated(
        """
        rng = np.random.default_rng(0)
        q, g, buildings = 16_000, 10_000, 200
        coords = np.column_stack([22.3 + rng.random(buildings) * 0.2, 114.2 + rng.random(buildings) * 0.2])
        levels = dycl.geo.level_matrix(coords)
        q_ids, g_ids = rng.integers(0, buildings, size=q), rng.integers(0, buildings, size=g)
        q_emb, g_emb = rng.normal(size=(q, 4)).astype(np.float32), rng.normal(size=(g, 4)).astype(np.float32)
        out = dycl.metrics.evaluate_embeddings(q_emb, g_emb, q_ids, g_ids, levels)
        print("H-AP", out["H-AP"])
        """,
        headroom=512 << 20,
    )
    assert done.returncode == 0, f"exit code {done.returncode}\n{done.stdout}\n{done.stderr[-2000:]}"
    assert "H-AP 0." in done.stdout, done.stdout


# --------------------------------------------------------------------------- neighbourhood sizes


def _rerank_inputs(q: int = 6, g: int = 30, d: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(q + g, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    a = (1.0 - x @ x.T).astype(np.float64)
    return x[:q], x[q:], (a[:q, q:], a[:q, :q], a[q:, q:])


#: ``k`` beyond ``N - 1``: 10^7 was refused by the memory estimate, 2^64 - 1 wrapped ``k + 1`` to 0.
HUGE_KS = [37, 10**7, 2**60, 2**64 - 1]


@pytest.mark.parametrize("k1", HUGE_KS)
def test_k1_beyond_n_minus_1_gives_the_result_of_n_minus_1(k1):
    query, gallery, blocks = _rerank_inputs()
    n = query.shape[0] + gallery.shape[0]
    want = dycl.rerank.k_reciprocal(*blocks, k1=n - 1)
    np.testing.assert_array_equal(dycl.rerank.k_reciprocal(*blocks, k1=k1), want)
    want = dycl.rerank.k_reciprocal_embeddings(query, gallery, k1=n - 1)
    np.testing.assert_array_equal(dycl.rerank.k_reciprocal_embeddings(query, gallery, k1=k1), want)


@pytest.mark.parametrize("variant", ["paper", "reference"])
@pytest.mark.parametrize("k", HUGE_KS)
def test_ks_beyond_n_minus_1_give_the_result_of_n_minus_1(k, variant):
    query, gallery, blocks = _rerank_inputs(seed=1)
    n = query.shape[0] + gallery.shape[0]
    want = dycl.rerank.msrerank(*blocks, ks=(3, n - 1), variant=variant)
    np.testing.assert_array_equal(dycl.rerank.msrerank(*blocks, ks=(3, k), variant=variant), want)
    want = dycl.rerank.msrerank_embeddings(query, gallery, ks=(3, n - 1, n - 1), variant=variant)
    got = dycl.rerank.msrerank_embeddings(query, gallery, ks=(3, k, k), variant=variant)
    np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- one panic policy

BINDINGS = PYTHON_DIR.parent / "crates" / "dycl-python" / "src"


def test_a_panic_in_the_core_is_a_runtime_error_not_a_base_exception():
    from dycl import _core

    with pytest.raises(RuntimeError) as info:
        _core._panic_for_tests("deliberate")
    assert isinstance(info.value, Exception)
    assert str(info.value) == "internal error in dycl._core._panic_for_tests: deliberate; please report it"


@pytest.mark.parametrize("module", ["geo.rs", "metrics.rs", "rerank.rs"])
def test_every_binding_calls_the_core_through_one_wrapper(module):
    """PyO3 turns an uncaught panic into PanicException, a BaseException that ``except Exception`` misses;
    lib.rs's call_core catches it. Each #[pyfunction] must go through it, none release the GIL itself."""
    import re

    source = (BINDINGS / module).read_text(encoding="utf-8")
    assert "py.detach" not in source and "catch_unwind" not in source
    functions = re.split(r"#\[pyfunction\]", source)[1:]
    assert functions
    for function in functions:
        name = re.search(r"fn (\w+)", function).group(1)
        body = function.split("\n}\n", 1)[0]
        assert "call_core(" in body or "run_detached(" in body, f"{module}: {name} bypasses call_core"


# --------------------------------------------------------------------------- Ctrl-C in long calls

#: Calls of minutes on two threads; the child says when it starts one and what stopped it.
LONG_CALLS = {
    "level_matrix": """
        rng = np.random.default_rng(0)
        coords = np.column_stack([22.3 + rng.random(20_000) * 0.1, 114.2 + rng.random(20_000) * 0.1])
        call = lambda: dycl.geo.level_matrix(coords)
    """,
    "geodesic_distances": """
        rng = np.random.default_rng(0)
        coords = np.column_stack([22.3 + rng.random(12_000) * 0.1, 114.2 + rng.random(12_000) * 0.1])
        call = lambda: dycl.geo.geodesic_distances(coords, coords)
    """,
    "evaluate_embeddings": """
        rng = np.random.default_rng(0)
        n, buildings = 100_000, 1_000
        levels = np.eye(buildings, dtype=np.uint8)
        ids = rng.integers(0, buildings, size=n)
        emb = rng.normal(size=(n, 8)).astype(np.float32)
        call = lambda: dycl.metrics.evaluate_embeddings(emb, emb, ids, ids, levels)
    """,
}


@pytest.mark.parametrize("name", sorted(LONG_CALLS))
def test_ctrl_c_interrupts_long_geo_and_metrics_calls(name):
    import signal
    import time

    code = PRELUDE + textwrap.dedent(LONG_CALLS[name]) + textwrap.dedent("""
        import signal, sys, time
        # A job started in the background by a non-interactive shell inherits SIGINT ignored, and Python
        # then keeps ignoring it: restore Ctrl-C's usual meaning, as in an interactive session.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("started", flush=True)
        start = time.perf_counter()
        try:
            call()
        except KeyboardInterrupt:
            print(f"KeyboardInterrupt after {time.perf_counter() - start:.2f} s", flush=True)
        else:
            print("finished", flush=True)
    """)
    env = dict(os.environ, RAYON_NUM_THREADS="2", PYTHONPATH=str(PYTHON_DIR))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "started"
        time.sleep(1.0)  # well inside the call
        child.send_signal(signal.SIGINT)
        sent = time.perf_counter()
        out, err = child.communicate(timeout=60)
        waited = time.perf_counter() - sent
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0, err[-2000:]
    assert "KeyboardInterrupt after" in out, out + err[-2000:]
    assert waited < 30, f"the call took {waited:.1f} s to stop"
