//! The merge counters of the decode kernels: one `u32` per (sequence, KV
//! head × row chunk) that elects the block merging a row's splits
//! (`kernels/include/rf/decode/merge.h`). A launch needs them zero, and the
//! kernel leaves them zero (the last block of each row resets its
//! counter), so they live in buffers of their own that nothing else
//! writes, unlike the device's general workspace, whose buffers other
//! backends fill with anything.
//!
//! Per device, idle buffers wait in a pool; a call leases one for itself
//! (two threads never share counters) and gives it back once its kernel is
//! queued. As with the workspace pool, that is safe because all work of a
//! device runs on its one stream in submission order: the next user's
//! kernel touches the counters only after this one has reset every counter
//! (a decode kernel queued with programmatic dependent launch may start
//! early, but waits for the previous grid before its first memory access).
//! A new buffer is zeroed on that stream before the kernel that uses it.

use crate::device::{DeviceBuffer, DeviceError, GpuDevice, Vendor};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// Smallest buffer (counters): covers any batch × KV heads up to this
/// without a second allocation.
const MIN_COUNTERS: usize = 4096;

type DeviceKey = (Vendor, usize);
type Pool = Mutex<HashMap<DeviceKey, Vec<DeviceBuffer>>>;

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(Default::default)
}

fn lock() -> Result<MutexGuard<'static, HashMap<DeviceKey, Vec<DeviceBuffer>>>, DeviceError> {
    pool().lock().map_err(|_| DeviceError::LockPoisoned { what: "decode counters" })
}

/// An exclusive loan of zeroed counters; back to the pool on drop.
pub struct Counters {
    key: DeviceKey,
    buffer: Option<DeviceBuffer>,
}

impl Counters {
    /// At least `count` zeroed counters on `gpu`.
    pub fn lease(gpu: &Arc<GpuDevice>, count: usize) -> Result<Counters, DeviceError> {
        let key = (gpu.vendor(), gpu.ordinal());
        let bytes = count.max(MIN_COUNTERS).next_power_of_two() * 4;
        {
            let mut pool = lock()?;
            let idle = pool.entry(key).or_default();
            if let Some(i) = idle.iter().position(|b| b.len_bytes() >= bytes) {
                return Ok(Counters { key, buffer: Some(idle.swap_remove(i)) });
            }
        }
        let buffer = gpu.alloc(bytes)?;
        buffer.fill_bytes(0)?;
        Ok(Counters { key, buffer: Some(buffer) })
    }

    /// Device address of counter 0.
    pub fn ptr(&self) -> u64 {
        self.buffer.as_ref().map_or(0, |b| b.ptr())
    }
}

impl Drop for Counters {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            // A poisoned pool drops (frees) the buffer instead.
            if let Ok(mut pool) = pool().lock() {
                pool.entry(self.key).or_default().push(buffer);
            }
        }
    }
}
