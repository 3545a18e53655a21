"""Dataset splits: what images exist, which building each shows, where each building is.

Two readers produce the same :class:`Split`:

* :func:`read_dacampus` — the DA-Campus release layout (DESIGN §7), which the
  synthetic campus also writes;
* :func:`read_manifest` — one CSV for any other cross-view dataset with
  coordinates.

Both validate their input and raise :class:`DatasetError` (a ``ValueError``)
whose message names the file and, where one is to blame, the line.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..geo import DEFAULT_THRESHOLDS, level_matrix

PLATFORMS = ("satellite", "drone")
DACAMPUS_COLUMNS = ("path", "class_id", "latitude", "longitude")
MANIFEST_COLUMNS = ("path", "view", "building", "latitude", "longitude", "split")
_MISSING_EXAMPLES = 3


class DatasetError(ValueError):
    """Malformed or inconsistent dataset input; the message names the file (and line)."""


@dataclass(frozen=True, eq=False)
class Split:
    """One split (train or test) of a cross-view dataset.

    Buildings are indexed ``0..B-1`` in ascending id order; drone images are
    grouped by building, keeping their file order within a building. Pair
    ``i`` is drone image ``i`` with the satellite tile of its building.
    """

    name: str
    building_ids: np.ndarray
    coords: np.ndarray
    satellite_paths: tuple[Path, ...]
    drone_paths: tuple[Path, ...]
    drone_buildings: np.ndarray
    source: str = ""
    _index: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        # private read-only copies: a Split never changes under its users
        ids = np.array(self.building_ids)
        coords = np.array(self.coords, dtype=np.float64)
        drone_buildings = np.array(self.drone_buildings, dtype=np.int64)
        b = len(ids)
        if ids.ndim != 1 or coords.shape != (b, 2) or len(self.satellite_paths) != b:
            raise ValueError("Split: building_ids, coords and satellite_paths must have one row per building")
        if drone_buildings.ndim != 1 or len(self.drone_paths) != len(drone_buildings):
            raise ValueError("Split: drone_paths and drone_buildings must have the same length")
        if len(drone_buildings) and (drone_buildings.min() < 0 or drone_buildings.max() >= b):
            raise ValueError("Split: drone_buildings holds a building index outside 0..B-1")
        for name, arr in (("building_ids", ids), ("coords", coords), ("drone_buildings", drone_buildings)):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "satellite_paths", tuple(Path(p) for p in self.satellite_paths))
        object.__setattr__(self, "drone_paths", tuple(Path(p) for p in self.drone_paths))
        self._index.update({_id_key(v): i for i, v in enumerate(ids.tolist())})

    @property
    def num_buildings(self) -> int:
        return len(self.building_ids)

    @property
    def num_drone(self) -> int:
        return len(self.drone_paths)

    @property
    def num_pairs(self) -> int:
        """Training pairs: one per drone image."""
        return len(self.drone_paths)

    def levels(self, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> np.ndarray:
        """``(B, B)`` uint8 relevance levels between this split's buildings (DESIGN §3)."""
        return level_matrix(self.coords, thresholds)

    def index_of(self, building_id: object) -> int:
        """The building index of ``building_id`` (an id as listed in the dataset files)."""
        key = _id_key(building_id)
        if key not in self._index:
            raise ValueError(f"building_id: {building_id!r} is not a building of the {self.name} split")
        return self._index[key]

    def drone_counts(self) -> np.ndarray:
        """Number of drone images of each building, ``(B,)`` int64."""
        return np.bincount(self.drone_buildings, minlength=self.num_buildings).astype(np.int64)

    def __repr__(self) -> str:
        return (
            f"Split({self.name!r}, buildings={self.num_buildings}, drone={self.num_drone}, "
            f"source={self.source!r})"
        )


