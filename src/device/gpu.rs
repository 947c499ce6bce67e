//! The vendor-neutral GPU API: a device, its buffers, events and kernel
//! cache. Safe RAII types over whichever `Driver` opened the device.

use super::driver::{DeviceInfo, Driver, FunctionHandle, GemmDesc, LaunchConfig, ModuleHandle, StreamHandle, Vendor};
use super::error::{DeviceError, DeviceResult};
use super::workspace::{Workspace, WorkspacePool};
use crate::kernels::params::KernelParams;
use crate::kernels::{KernelKey, KernelSpec};
use std::collections::HashMap;
use std::ffi::c_void;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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
    /// Compiled kernels keyed by (file, entry, defines); the arch is the
    /// device's, so each specialization compiles once per process and device.
    kernels: Mutex<HashMap<KernelKey, (ModuleHandle, FunctionHandle)>>,
    /// Scratch buffers lent to forward calls (see `workspace.rs`).
    workspaces: WorkspacePool,
    /// `kernel_global_i32s` results by (module, name): kernels export
    /// constants there, and reading one costs a copy and a synchronization.
    globals: Mutex<HashMap<(usize, String), Vec<i32>>>,
    /// Device memory this process holds through this device, and its peak.
    memory: MemoryCounter,
}

/// Device memory allocated through a [`GpuDevice`] (buffers, tensors,
/// workspaces, idle ones included), in bytes. Memory the vendor libraries
/// allocate themselves (BLAS handles, loaded modules) is not counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceMemory {
    /// Held now.
    pub live_bytes: usize,
    /// The most held at once since the device opened or the last
    /// [`GpuDevice::reset_peak_memory`].
    pub peak_bytes: usize,
}

#[derive(Default)]
struct MemoryCounter {
    live: AtomicUsize,
    peak: AtomicUsize,
}

impl MemoryCounter {
    fn add(&self, bytes: usize) {
        let live = self.live.fetch_add(bytes, Ordering::SeqCst) + bytes;
        self.peak.fetch_max(live, Ordering::SeqCst);
    }

    fn sub(&self, bytes: usize) {
        self.live.fetch_sub(bytes, Ordering::SeqCst);
    }
}

impl fmt::Debug for GpuDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GpuDevice({} {})", self.label(), self.info().name)
    }
}

impl GpuDevice {
    #[cfg_attr(not(any(feature = "cuda", feature = "rocm")), allow(dead_code))]
    pub(crate) fn new(driver: Box<dyn Driver>) -> DeviceResult<Arc<GpuDevice>> {
        let stream = driver.stream_create()?;
        Ok(Arc::new(GpuDevice {
            driver,
            stream,
            kernels: Mutex::new(HashMap::new()),
            workspaces: WorkspacePool::default(),
            memory: MemoryCounter::default(),
            globals: Mutex::new(HashMap::new()),
        }))
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
        self.memory.add(bytes);
        Ok(DeviceBuffer { device: self.clone(), ptr, bytes })
    }

    /// Device memory held through this device now, and the peak.
    pub fn memory(&self) -> DeviceMemory {
        DeviceMemory {
            live_bytes: self.memory.live.load(Ordering::SeqCst),
            peak_bytes: self.memory.peak.load(Ordering::SeqCst),
        }
    }

