//! Criterion benchmarks of the re-ranking kernels: top-k selection of one
//! `D` row, the neighbour-list pass, the k-reciprocal expansion (sparse `V`)
//! and the Jaccard pass over the queries.
//!
//! Clustered embeddings like DA-Campus (buildings × 60 views, d = 512), at
//! N = 3,050 (50 satellite + 3,000 drone) so a run stays short; the full
//! 18,300-item shape is timed end to end by `benches/bench_rerank.py`.
//! Selection is measured on one Sat→Drone row of the full shape (18,000 items).
//!
//! The similarity kernel (one `gemm` tile; neighbour lists from embeddings
//! by the tiled and the triangle pass) is timed at the same N.
//!
//! Run: `cargo bench -p dycl-core --bench rerank`.

use criterion::{criterion_group, criterion_main, Criterion};
use dycl_core::distance::{cosine_distances, similarity_tile};
use dycl_core::rerank::knn::{InLists, NeighbourLists, SmallestK};
use dycl_core::rerank::kreciprocal::{
    half_to_even, query_expansion, reciprocal_all, weights, Inverted,
};
use dycl_core::rerank::msrerank::{combine_levels, Level, Variant};
use dycl_core::rerank::progress::Tracker;
use dycl_core::rerank::{
    symmetric, BlockDistances, DistanceBlock, DistanceBlocks, EmbeddingDistances,
};
use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::hint::black_box;
use std::time::Duration;

const DIM: usize = 512;
const VIEWS: usize = 60;

/// (satellite, drone) embeddings: one tile and `VIEWS` views per building.
fn campus(buildings: usize, seed: u64) -> (Array2<f32>, Array2<f32>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut noise = move || rng.random::<f32>() - 0.5;
    let centres = Array2::from_shape_fn((buildings, DIM), |_| noise());
    let sat = Array2::from_shape_fn((buildings, DIM), |(b, j)| centres[[b, j]] + 0.8 * noise());
    let drone = Array2::from_shape_fn((buildings * VIEWS, DIM), |(i, j)| {
        centres[[i / VIEWS, j]] + 0.8 * noise()
    });
    (sat, drone)
}

fn bench_select(c: &mut Criterion) {
    let (sat, drone) = campus(300, 1);
    let row = cosine_distances(sat.slice(ndarray::s![0..1, ..]), drone.view()).unwrap();
    let values: Vec<f32> = row.iter().map(|d| d * d).collect();
    let mut selector = SmallestK::default();
    let mut out = Vec::new();
    for k in [21, 293] {
        c.bench_function(&format!("select {k} smallest of {}", values.len()), |b| {
            b.iter(|| {
                selector.select(black_box(&values), k, &mut out);
                black_box(out.len())
            })
        });
    }
}

fn bench_pipeline(c: &mut Criterion) {
    let (sat, drone) = campus(50, 2);
    let q_g = cosine_distances(sat.view(), drone.view()).unwrap();
    let q_q = cosine_distances(sat.view(), sat.view()).unwrap();
    let g_g = cosine_distances(drone.view(), drone.view()).unwrap();
    let blocks = DistanceBlocks {
        q_g: DistanceBlock::F32(q_g.view()),
        q_q: DistanceBlock::F32(q_q.view()),
        g_g: DistanceBlock::F32(g_g.view()),
    };
    let source = BlockDistances::new(blocks).unwrap();
    let (q, n) = (sat.nrows(), sat.nrows() + drone.nrows());
    let tracker = Tracker::default();
    let k = 20;

    let mut group = c.benchmark_group(format!("k-reciprocal kernels, N = {n}, k1 = {k}"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("neighbour lists (blocked pass over D)", |b| {
        b.iter(|| NeighbourLists::build(&source, k + 1, &tracker).unwrap())
    });
    let lists = NeighbourLists::build(&source, k + 1, &tracker).unwrap();
    let inlists = InLists::build(&lists).unwrap();
    let candidates = reciprocal_all(&lists, &inlists, half_to_even(k), &tracker).unwrap();
    group.bench_function("reciprocal sets R(i, k1/2)", |b| {
        b.iter(|| reciprocal_all(&lists, &inlists, half_to_even(k), &tracker))
    });
    group.bench_function("expansion + weights (sparse V)", |b| {
        b.iter(|| weights(&source, &lists, &inlists, &candidates, k, &tracker))
    });
    let v = weights(&source, &lists, &inlists, &candidates, k, &tracker).unwrap();
    group.bench_function("query expansion k2 = 6", |b| {
        b.iter(|| query_expansion(&v, &lists, 6, &tracker))
    });
    let v = query_expansion(&v, &lists, 6, &tracker).unwrap();
    let inverted = Inverted::build(&v, q..n, n).unwrap();
    let level = [Level {
        k,
        weights: &v,
        inverted: &inverted,
        first_col: q,
    }];
    group.bench_function(format!("Jaccard + mixing, {q} queries"), |b| {
        b.iter(|| combine_levels(&source, &lists, q, &level, 0.3, Variant::Paper, &tracker))
    });
    group.finish();
}

/// The similarity kernel: one `gemm` tile, and the neighbour lists from
/// embeddings by the tiled pass (a tile of rows × N per thread) and by the
/// symmetric pass (one triangle of the similarity).
fn bench_kernel(c: &mut Criterion) {
    let (sat, drone) = campus(50, 3);
    let tracker = Tracker::default();
    let mut group = c.benchmark_group(format!("similarity kernel, d = {DIM}"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    let rows = drone.slice(ndarray::s![..1024, ..]);
    let mut tile = Array2::<f32>::zeros((1024, drone.nrows()));
    group.bench_function(format!("one tile 1024 × {}", drone.nrows()), |b| {
        b.iter(|| similarity_tile(rows, drone.view(), tile.view_mut()))
    });
    let source = EmbeddingDistances::new(sat.view(), drone.view()).unwrap();
    let n = sat.nrows() + drone.nrows();
    group.bench_function(format!("neighbour lists, tiled pass, N = {n}"), |b| {
        b.iter(|| NeighbourLists::build(&source, 21, &tracker).unwrap())
    });
    group.bench_function(format!("neighbour lists, triangle, N = {n}"), |b| {
        b.iter(|| symmetric::neighbour_lists(&source, 21, &tracker))
    });
    group.finish();
}

criterion_group!(benches, bench_select, bench_pipeline, bench_kernel);
criterion_main!(benches);
