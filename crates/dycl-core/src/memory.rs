//! Memory the core asks for: fallible allocations sized by the input, and how
//! much memory the process may still use (host and cgroup).
//!
//! Every buffer whose size follows from the input goes through [`try_vec`],
//! [`try_zeroed`], [`try_capacity`] or [`try_array2`]: the size is computed
//! with checked arithmetic and the memory reserved fallibly, so a request
//! that cannot be met returns [`DyclError::OutOfMemory`] saying what was too
//! big and what to do, instead of aborting the process (which, under Python,
//! takes the interpreter with it). A large request that exceeds
//! [`available_memory`] is refused the same way before it is made: with
//! overcommit or under a cgroup limit the allocation itself would succeed
//! and the process be killed when it touches the pages.

use std::alloc::{alloc_zeroed, Layout};

use ndarray::Array2;

use crate::error::{DyclError, Result};

/// Requests at least this large are compared with [`available_memory`]
/// first (smaller ones are not worth reading `/proc` for).
const CHECKED_AGAINST_AVAILABLE: usize = 1 << 30;

/// What a buffer is for and what the caller can do when it does not fit;
/// both go into the error message.
#[derive(Clone, Copy, Debug)]
pub struct Purpose<'a> {
    /// The buffer, e.g. `"geodesic_distances: the distance matrix"`.
    pub what: &'a str,
    /// The remedy, e.g. `"pass fewer coordinates per call"`.
    pub hint: &'a str,
}

impl<'a> Purpose<'a> {
    pub const fn new(what: &'a str, hint: &'a str) -> Self {
        Purpose { what, hint }
    }
}

/// `1.5 GB`-style size (decimal units, as the other messages of the core).
fn human(bytes: u128) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `n × m × T (size)`: the shape as it is requested.
fn describe<T>(dims: &[usize]) -> String {
    let elem = std::mem::size_of::<T>().max(1) as u128;
    let cells = dims
        .iter()
        .try_fold(1u128, |acc, &d| acc.checked_mul(d as u128));
    let size = match cells.and_then(|c| c.checked_mul(elem)) {
        Some(bytes) => human(bytes),
        None => "more than 2^128 bytes".to_string(),
    };
    let shape: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!(
        "{} × {} ({size})",
        shape.join(" × "),
        std::any::type_name::<T>()
    )
}

/// The error for a buffer of `dims` that cannot be had; `why` says why.
fn too_big<T>(purpose: Purpose, dims: &[usize], why: &str) -> DyclError {
    DyclError::OutOfMemory(format!(
        "{} of {} {why}; {}",
        purpose.what,
        describe::<T>(dims),
        purpose.hint
    ))
}

/// Number of elements of a buffer of shape `dims` of `T`, if its size in
/// bytes is representable (at most `isize::MAX`, Rust's allocation limit).
pub fn checked_len<T>(dims: &[usize], purpose: Purpose) -> Result<usize> {
    let elem = std::mem::size_of::<T>().max(1);
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|len| {
            len.checked_mul(elem)
                .is_some_and(|bytes| bytes <= isize::MAX as usize)
        })
        .ok_or_else(|| too_big::<T>(purpose, dims, "exceeds the address space"))
}

/// Refuse a large request that exceeds the memory available, if known.
fn check_available<T>(len: usize, dims: &[usize], purpose: Purpose) -> Result<()> {
    let bytes = len.saturating_mul(std::mem::size_of::<T>());
    if bytes < CHECKED_AGAINST_AVAILABLE {
        return Ok(());
    }
    match available_memory() {
        Some(avail) if bytes as u64 > avail => Err(too_big::<T>(
            purpose,
            dims,
            &format!("does not fit: only {} is available", human(avail as u128)),
        )),
        _ => Ok(()),
    }
}

