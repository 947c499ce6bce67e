//! Per-device state of the GPU engine, shared by every [`super::GpuEngine`]
//! of a device (the decoder's, and the short-lived ones the KV cache makes):
//! a pool of device buffers reused by size, and the model kernels already
//! looked up.
//!
//! Every activation of a forward call is a buffer from the pool, given back
//! when its matrix drops. A decode step asks for the same sizes as the step
//! before it, so after the first one the pool answers every request and the
//! driver is never called: no allocation, and no free (which synchronizes
//! the device). Reuse is safe because all work of a device runs on its one
//! stream in submission order (see `device/workspace.rs`): a buffer given
//! back after its kernels are queued is only written by work queued later.

use crate::device::{DeviceBuffer, DeviceError, GpuDevice, Kernel};
use crate::dtype::DType;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// Idle bytes above which a returned buffer is freed instead of kept (a
/// long prefill must not pin its peak forever).
const MAX_IDLE_BYTES: usize = 1 << 30;

/// The model kernels a GPU engine launches, as a cheap cache key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelId {
    CopyRows(DType, DType),
    PutWords,
    Rope(DType),
    RmsNorm(DType),
    Swiglu(DType),
    Add(DType),
    ArgmaxPartial(DType),
    ArgmaxFinish,
}

#[derive(Debug, Default)]
struct Idle {
    by_size: HashMap<usize, Vec<DeviceBuffer>>,
    bytes: usize,
}

/// What one device's engines share.
#[derive(Debug)]
pub struct DeviceState {
    gpu: Arc<GpuDevice>,
    idle: Mutex<Idle>,
    kernels: Mutex<HashMap<KernelId, Kernel>>,
    allocations: AtomicU64,
    reuses: AtomicU64,
}

/// Counters of a device's buffer pool, for tests and reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers allocated from the driver through the pool.
    pub allocations: u64,
    /// Requests answered with an idle buffer.
    pub reuses: u64,
    /// Bytes held by idle buffers now.
    pub idle_bytes: usize,
}

static STATES: OnceLock<Mutex<Vec<Arc<DeviceState>>>> = OnceLock::new();

/// Whether new pooled matrices are filled with NaN (debug builds, or
/// after [`poison_new_activations`]`(true)`).
static POISON: AtomicBool = AtomicBool::new(cfg!(debug_assertions));

/// Makes every activation matrix the GPU engine hands out from now on NaN
/// until written (one fill per matrix, so off by default in release
/// builds), so a test sees any element a kernel leaves unwritten instead of
/// whatever the reused buffer held.
pub fn poison_new_activations(on: bool) {
    POISON.store(on, Ordering::Relaxed);
}

pub(crate) fn poisoning() -> bool {
    POISON.load(Ordering::Relaxed)
}

/// The shared state of `gpu` (devices are opened once per process, so one
/// state per device lives as long as the process).
pub fn state_for(gpu: &Arc<GpuDevice>) -> Arc<DeviceState> {
    let all = STATES.get_or_init(|| Mutex::new(Vec::new()));
    let mut all = match all.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(s) = all.iter().find(|s| s.gpu.same_as(gpu)) {
        return s.clone();
    }
    let s = Arc::new(DeviceState {
        gpu: gpu.clone(),
        idle: Mutex::new(Idle::default()),
        kernels: Mutex::new(HashMap::new()),
        allocations: AtomicU64::new(0),
        reuses: AtomicU64::new(0),
    });
    all.push(s.clone());
    s
}

impl DeviceState {
    fn idle(&self) -> Result<MutexGuard<'_, Idle>, DeviceError> {
        self.idle.lock().map_err(|_| DeviceError::LockPoisoned { what: "model buffer pool" })
    }

    /// A buffer of exactly `bytes` (contents undefined): an idle one of that
    /// size, else a new allocation (freeing the idle ones and retrying once
    /// if the device is out of memory).
    pub fn take(&self, bytes: usize) -> Result<DeviceBuffer, DeviceError> {
        {
            let mut idle = self.idle()?;
            if let Some(buf) = idle.by_size.get_mut(&bytes).and_then(Vec::pop) {
                idle.bytes -= bytes;
                self.reuses.fetch_add(1, Ordering::Relaxed);
                return Ok(buf);
            }
        }
        self.allocations.fetch_add(1, Ordering::Relaxed);
        match self.gpu.alloc(bytes) {
            Err(DeviceError::OutOfMemory { .. }) if self.trim() > 0 => self.gpu.alloc(bytes),
            other => other,
        }
    }

    /// Keeps `buf` for a later request of its size (or frees it when the
    /// pool already holds [`MAX_IDLE_BYTES`]).
    pub fn give_back(&self, buf: DeviceBuffer) {
        if let Ok(mut idle) = self.idle() {
            let bytes = buf.len_bytes();
            if idle.bytes + bytes <= MAX_IDLE_BYTES {
                idle.bytes += bytes;
                idle.by_size.entry(bytes).or_default().push(buf);
                return;
            }
        }
        drop(buf);
    }

    /// Frees every idle buffer; returns the bytes freed.
    pub fn trim(&self) -> usize {
        let Ok(mut idle) = self.idle() else { return 0 };
        let freed = std::mem::take(&mut *idle);
        drop(idle);
        freed.bytes
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            allocations: self.allocations.load(Ordering::Relaxed),
            reuses: self.reuses.load(Ordering::Relaxed),
            idle_bytes: self.idle().map(|i| i.bytes).unwrap_or(0),
        }
    }

    /// The compiled kernel `id`, looked up once per device.
    pub fn kernel(&self, id: KernelId) -> Result<Kernel, DeviceError> {
        let lock = || self.kernels.lock().map_err(|_| DeviceError::LockPoisoned { what: "model kernel cache" });
        if let Some(&k) = lock()?.get(&id) {
            return Ok(k);
        }
        let kernel = self.gpu.kernel(&super::kernels::spec_of(id))?;
        lock()?.insert(id, kernel);
        Ok(kernel)
    }
}
