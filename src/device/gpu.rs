//! The vendor-neutral GPU API: a device, its buffers, events and kernel
//! cache. Safe RAII types over whichever `Driver` opened the device.

use super::driver::{DeviceInfo, Driver, FunctionHandle, GemmDesc, LaunchConfig, StreamHandle, Vendor};
use super::error::{DeviceError, DeviceResult};
use crate::kernels::KernelSpec;
use std::collections::HashMap;
use std::ffi::c_void;
use std::fmt;
use std::sync::{Arc, Mutex};

/// Compiled-kernel cache key: (entry, defines).
type KernelKey = (String, Vec<(String, String)>);

/// One opened GPU. Shared as `Arc<GpuDevice>`; opened once per process.
///
/// The device owns one work stream, created at open and destroyed with the
/// device: every copy, fill, launch, GEMM and event of this device goes
/// there, in submission order, so callers never synchronize between steps.
/// It is a stream of our own rather than the legacy default stream, so work
/// of other libraries in the process does not serialize with ours.
pub struct GpuDevice {
    driver: Box<dyn Driver>,
    stream: StreamHandle,
    /// Compiled kernels keyed by (entry, defines); the arch is the device's,
    /// so each specialization compiles once per process and device.
    kernels: Mutex<HashMap<KernelKey, FunctionHandle>>,
}

impl fmt::Debug for GpuDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GpuDevice({} {})", self.label(), self.info().name)
    }
}

/// A kernel argument, passed by value.
#[derive(Clone, Copy, Debug)]
pub enum KernelArg {
    Ptr(u64),
    I32(i32),
    I64(i64),
    F32(f32),
}

impl GpuDevice {
    pub(crate) fn new(driver: Box<dyn Driver>) -> DeviceResult<Arc<GpuDevice>> {
        let stream = driver.stream_create()?;
        Ok(Arc::new(GpuDevice { driver, stream, kernels: Mutex::new(HashMap::new()) }))
    }

    pub fn info(&self) -> &DeviceInfo {
        self.driver.info()
    }

    pub fn vendor(&self) -> Vendor {
        self.info().vendor
    }

    pub fn ordinal(&self) -> usize {
        self.info().ordinal
    }

    /// "cuda:0", "hip:1".
    pub fn label(&self) -> String {
        format!("{}:{}", self.vendor().prefix(), self.ordinal())
    }

    pub fn same_as(&self, other: &GpuDevice) -> bool {
        self.vendor() == other.vendor() && self.ordinal() == other.ordinal()
    }

    /// Uninitialized device memory of `bytes` bytes.
    pub fn alloc(self: &Arc<Self>, bytes: usize) -> DeviceResult<DeviceBuffer> {
        // Zero-byte allocations are legal for us but not for every driver.
        let ptr = self.driver.alloc(bytes.max(1))?;
        Ok(DeviceBuffer { device: self.clone(), ptr, bytes })
    }

    pub fn upload(self: &Arc<Self>, data: &[u8]) -> DeviceResult<DeviceBuffer> {
        let buf = self.alloc(data.len())?;
        // SAFETY: `buf` was just allocated with `data.len()` bytes.
        unsafe { self.driver.copy_to_device(self.stream, buf.ptr, data)? };
        Ok(buf)
    }

    /// The compiled kernel for `spec`, compiling it on first use.
    pub fn kernel(&self, spec: &KernelSpec) -> DeviceResult<Kernel> {
        let key = (spec.entry.to_string(), spec.defines.clone());
        let mut cache = self.kernels.lock().map_err(|_| DeviceError::Invalid("kernel cache poisoned".into()))?;
        if let Some(&handle) = cache.get(&key) {
            return Ok(Kernel { handle, entry: spec.entry });
        }
        let options = spec.options(self.info().warp_size);
        let handle = self.driver.compile_and_load(spec.entry, &spec.full_source(), &options)?;
        cache.insert(key, handle);
        Ok(Kernel { handle, entry: spec.entry })
    }

