//! The device layer: where tensors live and where backends run.
//!
//! `gpu.rs` is the one vendor-neutral GPU API; `cuda/` (feature `cuda`) and
//! `hip/` (feature `rocm`) are the thin drivers under it. Devices are opened
//! once per process and shared, so tests and backends never re-create
//! contexts.

mod arch;
mod driver;
mod error;
mod gpu;
// The embedded kernel headers, handed to NVRTC / hiprtc by the drivers.
#[cfg(any(feature = "cuda", feature = "rocm"))]
mod headers;
pub mod offline;
mod workspace;

#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "rocm")]
mod hip;

pub use arch::{Arch, MatrixUnit};
pub use driver::{DeviceInfo, GemmDesc, LaunchConfig, Vendor};
pub use error::{DeviceError, DeviceResult};
pub use gpu::{DeviceBuffer, DeviceMemory, Event, GpuDevice, Kernel};
pub use workspace::Workspace;

use std::fmt;
use std::sync::{Arc, OnceLock};

/// The kind of place a backend runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    Cpu,
    Gpu,
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Gpu => "gpu",
        })
    }
}

/// Where a problem's tensors live.
#[derive(Clone, Debug)]
pub enum Device {
    Cpu,
    Gpu(Arc<GpuDevice>),
}

impl Device {
    pub fn kind(&self) -> DeviceKind {
        match self {
            Device::Cpu => DeviceKind::Cpu,
            Device::Gpu(_) => DeviceKind::Gpu,
        }
    }

    pub fn label(&self) -> String {
        match self {
            Device::Cpu => "cpu".to_string(),
            Device::Gpu(g) => g.label(),
        }
    }

    /// The first GPU if there is one, else the CPU.
    pub fn best_available() -> Device {
        match gpus() {
            Ok(list) if !list.is_empty() => Device::Gpu(list[0].clone()),
            _ => Device::Cpu,
        }
    }

    /// GPU number `ordinal`, or the reason there is none.
    pub fn gpu(ordinal: usize) -> DeviceResult<Device> {
        let list = gpus()?;
        list.get(ordinal)
            .map(|g| Device::Gpu(g.clone()))
            .ok_or_else(|| DeviceError::NoDevice(format!("GPU {ordinal} requested, {} present", list.len())))
    }
}

static GPUS: OnceLock<DeviceResult<Vec<Arc<GpuDevice>>>> = OnceLock::new();

/// Every GPU the compiled-in drivers can open, opened once per process.
/// An error says why there is none (no driver library, no device, ...).
pub fn gpus() -> DeviceResult<&'static [Arc<GpuDevice>]> {
    GPUS.get_or_init(open_all).as_ref().map(|v| v.as_slice()).map_err(Clone::clone)
}

// Without a GPU feature nothing is ever found: `found` stays empty.
#[cfg_attr(not(any(feature = "cuda", feature = "rocm")), allow(unused_mut))]
fn open_all() -> DeviceResult<Vec<Arc<GpuDevice>>> {
    let mut found: Vec<Arc<GpuDevice>> = Vec::new();
    let mut why_not: Vec<String> = Vec::new();
    #[cfg(feature = "cuda")]
    match cuda::open_all() {
        Ok(list) => {
            for driver in list {
                match GpuDevice::new(driver) {
                    Ok(d) => found.push(d),
                    Err(e) => why_not.push(format!("CUDA: {e}")),
                }
            }
        }
        Err(e) => why_not.push(format!("CUDA: {}", reason_text(e))),
    }
    #[cfg(feature = "rocm")]
    match hip::open_all() {
        Ok(list) => {
            for driver in list {
                match GpuDevice::new(driver) {
                    Ok(d) => found.push(d),
                    Err(e) => why_not.push(format!("HIP: {e}")),
                }
            }
        }
        Err(e) => why_not.push(format!("HIP: {}", reason_text(e))),
    }
    if found.is_empty() {
        if why_not.is_empty() {
            why_not.push("built without the cuda and rocm features".to_string());
        }
        return Err(DeviceError::NoDevice(why_not.join("; ")));
    }
    Ok(found)
}

/// The bare reason inside a `NoDevice`, so messages do not say it twice.
#[allow(dead_code)] // unused when built with neither driver
fn reason_text(e: DeviceError) -> String {
    match e {
        DeviceError::NoDevice(why) => why,
        other => other.to_string(),
    }
}
