"""``geo`` batches: assembled from geographic neighbourhoods so that every anchor has in-batch
positives at every scale and pure negatives (see :class:`GeoPairBatchSampler`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._validate import int_at_least
from .epoch_sampler import EpochBatchSampler

_TAG_GEO = 0x47454F


class GeoPairBatchSampler(EpochBatchSampler):
    """Batches assembled from geographic neighbourhoods.

    Each batch is made of ``blocks_per_batch`` blocks. A block starts at a
    seed building that is a pure negative (level 0) of everything already in
    the batch, and grows around it: first, for any member that lacks an
    in-batch building at some level ``1..L-1`` that it has in the dataset, a
    building at that level; otherwise another building within the largest
    threshold of the seed. Each building brings ``pairs_per_building`` of its
    pairs (different drone views). A final repair pass makes sure that every
    anchor has, in its batch, a building at every level ``0..L-1`` that exists
    for it in the dataset (trading a second view of a building already in the
    batch, or a building no other member depends on, for the missing one), so
    every scale has in-batch positives beyond the exact building and pure
    negatives exist.

    Under DDP the batch that is assembled is the **global** batch of a step,
    ``batch_size * world_size`` pairs, and rank ``r`` takes its ``r``-th slice
    (the pairs of a batch are in random order, so a slice is a random share of
    every neighbourhood). The losses see the global batch (gathered
    embeddings), so the batches, and what each anchor finds in them, do not
    depend on the number of processes: ``W`` ranks of ``batch_size / W`` pairs
    see exactly the batches of one process of ``batch_size``.

    An epoch has ``ceil(num_pairs / (batch_size * world_size))`` steps, as
    with ``random``, so ``len(sampler)`` is the same in every epoch. Pairs are
    drawn without replacement, buildings with the most unused pairs first.
    Where a needed building has no unused pair left, one of its pairs is used a
    second time (``repeats`` in :meth:`epoch_summary`); the last batch is
    filled up the same way, and as many pairs as were repeated mid-epoch stay
    unused that epoch (``unused``; about 1 % on DA-Campus-sized data, a
    different random set each epoch). Apart from repeats, ranks' shards are
    disjoint. Every global batch holds exactly ``batch_size * world_size``
    distinct pairs (all pairs if there are fewer; they are then split as
    evenly as possible over the ranks).

    Args:
        pair_buildings: ``(N,)`` building index of each pair (``split.drone_buildings``).
        levels: ``(B, B)`` level matrix (``split.levels(thresholds)``); the diagonal is ``L``.
        batch_size: pairs per batch and rank.
        pairs_per_building: pairs a building brings when it joins a batch.
        blocks_per_batch: neighbourhoods per (global) batch.
    """

    kind = "geo"

    def __init__(
        self,
        pair_buildings: Sequence[int] | np.ndarray,
        levels: np.ndarray,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pairs_per_building: int = 2,
        blocks_per_batch: int = 2,
    ):
        pair_buildings = np.asarray(pair_buildings)
        levels = np.asarray(levels)
        if levels.ndim != 2 or levels.shape[0] != levels.shape[1] or levels.size == 0:
            raise ValueError(f"levels: expected a square (B, B) matrix, got shape {levels.shape}")
        if not np.issubdtype(levels.dtype, np.integer) or levels.min() < 0:
            raise ValueError("levels: expected non-negative integer levels")
        if (
            pair_buildings.ndim != 1
            or pair_buildings.size == 0
            or not np.issubdtype(pair_buildings.dtype, np.integer)
        ):
            raise ValueError(
                f"pair_buildings: expected a non-empty 1-D integer array, got {pair_buildings.shape}"
            )
        if pair_buildings.min() < 0 or pair_buildings.max() >= levels.shape[0]:
            raise ValueError(f"pair_buildings: building indices must lie in 0..{levels.shape[0] - 1}")
        top = int(levels.max())
        if (np.diagonal(levels) != top).any() or top < 1:
            raise ValueError("levels: the diagonal (same building) must hold the highest level L >= 1")
        super().__init__(len(pair_buildings), batch_size, seed, rank, world_size)
        self.pair_buildings = pair_buildings.astype(np.int64)
        self.levels = np.ascontiguousarray(levels, dtype=np.int64)
        self.top = top
        self.pairs_per_building = int_at_least("pairs_per_building", pairs_per_building, 1)
        self.blocks_per_batch = int_at_least("blocks_per_batch", blocks_per_batch, 1)
        self.num_buildings = levels.shape[0]
        order = np.argsort(self.pair_buildings, kind="stable")
        counts = np.bincount(self.pair_buildings, minlength=self.num_buildings)
        self._pairs_of = np.split(order, np.cumsum(counts)[:-1])
        self._active = counts > 0  # buildings with pairs (others cannot join a batch)
        # has_level[b, l]: building b has some other building with pairs at level l (l < L)
        self._has_level = np.zeros((self.num_buildings, top), dtype=bool)
        active_levels = np.where(self._active[None, :], self.levels, top)
        for level in range(top):
            self._has_level[:, level] = (active_levels == level).any(axis=1)
        self._summary: dict[int, dict] = {}

    @property
    def global_batch_size(self) -> int:
        """Pairs in the batch of one step, all ranks together."""
        return self.batch_size * self.world_size

    def _config(self) -> dict:
        return {
            **super()._config(),
            "pairs_per_building": self.pairs_per_building,
            "blocks_per_batch": self.blocks_per_batch,
            "num_buildings": self.num_buildings,
        }

    def epoch_summary(self, epoch: int | None = None) -> dict:
        """``{"batches": steps, "pairs": pair slots, "repeats": slots holding a pair used before,
        "unused": pairs not used in the epoch}``."""
        epoch = self.epoch if epoch is None else epoch
        if epoch not in self._summary:
            self._global_batches(epoch)
        return dict(self._summary[epoch])

    def _global_batches(self, epoch: int) -> list[list[np.ndarray]]:
        rng = np.random.default_rng([self.seed, epoch, _TAG_GEO])
        state = _GeoEpoch(self, rng)
        # A fixed number of steps, like ``random``: len(sampler) depends on the configuration only.
        steps = -(-self.num_pairs // self.global_batch_size)
        batches = [state.build_batch() for _ in range(steps)]
        self._summary[epoch] = {
            "batches": steps,
            "pairs": int(sum(len(b) for b in batches)),
            "repeats": state.repeats,
            "unused": state.remaining_total,
        }
        return [self._slices(batch) for batch in batches]

    def _slices(self, batch: np.ndarray) -> list[np.ndarray]:
        """Each rank's share of a global batch: consecutive ``batch_size`` slices (even split if short)."""
        size = self.batch_size
        if len(batch) == self.global_batch_size:
            return [batch[r * size : (r + 1) * size] for r in range(self.world_size)]
        return list(np.array_split(batch, self.world_size))


