//! NVIDIA driver: the CUDA driver API, NVRTC and cuBLAS through `cudarc`,
//! loaded at run time (no toolkit needed to build; no driver = "no device").
//!
//! Layers, as in cudarc itself: `cudarc::*::sys` raw calls →
//! `cudarc::*::result` + `checked.rs` status-to-`DeviceError` mapping → this
//! file's `CudaDriver`, on which `gpu.rs` builds the safe RAII types.

mod checked;
pub(crate) mod nvrtc;

use super::arch::Arch;
use super::driver::{DeviceInfo, Driver, FunctionHandle, GemmDesc, LaunchConfig, ModuleHandle, StreamHandle, Vendor};
use super::error::{DeviceError, DeviceResult};
use crate::dtype::DType;
use checked::{blas, drv};
use cudarc::cublas::sys as blas_sys;
use cudarc::driver::{result as cu, sys};
use std::ffi::{c_void, CString};
use std::sync::Mutex;

/// Dynamic shared memory a launch may use without opting in (48 KiB).
const STATIC_SHARED_LIMIT: u32 = 48 * 1024;

/// One CUDA device with its primary context and cuBLAS handle. Work goes to
/// the streams the caller passes (created by `stream_create`).
pub(crate) struct CudaDriver {
    info: DeviceInfo,
    device: sys::CUdevice,
    ctx: sys::CUcontext,
    cublas: Mutex<blas_sys::cublasHandle_t>,
    modules: Mutex<Vec<sys::CUmodule>>,
}

// SAFETY: the context and handles are plain driver handles usable from any
// thread once the context is made current (every method does so); the cuBLAS
// handle and module list sit behind mutexes.
unsafe impl Send for CudaDriver {}
// SAFETY: as above; no method hands out interior references.
unsafe impl Sync for CudaDriver {}

/// Opens every CUDA device, or says why there is none.
pub(crate) fn open_all() -> DeviceResult<Vec<Box<dyn Driver>>> {
    // SAFETY: only probes whether the shared library can be loaded.
    if !unsafe { sys::is_culib_present() } {
        return Err(DeviceError::NoDevice("the CUDA driver library (libcuda) is not installed".into()));
    }
    drv("cuInit", cu::init())?;
    let count = drv("cuDeviceGetCount", cu::device::get_count())?;
    if count <= 0 {
        return Err(DeviceError::NoDevice("the CUDA driver reports no devices".into()));
    }
    (0..count as usize).map(|i| CudaDriver::open(i).map(|d| Box::new(d) as Box<dyn Driver>)).collect()
}

impl CudaDriver {
    /// Above 48 KiB a kernel must opt in to dynamic shared memory.
    fn opt_in_shared(&self, f: FunctionHandle, cfg: &LaunchConfig) -> DeviceResult<()> {
        if cfg.shared_mem_bytes > STATIC_SHARED_LIMIT {
            let attr = sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
            let bytes = i32::try_from(cfg.shared_mem_bytes).unwrap_or(i32::MAX);
            // SAFETY: `f` is a live function of this driver's context.
            drv("cuFuncSetAttribute", unsafe {
                cu::function::set_function_attribute(f.0 as sys::CUfunction, attr, bytes)
            })?;
        }
        Ok(())
    }