def _id_key(value: object) -> object:
    """Lookup key for a building id: integers (also as strings) compare as integers."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        return text


# --------------------------------------------------------------------------- table parsing


@dataclass
class _Row:
    line: int
    path: str
    building: str
    lat: float
    lon: float


def _parse_coordinate(text: str, kind: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{where}: {kind} {text!r} is not a number") from None
    limit = 90.0 if kind == "latitude" else 180.0
    if not math.isfinite(value) or abs(value) > limit:
        raise DatasetError(f"{where}: {kind} {text!r} is outside [-{limit:g}, {limit:g}]")
    return value


def _header_index(header: list[str], required: Sequence[str], where: str) -> dict[str, int]:
    names = [h.strip().lower() for h in header]
    missing = [c for c in required if c not in names]
    if missing:
        raise DatasetError(
            f"{where}: missing column(s) {', '.join(missing)} "
            f"(header has {', '.join(names) or 'nothing'}; needs {', '.join(required)})"
        )
    duplicated = sorted({c for c in required if names.count(c) > 1})
    if duplicated:
        raise DatasetError(f"{where}: column(s) {', '.join(duplicated)} appear more than once in the header")
    return {c: names.index(c) for c in required}


def _read_text(path: Path) -> str:
    """A list file as text: UTF-8, with or without the byte-order mark Excel writes ("CSV UTF-8").

    Bytes that are not UTF-8 (e.g. a Latin-1 export) raise a :class:`DatasetError`
    naming the file, the line and the byte.
    """
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DatasetError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        ) from None


def _table(rows: Iterable[tuple[int, list[str]]], path: Path, required: Sequence[str],
           separator: str) -> Iterator[tuple[int, str, list[str], dict[str, int]]]:
    """The data rows of a list file: ``(line, "file:line", fields, header columns)``.

    Blank rows are skipped, the first row is the header (with every ``required``
    column), every other row must have the header's width; a file without a
    header is an error. ``separator`` names the field separator in messages.
    """
    cols: dict[str, int] | None = None
    width = 0
    for line_no, fields in rows:
        if not fields or all(not f.strip() for f in fields):
            continue
        where = f"{path}:{line_no}"
        if cols is None:
            cols = _header_index(fields, required, where)
            width = len(fields)
            continue
        if len(fields) != width:
            raise DatasetError(
                f"{where}: expected {width} {separator}-separated fields like the header, got {len(fields)}"
            )
        yield line_no, where, fields, cols
    if cols is None:
        names = (" " if separator == "space" else ", ").join(required)
        raise DatasetError(f"{path}:1: empty file (expected a header with {names})")


def _read_dacampus_table(path: Path) -> list[_Row]:
    """Rows of one DA-Campus platform file (space-separated, header first)."""
    if not path.is_file():
        raise DatasetError(f"{path}: missing file")
    rows: list[_Row] = []
    seen: dict[str, int] = {}
    lines = enumerate(io.StringIO(_read_text(path), newline=None), start=1)
    for line_no, where, fields, cols in _table(((n, raw.split()) for n, raw in lines), path, DACAMPUS_COLUMNS,
                                               "space"):
        rel = fields[cols["path"]]
        if rel in seen:
            raise DatasetError(f"{where}: duplicate row for {rel} (first on line {seen[rel]})")
        seen[rel] = line_no
        building = fields[cols["class_id"]]
        try:
            int(building)
        except ValueError:
            raise DatasetError(f"{where}: class_id {building!r} is not an integer") from None
        rows.append(
            _Row(
                line_no,
                rel,
                building,
                _parse_coordinate(fields[cols["latitude"]], "latitude", where),
                _parse_coordinate(fields[cols["longitude"]], "longitude", where),
            )
        )
    return rows


def _check_exist(paths: Iterable[Path], listed_in: str) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        examples = ", ".join(str(p) for p in missing[:_MISSING_EXAMPLES])
        more = ", ..." if len(missing) > _MISSING_EXAMPLES else ""
        raise DatasetError(f"{listed_in}: {len(missing)} image file(s) do not exist, e.g. {examples}{more}")


def _build_split(
    name: str,
    sat_rows: list[_Row],
    drone_rows: list[_Row],
    sat_file: str,
    drone_file: str,
    resolve_sat,
    resolve_drone,
    check_images: bool,
    source: str,
) -> Split:
    """Group rows by building, check consistency, and assemble a :class:`Split`."""
    if not sat_rows:
        raise DatasetError(f"{sat_file}: no satellite images for the {name} split")
    first_sat: dict[object, _Row] = {}
    for row in sat_rows:
        key = _id_key(row.building)
        if key in first_sat:
            raise DatasetError(
                f"{sat_file}:{row.line}: building {row.building} has a second satellite "
                f"image (first on line {first_sat[key].line}); one per building is expected"
            )
        first_sat[key] = row
    for row in drone_rows:
        if _id_key(row.building) not in first_sat:
            raise DatasetError(
                f"{drone_file}:{row.line}: building {row.building} has drone images but no "
                f"satellite image in {sat_file}"
            )

    keys = list(first_sat)
    if all(isinstance(k, int) for k in keys):
        ordered = sorted(keys)
        building_ids = np.asarray(ordered, dtype=np.int64)
    else:
        ordered = sorted(keys, key=str)
        building_ids = np.asarray([str(k) for k in ordered])
    index = {k: i for i, k in enumerate(ordered)}
    coords = np.asarray([[first_sat[k].lat, first_sat[k].lon] for k in ordered], dtype=np.float64)
    satellite_paths = tuple(resolve_sat(first_sat[k].path) for k in ordered)

    drone_index = np.asarray([index[_id_key(r.building)] for r in drone_rows], dtype=np.int64)
    order = np.argsort(drone_index, kind="stable")  # group by building, file order within a building
    drone_paths_all = [resolve_drone(r.path) for r in drone_rows]
    drone_paths = tuple(drone_paths_all[i] for i in order)
    drone_buildings = drone_index[order]

    if check_images:
        _check_exist(satellite_paths, sat_file)
        _check_exist(drone_paths, drone_file)
    return Split(name, building_ids, coords, satellite_paths, drone_paths, drone_buildings, source)


# --------------------------------------------------------------------------- DA-Campus


def read_dacampus(root: str | os.PathLike, split: str, check_images: bool = True) -> Split:
    """Read one split of a dataset in the DA-Campus layout (DESIGN §7).

    ``<root>/satellite/<split>.txt`` and ``<root>/drone/<split>.txt`` are
    space-separated with a header containing ``path class_id latitude
    longitude`` (any column order, extra columns allowed); paths are relative
    to the platform folder. Rows are grouped by ``class_id``: one satellite
    row per building, any number of drone rows. Building coordinates are
    those of the satellite row. When the other split's satellite file exists,
    the two splits must not share a building.

    Args:
        root: dataset folder.
        split: ``"train"`` or ``"test"`` (any name with both files works).
        check_images: verify that every listed image file exists.

    Raises:
        DatasetError: missing folder, file or column; malformed row; duplicate
            row; building without a satellite image or with two; a building in
            both splits; missing image files (count and first few).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a dataset folder (does not exist or is not a directory)")
    if not isinstance(split, str) or not split or "/" in split or "\\" in split:
        raise ValueError(f"split: expected a split name such as 'train' or 'test', got {split!r}")
    files = {p: root / p / f"{split}.txt" for p in PLATFORMS}
    for platform, path in files.items():
        if not (root / platform).is_dir():
            raise DatasetError(
                f"{root / platform}: missing folder (DA-Campus layout needs "
                f"{root}/satellite and {root}/drone)"
            )
        if not path.is_file():
            raise DatasetError(f"{path}: missing file")
    sat_rows = _read_dacampus_table(files["satellite"])
    drone_rows = _read_dacampus_table(files["drone"])
    other = {"train": "test", "test": "train"}.get(split)
    if other is not None and (root / "satellite" / f"{other}.txt").is_file():
        other_file = root / "satellite" / f"{other}.txt"
        other_lines = {_id_key(r.building): r.line for r in _read_dacampus_table(other_file)}
        sat_lines = {_id_key(r.building): r.line for r in sat_rows}
        shared = sorted(set(sat_lines) & set(other_lines), key=str)
        if shared:
            b = shared[0]
            raise DatasetError(
                f"{files['satellite']}:{sat_lines[b]}: building {b} is also in the {other} "
                f"split ({other_file}:{other_lines[b]}); {len(shared)} building(s) in both"
            )
    return _build_split(
        split,
        sat_rows,
        drone_rows,
        str(files["satellite"]),
        str(files["drone"]),
        lambda rel: root / "satellite" / rel,
        lambda rel: root / "drone" / rel,
        check_images,
        source=str(root),
    )


