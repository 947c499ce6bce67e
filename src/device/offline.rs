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

/// Warp size the target runs with: 64 on gfx9 (GCN/CDNA), 32 on RDNA
/// (gfx10+, wave32 by default) and on NVIDIA.
pub fn target_warp_size(target: &str) -> DeviceResult<u32> {
    if target.starts_with("sm_") {
        Ok(32)
    } else if let Some(rest) = target.strip_prefix("gfx") {
        Ok(if rest.starts_with('9') || rest.starts_with('8') { 64 } else { 32 })
    } else {
        Err(DeviceError::Invalid(format!("unknown target '{target}': expected sm_XY (NVIDIA) or gfxNNN (AMD)")))
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

#[cfg(feature = "cuda")]
fn compile_nvrtc(spec: &KernelSpec, target: &str, options: &[String]) -> DeviceResult<usize> {
    super::cuda::nvrtc::compile_cubin(spec.entry, &spec.full_source(), options, target).map(|c| c.len())
}

#[cfg(not(feature = "cuda"))]
fn compile_nvrtc(_: &KernelSpec, target: &str, _: &[String]) -> DeviceResult<usize> {
    Err(DeviceError::Invalid(format!("target {target} needs NVRTC: build with the cuda feature")))
}

/// Runs `hipcc` (ROCm's clang driver) in device-only mode on a temporary
/// copy of the translation unit.
fn compile_hipcc(spec: &KernelSpec, target: &str, options: &[String]) -> DeviceResult<usize> {
    let hipcc = std::env::var("HIPCC").unwrap_or_else(|_| "hipcc".to_string());
    let dir = std::env::temp_dir().join(format!("rocmforge-kcheck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| DeviceError::Invalid(format!("temp dir {}: {e}", dir.display())))?;
    let stem = format!("{}_{}", spec.entry, options.join("_").replace(['-', '='], ""));
    let src = dir.join(format!("{stem}.hip"));
    let obj = dir.join(format!("{stem}.{target}.co"));
    std::fs::write(&src, spec.full_source()).map_err(|e| DeviceError::Invalid(format!("write {}: {e}", src.display())))?;
    let mut args: Vec<String> = vec![
        "-x".into(),
        "hip".into(),
        format!("--offload-arch={target}"),
        "--offload-device-only".into(),
        "-O3".into(),
        "-std=c++17".into(),
        "-c".into(),
    ];
    args.extend(options.iter().cloned());
    args.push(src.display().to_string());
    args.push("-o".into());
    args.push(obj.display().to_string());
    let output = std::process::Command::new(&hipcc).args(&args).output().map_err(|e| DeviceError::Compile {
        kernel: spec.label(),
        options: args.clone(),
        log: format!("could not run {hipcc}: {e} (install Debian's hipcc package or set HIPCC)"),
    })?;
    if !output.status.success() {
        let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        return Err(DeviceError::Compile { kernel: spec.label(), options: args, log });
    }
    let bytes = std::fs::metadata(&obj).map(|m| m.len() as usize).unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);
    if bytes == 0 {
        return Err(DeviceError::Compile { kernel: spec.label(), options: args, log: "hipcc produced no code object".into() });
    }
    Ok(bytes)
}
