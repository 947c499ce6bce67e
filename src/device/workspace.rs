//! Per-device workspace arena. Backends are stateless singletons; scratch
//! memory belongs to the device it lives on.
//!
//! A forward call leases a buffer of at least the bytes it needs and gives
//! it back when the lease drops. Leases are exclusive, so two threads
//! running attention on the same GPU never share scratch, and the pool's
//! lock is held only to pop or push a buffer, never during a kernel. All
//! work of a device runs on its one stream in submission order, so a buffer
//! given back right after its kernels are queued is safe to lease again:
//! the next user's work is queued behind them. Idle buffers are kept as raw
//! (address, bytes) pairs so the pool holds no reference to its own device.

use super::error::{DeviceError, DeviceResult};
use super::gpu::{DeviceBuffer, GpuDevice};
use std::sync::{Arc, Mutex, MutexGuard};

/// Idle buffers of one device, reused by later leases.
#[derive(Default)]
pub(crate) struct WorkspacePool {
    idle: Mutex<Vec<(u64, usize)>>,
}

impl WorkspacePool {
    fn lock(&self) -> DeviceResult<MutexGuard<'_, Vec<(u64, usize)>>> {
        self.idle.lock().map_err(|_| DeviceError::LockPoisoned { what: "workspace pool" })
    }

    /// Bytes held by idle buffers.
    pub(crate) fn idle_bytes(&self) -> usize {
        self.lock().map(|idle| idle.iter().map(|&(_, b)| b).sum()).unwrap_or(0)
    }

    /// Removes every idle buffer; the caller frees them.
    pub(crate) fn drain(&self) -> Vec<(u64, usize)> {
        match self.idle.lock() {
            Ok(mut idle) => std::mem::take(&mut *idle),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    /// The smallest idle buffer of at least `bytes`, so big ones stay for
    /// big calls.
    fn take(&self, bytes: usize) -> DeviceResult<Option<(u64, usize)>> {
        let mut idle = self.lock()?;
        let best =
            idle.iter().enumerate().filter(|(_, &(_, b))| b >= bytes).min_by_key(|(_, &(_, b))| b).map(|(i, _)| i);
        Ok(best.map(|i| idle.swap_remove(i)))
    }

    fn give_back(&self, raw: (u64, usize)) -> Result<(), (u64, usize)> {
        match self.idle.lock() {
            Ok(mut idle) => {
                idle.push(raw);
                Ok(())
            }
            Err(_) => Err(raw),
        }
    }
}

/// Frees the idle workspace buffers of `device`; returns the bytes freed.
pub(crate) fn trim(device: &GpuDevice) -> usize {
    let freed = device.workspace_pool().drain();
    for &(ptr, bytes) in &freed {
        // SAFETY: idle buffers came from this device's `alloc` of `bytes`
        // bytes and nobody references them while they sit in the pool.
        unsafe { device.free_raw(ptr, bytes) };
    }
    freed.iter().map(|&(_, b)| b).sum()
}

/// An exclusive loan of device scratch memory; returns to the device's pool
/// when dropped.
pub struct Workspace {
    buffer: Option<DeviceBuffer>,
}

impl Workspace {
    pub(crate) fn lease(device: &Arc<GpuDevice>, bytes: usize) -> DeviceResult<Workspace> {
        if let Some((ptr, len)) = device.workspace_pool().take(bytes)? {
            // SAFETY: the pool owned this allocation of `device` exclusively.
            let buffer = unsafe { DeviceBuffer::from_raw(device.clone(), ptr, len) };
            return Ok(Workspace { buffer: Some(buffer) });
        }
        let buffer = match device.alloc(bytes) {
            Err(DeviceError::OutOfMemory { .. }) if device.workspace_pool().idle_bytes() > 0 => {
                // Idle buffers may be what fills the device: free them, retry once.
                trim(device);
                device.alloc(bytes)?
            }
            other => other?,
        };
        Ok(Workspace { buffer: Some(buffer) })
    }

    /// Device address of the first byte.
    pub fn ptr(&self) -> u64 {
        self.buffer.as_ref().map_or(0, |b| b.ptr())
    }

    /// Usable bytes (at least what was asked for).
    pub fn len_bytes(&self) -> usize {
        self.buffer.as_ref().map_or(0, |b| b.len_bytes())
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            let device = buffer.device().clone();
            if let Err(raw) = device.workspace_pool().give_back(buffer.into_raw()) {
                // A poisoned pool cannot keep it: free it now.
                // SAFETY: `raw` came from `into_raw` of a buffer of `device`.
                drop(unsafe { DeviceBuffer::from_raw(device, raw.0, raw.1) });
            }
        }
    }
}