    /// Queues `kernel` with `args`.
    ///
    /// # Safety
    /// `args` match the kernel's parameter list in order and type, and every
    /// pointer argument addresses enough live memory for what the kernel
    /// touches under `cfg`.
    pub unsafe fn launch(&self, kernel: &Kernel, cfg: &LaunchConfig, args: &[KernelArg]) -> DeviceResult<()> {
        // The driver reads each argument through a pointer to its value, so
        // the values must stay put until the launch call returns.
        let mut values: Vec<[u8; 8]> = args
            .iter()
            .map(|a| {
                let mut v = [0u8; 8];
                match *a {
                    KernelArg::Ptr(p) => v.copy_from_slice(&p.to_ne_bytes()),
                    KernelArg::I64(x) => v.copy_from_slice(&x.to_ne_bytes()),
                    KernelArg::I32(x) => v[..4].copy_from_slice(&x.to_ne_bytes()),
                    KernelArg::F32(x) => v[..4].copy_from_slice(&x.to_ne_bytes()),
                }
                v
            })
            .collect();
        let mut params: Vec<*mut c_void> = values.iter_mut().map(|v| v.as_mut_ptr() as *mut c_void).collect();
        // SAFETY: forwarded from this function's contract; `values` outlives the call.
        unsafe { self.driver.launch(self.stream, kernel.handle, cfg, &mut params) }.map_err(|e| match e {
            DeviceError::Launch { detail, .. } | DeviceError::Driver { detail, .. } => {
                DeviceError::Launch { kernel: kernel.entry.to_string(), detail }
            }
            other => other,
        })
    }

    /// Queues one strided-batched GEMM.
    ///
    /// # Safety
    /// Every matrix `g` describes lies inside live allocations of this device.
    pub unsafe fn gemm(&self, g: &GemmDesc) -> DeviceResult<()> {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.driver.gemm(self.stream, g) }
    }

    pub fn event(self: &Arc<Self>) -> DeviceResult<Event> {
        Ok(Event { device: self.clone(), handle: self.driver.event_create()? })
    }

    /// Waits until all work queued on this device's stream has finished.
    pub fn synchronize(&self) -> DeviceResult<()> {
        self.driver.stream_synchronize(self.stream)
    }
}

impl Drop for GpuDevice {
    fn drop(&mut self) {
        // Buffers and events hold an `Arc` to the device, so none outlives it.
        let _ = self.driver.synchronize();
        // SAFETY: the stream was created in `new` and dies with the device.
        unsafe { self.driver.stream_destroy(self.stream) }
    }
}

/// A loaded kernel entry point.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    handle: FunctionHandle,
    entry: &'static str,
}

/// Device memory, freed on drop.
pub struct DeviceBuffer {
    device: Arc<GpuDevice>,
    ptr: u64,
    bytes: usize,
}

impl fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceBuffer({}, {} bytes)", self.device.label(), self.bytes)
    }
}

impl DeviceBuffer {
    pub fn device(&self) -> &Arc<GpuDevice> {
        &self.device
    }

    /// Raw device address, for kernel arguments and GEMM descriptors.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    pub fn len_bytes(&self) -> usize {
        self.bytes
    }

    pub fn copy_to_host(&self, dst: &mut [u8]) -> DeviceResult<()> {
        if dst.len() != self.bytes {
            return Err(DeviceError::Invalid(format!(
                "download of {} bytes into a host buffer of {}",
                self.bytes,
                dst.len()
            )));
        }
        // SAFETY: the buffer holds exactly `dst.len()` bytes and is alive.
        unsafe { self.device.driver.copy_to_host(self.device.stream, dst, self.ptr) }
    }

    /// Sets every byte to `value` (0xFF poisons f32/f16/bf16 with NaN).
    pub fn fill_bytes(&self, value: u8) -> DeviceResult<()> {
        // SAFETY: the fill covers exactly this live allocation.
        unsafe { self.device.driver.fill_bytes(self.device.stream, self.ptr, value, self.bytes) }
    }

    /// A new buffer on the same device with the same contents.
    pub fn duplicate(&self) -> DeviceResult<DeviceBuffer> {
        let copy = self.device.alloc(self.bytes)?;
        // SAFETY: both allocations are live and `self.bytes` long.
        unsafe { self.device.driver.copy_device(self.device.stream, copy.ptr, self.ptr, self.bytes)? };
        Ok(copy)
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from this device's `alloc` and dies with `self`.
        unsafe { self.device.driver.free(self.ptr) }
    }
}

/// A device timing event, destroyed on drop.
pub struct Event {
    device: Arc<GpuDevice>,
    handle: usize,
}

impl Event {
    /// Marks the current point of the device's stream.
    pub fn record(&self) -> DeviceResult<()> {
        self.device.driver.event_record(self.device.stream, self.handle)
    }

    /// Milliseconds from `self` to `later`; waits for `later` to complete.
    pub fn elapsed_ms(&self, later: &Event) -> DeviceResult<f32> {
        self.device.driver.event_elapsed_ms(self.handle, later.handle)
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: the handle came from `event_create` and dies with `self`.
        unsafe { self.device.driver.event_destroy(self.handle) }
    }
}
