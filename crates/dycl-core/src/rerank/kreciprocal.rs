//! k-reciprocal sets, their expansion, the sparse weights `V`, query
//! expansion and the Jaccard distance (DESIGN §5 steps 2–6).
//!
//! Everything is sparse: a row of `V` holds only its expanded set (a few
//! times `k` entries), and the Jaccard step walks an inverted index of `V`
//! restricted to the columns the answer needs. Memory is O(N·k).

use std::ops::Range;

use rayon::prelude::*;

use super::knn::{InLists, NeighbourLists};
use super::source::SquaredDistances;
use crate::error::Result;
use crate::memory::{try_capacity, try_vec, try_zeroed, Purpose};
use crate::progress::Tracker;

/// What the sparse rows are, and what to do when they do not fit.
const ROWS: Purpose = Purpose::new(
    "re-ranking: the sparse k-reciprocal rows (a few times N × (k + 1) entries)",
    "use a smaller k or fewer items",
);

/// What the per-thread marks are, and what to do when they do not fit.
const SCRATCH: Purpose = Purpose::new(
    "re-ranking: the per-thread marks (20 bytes per item)",
    "use fewer items, or fewer threads (RAYON_NUM_THREADS)",
);

/// Rows per parallel work item.
const CHUNK: usize = 64;

/// `2/3` exactly as the reference computes it (`2./3` in float64).
const TWO_THIRDS: f64 = 2.0 / 3.0;

/// Rows of variable length (compressed sparse rows).
pub struct Csr<E> {
    offsets: Vec<usize>,
    entries: Vec<E>,
}

