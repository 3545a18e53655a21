"""Fixtures shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from dycl.data.synth import generate_campus


@pytest.fixture(scope="session")
def campus(tmp_path_factory) -> Path:
    """A tiny synthetic campus (8 train / 6 test buildings, 4 drone views, 32 px, seed 0), rendered once.

    Shared read-only by the training, evaluation and experiment tests; a test that
    needs to damage it copies it first.
    """
    root = tmp_path_factory.mktemp("campus") / "tiny"
    generate_campus(root, train_buildings=8, test_buildings=6, drone_views=4, image_size=32, seed=0,
                    workers=1, progress=False)
    return root