    fn open(ordinal: usize) -> DeviceResult<CudaDriver> {
        let device = drv("cuDeviceGet", cu::device::get(ordinal as i32))?;
        // SAFETY: `device` is a valid device handle from cuDeviceGet.
        let ctx = drv("cuDevicePrimaryCtxRetain", unsafe { cu::primary_ctx::retain(device) })?;
        // SAFETY: `ctx` was just retained.
        drv("cuCtxSetCurrent", unsafe { cu::ctx::set_current(ctx) })?;
        let attr = |a: sys::CUdevice_attribute| -> DeviceResult<i32> {
            // SAFETY: valid device and attribute enum.
            drv("cuDeviceGetAttribute", unsafe { cu::device::get_attribute(device, a) })
        };
        use sys::CUdevice_attribute as A;
        let major = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        let info = DeviceInfo {
            vendor: Vendor::Nvidia,
            ordinal,
            name: drv("cuDeviceGetName", cu::device::get_name(device))?,
            arch: Arch::parse(&format!("sm_{major}{minor}"))?,
            // SAFETY: valid device handle.
            total_memory: drv("cuDeviceTotalMem", unsafe { cu::device::total_mem(device) })? as u64,
            warp_size: attr(A::CU_DEVICE_ATTRIBUTE_WARP_SIZE)? as u32,
            multiprocessors: attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32,
            max_threads_per_block: attr(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK)? as u32,
        };
        // SAFETY: probes whether libcublas can be loaded.
        if !unsafe { blas_sys::is_culib_present() } {
            return Err(DeviceError::NoDevice("cuBLAS (libcublas) is not installed".into()));
        }
        let handle = blas("cublasCreate", cudarc::cublas::result::create_handle())?;
        Ok(CudaDriver { info, device, ctx, cublas: Mutex::new(handle), modules: Mutex::new(Vec::new()) })
    }

    /// Makes this device's context current on the calling thread.
    fn bind(&self) -> DeviceResult<()> {
        // SAFETY: `ctx` stays retained for the driver's lifetime.
        drv("cuCtxSetCurrent", unsafe { cu::ctx::set_current(self.ctx) })
    }
}

fn raw(stream: StreamHandle) -> sys::CUstream {
    stream.0 as sys::CUstream
}

impl Drop for CudaDriver {
    fn drop(&mut self) {
        let _ = self.bind();
        if let Ok(handle) = self.cublas.lock() {
            // SAFETY: created in `open`, destroyed once here.
            let _ = unsafe { cudarc::cublas::result::destroy_handle(*handle) };
        }
        if let Ok(modules) = self.modules.lock() {
            for &m in modules.iter() {
                // SAFETY: loaded by this driver, unloaded once here.
                let _ = unsafe { cu::module::unload(m) };
            }
        }
        // SAFETY: balances the retain in `open`.
        let _ = unsafe { cu::primary_ctx::release(self.device) };
    }
}

fn cuda_type(d: DType) -> blas_sys::cudaDataType {
    match d {
        DType::F32 => blas_sys::cudaDataType::CUDA_R_32F,
        DType::F16 => blas_sys::cudaDataType::CUDA_R_16F,
        DType::BF16 => blas_sys::cudaDataType::CUDA_R_16BF,
    }
}

impl Driver for CudaDriver {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn stream_create(&self) -> DeviceResult<StreamHandle> {
        self.bind()?;
        // Non-blocking: no implicit ordering with the legacy default stream.
        let s = drv("cuStreamCreate", cu::stream::create(cu::stream::StreamKind::NonBlocking))?;
        Ok(StreamHandle(s as usize))
    }

    unsafe fn stream_destroy(&self, stream: StreamHandle) {
        if self.bind().is_ok() {
            // SAFETY: caller guarantees the stream came from `stream_create`.
            let _ = unsafe { cu::stream::destroy(raw(stream)) };
        }
    }

    fn stream_synchronize(&self, stream: StreamHandle) -> DeviceResult<()> {
        self.bind()?;
        // SAFETY: the stream is live (owned by the device).
        drv("cuStreamSynchronize", unsafe { cu::stream::synchronize(raw(stream)) })
    }

    fn alloc(&self, bytes: usize) -> DeviceResult<u64> {
        self.bind()?;
        // SAFETY: plain allocation in the bound context.
        unsafe { cu::malloc_sync(bytes) }.map_err(|e| checked::alloc_error(&self.info, bytes, e))
    }

    unsafe fn free(&self, ptr: u64) {
        if self.bind().is_ok() {
            // SAFETY: caller guarantees `ptr` came from `alloc` and is dead.
            let _ = unsafe { cu::free_sync(ptr) };
        }
    }

