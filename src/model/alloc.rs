//! Fallible host allocations for buffers whose size comes from the input
//! (tokens × widths, the KV cache): a size the machine cannot hold, or a
//! limit no up-front check can see (`ulimit -v`, a cgroup), ends in a typed
//! error naming the buffer and its size rather than aborting the process.

/// An allocation the host refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot allocate {} of host memory for {what}", human_bytes(*.bytes as u128))]
pub struct AllocError {
    /// What the buffer is for, e.g. "the output of a linear layer (64 tokens × 128 features)".
    pub what: String,
    /// Saturated at u64::MAX (a request no allocator could take anyway).
    pub bytes: u64,
}

/// Bytes in binary units: "1023 bytes", "1.5 KiB", "64.0 MiB".
pub fn human_bytes(bytes: u128) -> String {
    const UNITS: [&str; 7] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// An empty vector with room for `len` elements; `what` names the buffer
/// in the error (called only on failure).
pub fn try_with_capacity<T>(len: usize, what: impl FnOnce() -> String) -> Result<Vec<T>, AllocError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| AllocError {
        what: what(),
        bytes: (len as u64).saturating_mul(std::mem::size_of::<T>() as u64),
    })?;
    Ok(v)
}

/// `len` copies of `value`, allocated fallibly.
pub fn try_filled<T: Clone>(len: usize, value: T, what: impl FnOnce() -> String) -> Result<Vec<T>, AllocError> {
    let mut v = try_with_capacity(len, what)?;
    v.resize(len, value);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_allocations_are_errors_naming_the_buffer_and_size() {
        // 2^60 f32 values: past any address space, refused without touching memory.
        let e = try_filled(1usize << 60, 0.0f32, || "the test buffer".into()).unwrap_err();
        assert_eq!(e.bytes, 1u64 << 62);
        assert_eq!(e.to_string(), "cannot allocate 4.0 EiB of host memory for the test buffer");
        // More than isize::MAX bytes: a capacity overflow, the same error.
        let e = try_with_capacity::<u64>(usize::MAX / 2, || "x".into()).unwrap_err();
        assert!(e.to_string().starts_with("cannot allocate ") && e.to_string().ends_with(" for x"), "{e}");
        assert_eq!(try_filled(3, 1u8, || unreachable!()).unwrap(), vec![1, 1, 1]);
        assert_eq!(human_bytes(1023), "1023 bytes");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }
}
