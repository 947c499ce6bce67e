//! Compiling every kernel specialization for a named target without a GPU
//! (`rocmforge kernels check --target T`): NVRTC for `sm_*`, `hipcc` for
//! `gfx*`. This is how CI proves the AMD side compiles with no AMD GPU.

use super::error::{DeviceError, DeviceResult};
use crate::kernels::KernelSpec;
use crate::registry::Registry;

/// One specialization compiled for one target.
#[derive(Clone, Debug, PartialEq)]
pub struct CompileReport {
    pub kernel: String,
    pub target: String,
    /// Size of the produced code object (cubin or HSA code object).
    pub bytes: usize,
}

/// Every specialization any registered backend can request, deduplicated.
pub fn all_specs(registry: &Registry) -> Vec<KernelSpec> {
    let mut specs: Vec<KernelSpec> = Vec::new();
    for backend in registry.backends() {
        for spec in backend.kernels() {
            if !specs.contains(&spec) {
                specs.push(spec);
            }
        }
    }
    specs
}

/// Splits an AMD target ID ("gfx90a:sramecc+:xnack-", as `gcnArchName`
/// reports it) into the processor ("gfx90a") and its feature flags
/// (["sramecc+", "xnack-"]). Plain names ("gfx1030", "sm_90") have none.
pub fn split_target_id(target_id: &str) -> (&str, Vec<&str>) {
    let mut parts = target_id.split(':');
    let arch = parts.next().unwrap_or_default();
    (arch, parts.filter(|f| !f.is_empty()).collect())
}

/// Warp size the target runs with: 64 on gfx9 (GCN/CDNA), 32 on RDNA
/// (gfx10+, wave32 by default) and on NVIDIA. Accepts AMD target IDs with
/// feature flags ("gfx90a:xnack-").
pub fn target_warp_size(target: &str) -> DeviceResult<u32> {
    let (arch, _features) = split_target_id(target);
    let bad = || DeviceError::Invalid(format!("unknown target '{target}': expected sm_XY (NVIDIA) or gfxNNN (AMD)"));
    if let Some(rest) = arch.strip_prefix("sm_") {
        if rest.is_empty() || !rest.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        Ok(32)
    } else if let Some(rest) = arch.strip_prefix("gfx") {
        if rest.len() < 3 || !rest.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(if rest.starts_with('9') || rest.starts_with('8') { 64 } else { 32 })
    } else {
        Err(bad())
    }
}

/// Compiles every spec for `target`; the first failure is returned with the
/// compiler log.
pub fn compile_all(specs: &[KernelSpec], target: &str) -> DeviceResult<Vec<CompileReport>> {
    let warp = target_warp_size(target)?;
    specs
        .iter()
        .map(|spec| {
            let bytes = compile_one(spec, target, warp)?;
            Ok(CompileReport { kernel: spec.label(), target: target.to_string(), bytes })
        })
        .collect()
}

fn compile_one(spec: &KernelSpec, target: &str, warp: u32) -> DeviceResult<usize> {
    let options = spec.options(warp);
    if target.starts_with("sm_") {
        compile_nvrtc(spec, target, &options)
    } else {
        compile_hipcc(spec, target, &options)
    }
}

/// Whether NVRTC can be loaded (built with the `cuda` feature and
/// `libnvrtc` on the loader path, e.g. from the `nvidia-cuda-nvrtc` wheel).
pub fn nvrtc_available() -> bool {
    #[cfg(feature = "cuda")]
    {
        super::cuda::nvrtc::available()
    }
    #[cfg(not(feature = "cuda"))]
    {
        false
    }
}

#[cfg(feature = "cuda")]
fn compile_nvrtc(spec: &KernelSpec, target: &str, options: &[String]) -> DeviceResult<usize> {
    super::cuda::nvrtc::compile_cubin(spec.entry, &spec.full_source(), options, target).map(|c| c.len())
}

#[cfg(not(feature = "cuda"))]
fn compile_nvrtc(_: &KernelSpec, target: &str, _: &[String]) -> DeviceResult<usize> {
    Err(DeviceError::Invalid(format!("target {target} needs NVRTC: build with the cuda feature")))
}

