//! AMD driver (cargo feature `rocm`): the HIP runtime through
//! `hip-runtime-sys`, hiprtc through the few declarations in `hiprtc.rs`, and
//! hipBLAS through `hipblas-sys`.
//!
//! Layers, as in the CUDA driver: raw `extern "C"` calls (the `-sys` crates,
//! `hiprtc.rs`) → `checked.rs` status-to-`DeviceError` mapping → this file's
//! `HipDriver`, on which `gpu.rs` builds the safe RAII types.
//!
//! HIP keeps the current device per host thread, so every method first calls
//! `hipSetDevice` for its ordinal. Work goes to the streams the caller passes
//! (created by `stream_create`), in submission order per stream.
//!
//! Nothing here has run on an AMD GPU (none is available to the project):
//! this file is type-checked in CI (`cargo check --features rocm`) and every
//! kernel it would compile is compiled for gfx targets by `hipcc`
//! (`rocmforge kernels check`). See docs/amd.md.

mod checked;
pub(crate) mod hiprtc;

use super::arch::Arch;
use super::driver::{DeviceInfo, Driver, FunctionHandle, GemmDesc, LaunchConfig, ModuleHandle, StreamHandle, Vendor};
use super::error::{DeviceError, DeviceResult};
use crate::dtype::DType;
use checked::{blas, hip};
use hip_runtime_sys as sys;
use hipblas_sys as blas_sys;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::Mutex;

/// One HIP device with its hipBLAS handle and the modules loaded on it.
pub(crate) struct HipDriver {
    info: DeviceInfo,
    ordinal: c_int,
    hipblas: Mutex<blas_sys::hipblasHandle_t>,
    modules: Mutex<Vec<sys::hipModule_t>>,
    /// Entry name of every loaded function, for launch-failure messages.
    entries: Mutex<HashMap<usize, String>>,
}

// SAFETY: the handles are plain runtime handles usable from any host thread
// once the device is made current (every method does so); the hipBLAS handle,
// the module list and the name table sit behind mutexes.
unsafe impl Send for HipDriver {}
// SAFETY: as above; no method hands out interior references.
unsafe impl Sync for HipDriver {}

/// `hipDeviceProp_t` as laid out by hip-runtime-sys (the ROCm 5 layout that
/// the `hipGetDeviceProperties` symbol keeps filling on ROCm 6 too), with
/// slack after it so a runtime writing a larger struct cannot overrun us.
#[repr(C)]
struct PropsBuffer {
    props: sys::hipDeviceProp_t,
    _slack: [u8; 4096],
}

/// Opens every HIP device, or says why there is none.
pub(crate) fn open_all() -> DeviceResult<Vec<Box<dyn Driver>>> {
    // SAFETY: hipInit takes flags (must be 0) and has no other preconditions.
    checked::discovery("hipInit", unsafe { sys::hipInit(0) })?;
    let mut count: c_int = 0;
    // SAFETY: `count` is a valid out-pointer.
    checked::discovery("hipGetDeviceCount", unsafe { sys::hipGetDeviceCount(&mut count) })?;
    if count <= 0 {
        return Err(DeviceError::NoDevice("the HIP runtime reports no devices".into()));
    }
    (0..count).map(|i| HipDriver::open(i).map(|d| Box::new(d) as Box<dyn Driver>)).collect()
}

/// A fixed-size C char array (NUL-terminated or full) as a `String`.
fn c_array_text(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).trim().to_string()
}

fn positive(what: &'static str, v: c_int) -> DeviceResult<u32> {
    u32::try_from(v).ok().filter(|&v| v > 0).ok_or(DeviceError::Property { property: what, value: v as i64 })
}

