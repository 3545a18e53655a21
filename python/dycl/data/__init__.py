"""The data layer: dataset readers, the synthetic campus, torch datasets, samplers, transforms.

Public API (stable; the trainer and the evaluator use exactly this)
===================================================================

Splits (NumPy only, no torch)::

    from dycl.data import read_dacampus, read_manifest, Split, DatasetError

    split = read_dacampus(root, "train")        # DA-Campus layout (DESIGN §7); check_images=True
    split = read_manifest("data.csv", "test")   # CSV: path, view, building, latitude, longitude, split
    check_disjoint(train_split, test_split)     # DatasetError if the splits share a building id
    split = open_split(path, "test", format="auto")   # a folder is DA-Campus, a file a manifest
    train, test = open_train_test(path)         # both, checked for training (disjoint, >= 2 buildings)

    split.name                  # "train" / "test" (whatever split was asked for)
    split.building_ids          # (B,) building ids, ascending: int64 class_id values for DA-Campus;
                                #   manifests give int64 when every label is an integer, else str labels
    split.coords                # (B, 2) float64 latitude, longitude (degrees) of each building
    split.satellite_paths       # tuple of B absolute Paths, one satellite tile per building
    split.drone_paths           # tuple of N absolute Paths (grouped by building, file order kept)
    split.drone_buildings       # (N,) int64 building *index* (0..B-1) of each drone image
    split.num_buildings, split.num_drone, split.num_pairs   # num_pairs == num_drone
    split.levels(thresholds=(200.0, 500.0))   # (B, B) uint8 via dycl.geo.level_matrix
    split.index_of(building_id) -> int        # building id -> building index
    split.drone_counts() -> (B,) int64        # drone images per building

Pair ``i`` of a split is (drone image ``i``, the satellite tile of building
``drone_buildings[i]``): an epoch has ``num_pairs`` pairs. Every reader error
is a :class:`DatasetError` (a ``ValueError``) whose message starts with
``file:line:`` where a line is to blame.

Torch datasets (``dycl.data.datasets``; importing them imports torch)::

    PairDataset(split, satellite_transform=None, drone_transform=None, satellite_prepare=None)
        [i] -> Pair(satellite, drone, building, coords)   # a NamedTuple; default_collate stacks it to
                                    # (b,3,S,S) float32, (b,3,S,S) float32, (b,) int64, (b,2) float64
                                    # (uint8 images with normalize=False transforms, as the trainer uses)
        # satellite_prepare: a deterministic transform (resize_transform) applied once per building, cached
    ImageSet(paths, buildings, transform=None)      [i] -> (image, building)
    satellite_set(split, transform=None) -> ImageSet    # B satellite tiles, building index = row
    drone_set(split, transform=None) -> ImageSet        # N drone views with their building indices
    load_image(path) -> uint8 tensor (3, H, W)          # Pillow; CorruptImageError (a DatasetError)
                                                        # naming the path on undecodable files

Without a transform images come back as uint8 tensors (3, H, W).

Transforms (torchvision.transforms.v2, ``dycl.data.transforms``)::

    train_transforms(view, image_size=256, rotation="quarter")   # view: "satellite" | "drone"
        resize (image_size, image_size) -> random horizontal flip -> (satellite only) random rotation
        -> float32 in [0, 1] -> ImageNet normalisation.  rotation: "quarter" (k * 90 deg, lossless, the
        default), "any" (uniform angle, corners filled with the mean colour), "none".
    eval_transforms(image_size=256)       # resize + normalisation only
    normalize=False (both): stop at the resized uint8 image; BatchNormalizer(device)(uint8 batch) then
        gives the same float32 values on the device; resize_transform(size) / train_transforms(resize=False)
        split the training satellite transform around PairDataset's tile cache
    IMAGENET_MEAN, IMAGENET_STD
    seed_worker(worker_id)                # DataLoader(worker_init_fn=seed_worker): seeds numpy/random
    loader_generator(seed, epoch=0, rank=0) -> torch.Generator   # DataLoader(generator=...), one per epoch

Batch samplers over pair indices (``dycl.data.samplers``; NumPy only)::

    RandomPairBatchSampler(num_pairs, batch_size, seed=0, rank=0, world_size=1, drop_last=False)
    GeoPairBatchSampler(pair_buildings, levels, batch_size, seed=0, rank=0, world_size=1,
                        pairs_per_building=2, blocks_per_batch=2)
    make_batch_sampler(kind, split, batch_size, seed=0, rank=0, world_size=1,
                       thresholds=(200.0, 500.0), **options)   # kind: "random" | "geo"
    sampler.set_epoch(epoch); len(sampler); iter(sampler) -> lists of pair indices
    sampler.state_dict() -> dict; sampler.load_state_dict(state)     # resume at an epoch boundary
    sampler.global_batches(epoch) -> [step][rank] -> pair indices    # every rank's share (tests, stats)
    geo_sampler.epoch_summary(epoch) -> {"batches", "pairs", "repeats", "unused"}
    in_batch_positives(sampler_or_batches, pair_buildings, levels) -> dict  # in-batch positives per scale

Use them as ``DataLoader(PairDataset(...), batch_sampler=sampler, ...)`` and
call ``sampler.set_epoch(epoch)`` before every epoch. The batches of an epoch
are a pure function of (seed, epoch, configuration); every rank computes the
same global schedule and takes its own disjoint share, and all ranks get the
same number of batches: ``ceil(num_pairs / (batch_size * world_size))`` for
both kinds (``floor`` for random with ``drop_last``), the same every epoch.
``batch_size`` is per rank; both kinds build the *global* batch of a step
(``batch_size * world_size`` pairs) and give rank ``r`` its ``r``-th slice, so
``W`` ranks see exactly the batches of one process. ``random`` uses every pair
once per epoch; ``geo`` gives every anchor in-batch partners at every level and
uses all but a few pairs (see ``epoch_summary``).

Loader sizing (``dycl.data.loading``; standard library only)::

    default_workers(processes=None, cpus=None)   # CPUs // LOCAL_WORLD_SIZE - 1, at least 1
    check_shared_memory(workers, bytes_per_batch, processes=1)   # ValueError when /dev/shm is too small

Synthetic campus (``dycl.data.synth``)::

    generate_campus(out_dir, train_buildings=120, test_buildings=60, drone_views=24,
                    image_size=128, seed=0, workers=None, progress=True) -> Path
        # writes the DA-Campus layout; byte-identical per seed; resumes an interrupted run in out_dir
    DEMO_DEFAULTS                      # {"train_buildings": 120, "test_buildings": 60, "drone_views": 24,
                                       #  "image_size": 128, "seed": 0}
    campus_layout(train_buildings, test_buildings, seed=0) -> CampusLayout  # coordinates only, no images
        # .coords(split) -> (B, 2) lat/lon in class_id order

Geospatial files (localization; rasterio, pyproj, Pillow)::

    dycl.data.geotiff.plan_tiles(tif, tile_m=160.0, stride_m=40.0) -> TileGrid  # any CRS; WGS84 centres
    dycl.data.geotiff.GeoTiffTiles(grid, image_size)[i] -> uint8 (3, S, S)
    dycl.data.exif.gps_exif(lat, lon, altitude=None, direction=None) -> Image.Exif
    dycl.data.exif.read_gps(path) -> GpsFix | None
    dycl.data.images.collect_images(inputs), decode_images(paths, transform), read_tile_list(csv)

Statistics and previews (``dycl.data.stats``)::

    dataset_stats(root, thresholds=(200.0, 500.0), appearance=False) -> dict   # ``dycl-data stats``
    split_stats(split, thresholds) -> dict     # counts, level histogram, neighbours per scale, Eq. 6 ks
    appearance_similarity(split, thresholds=(200.0, 500.0)) -> dict   # DESIGN §9 checks
    contact_sheet(split, building_id, out_png) -> Path                # ``dycl-data show``

Single-domain hierarchical sets (Table IV; NumPy only)::

    from dycl.data.hierarchy import read_hierarchy_manifest, HierarchicalSet
    s = read_hierarchy_manifest("set.csv", split="test")   # path + label_path, or coarse,middle,fine
    ids, levels = s.ids_and_levels()                         # dycl.levels.from_hierarchy of its labels
    from dycl.data.dyml import read_dyml, read_dyml_benchmark, dyml_layout   # the DyML release layout
    read_dyml(root, "train" | "test")                        # "test": DyML-Product's single-domain set
    read_dyml_benchmark(root, "fine" | "middle" | "coarse", "query" | "gallery")   # Vehicle, Animal
    from dycl.data.shapes import shapes_dataset, write_shapes, pixel_embeddings   # synthetic family >
                                                                                  # colour > pattern

The CLI ``dycl-data synth|stats|show`` lives in :mod:`dycl.cli`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .sources import DATASET_FORMATS, dataset_format, open_split, open_train_test
from .splits import DatasetError, Split, check_disjoint, read_dacampus, read_manifest

__all__ = [
    "DATASET_FORMATS",
    "dataset_format",
    "open_split",
    "open_train_test",
    "DatasetError",
    "Split",
    "check_disjoint",
    "read_dacampus",
    "read_manifest",
    # lazily imported (torch or heavy dependencies)
    "CorruptImageError",
    "ImageSet",
    "Pair",
    "PairDataset",
    "drone_set",
    "load_image",
    "satellite_set",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "eval_transforms",
    "loader_generator",
    "seed_worker",
    "train_transforms",
    "GeoPairBatchSampler",
    "RandomPairBatchSampler",
    "in_batch_positives",
    "make_batch_sampler",
    "campus_layout",
    "generate_campus",
    "appearance_similarity",
    "contact_sheet",
    "dataset_stats",
]

# name -> submodule; importing dycl.data stays light (no torch) until these are used.
_LAZY = {
    "CorruptImageError": "datasets",
    "ImageSet": "datasets",
    "Pair": "datasets",
    "PairDataset": "datasets",
    "drone_set": "datasets",
    "load_image": "datasets",
    "satellite_set": "datasets",
    "IMAGENET_MEAN": "transforms",
    "IMAGENET_STD": "transforms",
    "eval_transforms": "transforms",
    "loader_generator": "transforms",
    "seed_worker": "transforms",
    "train_transforms": "transforms",
    "GeoPairBatchSampler": "samplers",
    "RandomPairBatchSampler": "samplers",
    "in_batch_positives": "samplers",
    "make_batch_sampler": "samplers",
    "campus_layout": "synth",
    "generate_campus": "synth",
    "appearance_similarity": "stats",
    "contact_sheet": "stats",
    "dataset_stats": "stats",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