/// The `hipcc` to run: `$HIPCC` if set, else `hipcc` from `PATH`.
pub fn hipcc_command() -> String {
    std::env::var("HIPCC").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "hipcc".to_string())
}

/// Whether `hipcc_command()` can be run at all (`hipcc --version` succeeds).
pub fn hipcc_available() -> bool {
    std::process::Command::new(hipcc_command())
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Flags for one device-only `hipcc` compile of `src` into `obj`.
///
/// - `-include hip/hip_runtime.h`: hiprtc pre-includes its runtime header
///   (threadIdx, `__shfl_xor`, `__forceinline__`, math functions); plain
///   clang HIP mode does not, so this gives hipcc the same environment the
///   kernels see at run time. The kernel text itself still includes nothing.
/// - `--offload-device-only --no-gpu-bundle-output`: only the device side,
///   written as a plain AMDGPU ELF code object (what `hipModuleLoadData`
///   loads), not a clang offload bundle.
/// - `-Wno-pragma-once-outside-header`: the prelude's `#pragma once` sits in
///   the main file because kernels are compiled as prelude + kernel text.
pub fn hipcc_args(target: &str, options: &[String], src: &std::path::Path, obj: &std::path::Path) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "-x".into(),
        "hip".into(),
        format!("--offload-arch={target}"),
        "--offload-device-only".into(),
        "--no-gpu-bundle-output".into(),
        "-include".into(),
        "hip/hip_runtime.h".into(),
        "-Wno-pragma-once-outside-header".into(),
        "-O3".into(),
        "-std=c++17".into(),
        "-c".into(),
    ];
    args.extend(options.iter().cloned());
    args.push(src.display().to_string());
    args.push("-o".into());
    args.push(obj.display().to_string());
    args
}

/// A scratch directory unique to this call (tests compile in parallel
/// threads of one process), removed on drop.
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn new() -> DeviceResult<ScratchDir> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rocmforge-kcheck-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| DeviceError::Invalid(format!("temp dir {}: {e}", dir.display())))?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `hipcc` (ROCm's clang driver) in device-only mode on a temporary
/// copy of the translation unit and returns the code object's size.
pub fn compile_hipcc(spec: &KernelSpec, target: &str, options: &[String]) -> DeviceResult<usize> {
    compile_hipcc_source(&spec.label(), spec.entry, &spec.full_source(), target, options).map(|co| co.len())
}

/// `compile_hipcc` for any translation unit: returns the AMDGPU ELF code
/// object. `label` names the kernel in errors; `stem` names the temp files.
pub fn compile_hipcc_source(
    label: &str,
    stem: &str,
    source: &str,
    target: &str,
    options: &[String],
) -> DeviceResult<Vec<u8>> {
    let hipcc = hipcc_command();
    let dir = ScratchDir::new()?;
    let src = dir.0.join(format!("{stem}.hip"));
    let obj = dir.0.join(format!("{stem}.{}.co", target.replace(':', "_")));
    std::fs::write(&src, source).map_err(|e| DeviceError::Invalid(format!("write {}: {e}", src.display())))?;
    let args = hipcc_args(target, options, &src, &obj);
    let output =
        std::process::Command::new(&hipcc).args(&args).stdin(std::process::Stdio::null()).output().map_err(|e| {
            DeviceError::Compile {
                kernel: label.to_string(),
                options: args.clone(),
                log: format!("could not run {hipcc}: {e} (install Debian's hipcc package or set HIPCC)"),
            }
        })?;
    if !output.status.success() {
        let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        return Err(DeviceError::Compile { kernel: label.to_string(), options: args, log });
    }
    let code = std::fs::read(&obj).unwrap_or_default();
    if !code.starts_with(b"\x7fELF") {
        let log = if code.is_empty() {
            "hipcc produced no code object".to_string()
        } else {
            "hipcc output is not an ELF code object".to_string()
        };
        return Err(DeviceError::Compile { kernel: label.to_string(), options: args, log });
    }
    Ok(code)
}