/// [`checked_len`], and also refuse a large request that exceeds the memory
/// available: the check to make before a long scan of the inputs, so an
/// impossible call fails at once.
pub fn ensure_fits<T>(dims: &[usize], purpose: Purpose) -> Result<usize> {
    let len = checked_len::<T>(dims, purpose)?;
    check_available::<T>(len, dims, purpose)?;
    Ok(len)
}

/// An empty `Vec` with room for exactly the elements of `dims`.
fn reserve<T>(dims: &[usize], purpose: Purpose) -> Result<(Vec<T>, usize)> {
    let len = ensure_fits::<T>(dims, purpose)?;
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| too_big::<T>(purpose, dims, "could not be allocated"))?;
    Ok((v, len))
}

/// `vec![value; len]`, or an error instead of an abort.
pub fn try_vec<T: Clone>(len: usize, value: T, purpose: Purpose) -> Result<Vec<T>> {
    let (mut v, len) = reserve::<T>(&[len], purpose)?;
    v.resize(len, value);
    Ok(v)
}

/// `Vec::with_capacity(len)`, or an error instead of an abort.
pub fn try_capacity<T>(len: usize, purpose: Purpose) -> Result<Vec<T>> {
    Ok(reserve::<T>(&[len], purpose)?.0)
}

/// Element types whose all-zero bit pattern is a valid value.
///
/// # Safety
/// Implement only for types for which every byte being zero is a valid,
/// initialised value.
pub unsafe trait Zeroable: Copy {}

// SAFETY: plain numbers (and pairs of them) are valid with every bit zero.
unsafe impl Zeroable for u8 {}
unsafe impl Zeroable for u32 {}
unsafe impl Zeroable for u64 {}
unsafe impl Zeroable for u128 {}
unsafe impl Zeroable for usize {}
unsafe impl Zeroable for f32 {}
unsafe impl Zeroable for f64 {}
unsafe impl Zeroable for (u32, u32) {}
unsafe impl Zeroable for (u32, f32) {}

/// `vec![0; len]` from zeroed memory (like `vec!`, the pages are not
/// touched until written), or an error instead of an abort.
pub fn try_zeroed<T: Zeroable>(len: usize, purpose: Purpose) -> Result<Vec<T>> {
    zeroed_of_shape(&[len], purpose)
}

fn zeroed_of_shape<T: Zeroable>(dims: &[usize], purpose: Purpose) -> Result<Vec<T>> {
    let len = ensure_fits::<T>(dims, purpose)?;
    if len == 0 || std::mem::size_of::<T>() == 0 {
        return Ok(Vec::new());
    }
    let layout = Layout::array::<T>(len)
        .map_err(|_| too_big::<T>(purpose, dims, "exceeds the address space"))?;
    // SAFETY: the layout has a non-zero size (checked above).
    let ptr = unsafe { alloc_zeroed(layout) } as *mut T;
    if ptr.is_null() {
        return Err(too_big::<T>(purpose, dims, "could not be allocated"));
    }
    // SAFETY: `ptr` was allocated by the global allocator with the layout of
    // `len` values of `T` (the layout `Vec` uses for that capacity), and
    // all-zero bytes are valid values of `T` (`Zeroable`).
    Ok(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

/// `Array2::zeros(shape)`, or an error instead of an abort.
pub fn try_array2<T: Zeroable>(shape: (usize, usize), purpose: Purpose) -> Result<Array2<T>> {
    let v = zeroed_of_shape::<T>(&[shape.0, shape.1], purpose)?;
    Ok(Array2::from_shape_vec(shape, v).expect("the buffer has the shape's length"))
}

// --------------------------------------------------------------------------- available memory

/// `MemAvailable` of `/proc/meminfo` text, in bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// A value of `key` in a cgroup `memory.stat` text (`key value` lines).
fn stat_value(stat: &str, key: &str) -> Option<u64> {
    stat.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        (parts.next()? == key).then(|| parts.next()?.parse().ok())?
    })
}