    /// Starts a new peak measurement from what is held now.
    pub fn reset_peak_memory(&self) {
        self.memory.peak.store(self.memory.live.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    pub fn upload(self: &Arc<Self>, data: &[u8]) -> DeviceResult<DeviceBuffer> {
        let buf = self.alloc(data.len())?;
        // SAFETY: `buf` was just allocated with `data.len()` bytes.
        unsafe { self.driver.copy_to_device(self.stream, buf.ptr, data)? };
        Ok(buf)
    }

    pub fn arch(&self) -> &super::Arch {
        &self.info().arch
    }

    /// The compiled kernel for `spec`, compiling it on first use. The cache
    /// lock is not held while compiling, so threads needing other kernels
    /// never wait on a compile; two threads racing on the same new kernel
    /// both compile it and the first to finish is kept.
    pub fn kernel(&self, spec: &KernelSpec) -> DeviceResult<Kernel> {
        let key = spec.key();
        let lock = || self.kernels.lock().map_err(|_| DeviceError::LockPoisoned { what: "kernel cache" });
        if let Some(&(module, handle)) = lock()?.get(&key) {
            return Ok(Kernel { handle, module, entry: spec.entry });
        }
        let options = spec.options(self.arch());
        let compiled = self.driver.compile_and_load(spec.entry, &spec.source(), &options)?;
        let (module, handle) = *lock()?.entry(key).or_insert(compiled);
        Ok(Kernel { handle, module, entry: spec.entry })
    }

    /// The `extern "C"` `int` array `name` that `kernel`'s module exports
    /// (e.g. the launch shape a kernel derives from its own tiling, so the
    /// host never duplicates that logic). Such globals are constants: the
    /// device is read once per (module, name) and the values are cached, so
    /// a launch path may ask every call without a copy and a stream
    /// synchronization each time.
    pub fn kernel_global_i32s(&self, kernel: &Kernel, name: &str) -> DeviceResult<Vec<i32>> {
        let key = (kernel.module.0, name.to_string());
        let lock = || self.globals.lock().map_err(|_| DeviceError::LockPoisoned { what: "kernel globals" });
        if let Some(v) = lock()?.get(&key) {
            return Ok(v.clone());
        }
        let (ptr, bytes) = self.driver.module_global(kernel.module, name)?;
        let mut raw = vec![0u8; bytes];
        // SAFETY: the global is `bytes` long and lives as long as the module.
        unsafe { self.driver.copy_to_host(self.stream, &mut raw, ptr)? };
        let values: Vec<i32> = raw.chunks_exact(4).map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect();
        lock()?.insert(key, values.clone());
        Ok(values)
    }

    /// An exclusive scratch buffer of at least `bytes` from this device's
    /// pool; it goes back to the pool when dropped.
    pub fn workspace(self: &Arc<Self>, bytes: usize) -> DeviceResult<Workspace> {
        Workspace::lease(self, bytes)
    }

    /// Frees the idle workspace buffers; returns the bytes freed.
    pub fn trim_workspaces(&self) -> usize {
        super::workspace::trim(self)
    }

    /// Bytes held by idle workspace buffers.
    pub fn idle_workspace_bytes(&self) -> usize {
        self.workspaces.idle_bytes()
    }

    pub(crate) fn workspace_pool(&self) -> &WorkspacePool {
        &self.workspaces
    }

    /// Frees raw device memory of this device.
    ///
    /// # Safety
    /// `ptr` came from this device's `alloc` of `bytes` bytes and nothing
    /// uses it afterwards.
    pub(crate) unsafe fn free_raw(&self, ptr: u64, bytes: usize) {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.driver.free(ptr) };
        self.memory.sub(bytes);
    }

    /// Queues `kernel` with its parameter struct as the only argument.
    ///
    /// # Safety
    /// `P` is the struct the kernel takes by value, and every device address
    /// in `params` points to enough live memory for what the kernel touches
    /// under `cfg`.
    pub unsafe fn launch_params<P: KernelParams>(
        &self,
        kernel: &Kernel,
        cfg: &LaunchConfig,
        params: &P,
    ) -> DeviceResult<()> {
        let mut value = *params;
        let mut args = [&mut value as *mut P as *mut c_void];
        // SAFETY: forwarded from this function's contract; `value` outlives the call.
        unsafe { self.driver.launch(self.stream, kernel.handle, cfg, &mut args) }.map_err(|e| launch_error(kernel, e))
    }

    /// `launch_params`, letting the kernel's blocks start while the stream's
    /// previous kernel finishes where the driver can (NVIDIA programmatic
    /// dependent launch, sm_90+; elsewhere a plain launch).
    ///
    /// # Safety
    /// As `launch_params`; in addition, the kernel waits for the previous
    /// grid (`griddepcontrol.wait`) before it touches any memory.
    pub unsafe fn launch_params_overlapping<P: KernelParams>(
        &self,
        kernel: &Kernel,
        cfg: &LaunchConfig,
        params: &P,
    ) -> DeviceResult<()> {
        let mut value = *params;
        let mut args = [&mut value as *mut P as *mut c_void];
        // SAFETY: forwarded from this function's contract; `value` outlives the call.
        unsafe { self.driver.launch_overlapping(self.stream, kernel.handle, cfg, &mut args) }
            .map_err(|e| launch_error(kernel, e))
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

/// A driver failure during a launch, named after the kernel.
fn launch_error(kernel: &Kernel, e: DeviceError) -> DeviceError {
    match e {
        DeviceError::Launch { detail, .. } | DeviceError::Driver { detail, .. } => {
            DeviceError::Launch { kernel: kernel.entry.to_string(), detail }
        }
        other => other,
    }
}

impl Drop for GpuDevice {
    fn drop(&mut self) {
        // Buffers and events hold an `Arc` to the device, so none outlives it.
        let _ = self.driver.synchronize();
        for (ptr, bytes) in self.workspaces.drain() {
            // SAFETY: idle workspace memory came from this device's `alloc`
            // and nothing references it once it is back in the pool.
            unsafe { self.free_raw(ptr, bytes) }
        }
        // SAFETY: the stream was created in `new` and dies with the device.
        unsafe { self.driver.stream_destroy(self.stream) }
    }
}

/// A loaded kernel entry point.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    handle: FunctionHandle,
    module: ModuleHandle,
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
            return Err(DeviceError::CopySize { device_bytes: self.bytes, host_bytes: dst.len() });
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

impl DeviceBuffer {
    /// Gives up ownership: the memory is no longer freed on drop.
    pub(crate) fn into_raw(self) -> (u64, usize) {
        let raw = (self.ptr, self.bytes);
        std::mem::forget(self);
        raw
    }

    /// Takes ownership of memory from `into_raw` on the same device.
    ///
    /// # Safety
    /// `(ptr, bytes)` came from `into_raw` of a buffer of `device` and is
    /// owned by nobody else.
    pub(crate) unsafe fn from_raw(device: Arc<GpuDevice>, ptr: u64, bytes: usize) -> DeviceBuffer {
        DeviceBuffer { device, ptr, bytes }
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from this device's `alloc` of `self.bytes`
        // bytes and dies with `self`.
        unsafe { self.device.free_raw(self.ptr, self.bytes) }
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
