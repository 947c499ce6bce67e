//! Compiling every kernel specialization for a named target without a GPU
//! (`rocmforge kernels check --target T`): NVRTC for `sm_*`; for `gfx*`,
//! Debian's `hipcc` on the targets it knows (gfx90a, gfx1030, ...) and
//! header-free `clang` (`-nogpuinc -nogpulib`, with `rf/hip_shim.h`) on
//! newer ones (gfx942, gfx1100, ...). This is how CI proves the AMD side
//! compiles with no AMD GPU; nothing compiled here is executed.

use super::arch::Arch;
use super::error::{DeviceError, DeviceResult};
use crate::kernels::{KernelSpec, HEADERS};
use crate::registry::Registry;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One specialization compiled for one target.
#[derive(Clone, Debug, PartialEq)]
pub struct CompileReport {
    pub kernel: String,
    pub target: String,
    /// Which compiler built it ("nvrtc", "hipcc", "clang").
    pub compiler: &'static str,
    /// Size of the produced code object (cubin or AMDGPU ELF).
    pub bytes: usize,
}

/// Which tool compiles a target offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfflineCompiler {
    Nvrtc,
    Hipcc,
    /// clang with `-nogpuinc -nogpulib`: no HIP installation needed.
    HeaderFreeClang,
}

impl OfflineCompiler {
    pub fn name(self) -> &'static str {
        match self {
            OfflineCompiler::Nvrtc => "nvrtc",
            OfflineCompiler::Hipcc => "hipcc",
            OfflineCompiler::HeaderFreeClang => "clang",
        }
    }

    /// NVRTC for NVIDIA; for AMD, hipcc on the targets Debian's ROCm 5.2
    /// hipcc knows, header-free clang on the rest.
    pub fn for_arch(arch: &Arch) -> OfflineCompiler {
        match arch.vendor() {
            super::Vendor::Nvidia => OfflineCompiler::Nvrtc,
            super::Vendor::Amd => match arch.processor() {
                "gfx803" | "gfx900" | "gfx906" | "gfx908" | "gfx90a" | "gfx1010" | "gfx1030" => OfflineCompiler::Hipcc,
                _ => OfflineCompiler::HeaderFreeClang,
            },
        }
    }
}

/// Every specialization any registered backend or the model layer can
/// request, deduplicated.
pub fn all_specs(registry: &Registry) -> Vec<KernelSpec> {
    let mut specs: Vec<KernelSpec> = Vec::new();
    let wanted = registry.backends().flat_map(|b| b.kernels()).chain(crate::model::engine::kernels::all());
    for spec in wanted {
        if !specs.contains(&spec) {
            specs.push(spec);
        }
    }
    specs
}

/// Compiles every spec for `target` with its usual compiler
/// (`OfflineCompiler::for_arch`); see `compile_all_by`.
pub fn compile_all(specs: &[KernelSpec], target: &str) -> DeviceResult<Vec<CompileReport>> {
    let arch = Arch::parse(target)?;
    compile_all_by(specs, &arch, OfflineCompiler::for_arch(&arch))
}

/// Compiles every spec for `arch` with `compiler`, in parallel (compiles
/// are independent processes or NVRTC programs); the first failure in spec
/// order is returned with the compiler log. Header-free clang also builds
/// the targets Debian's hipcc knows (CI compiles every specialization that
/// way, and a sample through hipcc, which parses the HIP headers each time).
pub fn compile_all_by(
    specs: &[KernelSpec],
    arch: &Arch,
    compiler: OfflineCompiler,
) -> DeviceResult<Vec<CompileReport>> {
    use rayon::prelude::*;
    specs
        .par_iter()
        .map(|spec| {
            let code =
                compile_source_by(compiler, &spec.label(), spec.entry, &spec.source(), arch, &spec.options(arch))?;
            Ok(CompileReport {
                kernel: spec.label(),
                target: arch.to_string(),
                compiler: compiler.name(),
                bytes: code.len(),
            })
        })
        .collect()
}

/// Compiles any translation unit (with the embedded headers available) for
/// `arch` with its offline compiler and returns the code object. `label`
/// names the kernel in errors; `stem` names the temp files.
pub fn compile_source(label: &str, stem: &str, source: &str, arch: &Arch, options: &[String]) -> DeviceResult<Vec<u8>> {
    compile_source_by(OfflineCompiler::for_arch(arch), label, stem, source, arch, options)
}

/// `compile_source` with an explicit compiler, which must build for
/// `arch`'s vendor (NVRTC for NVIDIA; hipcc or header-free clang for AMD).
pub fn compile_source_by(
    compiler: OfflineCompiler,
    label: &str,
    stem: &str,
    source: &str,
    arch: &Arch,
    options: &[String],
) -> DeviceResult<Vec<u8>> {
    let nvidia = arch.vendor() == super::Vendor::Nvidia;
    match compiler {
        OfflineCompiler::Nvrtc if nvidia => compile_nvrtc(stem, source, options, arch),
        OfflineCompiler::Hipcc | OfflineCompiler::HeaderFreeClang if !nvidia => {
            compile_amd(compiler, label, stem, source, arch, options)
        }
        _ => Err(DeviceError::WrongCompiler { compiler: compiler.name(), target: arch.to_string() }),
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
fn compile_nvrtc(stem: &str, source: &str, options: &[String], arch: &Arch) -> DeviceResult<Vec<u8>> {
    super::cuda::nvrtc::compile_cubin(stem, source, options, arch.target_id())
}

#[cfg(not(feature = "cuda"))]
fn compile_nvrtc(_: &str, _: &str, _: &[String], arch: &Arch) -> DeviceResult<Vec<u8>> {
    Err(DeviceError::NoNvrtc { why: format!("target {arch} needs NVRTC: this build lacks the cuda feature") })
}

/// The `hipcc` to run: `$HIPCC` if set, else `hipcc` from `PATH`.
pub fn hipcc_command() -> String {
    env_or("HIPCC", "hipcc")
}

/// The clang for header-free compiles: `$ROCMFORGE_CLANG`, else `clang-19`.
pub fn clang_command() -> String {
    env_or("ROCMFORGE_CLANG", "clang-19")
}

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var).ok().filter(|s| !s.is_empty()).unwrap_or_else(|| default.to_string())
}