# --------------------------------------------------------------------------- manifest


def read_manifest(csv_path: str | os.PathLike, split: str, check_images: bool = True) -> Split:
    """Read one split from a manifest CSV (any cross-view dataset with coordinates).

    Columns (header row, any order, extra columns allowed): ``path`` (relative
    to the CSV's folder, or absolute), ``view`` (``satellite`` or ``drone``),
    ``building`` (an id; integers are compared numerically), ``latitude``,
    ``longitude`` (WGS84 degrees) and ``split``. One satellite row per
    building; building coordinates are those of the satellite row. A building
    may appear in one split only.

    Raises:
        DatasetError: as :func:`read_dacampus`, plus unknown ``view`` values
            and a split with no rows.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"{csv_path}: missing file")
    base = csv_path.parent
    sat_rows, drone_rows = _read_manifest_rows(csv_path)
    _check_one_split_per_building(csv_path, sat_rows, drone_rows)
    if split not in sat_rows and split not in drone_rows:
        known = ", ".join(sorted(set(sat_rows) | set(drone_rows))) or "none"
        raise DatasetError(f"{csv_path}: no rows for split {split!r} (splits present: {known})")

    def resolve(rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else base / p

    return _build_split(
        split,
        sat_rows.get(split, []),
        drone_rows.get(split, []),
        str(csv_path),
        str(csv_path),
        resolve,
        resolve,
        check_images,
        source=str(csv_path),
    )


def _read_manifest_rows(csv_path: Path) -> tuple[dict[str, list[_Row]], dict[str, list[_Row]]]:
    """Every satellite and drone row of a manifest, by split, in file order (blank lines skipped)."""
    sat_rows: dict[str, list[_Row]] = {}
    drone_rows: dict[str, list[_Row]] = {}
    seen: dict[tuple[str, str], int] = {}  # (view, path) -> line, to report duplicates
    reader = csv.reader(io.StringIO(_read_text(csv_path), newline=""))
    # line_num is read as each row is yielded: a quoted field may span lines.
    numbered = ((reader.line_num, row) for row in reader)
    for line_no, where, row, cols in _table(numbered, csv_path, MANIFEST_COLUMNS, "comma"):
        view, split_name, parsed = _parse_manifest_row(
            [f.strip() for f in row], cols, line_no, where, seen
        )
        (sat_rows if view == "satellite" else drone_rows).setdefault(split_name, []).append(parsed)
    return sat_rows, drone_rows


def _parse_manifest_row(
    fields: list[str], cols: dict[str, int], line_no: int, where: str, seen: dict[tuple[str, str], int]
) -> tuple[str, str, _Row]:
    """One data row (fields stripped) as (view, split, row), recorded in ``seen``. The checks run in
    this order, so a row with several faults reports the first: view, empty fields, duplicate image,
    coordinates."""
    view = fields[cols["view"]].lower()
    if view not in PLATFORMS:
        raise DatasetError(f"{where}: view {fields[cols['view']]!r} must be 'satellite' or 'drone'")
    rel, building, split_name = fields[cols["path"]], fields[cols["building"]], fields[cols["split"]]
    if not rel or not building or not split_name:
        raise DatasetError(f"{where}: empty path, building or split")
    key = (view, rel)
    if key in seen:
        raise DatasetError(f"{where}: duplicate row for {view} image {rel} (first on line {seen[key]})")
    seen[key] = line_no
    parsed = _Row(
        line_no,
        rel,
        building,
        _parse_coordinate(fields[cols["latitude"]], "latitude", where),
        _parse_coordinate(fields[cols["longitude"]], "longitude", where),
    )
    return view, split_name, parsed


def _check_one_split_per_building(
    csv_path: Path, sat_rows: dict[str, list[_Row]], drone_rows: dict[str, list[_Row]]
) -> None:
    """A building may belong to one split only (checked over the whole file)."""
    owner: dict[object, tuple[str, int]] = {}
    for split_name, rows in list(sat_rows.items()) + list(drone_rows.items()):
        for r in rows:
            key = _id_key(r.building)
            if key in owner and owner[key][0] != split_name:
                raise DatasetError(
                    f"{csv_path}:{r.line}: building {r.building} is in split {split_name!r} "
                    f"but also in {owner[key][0]!r} (line {owner[key][1]})"
                )
            owner.setdefault(key, (split_name, r.line))


def check_disjoint(a: Split, b: Split) -> None:
    """Raise :class:`DatasetError` if two splits share a building id."""
    shared = sorted(
        {_id_key(v) for v in a.building_ids.tolist()} & {_id_key(v) for v in b.building_ids.tolist()}, key=str
    )
    if shared:
        listed = ", ".join(str(s) for s in shared[:5]) + (", ..." if len(shared) > 5 else "")
        raise DatasetError(
            f"{a.source or a.name}: {len(shared)} building(s) in both the {a.name} and the "
            f"{b.name} split: {listed}"
        )