    unsafe fn copy_to_device(&self, stream: StreamHandle, dst: u64, src: &[u8]) -> DeviceResult<()> {
        self.bind()?;
        // SAFETY: caller guarantees `dst` holds `src.len()` bytes; we wait for
        // the stream before returning, so `src` outlives the copy.
        unsafe {
            drv("cuMemcpyHtoDAsync", cu::memcpy_htod_async(dst, src, raw(stream)))?;
            drv("cuStreamSynchronize", cu::stream::synchronize(raw(stream)))
        }
    }

    unsafe fn copy_to_host(&self, stream: StreamHandle, dst: &mut [u8], src: u64) -> DeviceResult<()> {
        self.bind()?;
        // SAFETY: caller guarantees `src` holds `dst.len()` bytes; queued
        // after earlier work on the stream, and complete when we return.
        unsafe {
            drv("cuMemcpyDtoHAsync", cu::memcpy_dtoh_async(dst, src, raw(stream)))?;
            drv("cuStreamSynchronize", cu::stream::synchronize(raw(stream)))
        }
    }

    unsafe fn copy_device(&self, stream: StreamHandle, dst: u64, src: u64, bytes: usize) -> DeviceResult<()> {
        self.bind()?;
        // SAFETY: caller guarantees both ranges are live device memory.
        drv("cuMemcpyDtoDAsync", unsafe { cu::memcpy_dtod_async(dst, src, bytes, raw(stream)) })
    }

    unsafe fn fill_bytes(&self, stream: StreamHandle, dst: u64, value: u8, bytes: usize) -> DeviceResult<()> {
        self.bind()?;
        // SAFETY: caller guarantees `dst` holds `bytes` bytes.
        drv("cuMemsetD8Async", unsafe { cu::memset_d8_async(dst, value, bytes, raw(stream)) })
    }

    fn compile_and_load(
        &self,
        entry: &str,
        source: &str,
        options: &[String],
    ) -> DeviceResult<(ModuleHandle, FunctionHandle)> {
        let image = nvrtc::compile_cubin(entry, source, options, self.info.arch.target_id())?;
        self.bind()?;
        // SAFETY: `image` is a complete cubin produced for this device's arch.
        let module = drv("cuModuleLoadData", unsafe { cu::module::load_data(image.as_ptr() as *const c_void) })?;
        self.modules.lock().map_err(|_| DeviceError::LockPoisoned { what: "module list" })?.push(module);
        let name = CString::new(entry).map_err(|_| DeviceError::BadEntryName { entry: entry.to_string() })?;
        // SAFETY: `module` is loaded and stays loaded until the driver drops.
        let f = drv("cuModuleGetFunction", unsafe { cu::module::get_function(module, name) })?;
        Ok((ModuleHandle(module as usize), FunctionHandle(f as usize)))
    }

    fn module_global(&self, module: ModuleHandle, name: &str) -> DeviceResult<(u64, usize)> {
        self.bind()?;
        let c_name = CString::new(name).map_err(|_| DeviceError::BadEntryName { entry: name.to_string() })?;
        // SAFETY: `module` came from `compile_and_load` and stays loaded
        // until the driver drops.
        let (ptr, bytes) =
            drv("cuModuleGetGlobal", unsafe { cu::module::get_global(module.0 as sys::CUmodule, c_name) })?;
        Ok((ptr, bytes))
    }

    unsafe fn launch(
        &self,
        stream: StreamHandle,
        f: FunctionHandle,
        cfg: &LaunchConfig,
        params: &mut [*mut c_void],
    ) -> DeviceResult<()> {
        self.bind()?;
        self.opt_in_shared(f, cfg)?;
        // SAFETY: the handle came from `compile_and_load`; caller guarantees
        // the parameters match the kernel signature.
        let r = unsafe {
            cu::launch_kernel(f.0 as sys::CUfunction, cfg.grid, cfg.block, cfg.shared_mem_bytes, raw(stream), params)
        };
        drv("cuLaunchKernel", r)
    }

