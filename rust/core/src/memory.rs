//! How much memory the machine can give a result before it is allocated.
//!
//! Linux overcommits: a reservation far beyond the machine succeeds and the process is killed
//! when the pages are touched, long after an error could have named the argument at fault. So
//! an allocation whose size the caller chose (a padded `n_queries x num_negatives` result)
//! is compared with the memory the kernel says is available first.

use crate::error::{Error, Result};

/// Bytes the kernel reports as available to new allocations (`MemAvailable`), where it says.
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&text)
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
    fn human_sizes() {
        assert_eq!(human(7), "7 B");
        assert_eq!(human(1536 << 20), "1.5 GiB");
        assert_eq!(human(640 << 20), "640.0 MiB");
    }
}