/// What a cgroup still lets the process allocate: `limit − (usage −
/// inactive file cache)`. The inactive page cache is counted in the usage
/// but is reclaimed under pressure, so it is headroom too. `None` when there
/// is no limit (`"max"` in cgroup v2) or the text is not understood.
///
/// `stat_keys` are the `memory.stat` entries of the inactive file cache to
/// try in order (`inactive_file` for v2; `total_inactive_file`, then
/// `inactive_file`, for v1).
pub fn cgroup_headroom(
    limit: &str,
    usage: &str,
    stat: Option<&str>,
    stat_keys: &[&str],
) -> Option<u64> {
    let limit = limit.trim();
    if limit == "max" {
        return None;
    }
    let limit: u64 = limit.parse().ok()?;
    let usage: u64 = usage.trim().parse().ok()?;
    let reclaimable = stat
        .and_then(|s| stat_keys.iter().find_map(|k| stat_value(s, k)))
        .unwrap_or(0);
    Some(limit.saturating_sub(usage.saturating_sub(reclaimable)))
}

/// The smallest of the known limits: what the host has available and what
/// the cgroups allow.
pub fn smallest_limit(limits: &[Option<u64>]) -> Option<u64> {
    limits.iter().flatten().copied().min()
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Headroom of the cgroup v2 the process sees at `/sys/fs/cgroup`.
fn cgroup_v2() -> Option<u64> {
    const DIR: &str = "/sys/fs/cgroup";
    cgroup_headroom(
        &read(&format!("{DIR}/memory.max"))?,
        &read(&format!("{DIR}/memory.current"))?,
        read(&format!("{DIR}/memory.stat")).as_deref(),
        &["inactive_file"],
    )
}

/// Headroom of the cgroup v1 memory controller at `/sys/fs/cgroup/memory`
/// ("no limit" is a huge number there, which never wins the minimum).
fn cgroup_v1() -> Option<u64> {
    const DIR: &str = "/sys/fs/cgroup/memory";
    cgroup_headroom(
        &read(&format!("{DIR}/memory.limit_in_bytes"))?,
        &read(&format!("{DIR}/memory.usage_in_bytes"))?,
        read(&format!("{DIR}/memory.stat")).as_deref(),
        &["total_inactive_file", "inactive_file"],
    )
}

/// Bytes of memory the process can still use, if known: the host's
/// `MemAvailable`, or less when a cgroup (a container, a batch job) limits
/// the process to less.
pub fn available_memory() -> Option<u64> {
    smallest_limit(&[
        read("/proc/meminfo").as_deref().and_then(parse_meminfo),
        cgroup_v2(),
        cgroup_v1(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    const PURPOSE: Purpose = Purpose::new("test: the buffer", "ask for less");

    fn message(err: DyclError) -> String {
        match err {
            DyclError::OutOfMemory(msg) => msg,
            other => panic!("expected OutOfMemory, got {other:?}"),
        }
    }

    #[test]
    fn impossible_sizes_are_errors_not_aborts() {
        // overflowing the element count, the byte count, and isize::MAX
        let msg = message(try_array2::<f64>((usize::MAX, 2), PURPOSE).unwrap_err());
        assert!(msg.contains("test: the buffer of"), "{msg}");
        assert!(
            msg.contains("exceeds the address space; ask for less"),
            "{msg}"
        );
        assert!(try_zeroed::<u128>(usize::MAX / 8, PURPOSE).is_err());
        assert!(try_vec::<u8>(isize::MAX as usize + 1, 0, PURPOSE).is_err());
        // representable but far beyond any machine: 2^62 bytes
        let msg = message(try_vec::<u32>(1 << 60, 7, PURPOSE).unwrap_err());
        assert!(msg.contains("1152921504606846976 × u32 (4.6 EB)"), "{msg}");
        let msg = message(try_capacity::<u64>(1 << 59, PURPOSE).unwrap_err());
        assert!(msg.contains("ask for less"), "{msg}");
    }

    #[test]
    fn possible_sizes_are_filled() {
        assert_eq!(try_vec(3, 7u8, PURPOSE).unwrap(), vec![7, 7, 7]);
        assert_eq!(try_zeroed::<f32>(4, PURPOSE).unwrap(), vec![0.0; 4]);
        assert!(try_zeroed::<f32>(0, PURPOSE).unwrap().is_empty());
        assert_eq!(try_capacity::<u32>(5, PURPOSE).unwrap().capacity(), 5);
        let a = try_array2::<u32>((2, 3), PURPOSE).unwrap();
        assert_eq!(a, Array2::<u32>::zeros((2, 3)));
        assert_eq!(checked_len::<f64>(&[3, 4], PURPOSE).unwrap(), 12);
    }

    #[test]
    fn sizes_read_in_decimal_units() {
        assert_eq!(human(999), "999.0 B");
        assert_eq!(human(720_000_000_000), "720.0 GB");
        assert_eq!(
            describe::<f64>(&[300_000, 300_000]),
            "300000 × 300000 × f64 (720.0 GB)"
        );
    }

    const MEMINFO: &str = "MemTotal:       24000000 kB\n\
                           MemFree:         1000000 kB\n\
                           MemAvailable:   20000000 kB\n\
                           Buffers:          100000 kB\n";

    #[test]
    fn meminfo_gives_mem_available() {
        assert_eq!(parse_meminfo(MEMINFO), Some(20_000_000 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 5 kB\n"), None);
        assert_eq!(parse_meminfo("MemAvailable: lots kB\n"), None);
    }

    #[test]
    fn cgroup_v2_limit_minus_usage_plus_inactive_cache() {
        let stat = "anon 1000\nfile 5000\nactive_file 3000\ninactive_file 2000\n";
        assert_eq!(
            cgroup_headroom("8000\n", "6000\n", Some(stat), &["inactive_file"]),
            Some(4000)
        );
        // no memory.stat: usage counts in full
        assert_eq!(
            cgroup_headroom("8000\n", "6000\n", None, &["inactive_file"]),
            Some(2000)
        );
        // "max" is no limit; usage above the limit is no headroom
        assert_eq!(cgroup_headroom("max\n", "6000\n", None, &[]), None);
        assert_eq!(cgroup_headroom("5000", "6000", None, &[]), Some(0));
        assert_eq!(cgroup_headroom("", "6000", None, &[]), None);
        assert_eq!(cgroup_headroom("8000", "garbage", None, &[]), None);
    }

    #[test]
    fn cgroup_v1_prefers_the_hierarchical_cache_count() {
        let stat = "cache 9000\ninactive_file 100\ntotal_inactive_file 3000\n";
        let keys = ["total_inactive_file", "inactive_file"];
        assert_eq!(
            cgroup_headroom("10000\n", "9000\n", Some(stat), &keys),
            Some(4000)
        );
        assert_eq!(
            cgroup_headroom("10000", "9000", Some("inactive_file 100\n"), &keys),
            Some(1100)
        );
        // v1 spells "no limit" as a huge number: it never wins the minimum
        let unlimited = cgroup_headroom("9223372036854771712", "5856731136", None, &keys);
        assert_eq!(
            smallest_limit(&[parse_meminfo(MEMINFO), unlimited]),
            parse_meminfo(MEMINFO)
        );
    }

    #[test]
    fn the_smallest_known_limit_wins() {
        assert_eq!(smallest_limit(&[Some(5), None, Some(3)]), Some(3));
        assert_eq!(smallest_limit(&[None, Some(7)]), Some(7));
        assert_eq!(smallest_limit(&[None, None]), None);
        let container = cgroup_headroom("2000000000", "500000000", None, &["inactive_file"]);
        assert_eq!(
            smallest_limit(&[parse_meminfo(MEMINFO), container]),
            Some(1_500_000_000)
        );
    }
}