impl HipDriver {
    fn open(ordinal: c_int) -> DeviceResult<HipDriver> {
        // SAFETY: `ordinal` is below the count hipGetDeviceCount returned.
        hip("hipSetDevice", unsafe { sys::hipSetDevice(ordinal) })?;
        let mut buf = std::mem::MaybeUninit::<PropsBuffer>::zeroed();
        // SAFETY: the buffer is zero-initialised (a valid bit pattern for the
        // plain-data struct: integers, arrays, raw pointers) and larger than
        // the struct the runtime fills.
        hip("hipGetDeviceProperties", unsafe {
            sys::hipGetDeviceProperties(std::ptr::addr_of_mut!((*buf.as_mut_ptr()).props), ordinal)
        })?;
        // SAFETY: zeroed above and filled by the runtime; every field of the
        // struct is valid for any bit pattern.
        let props = unsafe { buf.assume_init() }.props;

        let target_id = c_array_text(&props.gcnArchName);
        // A name that is not a gfx target is a typed UnknownTarget error.
        let arch = Arch::parse(&target_id)?;
        let info = DeviceInfo {
            vendor: Vendor::Amd,
            ordinal: ordinal as usize,
            name: c_array_text(&props.name),
            arch,
            total_memory: props.totalGlobalMem as u64,
            // Read from the device: 64 on CDNA/GCN, 32 on RDNA.
            warp_size: positive("warpSize", props.warpSize)?,
            multiprocessors: positive("multiProcessorCount", props.multiProcessorCount)?,
            max_threads_per_block: positive("maxThreadsPerBlock", props.maxThreadsPerBlock)?,
        };

        let mut handle: blas_sys::hipblasHandle_t = std::ptr::null_mut();
        // SAFETY: `handle` is a valid out-pointer; the device is current.
        blas("hipblasCreate", unsafe { blas_sys::hipblasCreate(&mut handle) })?;
        Ok(HipDriver {
            info,
            ordinal,
            hipblas: Mutex::new(handle),
            modules: Mutex::new(Vec::new()),
            entries: Mutex::new(HashMap::new()),
        })
    }

    fn label(&self) -> String {
        format!("{}:{}", Vendor::Amd.prefix(), self.ordinal)
    }

    /// Makes this device current on the calling thread (HIP's current device
    /// is per thread).
    fn bind(&self) -> DeviceResult<()> {
        // SAFETY: `ordinal` was valid at open and devices do not disappear.
        hip("hipSetDevice", unsafe { sys::hipSetDevice(self.ordinal) })
    }

    fn entry_name(&self, f: FunctionHandle) -> String {
        self.entries.lock().ok().and_then(|m| m.get(&f.0).cloned()).unwrap_or_else(|| format!("function {:#x}", f.0))
    }
}

impl Drop for HipDriver {
    fn drop(&mut self) {
        let _ = self.bind();
        if let Ok(handle) = self.hipblas.lock() {
            // SAFETY: created in `open`, destroyed once here.
            let _ = unsafe { blas_sys::hipblasDestroy(*handle) };
        }
        if let Ok(modules) = self.modules.lock() {
            for &m in modules.iter() {
                // SAFETY: loaded by this driver, unloaded once here.
                let _ = unsafe { sys::hipModuleUnload(m) };
            }
        }
    }
}

fn raw(stream: StreamHandle) -> sys::hipStream_t {
    stream.0 as sys::hipStream_t
}

fn hipblas_type(d: DType) -> blas_sys::hipblasDatatype_t {
    match d {
        DType::F32 => blas_sys::hipblasDatatype_t::HIPBLAS_R_32F,
        DType::F16 => blas_sys::hipblasDatatype_t::HIPBLAS_R_16F,
        DType::BF16 => blas_sys::hipblasDatatype_t::HIPBLAS_R_16B,
    }
}

fn hipblas_op(transpose: bool) -> blas_sys::hipblasOperation_t {
    if transpose {
        blas_sys::hipblasOperation_t::HIPBLAS_OP_T
    } else {
        blas_sys::hipblasOperation_t::HIPBLAS_OP_N
    }
}

impl Driver for HipDriver {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn stream_create(&self) -> DeviceResult<StreamHandle> {
        self.bind()?;
        let mut stream: sys::hipStream_t = std::ptr::null_mut();
        // SAFETY: `stream` is a valid out-pointer. Non-blocking: no implicit
        // ordering with the null stream.
        hip("hipStreamCreateWithFlags", unsafe {
            sys::hipStreamCreateWithFlags(&mut stream, sys::hipStreamNonBlocking)
        })?;
        Ok(StreamHandle(stream as usize))
    }

    unsafe fn stream_destroy(&self, stream: StreamHandle) {
        if self.bind().is_ok() {
            // SAFETY: caller guarantees the stream came from `stream_create`.
            let _ = unsafe { sys::hipStreamDestroy(raw(stream)) };
        }
    }

    fn stream_synchronize(&self, stream: StreamHandle) -> DeviceResult<()> {
        self.bind()?;
        // SAFETY: the stream is live (owned by the device).
        hip("hipStreamSynchronize", unsafe { sys::hipStreamSynchronize(raw(stream)) })
    }

    fn alloc(&self, bytes: usize) -> DeviceResult<u64> {
        self.bind()?;
        let mut ptr: *mut c_void = std::ptr::null_mut();
        // SAFETY: `ptr` is a valid out-pointer; plain allocation on the
        // current device.
        checked::alloc(&self.label(), bytes, unsafe { sys::hipMalloc(&mut ptr, bytes) })?;
        Ok(ptr as u64)
    }