    unsafe fn launch_overlapping(
        &self,
        stream: StreamHandle,
        f: FunctionHandle,
        cfg: &LaunchConfig,
        params: &mut [*mut c_void],
    ) -> DeviceResult<()> {
        if self.info.arch.sm().is_none_or(|sm| sm < 90) {
            // SAFETY: forwarded from this function's contract.
            return unsafe { self.launch(stream, f, cfg, params) };
        }
        self.bind()?;
        self.opt_in_shared(f, cfg)?;
        // SAFETY: an all-zero launch attribute is a valid C value (the
        // union is plain data); id and value are set below.
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let config = sys::CUlaunchConfig {
            gridDimX: cfg.grid.0,
            gridDimY: cfg.grid.1,
            gridDimZ: cfg.grid.2,
            blockDimX: cfg.block.0,
            blockDimY: cfg.block.1,
            blockDimZ: cfg.block.2,
            sharedMemBytes: cfg.shared_mem_bytes,
            hStream: raw(stream),
            attrs: &mut attr,
            numAttrs: 1,
        };
        // SAFETY: `config` and `attr` outlive the call; the handle came from
        // `compile_and_load`; the caller guarantees the parameters match the
        // kernel and that it waits for the previous grid before touching memory.
        let r = unsafe {
            sys::cuLaunchKernelEx(&config, f.0 as sys::CUfunction, params.as_mut_ptr(), std::ptr::null_mut())
        };
        drv("cuLaunchKernelEx", r.result())
    }

    unsafe fn gemm(&self, stream: StreamHandle, g: &GemmDesc) -> DeviceResult<()> {
        self.bind()?;
        let handle = self.cublas.lock().map_err(|_| DeviceError::LockPoisoned { what: "cuBLAS handle" })?;
        let op = |t: bool| {
            if t {
                blas_sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                blas_sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let (alpha, beta) = (g.alpha, g.beta);
        // SAFETY: caller guarantees the matrices lie in live allocations; the
        // scalars are host f32 matching CUBLAS_COMPUTE_32F; the handle is ours.
        let r = unsafe {
            cudarc::cublas::result::set_stream(*handle, raw(stream) as blas_sys::cudaStream_t).and_then(|_| {
                cudarc::cublas::result::gemm_strided_batched_ex(
                    *handle,
                    op(g.trans_a),
                    op(g.trans_b),
                    g.m,
                    g.n,
                    g.k,
                    &alpha as *const f32 as *const c_void,
                    g.a as *const c_void,
                    cuda_type(g.ab_type),
                    g.lda,
                    g.stride_a,
                    g.b as *const c_void,
                    cuda_type(g.ab_type),
                    g.ldb,
                    g.stride_b,
                    &beta as *const f32 as *const c_void,
                    g.c as *mut c_void,
                    cuda_type(g.c_type),
                    g.ldc,
                    g.stride_c,
                    g.batch,
                    blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            })
        };
        blas("cublasGemmStridedBatchedEx", r)
    }

    fn event_create(&self) -> DeviceResult<usize> {
        self.bind()?;
        let e = drv("cuEventCreate", cu::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT))?;
        Ok(e as usize)
    }

    unsafe fn event_destroy(&self, event: usize) {
        if self.bind().is_ok() {
            // SAFETY: caller guarantees the event came from `event_create`.
            let _ = unsafe { cu::event::destroy(event as sys::CUevent) };
        }
    }

    fn event_record(&self, stream: StreamHandle, event: usize) -> DeviceResult<()> {
        self.bind()?;
        // SAFETY: events are created by `event_create` and live in `Event`.
        drv("cuEventRecord", unsafe { cu::event::record(event as sys::CUevent, raw(stream)) })
    }

    fn event_elapsed_ms(&self, start: usize, end: usize) -> DeviceResult<f32> {
        self.bind()?;
        // SAFETY: both events are live; we wait for `end` before reading.
        unsafe {
            drv("cuEventSynchronize", cu::event::synchronize(end as sys::CUevent))?;
            drv("cuEventElapsedTime", cu::event::elapsed(start as sys::CUevent, end as sys::CUevent))
        }
    }

    fn synchronize(&self) -> DeviceResult<()> {
        self.bind()?;
        drv("cuCtxSynchronize", cu::ctx::synchronize())
    }
}