impl<E: Copy + Send + Sync> Csr<E> {
    pub fn n_rows(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn row(&self, i: usize) -> &[E] {
        &self.entries[self.offsets[i]..self.offsets[i + 1]]
    }

    pub fn n_entries(&self) -> usize {
        self.entries.len()
    }

    /// Build `n_rows` rows in parallel; `fill(scratch, i, out)` appends row
    /// `i`. `init` makes each task's scratch and may fail (it is sized by the
    /// input), and so may the assembly of the rows.
    pub fn build_par<S>(
        n_rows: usize,
        init: impl Fn() -> Result<S> + Sync + Send,
        fill: impl Fn(&mut S, usize, &mut Vec<E>) + Sync + Send,
        tracker: &Tracker,
    ) -> Result<Self> {
        let n_chunks = n_rows.div_ceil(CHUNK);
        let parts: Vec<(Vec<usize>, Vec<E>)> = (0..n_chunks)
            .into_par_iter()
            .map_init(&init, |scratch, c| {
                let scratch = scratch.as_mut().map_err(|err| err.clone())?;
                let rows = c * CHUNK..((c + 1) * CHUNK).min(n_rows);
                let mut lens = Vec::with_capacity(rows.len());
                let mut entries = Vec::new();
                for i in rows.clone() {
                    let before = entries.len();
                    if !tracker.cancelled() {
                        fill(scratch, i, &mut entries);
                    }
                    lens.push(entries.len() - before);
                }
                tracker.advance(rows.len());
                Ok((lens, entries))
            })
            .collect::<Result<_>>()?;
        let total: usize = parts.iter().map(|p| p.1.len()).sum();
        let mut offsets = try_capacity(n_rows.saturating_add(1), ROWS)?;
        offsets.push(0);
        let mut entries = try_capacity(total, ROWS)?;
        for (lens, part) in parts {
            for len in lens {
                offsets.push(offsets.last().unwrap() + len);
            }
            entries.extend_from_slice(&part);
        }
        Ok(Csr { offsets, entries })
    }
}

/// Sparse rows of `V`: `(column, weight)` sorted by column.
pub type SparseRows = Csr<(u32, f32)>;

/// Per-thread marks over the N items; an epoch counter avoids clearing them.
pub struct Marks {
    /// `position[j]` = position of `i` in `j`'s list while row `i` is processed.
    position: Vec<u32>,
    in_set: Vec<u32>,
    in_expanded: Vec<u32>,
    /// Position of `j` in `i`'s own list (valid where `own_epoch[j] == epoch`).
    own_pos: Vec<u32>,
    own_epoch: Vec<u32>,
    epoch: u32,
    recip: Vec<u32>,
    expanded: Vec<u32>,
}

impl Marks {
    pub fn new(n: usize) -> Result<Self> {
        Ok(Marks {
            position: try_vec(n, u32::MAX, SCRATCH)?,
            in_set: try_zeroed(n, SCRATCH)?,
            in_expanded: try_zeroed(n, SCRATCH)?,
            own_pos: try_zeroed(n, SCRATCH)?,
            own_epoch: try_zeroed(n, SCRATCH)?,
            epoch: 0,
            recip: Vec::new(),
            expanded: Vec::new(),
        })
    }
}

/// Append `R(i, k)` for each `k` of `ks` to the matching `outs`: the items
/// among the first `k + 1` of `i` that have `i` among their first `k + 1`.
fn reciprocal_sets(
    lists: &NeighbourLists,
    inlists: &InLists,
    i: usize,
    ks: &[usize],
    position: &mut [u32],
    outs: &mut [&mut Vec<u32>],
) {
    let incoming = inlists.of(i);
    for &(j, pos) in incoming {
        position[j as usize] = pos;
    }
    let row = lists.row(i);
    for (&k, out) in ks.iter().zip(outs.iter_mut()) {
        for &j in &row[..(k + 1).min(row.len())] {
            if (position[j as usize] as usize) <= k {
                out.push(j);
            }
        }
    }
    for &(j, _) in incoming {
        position[j as usize] = u32::MAX;
    }
}

/// `R(i, h)` for every item (the candidates of the expansion step).
pub fn reciprocal_all(
    lists: &NeighbourLists,
    inlists: &InLists,
    h: usize,
    tracker: &Tracker,
) -> Result<Csr<u32>> {
    Csr::build_par(
        lists.n,
        || try_vec(lists.n, u32::MAX, SCRATCH),
        |position, i, out| reciprocal_sets(lists, inlists, i, &[h], position, &mut [out]),
        tracker,
    )
}

/// NumPy's `around(k / 2)`: halves go to the even neighbour (20→10, 5→2, 7→4).
pub fn half_to_even(k: usize) -> usize {
    let half = k / 2;
    if k % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// One row of `V` before query expansion: the expanded k-reciprocal set of
/// `i` with weights `exp(−D[i, j]) / Σ`, appended to `out` sorted by column.
#[allow(clippy::too_many_arguments)]
pub fn expanded_row<S: SquaredDistances + ?Sized>(
    source: &S,
    lists: &NeighbourLists,
    inlists: &InLists,
    candidates: &Csr<u32>,
    k: usize,
    i: usize,
    marks: &mut Marks,
    out: &mut Vec<(u32, f32)>,
) {
    marks.epoch += 1;
    let epoch = marks.epoch;
    marks.recip.clear();
    reciprocal_sets(
        lists,
        inlists,
        i,
        &[k],
        &mut marks.position,
        &mut [&mut marks.recip],
    );
    marks.expanded.clear();
    for &j in &marks.recip {
        marks.in_set[j as usize] = epoch;
        marks.in_expanded[j as usize] = epoch;
        marks.expanded.push(j);
    }
    for &c in &marks.recip {
        let cand = candidates.row(c as usize);
        // Compared with the original R(i, k), not with the growing set.
        let shared = cand
            .iter()
            .filter(|&&x| marks.in_set[x as usize] == epoch)
            .count();
        if shared as f64 > TWO_THIRDS * cand.len() as f64 {
            for &x in cand {
                if marks.in_expanded[x as usize] != epoch {
                    marks.in_expanded[x as usize] = epoch;
                    marks.expanded.push(x);
                }
            }
        }
    }
    marks.expanded.sort_unstable();

    for (pos, &j) in lists.row(i).iter().enumerate() {
        marks.own_pos[j as usize] = pos as u32;
        marks.own_epoch[j as usize] = epoch;
    }
    let own_dist = lists.row_dist(i);
    let max = lists.row_max[i];
    let start = out.len();
    let mut sum = 0f64;
    for &j in &marks.expanded {
        let d = if marks.own_epoch[j as usize] == epoch {
            own_dist[marks.own_pos[j as usize] as usize]
        } else {
            // Outside i's list (reached through a neighbour's set): look it up.
            let sq = source.get(i, j as usize);
            if max > 0.0 {
                sq / max
            } else {
                sq
            }
        };
        let w = (-d).exp();
        sum += w as f64;
        out.push((j, w));
    }
    let sum = sum as f32;
    for e in &mut out[start..] {
        e.1 /= sum;
    }
}

/// `V` for one `k`: expanded, weighted k-reciprocal sets of all N items.
pub fn weights<S: SquaredDistances + ?Sized>(
    source: &S,
    lists: &NeighbourLists,
    inlists: &InLists,
    candidates: &Csr<u32>,
    k: usize,
    tracker: &Tracker,
) -> Result<SparseRows> {
    Csr::build_par(
        lists.n,
        || Marks::new(lists.n),
        |marks, i, out| expanded_row(source, lists, inlists, candidates, k, i, marks, out),
        tracker,
    )
}

/// Query expansion: row `i` becomes the mean of the rows of its first `k2`
/// neighbours (itself included when it ranks first), summed in rank order
/// then divided by `k2` in float32, like `np.mean` over those rows.
pub fn query_expansion(
    v: &SparseRows,
    lists: &NeighbourLists,
    k2: usize,
    tracker: &Tracker,
) -> Result<SparseRows> {
    let n = lists.n;
    let k2f = k2 as f32;
    Csr::build_par(
        n,
        || -> Result<_> {
            let acc = try_zeroed::<f32>(n, SCRATCH)?;
            Ok((acc, try_zeroed::<u32>(n, SCRATCH)?, 0u32, Vec::<u32>::new()))
        },
        |(acc, seen, epoch, touched), i, out| {
            *epoch += 1;
            touched.clear();
            for &m in &lists.row(i)[..k2] {
                for &(c, w) in v.row(m as usize) {
                    if seen[c as usize] != *epoch {
                        seen[c as usize] = *epoch;
                        touched.push(c);
                    }
                    acc[c as usize] += w;
                }
            }
            touched.sort_unstable();
            for &c in touched.iter() {
                out.push((c, acc[c as usize] / k2f));
                acc[c as usize] = 0.0;
            }
        },
        tracker,
    )
}

/// Column view of `V` restricted to rows `rows`: for column `c`, the pairs
/// `(j − rows.start, V[j, c])` with `V[j, c] ≠ 0`.
pub struct Inverted {
    offsets: Vec<usize>,
    entries: Vec<(u32, f32)>,
}

impl Inverted {
    pub fn build(v: &SparseRows, rows: Range<usize>, n_cols: usize) -> Result<Self> {
        let mut offsets = try_zeroed::<usize>(n_cols.saturating_add(1), ROWS)?;
        for j in rows.clone() {
            for &(c, _) in v.row(j) {
                offsets[c as usize + 1] += 1;
            }
        }
        for c in 0..n_cols {
            offsets[c + 1] += offsets[c];
        }
        let mut cursor = try_capacity::<usize>(n_cols, ROWS)?;
        cursor.extend_from_slice(&offsets[..n_cols]);
        let mut entries = try_zeroed::<(u32, f32)>(offsets[n_cols], ROWS)?;
        for j in rows.clone() {
            for &(c, w) in v.row(j) {
                let slot = &mut cursor[c as usize];
                entries[*slot] = ((j - rows.start) as u32, w);
                *slot += 1;
            }
        }
        Ok(Inverted { offsets, entries })
    }

    pub fn column(&self, c: usize) -> &[(u32, f32)] {
        &self.entries[self.offsets[c]..self.offsets[c + 1]]
    }
}

/// Jaccard distances of one sparse row against the rows of an inverted
/// index: `out[j] = 1 − S / (2 − S)`, `S = Σ_c min(V[i, c], V[j, c])`,
/// accumulated over `c` ascending. `shared` is scratch of `out`'s length.
pub fn jaccard_row(row: &[(u32, f32)], inverted: &Inverted, shared: &mut [f32], out: &mut [f32]) {
    shared.fill(0.0);
    for &(c, a) in row {
        for &(j, b) in inverted.column(c as usize) {
            shared[j as usize] += a.min(b);
        }
    }
    for (o, &s) in out.iter_mut().zip(shared.iter()) {
        *o = 1.0 - s / (2.0 - s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_half_to_even_like_numpy() {
        let cases = [
            (1, 0),
            (2, 1),
            (3, 2),
            (5, 2),
            (7, 4),
            (9, 4),
            (11, 6),
            (20, 10),
            (21, 10),
            (292, 146),
        ];
        for (k, h) in cases {
            assert_eq!(half_to_even(k), h, "k = {k}");
        }
    }

    #[test]
    fn jaccard_of_identical_and_disjoint_rows() {
        let v = Csr {
            offsets: vec![0, 2, 4, 5],
            entries: vec![(0, 0.5), (1, 0.5), (0, 0.5), (1, 0.5), (2, 1.0)],
        };
        let inv = Inverted::build(&v, 0..3, 3).unwrap();
        let mut shared = vec![0.0; 3];
        let mut out = vec![0.0; 3];
        jaccard_row(v.row(0), &inv, &mut shared, &mut out);
        assert_eq!(out, vec![0.0, 0.0, 1.0]);
        let half = Csr {
            offsets: vec![0, 2],
            entries: vec![(0, 0.75), (2, 0.25)],
        };
        jaccard_row(half.row(0), &inv, &mut shared, &mut out);
        // S = min(.75,.5) with rows 0 and 1; min(.25, 1) with row 2
        assert_eq!(
            out,
            vec![1.0 - 0.5 / 1.5, 1.0 - 0.5 / 1.5, 1.0 - 0.25 / 1.75]
        );
    }
}
