//! Status codes to typed errors: the "checked results" layer of the HIP
//! driver. Every raw `hipError_t`, `hipblasStatus_t` and `hiprtcResult`
//! passes through here, so the driver above only sees `DeviceResult`.

use crate::device::error::{DeviceError, DeviceResult};
use hip_runtime_sys as sys;
use hipblas_sys as blas_sys;
use std::ffi::{c_char, CStr};

/// Copies a C string owned by the runtime (static storage) into a `String`.
fn c_text(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null pointers returned by hipGetErrorString /
    // hipblasStatusToString / hiprtcGetErrorString point to NUL-terminated
    // strings with static storage duration.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// "hipErrorOutOfMemory (2): out of memory".
pub(super) fn describe(status: sys::hipError_t) -> String {
    // SAFETY: hipGetErrorString accepts any status value and returns a
    // pointer to a static string (or null).
    let text = c_text(unsafe { sys::hipGetErrorString(status) });
    match text {
        Some(t) => format!("{status:?} ({}): {t}", status as u32),
        None => format!("{status:?} ({})", status as u32),
    }
}

/// Maps a runtime status to `DeviceError::Driver` naming the call.
pub(super) fn hip(call: &'static str, status: sys::hipError_t) -> DeviceResult<()> {
    if status == sys::hipError_t::hipSuccess {
        Ok(())
    } else {
        Err(DeviceError::Driver { call, detail: describe(status) })
    }
}

/// `hipMalloc` failures: out of memory is its own error kind.
pub(super) fn alloc(device: &str, bytes: usize, status: sys::hipError_t) -> DeviceResult<()> {
    match status {
        sys::hipError_t::hipSuccess => Ok(()),
        sys::hipError_t::hipErrorOutOfMemory => {
            Err(DeviceError::OutOfMemory { device: device.to_string(), requested: bytes, detail: describe(status) })
        }
        _ => Err(DeviceError::Driver { call: "hipMalloc", detail: describe(status) }),
    }
}

/// Device discovery: "no device" and "no driver" become `NoDevice`.
pub(super) fn discovery(call: &'static str, status: sys::hipError_t) -> DeviceResult<()> {
    match status {
        sys::hipError_t::hipSuccess => Ok(()),
        sys::hipError_t::hipErrorNoDevice
        | sys::hipError_t::hipErrorInsufficientDriver
        | sys::hipError_t::hipErrorNotInitialized => {
            Err(DeviceError::NoDevice(format!("{call}: {}", describe(status))))
        }
        _ => Err(DeviceError::Driver { call, detail: describe(status) }),
    }
}

/// Kernel launches: failures are `DeviceError::Launch` naming the kernel.
pub(super) fn launch(kernel: &str, status: sys::hipError_t) -> DeviceResult<()> {
    if status == sys::hipError_t::hipSuccess {
        Ok(())
    } else {
        Err(DeviceError::Launch {
            kernel: kernel.to_string(),
            detail: format!("hipModuleLaunchKernel: {}", describe(status)),
        })
    }
}

/// Maps a hipBLAS status to `DeviceError::Blas` naming the call.
pub(super) fn blas(call: &'static str, status: blas_sys::hipblasStatus_t) -> DeviceResult<()> {
    if status == blas_sys::hipblasStatus_t::HIPBLAS_STATUS_SUCCESS {
        return Ok(());
    }
    // SAFETY: hipblasStatusToString accepts any status and returns a pointer
    // to a static string (or null).
    let text = c_text(unsafe { blas_sys::hipblasStatusToString(status) });
    let detail = match text {
        Some(t) => format!("{status:?} ({}): {t}", status as u32),
        None => format!("{status:?} ({})", status as u32),
    };
    Err(DeviceError::Blas { call, detail })
}

/// Text of a hiprtc status ("HIPRTC_ERROR_COMPILATION (6): ...").
pub(super) fn rtc_describe(status: super::hiprtc::hiprtcResult) -> String {
    let name = super::hiprtc::result_name(status);
    // SAFETY: hiprtcGetErrorString accepts any status value and returns a
    // pointer to a static string (or null).
    match c_text(unsafe { super::hiprtc::hiprtcGetErrorString(status) }) {
        Some(t) => format!("{name} ({status}): {t}"),
        None => format!("{name} ({status})"),
    }
}
