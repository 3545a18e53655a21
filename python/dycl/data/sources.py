"""Open a dataset whatever its form: a DA-Campus folder or a manifest CSV (NumPy only).

The one place that decides how a ``--data-dir`` is read, for the trainer, the
evaluator and the experiment suite::

    from dycl.data import open_split, open_train_test

    test = open_split("DA-Campus", "test")                 # format "auto": a folder is DA-Campus
    train, test = open_train_test("data.csv")              # a file is a manifest; checked for training
"""

from __future__ import annotations

import os
from pathlib import Path

from .splits import Split, check_disjoint, read_dacampus, read_manifest

#: ``--dataset-format`` choices.
DATASET_FORMATS: tuple[str, ...] = ("auto", "dacampus", "manifest")


def dataset_format(data_dir: str | os.PathLike, declared: str = "auto") -> str:
    """``"dacampus"`` for a folder, ``"manifest"`` for a CSV file (``declared`` wins unless ``"auto"``)."""
    if declared not in DATASET_FORMATS:
        raise ValueError(f"dataset_format: expected one of {', '.join(DATASET_FORMATS)}, got {declared!r}")
    if declared != "auto":
        return declared
    return "manifest" if Path(data_dir).is_file() else "dacampus"


def open_split(path: str | os.PathLike, name: str, format: str = "auto", check_images: bool = True) -> Split:
    """The split ``name`` (``"train"``, ``"test"``, ...) of the dataset at ``path``.

    Raises ``ValueError`` (a :class:`~dycl.data.DatasetError` for malformed
    files) when the path does not exist, is not of the declared format, or
    the split cannot be read.
    """
    root = Path(path)
    if not root.exists():
        raise ValueError(f"data_dir: {root} does not exist")
    fmt = dataset_format(root, format)
    if fmt == "dacampus" and not root.is_dir():
        raise ValueError(f"data_dir: {root} is not a folder in the DA-Campus layout")
    reader = read_manifest if fmt == "manifest" else read_dacampus
    return reader(root, name, check_images=check_images)


def open_train_test(path: str | os.PathLike, format: str = "auto") -> tuple[Split, Split]:
    """The train and test splits for training: disjoint, each with >= 2 buildings and drone views."""
    train, test = open_split(path, "train", format), open_split(path, "test", format)
    check_disjoint(train, test)
    for split in (train, test):
        if split.num_buildings < 2 or split.num_drone == 0:
            raise ValueError(
                f"data_dir: the {split.name} split of {path} has {split.num_buildings} buildings and "
                f"{split.num_drone} drone images; training and evaluation need at least 2 buildings "
                "with drone views"
            )
    return train, test


__all__ = ["DATASET_FORMATS", "dataset_format", "open_split", "open_train_test"]
