//! hiprtc: source → AMD code object for one `gfx*` target, at run time.
//!
//! hip-runtime-sys has no hiprtc bindings, so the few functions needed are
//! declared here (signatures from `hip/hiprtc.h`, ROCm 5.3+ where hiprtc is
//! its own library, `libhiprtc.so`). Layers as in the rest of the driver:
//! these raw declarations → `checked::rtc_describe` → `compile_code_object`.

use super::checked;
use crate::device::error::{DeviceError, DeviceResult};
use crate::device::headers::CHeaders;
use std::ffi::{c_char, c_int, c_void, CString};

/// `hiprtcResult` is a C enum; it is kept as a plain `c_int` so that a value
/// this file does not know can never be undefined behaviour.
#[allow(non_camel_case_types)]
pub(super) type hiprtcResult = c_int;
/// Opaque `hiprtcProgram` (a pointer to `_hiprtcProgram`).
#[allow(non_camel_case_types)]
pub(super) type hiprtcProgram = *mut c_void;

pub(super) const HIPRTC_SUCCESS: hiprtcResult = 0;

#[link(name = "hiprtc")]
extern "C" {
    pub(super) fn hiprtcGetErrorString(result: hiprtcResult) -> *const c_char;
    fn hiprtcCreateProgram(
        prog: *mut hiprtcProgram,
        src: *const c_char,
        name: *const c_char,
        num_headers: c_int,
        headers: *const *const c_char,
        include_names: *const *const c_char,
    ) -> hiprtcResult;
    fn hiprtcCompileProgram(prog: hiprtcProgram, num_options: c_int, options: *const *const c_char) -> hiprtcResult;
    fn hiprtcGetProgramLogSize(prog: hiprtcProgram, log_size: *mut usize) -> hiprtcResult;
    fn hiprtcGetProgramLog(prog: hiprtcProgram, log: *mut c_char) -> hiprtcResult;
    fn hiprtcGetCodeSize(prog: hiprtcProgram, code_size: *mut usize) -> hiprtcResult;
    fn hiprtcGetCode(prog: hiprtcProgram, code: *mut c_char) -> hiprtcResult;
    fn hiprtcDestroyProgram(prog: *mut hiprtcProgram) -> hiprtcResult;
}

/// Symbolic name of a `hiprtcResult`, for messages.
pub(super) fn result_name(r: hiprtcResult) -> &'static str {
    match r {
        0 => "HIPRTC_SUCCESS",
        1 => "HIPRTC_ERROR_OUT_OF_MEMORY",
        2 => "HIPRTC_ERROR_PROGRAM_CREATION_FAILURE",
        3 => "HIPRTC_ERROR_INVALID_INPUT",
        4 => "HIPRTC_ERROR_INVALID_PROGRAM",
        5 => "HIPRTC_ERROR_INVALID_OPTION",
        6 => "HIPRTC_ERROR_COMPILATION",
        7 => "HIPRTC_ERROR_BUILTIN_OPERATION_FAILURE",
        8 => "HIPRTC_ERROR_NO_NAME_EXPRESSIONS_AFTER_COMPILATION",
        9 => "HIPRTC_ERROR_NO_LOWERED_NAMES_BEFORE_COMPILATION",
        10 => "HIPRTC_ERROR_NAME_EXPRESSION_NOT_VALID",
        11 => "HIPRTC_ERROR_INTERNAL_ERROR",
        100 => "HIPRTC_ERROR_LINKING",
        _ => "HIPRTC_ERROR_UNKNOWN",
    }
}

/// Owns a hiprtc program; destroys it on every exit path.
struct Program(hiprtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: created by hiprtcCreateProgram and destroyed once here.
            let _ = unsafe { hiprtcDestroyProgram(&mut self.0) };
        }
    }
}