fn runs(cmd: &str) -> bool {
    Command::new(cmd).arg("--version").stdin(Stdio::null()).output().is_ok_and(|o| o.status.success())
}

/// Whether `hipcc_command()` can be run at all (`hipcc --version` succeeds).
pub fn hipcc_available() -> bool {
    runs(&hipcc_command())
}

/// Whether `clang_command()` can be run at all.
pub fn clang_available() -> bool {
    runs(&clang_command())
}

/// Flags for one device-only AMD compile of `src` into `obj`.
///
/// hipcc: `-include hip/hip_runtime.h` gives it the environment hiprtc
/// pre-includes at run time (threadIdx, `__shfl_xor`, math functions); the
/// kernel text itself includes only our headers (`-I`). clang: no HIP
/// installation at all (`-nogpuinc -nogpulib`); `RF_HIP_HEADER_FREE` makes
/// `rf/platform.h` pull in `rf/hip_shim.h` instead. Both write a plain AMDGPU
/// ELF code object (what `hipModuleLoadData` loads), not an offload bundle.
pub fn amd_args(
    compiler: OfflineCompiler,
    arch: &Arch,
    options: &[String],
    include: &Path,
    src: &Path,
    obj: &Path,
) -> Vec<String> {
    let mut args: Vec<String> = vec!["-x".into(), "hip".into(), format!("--offload-arch={}", arch.target_id())];
    match compiler {
        OfflineCompiler::HeaderFreeClang => {
            args.extend(["--cuda-device-only", "-nogpuinc", "-nogpulib", "-DRF_HIP_HEADER_FREE=1"].map(String::from));
        }
        _ => args.extend(["--offload-device-only", "-include", "hip/hip_runtime.h"].map(String::from)),
    }
    args.extend(["--no-gpu-bundle-output", "-O3", "-std=c++17", "-c"].map(String::from));
    args.push(format!("-I{}", include.display()));
    args.extend(options.iter().cloned());
    args.push(src.display().to_string());
    args.push("-o".into());
    args.push(obj.display().to_string());
    args
}

/// A scratch directory unique to this call (tests compile in parallel
/// threads of one process), removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> DeviceResult<ScratchDir> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rocmforge-kcheck-{}-{n}", std::process::id()));
        create_dir(&dir)?;
        Ok(ScratchDir(dir))
    }

    fn write(&self, rel: &str, text: &str) -> DeviceResult<PathBuf> {
        let path = self.0.join(rel);
        if let Some(parent) = path.parent() {
            create_dir(parent)?;
        }
        std::fs::write(&path, text).map_err(|e| scratch_error("write", &path, e))?;
        Ok(path)
    }
}

fn create_dir(dir: &Path) -> DeviceResult<()> {
    std::fs::create_dir_all(dir).map_err(|e| scratch_error("create directory", dir, e))
}

fn scratch_error(what: &'static str, path: &Path, e: std::io::Error) -> DeviceError {
    DeviceError::Scratch { what, path: path.display().to_string(), error: e.to_string() }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn compile_amd(
    compiler: OfflineCompiler,
    label: &str,
    stem: &str,
    source: &str,
    arch: &Arch,
    options: &[String],
) -> DeviceResult<Vec<u8>> {
    let cmd = if compiler == OfflineCompiler::Hipcc { hipcc_command() } else { clang_command() };
    let dir = ScratchDir::new()?;
    for (name, text) in HEADERS {
        dir.write(&format!("include/{name}"), text)?;
    }
    let src = dir.write(&format!("{stem}.hip"), source)?;
    let obj = dir.0.join(format!("{stem}.{}.co", arch.target_id().replace(':', "_")));
    let args = amd_args(compiler, arch, options, &dir.0.join("include"), &src, &obj);
    let fail = |log: String| DeviceError::Compile { kernel: label.to_string(), options: args.clone(), log };
    // clang and hipcc leave per-compile temporaries (an empty directory, a
    // device object) in $TMPDIR: point it into the scratch directory so they
    // go with it instead of piling up in /tmp.
    let tmp = dir.0.join("tmp");
    create_dir(&tmp)?;
    let output = Command::new(&cmd).args(&args).env("TMPDIR", &tmp).stdin(Stdio::null()).output().map_err(|e| {
        fail(format!("could not run {cmd}: {e} (install Debian's hipcc / clang-19, or set HIPCC / ROCMFORGE_CLANG)"))
    })?;
    if !output.status.success() {
        return Err(fail(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let code = std::fs::read(&obj).unwrap_or_default();
    if !code.starts_with(b"\x7fELF") {
        let what = if code.is_empty() { "no code object" } else { "a file that is not an ELF code object" };
        return Err(fail(format!("{cmd} produced {what}")));
    }
    Ok(code)
}
