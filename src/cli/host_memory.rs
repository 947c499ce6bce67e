//! Host memory a command will need, checked before anything is allocated:
//! sizes come from the user (shape flags, file headers, bench shapes), and an
//! infallible allocation of a size the machine cannot hold aborts the process.

use rocmforge::dtype::DType;
use std::fmt;

/// One allocation the command will make.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub what: String,
    /// u128, so the product of four usize dimensions and an element size
    /// cannot overflow while we are still only counting.
    pub bytes: u128,
    pub formula: String,
}

impl Item {
    /// A `[b, s, h, d]` tensor of `dtype` named `what`.
    pub fn tensor(what: &str, shape: [usize; 4], dtype: DType) -> Item {
        let bytes = shape.iter().fold(dtype.size_in_bytes() as u128, |acc, &d| acc.saturating_mul(d as u128));
        let [b, s, h, d] = shape;
        Item {
            what: what.to_string(),
            bytes,
            formula: format!("{b} × {s} × {h} × {d} × {} bytes", dtype.size_in_bytes()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HostMemoryError {
    #[error("{purpose} needs {} of host memory ({}), more than the {} available on this machine", human(*.total), list(.items), human(*.available as u128))]
    TooLarge { purpose: String, total: u128, available: u64, items: Vec<Item> },
    #[error("cannot allocate {} of host memory for {what}", human(*.bytes as u128))]
    AllocFailed { what: String, bytes: usize },
}

fn list(items: &[Item]) -> String {
    items.iter().map(|i| format!("{} {} = {}", i.what, human(i.bytes), i.formula)).collect::<Vec<_>>().join("; ")
}

/// Bytes in binary units, e.g. "1.5 GiB" (the library's wording, so the
/// CLI's checks and the model's allocation errors read alike).
pub fn human(bytes: u128) -> String {
    rocmforge::model::alloc::human_bytes(bytes)
}

/// Memory the kernel says it can give us now (MemAvailable + SwapFree), or
/// `None` where that is not known (then only the allocations themselves,
/// which are fallible, stand guard).
pub fn available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        kib.checked_mul(1024)
    };
    Some(field("MemAvailable:")?.saturating_add(field("SwapFree:").unwrap_or(0)))
}

/// Fails if `items` together need more host memory than is available.
pub fn check(purpose: &str, items: Vec<Item>) -> Result<(), HostMemoryError> {
    let total = items.iter().fold(0u128, |acc, i| acc.saturating_add(i.bytes));
    match available() {
        Some(available) if total > available as u128 => {
            Err(HostMemoryError::TooLarge { purpose: purpose.to_string(), total, available, items })
        }
        _ => Ok(()),
    }
}

/// A vector with room for `len` elements, or a typed error naming `what`.
pub fn try_vec<T>(len: usize, what: &str) -> Result<Vec<T>, HostMemoryError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| HostMemoryError::AllocFailed {
        what: what.to_string(),
        bytes: len.saturating_mul(std::mem::size_of::<T>()),
    })?;
    Ok(v)
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.what, human(self.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_counted_without_overflow_and_refused() {
        let q = Item::tensor("q", [1, 1 << 40, 32, 128], DType::F32);
        assert_eq!(q.bytes, (1u128 << 40) * 32 * 128 * 4);
        assert_eq!(human(q.bytes), "16.0 PiB");
        let huge = Item::tensor("k", [usize::MAX; 4], DType::F16);
        assert!(huge.bytes > u64::MAX as u128);
        if available().is_some() {
            let e = check("run", vec![q]).unwrap_err().to_string();
            assert!(
                e.contains("run needs 16.0 PiB of host memory") && e.contains("1 × 1099511627776 × 32 × 128"),
                "{e}"
            );
        }
        assert!(check("run", vec![Item::tensor("q", [1, 4, 2, 8], DType::F32)]).is_ok());
        assert!(matches!(try_vec::<u64>(usize::MAX / 4, "x"), Err(HostMemoryError::AllocFailed { .. })));
        assert_eq!(human(1023), "1023 bytes");
        assert_eq!(human(1536), "1.5 KiB");
    }
}