class _GeoEpoch:
    """The pair pool of one epoch and the batch builder of :class:`GeoPairBatchSampler`."""

    def __init__(self, sampler: GeoPairBatchSampler, rng: np.random.Generator):
        self.s = sampler
        self.rng = rng
        self.unused = [list(rng.permutation(p)) for p in sampler._pairs_of]
        self.remaining = np.array([len(u) for u in self.unused], dtype=np.int64)
        self.remaining_total = int(self.remaining.sum())
        self.repeats = 0

    # -- pool
    def _take(self, building: int, count: int, exclude: set[int]) -> tuple[list[int], bool]:
        """Up to ``count`` unused pairs of ``building``; if none is left, one used pair again
        (preferably one not in ``exclude``, the batch so far). Returns (pairs, is_repeat)."""
        pool = self.unused[building]
        taken = [int(pool.pop()) for _ in range(min(count, len(pool)))]
        self.remaining[building] -= len(taken)
        self.remaining_total -= len(taken)
        if taken:
            return taken, False
        pairs = [int(p) for p in self.s._pairs_of[building] if int(p) not in exclude] or [
            int(p) for p in self.s._pairs_of[building]
        ]
        self.repeats += 1
        return [pairs[self.rng.integers(len(pairs))]], True

    def _give_back(self, building: int, pair: int, was_repeat: bool) -> None:
        if was_repeat:
            self.repeats -= 1
            return
        self.unused[building].append(pair)
        self.remaining[building] += 1
        self.remaining_total += 1

    def _pick(self, candidates: np.ndarray) -> int:
        """Prefer the candidate with the most unused pairs (ties at random)."""
        rem = self.remaining[candidates]
        best = candidates[rem == rem.max()]
        return int(best[self.rng.integers(len(best))])

    def _spare(self, members: dict, cover: np.ndarray, exclude: int) -> int | None:
        """A member whose removal leaves every other member's level coverage intact."""
        ids = np.fromiter(members, dtype=np.int64)
        top = self.s.top
        for v in ids[self.rng.permutation(len(ids))].tolist():
            if v == exclude:
                continue
            lv = self.s.levels[ids, v]
            mask = (ids != v) & (lv < top)
            if (cover[ids[mask], lv[mask]] >= 2).all():
                return int(v)
        return None

    # -- batch
    def build_batch(self) -> np.ndarray:
        """One global batch of ``global_batch_size`` pairs (fewer only if the dataset holds fewer), in
        random order."""
        batch = _Batch(self.s)
        self._grow_blocks(batch)
        self._fill_up(batch)
        self._repair(batch)
        pairs = np.array([p for ps in batch.members.values() for p, _ in ps], dtype=np.int64)
        return pairs[self.rng.permutation(len(pairs))]

    def _add(self, batch: _Batch, building: int, count: int) -> None:
        batch.add(building, *self._take(building, count, batch.pairs()))

    def _needs(self, batch: _Batch, candidates: list[int], with_negatives: bool) -> tuple[int, int] | None:
        """The first candidate lacking an in-batch building at a level it has in the dataset, and that
        level (levels 1..L-1, or 0..L-1 ``with_negatives``); None if every candidate is covered."""
        if not candidates:
            return None
        s = self.s
        idx = np.asarray(candidates)
        first_level = 0 if with_negatives else 1
        missing = s._has_level[idx, first_level:] & (batch.cover[idx, first_level : s.top] == 0)
        hit = np.flatnonzero(missing.any(axis=1))
        if not len(hit):
            return None
        row = hit[0]
        level = first_level + int(np.flatnonzero(missing[row])[-1])  # the closest missing level first
        return int(idx[row]), level

    def _partner(self, batch: _Batch, u: int, level: int) -> int | None:
        """A building outside the batch at ``level`` from ``u`` (one with unused pairs if any)."""
        s = self.s
        cand = np.flatnonzero((s.levels[u] == level) & s._active & ~batch.in_batch)
        if not len(cand):
            return None
        fresh = cand[self.remaining[cand] > 0]
        return self._pick(fresh) if len(fresh) else int(cand[self.rng.integers(len(cand))])

    def _grow_blocks(self, batch: _Batch) -> None:
        """``blocks_per_batch`` neighbourhoods, each up to its share of the batch: a seed building, then
        partners for missing levels of the block's members, else buildings near the block."""
        s = self.s
        capacity = s.global_batch_size
        block_cap = -(-capacity // s.blocks_per_batch)
        for block in range(s.blocks_per_batch):
            limit = min(capacity, (block + 1) * block_cap)
            if batch.size >= limit:
                continue
            seed_b = self._block_seed(batch)
            self._add(batch, seed_b, min(s.pairs_per_building, limit - batch.size))
            block_members = [seed_b]
            while batch.size < limit:
                need = self._needs(batch, block_members, with_negatives=False)
                choice = self._partner(batch, *need) if need else None
                if choice is None:
                    choice = self._near_block(batch, seed_b, block_members)
                if choice is None:
                    break
                self._add(batch, choice, min(s.pairs_per_building, limit - batch.size))
                block_members.append(choice)

    def _block_seed(self, batch: _Batch) -> int:
        """A pure negative of everything in the batch, with the most unused pairs (relaxed step by
        step when there is none)."""
        s = self.s
        ok = s._active & ~batch.in_batch
        if batch.members:
            ok &= batch.cover[:, 1:].sum(axis=1) == 0
        if not ok.any():
            ok = s._active & ~batch.in_batch
        if not ok.any():
            ok = s._active.copy()
        fresh = np.flatnonzero(ok & (self.remaining > 0))
        return self._pick(fresh) if len(fresh) else int(np.flatnonzero(ok)[self.rng.integers(ok.sum())])

    def _near_block(self, batch: _Batch, seed_b: int, block_members: list[int]) -> int | None:
        """A building with unused pairs near the block's seed (else near any member), the closest to
        the block (highest summed level to its members); None if there is none."""
        s, levels = self.s, self.s.levels
        free = s._active & ~batch.in_batch & (self.remaining > 0)
        near = np.flatnonzero((levels[seed_b] >= 1) & free)
        if not len(near):
            around = (levels[block_members] >= 1).any(axis=0)
            near = np.flatnonzero(around & free)
        if not len(near):
            return None
        score = levels[np.ix_(block_members, near)].sum(axis=0)
        return self._pick(near[score == score.max()])

    def _fill_up(self, batch: _Batch) -> None:
        """Fill up (few pairs left in the epoch): more pairs of the batch's buildings, then any building."""
        s = self.s
        while batch.size < s.global_batch_size:
            with_unused = [b for b in batch.members if self.remaining[b] > 0]
            if with_unused:
                self._add(batch, max(with_unused, key=lambda b: (self.remaining[b], -b)), 1)
                continue
            near = np.flatnonzero(s._active & ~batch.in_batch & (self.remaining > 0))
            if len(near):
                self._add(batch, self._pick(near), 1)
                continue
            # nothing unused is left: repeat a pair not yet in this batch
            partial = [b for b in batch.members if len(batch.members[b]) < len(s._pairs_of[b])]
            others = np.flatnonzero(s._active & ~batch.in_batch)
            if partial:
                self._add(batch, partial[int(self.rng.integers(len(partial)))], 1)
            elif len(others):
                self._add(batch, int(others[self.rng.integers(len(others))]), 1)
            else:
                break  # the dataset holds fewer pairs than a batch

    def _repair(self, batch: _Batch) -> None:
        """Every member gets a building at every level it has (including pure negatives), making room
        in a full batch."""
        capacity = self.s.global_batch_size
        for _ in range(4 * capacity):
            need = self._needs(batch, list(batch.members), with_negatives=True)
            if need is None:
                break
            choice = self._partner(batch, *need)
            if choice is None:
                break
            if batch.size >= capacity and not self._make_room(batch, keep=need[0]):
                break
            self._add(batch, choice, 1)

    def _make_room(self, batch: _Batch, keep: int) -> bool:
        """Free one slot or more without losing coverage; False if no member can go."""
        members = batch.members
        donors = [b for b, ps in members.items() if len(ps) > 1]
        if donors:  # a duplicate view of a building: dropping it changes no coverage
            donor = max(donors, key=lambda b: (len(members[b]), b))
            self._give_back(donor, *batch.pop_pair(donor))
            return True
        # a building no other member depends on for any level
        spare = self._spare(members, batch.cover, exclude=keep)
        if spare is None:
            return False
        for pair, was_repeat in batch.remove(spare):
            self._give_back(spare, pair, was_repeat)
        return True


class _Batch:
    """One batch under construction: its members' pairs, and per building how many members are at
    each level from it (the coverage the geo sampler builds towards)."""

    def __init__(self, sampler: GeoPairBatchSampler):
        n = sampler.num_buildings
        self.levels = sampler.levels
        self.rows = np.arange(n)
        self.members: dict[int, list[tuple[int, bool]]] = {}  # building -> [(pair, is_repeat)]
        self.cover = np.zeros((n, sampler.top + 1), dtype=np.int64)  # in-batch buildings at each level
        self.in_batch = np.zeros(n, dtype=bool)
        self.size = 0

    def pairs(self) -> set[int]:
        return {p for ps in self.members.values() for p, _ in ps}

    def add(self, building: int, pairs: list[int], is_repeat: bool) -> None:
        if building not in self.members:
            self.members[building] = []
            self.in_batch[building] = True
            self.cover[self.rows, self.levels[:, building]] += 1
        self.members[building].extend((p, is_repeat) for p in pairs)
        self.size += len(pairs)

    def pop_pair(self, building: int) -> tuple[int, bool]:
        """The last pair of a member with more than one (the member stays)."""
        self.size -= 1
        return self.members[building].pop()

    def remove(self, building: int) -> list[tuple[int, bool]]:
        """Take a member out of the batch; returns its pairs."""
        pairs = self.members.pop(building)
        self.size -= len(pairs)
        self.in_batch[building] = False
        self.cover[self.rows, self.levels[:, building]] -= 1
        return pairs
