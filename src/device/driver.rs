//! The seam between the vendor-neutral GPU API (`gpu.rs`) and the two thin
//! drivers (`cuda/`, `hip/`). A driver wraps raw calls into checked results;
//! `gpu.rs` builds the safe RAII types on top, so everything above this trait
//! runs the same code on NVIDIA and AMD.

use super::arch::Arch;
use super::error::DeviceResult;
use crate::dtype::DType;
use std::ffi::c_void;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Vendor {
    Nvidia,
    Amd,
}

impl Vendor {
    /// Prefix of device labels: "cuda:0", "hip:0".
    pub fn prefix(self) -> &'static str {
        match self {
            Vendor::Nvidia => "cuda",
            Vendor::Amd => "hip",
        }
    }
}

/// Facts read from the device once, at open.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceInfo {
    pub vendor: Vendor,
    pub ordinal: usize,
    pub name: String,
    /// Compile target: sm_90, gfx90a:xnack- (AMD target features kept).
    pub arch: Arch,
    pub total_memory: u64,
    /// Read from the device (32 on NVIDIA and RDNA, 64 on CDNA/GCN).
    pub warp_size: u32,
    pub multiprocessors: u32,
    pub max_threads_per_block: u32,
}

/// Grid and block of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_mem_bytes: u32,
}

/// Opaque handle of a stream (an in-order work queue) created by a driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamHandle(pub usize);

/// Opaque handle of a loaded kernel; valid while its driver lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionHandle(pub usize);

/// Opaque handle of a loaded module (one compiled translation unit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleHandle(pub usize);

/// One strided-batched GEMM in BLAS (column-major) terms:
/// `C_i = alpha * op(A_i) * op(B_i) + beta * C_i` for `i < batch`.
/// A and B share a dtype; C is that dtype or f32; accumulation is f32.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmDesc {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: i32,
    pub n: i32,
    pub k: i32,
    pub alpha: f32,
    pub a: u64,
    pub lda: i32,
    pub stride_a: i64,
    pub b: u64,
    pub ldb: i32,
    pub stride_b: i64,
    pub ab_type: DType,
    pub beta: f32,
    pub c: u64,
    pub ldc: i32,
    pub stride_c: i64,
    pub c_type: DType,
    pub batch: i32,
}

/// What a driver provides. Work is queued on streams the driver creates;
/// operations on one stream run in submission order. Host copies return
/// only once they are complete, so borrowed host memory is safe to reuse.
pub(crate) trait Driver: Send + Sync {
    fn info(&self) -> &DeviceInfo;
    // Called only by `GpuDevice::new`, which only a driver feature reaches.
    #[cfg_attr(not(any(feature = "cuda", feature = "rocm")), allow(dead_code))]
    fn stream_create(&self) -> DeviceResult<StreamHandle>;
    /// # Safety
    /// `stream` came from `stream_create` and is not used afterwards.
    unsafe fn stream_destroy(&self, stream: StreamHandle);
    /// Waits until everything queued on `stream` has finished.
    fn stream_synchronize(&self, stream: StreamHandle) -> DeviceResult<()>;
    fn alloc(&self, bytes: usize) -> DeviceResult<u64>;
    /// # Safety
    /// `ptr` came from `alloc` on this driver and is not used afterwards.
    unsafe fn free(&self, ptr: u64);
    /// # Safety
    /// `dst` points to at least `src.len()` bytes of device memory.
    unsafe fn copy_to_device(&self, stream: StreamHandle, dst: u64, src: &[u8]) -> DeviceResult<()>;
    /// # Safety
    /// `src` points to at least `dst.len()` bytes of device memory.
    unsafe fn copy_to_host(&self, stream: StreamHandle, dst: &mut [u8], src: u64) -> DeviceResult<()>;
    /// # Safety
    /// Both pointers address at least `bytes` bytes of device memory.
    unsafe fn copy_device(&self, stream: StreamHandle, dst: u64, src: u64, bytes: usize) -> DeviceResult<()>;
    /// # Safety
    /// `dst` points to at least `bytes` bytes of device memory.
    unsafe fn fill_bytes(&self, stream: StreamHandle, dst: u64, value: u8, bytes: usize) -> DeviceResult<()>;
    /// Compiles `source` for this device with the runtime compiler and loads
    /// `entry` from it. The module stays loaded until the driver drops.
    fn compile_and_load(
        &self,
        entry: &str,
        source: &str,
        options: &[String],
    ) -> DeviceResult<(ModuleHandle, FunctionHandle)>;
    /// Device address and size of the `extern "C"` global `name` of a
    /// loaded module (kernels export facts such as their launch shape).
    fn module_global(&self, module: ModuleHandle, name: &str) -> DeviceResult<(u64, usize)>;
    /// # Safety
    /// `params` point to values matching the kernel's signature, and every
    /// buffer the kernel touches is large enough for `cfg`.
    unsafe fn launch(
        &self,
        stream: StreamHandle,
        f: FunctionHandle,
        cfg: &LaunchConfig,
        params: &mut [*mut c_void],
    ) -> DeviceResult<()>;
    /// Queues like `launch`, but lets the kernel's blocks start while the
    /// stream's previous kernel is still finishing (NVIDIA programmatic
    /// dependent launch, sm_90+); drivers without it queue a plain launch.
    ///
    /// # Safety
    /// As `launch`; in addition, the kernel waits for the previous grid
    /// (`griddepcontrol.wait`) before it touches any memory.
    unsafe fn launch_overlapping(
        &self,
        stream: StreamHandle,
        f: FunctionHandle,
        cfg: &LaunchConfig,
        params: &mut [*mut c_void],
    ) -> DeviceResult<()> {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.launch(stream, f, cfg, params) }
    }
    /// # Safety
    /// Every matrix described by `g` lies inside live device allocations.
    unsafe fn gemm(&self, stream: StreamHandle, g: &GemmDesc) -> DeviceResult<()>;
    fn event_create(&self) -> DeviceResult<usize>;
    /// # Safety
    /// `event` came from `event_create` and is not used afterwards.
    unsafe fn event_destroy(&self, event: usize);
    fn event_record(&self, stream: StreamHandle, event: usize) -> DeviceResult<()>;
    /// Milliseconds between two recorded events; waits for `end`.
    fn event_elapsed_ms(&self, start: usize, end: usize) -> DeviceResult<f32>;
    /// Waits until all work on the device has finished.
    fn synchronize(&self) -> DeviceResult<()>;
}
