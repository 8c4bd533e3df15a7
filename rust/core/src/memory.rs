//! How much memory the machine can give a result before it is allocated.
//!
//! Linux overcommits: a reservation far beyond the machine succeeds and the process is killed
//! when the pages are touched, long after an error could have named the argument at fault. So
//! an allocation whose size the caller chose (a padded `n_queries x num_negatives` result, a
//! `n_queries x k` search, merge or rescoring result, k-means' per-row and per-cluster
//! arrays) is compared with the memory the kernel says is available first, before any work,
//! and then made fallibly: an address-space limit (`ulimit -v`) is not in that figure.

use crate::error::{Error, Result};

/// Bytes available to new allocations, where the system says: the kernel's `MemAvailable`,
/// or less when the process' control group (a container's memory limit, v2 or v1) has less
/// room left.
pub fn available_bytes() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let machine = read("/proc/meminfo").and_then(|t| parse_mem_available(&t));
    let group = [
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ]
    .iter()
    .find_map(|(limit, usage)| group_room(&read(limit)?, &read(usage)?));
    match (machine, group) {
        (Some(m), Some(g)) => Some(m.min(g)),
        (m, g) => m.or(g),
    }
}

/// Room left under a control group's limit; `None` when it has none (`max`, or v1's huge
/// "unlimited" value, which exceeds any machine's memory anyway).
fn group_room(limit: &str, usage: &str) -> Option<u64> {
    let limit: u64 = limit.trim().parse().ok()?;
    let usage: u64 = usage.trim().parse().ok()?;
    Some(limit.saturating_sub(usage))
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut fields = line["MemAvailable:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// An error naming `what` when `bytes` cannot be held in the memory available now (or
/// exceeds what a Rust allocation may hold on any machine).
pub fn ensure_fits(bytes: Option<u64>, what: impl FnOnce() -> String) -> Result<()> {
    ensure_fits_in(bytes, available_bytes(), what)
}

fn ensure_fits_in(
    bytes: Option<u64>,
    available: Option<u64>,
    what: impl FnOnce() -> String,
) -> Result<()> {
    let bytes = match bytes {
        Some(b) if b <= isize::MAX as u64 => b,
        _ => return Err(Error::invalid(format!("{} is too large to hold", what()))),
    };
    match available {
        Some(free) if bytes > free => Err(Error::invalid(format!(
            "{} needs {}, more than the {} of memory available",
            what(),
            human(bytes),
            human(free)
        ))),
        _ => Ok(()),
    }
}

/// `len` copies of `value` in a vector allocated fallibly: an error naming `what` where the
/// allocator refuses (an address-space limit, `ulimit -v`), never an abort. Callers check the
/// whole call's memory with [`ensure_fits`] first: past what is available, an allocation may
/// succeed and the process be killed when its pages are touched.
pub fn filled<T: Clone>(len: usize, value: T, what: impl FnOnce() -> String) -> Result<Vec<T>> {
    let mut out = reserved(len, what)?;
    out.resize(len, value);
    Ok(out)
}

/// An empty vector with room for `len` values, allocated fallibly as by [`filled`].
pub fn reserved<T>(len: usize, what: impl FnOnce() -> String) -> Result<Vec<T>> {
    let mut out = Vec::new();
    if out.try_reserve_exact(len).is_err() {
        return Err(Error::invalid(format!("not enough memory for {}", what())));
    }
    Ok(out)
}

/// The `rows x k` arrays of a top-k result, scores `-inf` and ids `-1` (padding), once
/// [`ensure_fits`] has found room for them and `held` bytes more (what the call holds besides
/// them); `what` names the result in the error.
pub fn topk_result(
    rows: usize,
    k: usize,
    held: u64,
    what: impl Fn() -> String,
) -> Result<(Vec<f32>, Vec<i64>)> {
    let cells = rows.checked_mul(k);
    let per_cell = (std::mem::size_of::<f32>() + std::mem::size_of::<i64>()) as u64;
    ensure_fits(
        cells.and_then(|c| (c as u64).checked_mul(per_cell)?.checked_add(held)),
        &what,
    )?;
    let cells = cells.expect("ensure_fits refuses a size that overflows");
    Ok((
        filled(cells, f32::NEG_INFINITY, &what)?,
        filled(cells, -1i64, &what)?,
    ))
}

/// `1.5 GiB`, `640 MiB`, `12 KiB`, `7 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernels_line() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(parse_mem_available(text), Some(2048 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 5 kB\n"), None);
        assert_eq!(parse_mem_available("MemAvailable: x kB\n"), None);
    }

    #[test]
    fn a_control_groups_room_is_its_limit_less_its_usage() {
        assert_eq!(group_room("1000\n", "400\n"), Some(600));
        assert_eq!(group_room("100", "400"), Some(0));
        assert_eq!(group_room("max\n", "400"), None);
    }

    #[test]
    fn refuses_what_does_not_fit_and_names_it() {
        let what = || "6 queries x 268435456 negatives".to_string();
        let err = ensure_fits_in(Some(19 << 30), Some(8 << 30), what).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("6 queries x 268435456 negatives"), "{msg}");
        assert!(msg.contains("19.0 GiB") && msg.contains("8.0 GiB"), "{msg}");
        assert!(ensure_fits_in(Some(1 << 20), Some(8 << 30), what).is_ok());
        // Unknown availability: only the hard limits apply.
        assert!(ensure_fits_in(Some(19 << 30), None, what).is_ok());
        assert!(ensure_fits_in(None, None, what).is_err());
        assert!(ensure_fits_in(Some(u64::MAX), None, what).is_err());
    }

    #[test]
    fn absurd_results_are_errors_not_aborts() {
        let what = || "a result of 3 rows x k = 2^40".to_string();
        for (rows, k) in [(3, 1usize << 40), (usize::MAX, 2), (1 << 62, 1)] {
            let err = topk_result(rows, k, 0, what).unwrap_err().to_string();
            assert!(err.contains("a result of 3 rows x k = 2^40"), "{err}");
        }
        // Past isize::MAX bytes the allocator itself refuses, without the availability check.
        let err = filled(usize::MAX / 2, 0u64, || "many".to_string()).unwrap_err();
        assert!(
            err.to_string().contains("not enough memory for many"),
            "{err}"
        );
        let (scores, ids) = topk_result(2, 3, 1 << 20, what).unwrap();
        assert_eq!((scores, ids), (vec![f32::NEG_INFINITY; 6], vec![-1; 6]));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(7), "7 B");
        assert_eq!(human(1536 << 20), "1.5 GiB");
        assert_eq!(human(640 << 20), "640.0 MiB");
    }
}