impl Program {
    /// The compiler log (empty if there is none or it cannot be read).
    fn log(&self) -> String {
        let mut size = 0usize;
        // SAFETY: `self.0` is a live program; `size` is a valid out-pointer.
        if unsafe { hiprtcGetProgramLogSize(self.0, &mut size) } != HIPRTC_SUCCESS || size == 0 {
            return String::new();
        }
        let mut buf = vec![0u8; size];
        // SAFETY: `buf` holds exactly the `size` bytes hiprtc reported.
        if unsafe { hiprtcGetProgramLog(self.0, buf.as_mut_ptr() as *mut c_char) } != HIPRTC_SUCCESS {
            return String::new();
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    }

    /// The compiled code object.
    fn code(&self) -> Result<Vec<u8>, hiprtcResult> {
        let mut size = 0usize;
        // SAFETY: `self.0` is a live, compiled program; `size` is an out-pointer.
        let r = unsafe { hiprtcGetCodeSize(self.0, &mut size) };
        if r != HIPRTC_SUCCESS {
            return Err(r);
        }
        let mut code = vec![0u8; size];
        // SAFETY: `code` holds exactly the `size` bytes hiprtc reported.
        let r = unsafe { hiprtcGetCode(self.0, code.as_mut_ptr() as *mut c_char) };
        if r != HIPRTC_SUCCESS {
            return Err(r);
        }
        Ok(code)
    }
}

/// The options hiprtc gets for `target_id` (the device's full gcnArchName,
/// e.g. "gfx90a:sramecc+:xnack-", so feature flags match the device).
pub(super) fn compile_options(target_id: &str, options: &[String]) -> Vec<String> {
    let mut opts: Vec<String> = vec![format!("--offload-arch={target_id}"), "-O3".into(), "-std=c++17".into()];
    opts.extend(options.iter().cloned());
    opts
}

/// Compiles `source` for `target_id` and returns the code object for
/// `hipModuleLoadData`. A compile error carries hiprtc's log and the options.
pub(super) fn compile_code_object(
    entry: &str,
    source: &str,
    options: &[String],
    target_id: &str,
) -> DeviceResult<Vec<u8>> {
    let opts = compile_options(target_id, options);
    let fail = |log: String| DeviceError::Compile { kernel: entry.to_string(), options: opts.clone(), log };
    let src = CString::new(source).map_err(|_| fail("source contains a NUL byte".into()))?;
    let name = CString::new(format!("{entry}.hip")).map_err(|_| fail("bad kernel name".into()))?;
    let c_opts: Vec<CString> = opts
        .iter()
        .map(|o| CString::new(o.as_str()))
        .collect::<Result<_, _>>()
        .map_err(|_| fail("an option contains a NUL byte".into()))?;
    let c_opt_ptrs: Vec<*const c_char> = c_opts.iter().map(|o| o.as_ptr()).collect();
    let num_options = c_int::try_from(c_opt_ptrs.len()).map_err(|_| fail("too many options".into()))?;

    let mut prog = Program(std::ptr::null_mut());
    let headers = CHeaders::all();
    let (texts, names) = (headers.text_ptrs(), headers.name_ptrs());
    // SAFETY: `src`, `name` and the header arrays (`headers.count()` entries
    // each, owned by `headers`) are NUL-terminated and outlive the call.
    let r = unsafe {
        hiprtcCreateProgram(&mut prog.0, src.as_ptr(), name.as_ptr(), headers.count(), texts.as_ptr(), names.as_ptr())
    };
    if r != HIPRTC_SUCCESS {
        return Err(fail(format!("hiprtcCreateProgram: {}", checked::rtc_describe(r))));
    }
    // SAFETY: `prog.0` is live; `c_opt_ptrs` holds `num_options` pointers to
    // NUL-terminated strings owned by `c_opts`, which outlives the call.
    let r = unsafe { hiprtcCompileProgram(prog.0, num_options, c_opt_ptrs.as_ptr()) };
    let log = prog.log();
    if r != HIPRTC_SUCCESS {
        return Err(fail(format!("{}\n{log}", checked::rtc_describe(r))));
    }
    let code = prog.code().map_err(|r| fail(format!("hiprtcGetCode: {}\n{log}", checked::rtc_describe(r))))?;
    if code.is_empty() {
        return Err(fail(format!("hiprtc produced an empty code object\n{log}")));
    }
    Ok(code)
}
