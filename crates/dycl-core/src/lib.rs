//! `dycl-core`: the evaluation core of DyCL, distance-aware cross-view
//! geo-localization.
//!
//! Pure Rust (ndarray + rayon); the Python bindings live in `dycl-python` and
//! only convert arrays and call into this crate. Definitions follow
//! `DESIGN.md` §3–§5:
//!
//! * [`distance`] — cosine distances between embeddings (blocked parallel GEMM);
//! * [`geo`] — WGS84 geodesic distances and relevance levels between buildings;
//! * [`metrics`] — H-AP, ASI, NDCG and per-scale mAP / Recall@K;
//! * [`rerank`] — k-reciprocal re-ranking and MSRerank (O(N·k) memory);
//! * [`progress`] — progress reports and cancellation of long calls;
//! * [`memory`] — fallible allocations sized by the input, and the memory
//!   available to the process (host and cgroup);
//!
//! All heavy loops are parallel over queries with rayon.

pub mod distance;
pub mod error;
pub mod geo;
pub mod memory;
pub mod metrics;
pub mod progress;
pub mod rerank;

pub use error::{DyclError, Result};
