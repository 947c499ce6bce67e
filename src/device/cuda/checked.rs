//! Status codes to typed errors: the "checked results" layer of the driver.

use crate::device::driver::DeviceInfo;
use crate::device::error::{DeviceError, DeviceResult};
use cudarc::cublas::result::CublasError;
use cudarc::driver::result::DriverError;
use cudarc::driver::sys::CUresult;

fn describe(e: &DriverError) -> String {
    match e.error_string() {
        Ok(s) => format!("{:?}: {}", e.0, s.to_string_lossy()),
        Err(_) => format!("{:?}", e.0),
    }
}

/// Maps a driver-API status to `DeviceError::Driver` naming the call.
pub(super) fn drv<T>(call: &'static str, r: Result<T, DriverError>) -> DeviceResult<T> {
    r.map_err(|e| DeviceError::Driver { call, detail: describe(&e) })
}

pub(super) fn blas<T>(call: &'static str, r: Result<T, CublasError>) -> DeviceResult<T> {
    r.map_err(|e| DeviceError::Blas { call, detail: format!("{:?}", e.0) })
}

pub(super) fn alloc_error(info: &DeviceInfo, bytes: usize, e: DriverError) -> DeviceError {
    if e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY {
        DeviceError::OutOfMemory { device: format!("cuda:{}", info.ordinal), requested: bytes, detail: describe(&e) }
    } else {
        DeviceError::Driver { call: "cuMemAlloc", detail: describe(&e) }
    }
}