    unsafe fn free(&self, ptr: u64) {
        if self.bind().is_ok() {
            // SAFETY: caller guarantees `ptr` came from `alloc` and is dead.
            let _ = unsafe { sys::hipFree(ptr as *mut c_void) };
        }
    }

    unsafe fn copy_to_device(&self, stream: StreamHandle, dst: u64, src: &[u8]) -> DeviceResult<()> {
        self.bind()?;
        // SAFETY: caller guarantees `dst` holds `src.len()` bytes; we wait for
        // the stream before returning, so `src` outlives the copy.
        unsafe {
            hip(
                "hipMemcpyAsync(HtoD)",
                sys::hipMemcpyAsync(
                    dst as *mut c_void,
                    src.as_ptr() as *const c_void,
                    src.len(),
                    sys::hipMemcpyKind::hipMemcpyHostToDevice,
                    raw(stream),
                ),
            )?;
            hip("hipStreamSynchronize", sys::hipStreamSynchronize(raw(stream)))
        }
    }

    unsafe fn copy_to_host(&self, stream: StreamHandle, dst: &mut [u8], src: u64) -> DeviceResult<()> {
        self.bind()?;
        // SAFETY: caller guarantees `src` holds `dst.len()` bytes; queued
        // after earlier work on the stream, and complete when we return.
        unsafe {
            hip(
                "hipMemcpyAsync(DtoH)",
                sys::hipMemcpyAsync(
                    dst.as_mut_ptr() as *mut c_void,
                    src as *const c_void,
                    dst.len(),
                    sys::hipMemcpyKind::hipMemcpyDeviceToHost,
                    raw(stream),
                ),
            )?;
            hip("hipStreamSynchronize", sys::hipStreamSynchronize(raw(stream)))
        }
    }

    unsafe fn copy_device(&self, stream: StreamHandle, dst: u64, src: u64, bytes: usize) -> DeviceResult<()> {
        self.bind()?;
        // SAFETY: caller guarantees both ranges are live device memory.
        let r = unsafe {
            sys::hipMemcpyAsync(
                dst as *mut c_void,
                src as *const c_void,
                bytes,
                sys::hipMemcpyKind::hipMemcpyDeviceToDevice,
                raw(stream),
            )
        };
        hip("hipMemcpyAsync(DtoD)", r)
    }

    unsafe fn fill_bytes(&self, stream: StreamHandle, dst: u64, value: u8, bytes: usize) -> DeviceResult<()> {
        self.bind()?;
        // SAFETY: caller guarantees `dst` holds `bytes` bytes.
        let r = unsafe { sys::hipMemsetAsync(dst as *mut c_void, c_int::from(value), bytes, raw(stream)) };
        hip("hipMemsetAsync", r)
    }

