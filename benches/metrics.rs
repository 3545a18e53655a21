//! Criterion benchmark of the metrics kernel at the DA-Campus test shape:
//! 300 buildings (one satellite tile and 60 drone images each) on a ~1.9 km
//! campus; Satellite→Drone is 300 × 18,000, Drone→Satellite 18,000 × 300.
//!
//! Run: `cargo bench -p dycl-core --bench metrics`.

use criterion::{criterion_group, criterion_main, Criterion};
use dycl_core::{geo, metrics};
use ndarray::{Array1, Array2};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::hint::black_box;
use std::time::Duration;

const BUILDINGS: usize = 300;
const DRONE_PER_BUILDING: usize = 60;

struct Campus {
    levels: Array2<u8>,
    sat_ids: Array1<i64>,
    drone_ids: Array1<i64>,
    sat_to_drone: Array2<f64>,
    drone_to_sat: Array2<f64>,
}

/// Buildings uniformly on the campus; a distance that grows with the true
/// geodesic distance plus noise, so positives tend to rank high.
fn campus() -> Campus {
    let mut rng = StdRng::seed_from_u64(7);
    let coords = Array2::from_shape_fn((BUILDINGS, 2), |(_, c)| {
        let metres: f64 = rng.random_range(0.0..1900.0);
        if c == 0 {
            22.3364 + metres / 111_320.0
        } else {
            114.2655 + metres / (111_320.0 * 22.3364f64.to_radians().cos())
        }
    });
    let levels = geo::level_matrix(coords.view(), &[200.0, 500.0]).unwrap();
    let metres = geo::geodesic_distances_self(coords.view()).unwrap();
    let sat_ids = Array1::from_iter(0..BUILDINGS as i64);
    let drone_ids = Array1::from_iter(
        (0..BUILDINGS * DRONE_PER_BUILDING).map(|i| (i / DRONE_PER_BUILDING) as i64),
    );
    let sat_to_drone = Array2::from_shape_fn((BUILDINGS, drone_ids.len()), |(i, j)| {
        let b = drone_ids[j] as usize;
        metres[[i, b]] / 1000.0 + rng.random::<f64>()
    });
    let drone_to_sat = sat_to_drone.t().as_standard_layout().into_owned();
    Campus {
        levels,
        sat_ids,
        drone_ids,
        sat_to_drone,
        drone_to_sat,
    }
}

fn bench_metrics(c: &mut Criterion) {
    let campus = campus();
    let mut group = c.benchmark_group("metrics_da_campus");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("sat_to_drone_300x18000", |b| {
        b.iter(|| {
            metrics::per_query(
                black_box(campus.sat_to_drone.view()),
                campus.sat_ids.view(),
                campus.drone_ids.view(),
                campus.levels.view(),
                None,
            )
            .unwrap()
        })
    });
    group.bench_function("drone_to_sat_18000x300", |b| {
        b.iter(|| {
            metrics::per_query(
                black_box(campus.drone_to_sat.view()),
                campus.drone_ids.view(),
                campus.sat_ids.view(),
                campus.levels.view(),
                None,
            )
            .unwrap()
        })
    });
    group.bench_function("ranked_gallery_top10_300x18000", |b| {
        b.iter(|| metrics::ranked_gallery(black_box(campus.sat_to_drone.view()), 10).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench_metrics);
criterion_main!(benches);
