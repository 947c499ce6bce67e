//! NVRTC: source → cubin for one `sm_XY` target. Used at run time by the
//! driver and offline by `rocmforge kernels check` (no GPU needed).

use crate::device::error::{DeviceError, DeviceResult};
use crate::device::headers::CHeaders;
use cudarc::nvrtc::{result as rtc, sys};
use std::ffi::CString;

/// Whether the NVRTC library can be loaded at all.
pub(crate) fn available() -> bool {
    // SAFETY: only probes whether the shared library loads.
    unsafe { sys::is_culib_present() }
}

/// Compiles `source` for `arch` (e.g. "sm_90") and returns the cubin.
/// A compile error carries NVRTC's log and the options used.
pub(crate) fn compile_cubin(entry: &str, source: &str, options: &[String], arch: &str) -> DeviceResult<Vec<u8>> {
    if !available() {
        return Err(DeviceError::NoNvrtc {
            why: "libnvrtc could not be loaded (install the CUDA toolkit or the nvidia-cuda-nvrtc wheel and put its \
                  lib directory on LD_LIBRARY_PATH)"
                .into(),
        });
    }
    let mut opts: Vec<String> = vec![format!("--gpu-architecture={arch}"), "-std=c++17".into()];
    opts.extend(options.iter().cloned());
    let fail = |log: String| DeviceError::Compile { kernel: entry.to_string(), options: opts.clone(), log };
    let src = CString::new(source).map_err(|_| fail("source contains a NUL byte".into()))?;
    let name = CString::new(format!("{entry}.cu")).map_err(|_| fail("bad kernel name".into()))?;
    let headers = CHeaders::all();
    let (texts, names) = (headers.text_ptrs(), headers.name_ptrs());
    let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: `src`, `name` and the header arrays (`headers.count()` entries
    // each, owned by `headers`) are NUL-terminated and outlive the call.
    unsafe {
        sys::nvrtcCreateProgram(&mut prog, src.as_ptr(), name.as_ptr(), headers.count(), texts.as_ptr(), names.as_ptr())
    }
    .result()
    .map_err(|e| fail(format!("nvrtcCreateProgram: {:?}", e.0)))?;
    // SAFETY: `prog` is live until the destroy below; `src`/`name` outlive it.
    let result = unsafe {
        let compiled = rtc::compile_program(prog, &opts);
        let log = rtc::get_program_log(prog)
            .map(|l| {
                let bytes: Vec<u8> = l.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            })
            .unwrap_or_default();
        match compiled {
            Err(e) => Err(fail(format!("{:?}\n{log}", e.0))),
            Ok(()) => {
                let mut size = 0usize;
                let cubin = sys::nvrtcGetCUBINSize(prog, &mut size).result().and_then(|_| {
                    let mut buf = vec![0u8; size];
                    sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut _).result().map(|_| buf)
                });
                cubin.map_err(|e| fail(format!("nvrtcGetCUBIN: {:?}", e.0)))
            }
        }
    };
    // SAFETY: created above, destroyed once.
    let _ = unsafe { rtc::destroy_program(prog) };
    result
}