    fn compile_and_load(
        &self,
        entry: &str,
        source: &str,
        options: &[String],
    ) -> DeviceResult<(ModuleHandle, FunctionHandle)> {
        // The full target ID as the device reports it ("gfx90a:sramecc+:xnack-"),
        // so hiprtc's feature flags match the device.
        let image = hiprtc::compile_code_object(entry, source, options, self.info.arch.target_id())?;
        self.bind()?;
        let mut module: sys::hipModule_t = std::ptr::null_mut();
        // SAFETY: `image` is a complete code object compiled for this
        // device's target ID; `module` is a valid out-pointer.
        hip("hipModuleLoadData", unsafe { sys::hipModuleLoadData(&mut module, image.as_ptr() as *const c_void) })?;
        self.modules.lock().map_err(|_| DeviceError::LockPoisoned { what: "module list" })?.push(module);
        let name = CString::new(entry).map_err(|_| DeviceError::BadEntryName { entry: entry.to_string() })?;
        let mut function: sys::hipFunction_t = std::ptr::null_mut();
        // SAFETY: `module` is loaded and stays loaded until the driver drops;
        // `name` is NUL-terminated.
        hip("hipModuleGetFunction", unsafe { sys::hipModuleGetFunction(&mut function, module, name.as_ptr()) })?;
        let handle = FunctionHandle(function as usize);
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(handle.0, entry.to_string());
        }
        Ok((ModuleHandle(module as usize), handle))
    }

    fn module_global(&self, module: ModuleHandle, name: &str) -> DeviceResult<(u64, usize)> {
        self.bind()?;
        let c_name = CString::new(name).map_err(|_| DeviceError::BadEntryName { entry: name.to_string() })?;
        let mut ptr: sys::hipDeviceptr_t = std::ptr::null_mut();
        let mut bytes: usize = 0;
        // SAFETY: `module` came from `compile_and_load` and stays loaded;
        // the out-pointers are valid and `c_name` is NUL-terminated.
        hip("hipModuleGetGlobal", unsafe {
            sys::hipModuleGetGlobal(&mut ptr, &mut bytes, module.0 as sys::hipModule_t, c_name.as_ptr())
        })?;
        Ok((ptr as u64, bytes))
    }

    unsafe fn launch(
        &self,
        stream: StreamHandle,
        f: FunctionHandle,
        cfg: &LaunchConfig,
        params: &mut [*mut c_void],
    ) -> DeviceResult<()> {
        self.bind()?;
        // SAFETY: the handle came from `compile_and_load` on this driver;
        // caller guarantees `params` match the kernel signature. No `extra`
        // argument block is passed.
        let r = unsafe {
            sys::hipModuleLaunchKernel(
                f.0 as sys::hipFunction_t,
                cfg.grid.0,
                cfg.grid.1,
                cfg.grid.2,
                cfg.block.0,
                cfg.block.1,
                cfg.block.2,
                cfg.shared_mem_bytes,
                raw(stream),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        checked::launch(&self.entry_name(f), r)
    }

    unsafe fn gemm(&self, stream: StreamHandle, g: &GemmDesc) -> DeviceResult<()> {
        self.bind()?;
        let handle = self.hipblas.lock().map_err(|_| DeviceError::LockPoisoned { what: "hipBLAS handle" })?;
        // SAFETY: the handle is ours and the stream is live.
        blas("hipblasSetStream", unsafe { blas_sys::hipblasSetStream(*handle, raw(stream) as _) })?;
        let (alpha, beta) = (g.alpha, g.beta);
        // SAFETY: caller guarantees the matrices lie in live allocations; the
        // scalars are host f32 matching the f32 compute type (hipBLAS's
        // default host pointer mode); the handle is ours, bound to `stream`.
        let r = unsafe {
            blas_sys::hipblasGemmStridedBatchedEx(
                *handle,
                hipblas_op(g.trans_a),
                hipblas_op(g.trans_b),
                g.m,
                g.n,
                g.k,
                &alpha as *const f32 as *const c_void,
                g.a as *const c_void,
                hipblas_type(g.ab_type),
                g.lda,
                g.stride_a,
                g.b as *const c_void,
                hipblas_type(g.ab_type),
                g.ldb,
                g.stride_b,
                &beta as *const f32 as *const c_void,
                g.c as *mut c_void,
                hipblas_type(g.c_type),
                g.ldc,
                g.stride_c,
                g.batch,
                blas_sys::hipblasDatatype_t::HIPBLAS_R_32F,
                blas_sys::hipblasGemmAlgo_t::HIPBLAS_GEMM_DEFAULT,
            )
        };
        blas("hipblasGemmStridedBatchedEx", r)
    }

    fn event_create(&self) -> DeviceResult<usize> {
        self.bind()?;
        let mut event: sys::hipEvent_t = std::ptr::null_mut();
        // SAFETY: `event` is a valid out-pointer; default flags keep timing.
        hip("hipEventCreate", unsafe { sys::hipEventCreate(&mut event) })?;
        Ok(event as usize)
    }

    unsafe fn event_destroy(&self, event: usize) {
        if self.bind().is_ok() {
            // SAFETY: caller guarantees the event came from `event_create`.
            let _ = unsafe { sys::hipEventDestroy(event as sys::hipEvent_t) };
        }
    }

    fn event_record(&self, stream: StreamHandle, event: usize) -> DeviceResult<()> {
        self.bind()?;
        // SAFETY: events are created by `event_create` and live in `Event`.
        hip("hipEventRecord", unsafe { sys::hipEventRecord(event as sys::hipEvent_t, raw(stream)) })
    }

    fn event_elapsed_ms(&self, start: usize, end: usize) -> DeviceResult<f32> {
        self.bind()?;
        let mut ms = 0f32;
        // SAFETY: both events are live (owned by `Event`); we wait for `end`
        // before reading; `ms` is a valid out-pointer.
        unsafe {
            hip("hipEventSynchronize", sys::hipEventSynchronize(end as sys::hipEvent_t))?;
            hip(
                "hipEventElapsedTime",
                sys::hipEventElapsedTime(&mut ms, start as sys::hipEvent_t, end as sys::hipEvent_t),
            )?;
        }
        Ok(ms)
    }

    fn synchronize(&self) -> DeviceResult<()> {
        self.bind()?;
        // SAFETY: no preconditions beyond an initialised runtime.
        hip("hipDeviceSynchronize", unsafe { sys::hipDeviceSynchronize() })
    }
}
