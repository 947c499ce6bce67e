//! Offline kernel compiles, no GPU needed: every kernel specialization any
//! registered backend can request, plus a header probe kernel and the
//! parameter-struct layout probes, compiled for NVIDIA targets by NVRTC
//! (sm_80, sm_90) and for AMD targets by header-free clang-19 (gfx90a wave64
//! MFMA, gfx1030 wave32 SIMT, gfx942 wave64 MFMA, gfx1100 wave32 WMMA), all
//! of them; and a sample (one per code path) by Debian's `hipcc` with the
//! real HIP headers (gfx90a, gfx1030). This is the library-level twin of
//! `rocmforge kernels check --target ...`.
//!
//! A missing compiler prints SKIP; `ROCMFORGE_REQUIRE_HIPCC=1` (hipcc and
//! clang) / `ROCMFORGE_REQUIRE_NVRTC=1` turn SKIP into a failure (CI sets both).

use rocmforge::device::offline::{
    all_specs, clang_available, compile_all_by, compile_source, compile_source_by, hipcc_available, nvrtc_available,
    OfflineCompiler,
};
use rocmforge::kernels::params::all_layout_probes;
use rocmforge::kernels::{header, KernelFile, KernelSpec};
use rocmforge::{Arch, Registry};

/// A throwaway kernel that touches every shared-header helper: 16-bit
/// conversions both ways, warp and block reductions, the raw shuffle and
/// the mask rule.
const PROBE: &str = r#"
#include "rf/platform.h"
#include "rf/convert.h"
#include "rf/reduce.h"
#include "rf/mask.h"
RF_KERNEL void rf_prelude_probe(const rf_u16* __restrict__ x16, const float* __restrict__ x32,
                                float* __restrict__ out, rf_u16* __restrict__ out16, int n) {
    __shared__ float scratch[1024 / RF_WARP_SIZE];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
#if P_DTYPE == RF_F16
    float v = i < n ? rf_half_to_float(x16[i]) : 0.0f;
#elif P_DTYPE == RF_BF16
    float v = i < n ? rf_bf16_to_float(x16[i]) : 0.0f;
#else
    float v = i < n ? x32[i] : 0.0f;
#endif
#if defined(RF_HIP)
    const float neighbour = __shfl_xor(v, 1);
#else
    const float neighbour = rf_shfl_xor(v, 1);
#endif
    const float wsum = rf_warp_sum(v);
    const float wmax = rf_warp_max(v);
    const float bmax = rf_block_max(v, scratch);
    const float bsum = rf_block_sum(expf(v - bmax), scratch);
    const bool seen = rf_visible(i, rf_query_pos(0, 1, n), -1, 0);
    if (i < n && seen) {
        out[i] = wsum + wmax + neighbour + expf(v - bmax) / bsum;
#if P_DTYPE == RF_F16
        out16[i] = rf_float_to_half(out[i]);
#elif P_DTYPE == RF_BF16
        out16[i] = rf_float_to_bf16(out[i]);
#endif
    }
}
"#;

const PROBE_FILE: KernelFile = KernelFile { path: "tests/header_probe.hip", text: PROBE };

fn probe_specs() -> Vec<KernelSpec> {
    (0..3).map(|dtype| KernelSpec::new(PROBE_FILE, "rf_prelude_probe").define("P_DTYPE", dtype)).collect()
}

/// Every specialization the registered backends declare (model kernels
/// have their own test, `model_kernels_offline`) plus the header probe. This
/// is the exhaustive compile CI relies on: `.ci/run` does not run `rocmforge
/// kernels check` separately (it would compile the same set again), and
/// `kernels_list_and_check_commands_cover_every_specialization` below checks
/// that the command covers the same set.
fn specs_under_test() -> Vec<KernelSpec> {
    let registry = Registry::global().expect("registry builds");
    let all = all_specs(registry);
    assert!(!all.is_empty(), "no registered backend requests a kernel: a GPU backend was dropped");
    let mut specs: Vec<KernelSpec> = all.into_iter().filter(|s| !s.file.path.starts_with("model/")).collect();
    let registered = specs.len();
    specs.extend(probe_specs());
    println!("{registered} registered kernel specialization(s) + {} header probe(s)", probe_specs().len());
    specs
}

fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// True when the offline compiler for `target` is usable; otherwise prints
/// SKIP, or fails if its REQUIRE variable is set.
fn have_compiler(test: &str, target: &str) -> bool {
    let arch = Arch::parse(target).unwrap();
    let (ok, var, what) = match OfflineCompiler::for_arch(&arch) {
        OfflineCompiler::Nvrtc => (nvrtc_available(), "ROCMFORGE_REQUIRE_NVRTC", "libnvrtc (nvidia-cuda-nvrtc wheel)"),
        OfflineCompiler::Hipcc => (hipcc_available(), "ROCMFORGE_REQUIRE_HIPCC", "hipcc (Debian's hipcc package)"),
        OfflineCompiler::HeaderFreeClang => {
            (clang_available(), "ROCMFORGE_REQUIRE_HIPCC", "clang-19 (Debian's clang-19)")
        }
    };
    if ok {
        return true;
    }
    assert!(!required(var), "{test}: {what} not available for {target} and {var}=1");
    println!("SKIP {test}: {what} not available for {target} (set {var}=1 to make this a failure)");
    false
}

/// The value of `.wavefront_size` in an AMDGPU code object's metadata note
/// (msgpack: the key as a fixstr, then the value as a positive fixint).
fn wavefront_size(code_object: &[u8]) -> Option<u8> {
    let key = b"\xaf.wavefront_size";
    code_object.windows(key.len()).position(|w| w == key).and_then(|at| code_object.get(at + key.len()).copied())
}

/// Compiles every specialization under test for `target` with `compiler`,
/// and the parameter-struct layout probes.
fn check_target(target: &str, compiler: OfflineCompiler) {
    let test = format!("kernels_compile_for_{target}_by_{}", compiler.name());
    if !have_compiler_for(&test, target, compiler) {
        return;
    }
    let specs = specs_under_test();
    compile_and_check(&specs, target, compiler);
}

fn compile_and_check(specs: &[KernelSpec], target: &str, compiler: OfflineCompiler) {
    let arch = Arch::parse(target).unwrap();
    let reports = compile_all_by(specs, &arch, compiler).unwrap_or_else(|e| panic!("{target}: {e}"));
    assert_eq!(reports.len(), specs.len());
    for r in &reports {
        assert!(r.bytes > 0, "{r:?}");
        println!("ok {} for {} by {} ({} bytes)", r.kernel, r.target, r.compiler, r.bytes);
    }
    // Parameter structs: the C side must have the Rust side's layout.
    for (name, probe) in all_layout_probes() {
        let options = vec![format!("-DRF_WARP_SIZE={}", arch.warp_size())];
        compile_source_by(compiler, name, "layout_probe", &probe, &arch, &options)
            .unwrap_or_else(|e| panic!("{target}: {name} layout differs from Rust: {e}"));
    }
}

/// `have_compiler` for an explicit compiler (header-free clang on a target
/// hipcc also knows).
fn have_compiler_for(test: &str, target: &str, compiler: OfflineCompiler) -> bool {
    match compiler {
        OfflineCompiler::HeaderFreeClang => have_compiler(test, "gfx942"),
        OfflineCompiler::Hipcc => have_compiler(test, "gfx90a"),
        OfflineCompiler::Nvrtc => have_compiler(test, target),
    }
}

// Every specialization for every target: NVRTC for NVIDIA; header-free
// clang-19 for the four AMD targets (wave64 MFMA on gfx90a/gfx942, wave32
// SIMT on gfx1030, wave32 WMMA on gfx1100).

#[test]
fn kernels_compile_for_gfx90a_header_free() {
    check_target("gfx90a", OfflineCompiler::HeaderFreeClang);
}

#[test]
fn kernels_compile_for_gfx1030_header_free() {
    check_target("gfx1030", OfflineCompiler::HeaderFreeClang);
}

#[test]
fn kernels_compile_for_gfx942_header_free() {
    check_target("gfx942", OfflineCompiler::HeaderFreeClang);
}

#[test]
fn kernels_compile_for_gfx1100_header_free() {
    check_target("gfx1100", OfflineCompiler::HeaderFreeClang);
}

#[test]
fn kernels_compile_for_sm80_and_sm90() {
    check_target("sm_80", OfflineCompiler::Nvrtc);
    check_target("sm_90", OfflineCompiler::Nvrtc);
}

/// Debian's hipcc (ROCm 5.2) with the real HIP headers, on the targets it
/// knows. What it proves beyond the header-free compiles of the same
/// targets is that our headers live beside hip_runtime.h, and that depends
/// on which code paths a specialization compiles (element type, f32 mode,
/// entry), not on its head dim; hipcc parses the HIP headers on every
/// compile (3-4x the time of header-free clang on the CI machine), so it
/// builds one specialization per (file, entry, defines other than the head
/// dim) instead of all of them.
#[test]
fn kernels_compile_with_hipcc_for_gfx90a_and_gfx1030() {
    if !have_compiler("kernels_compile_with_hipcc_for_gfx90a_and_gfx1030", "gfx90a") {
        return;
    }
    let all = specs_under_test();
    let sample = one_per_code_path(&all);
    println!("hipcc: {} of {} specializations (one per file, entry and non-head-dim defines)", sample.len(), all.len());
    assert!(sample.len() < all.len(), "the sample should leave out head-dim variants");
    for target in ["gfx90a", "gfx1030"] {
        compile_and_check(&sample, target, OfflineCompiler::Hipcc);
    }
}

/// One specialization for each (file, entry, defines without RF_HEAD_DIM).
fn one_per_code_path(specs: &[KernelSpec]) -> Vec<KernelSpec> {
    let path_of = |s: &KernelSpec| {
        let defines: Vec<_> = s.defines.iter().filter(|(k, _)| k != "RF_HEAD_DIM").cloned().collect();
        (s.file.path, s.entry, defines)
    };
    let mut seen = Vec::new();
    let mut sample = Vec::new();
    for spec in specs {
        let key = path_of(spec);
        if !seen.contains(&key) {
            seen.push(key);
            sample.push(spec.clone());
        }
    }
    sample
}

/// A wrong field offset in a parameter struct is caught: the probe built
/// from a struct whose C twin differs fails to compile.
#[test]
fn layout_probe_catches_a_mismatch() {
    if !have_compiler("layout_probe_catches_a_mismatch", "gfx90a") {
        return;
    }
    let arch = Arch::parse("gfx90a").unwrap();
    let (name, probe) = all_layout_probes().remove(0);
    let broken = probe.replacen("== 0,", "== 8,", 1);
    assert_ne!(broken, probe, "the probe asserts the first field's offset");
    let options = vec!["-DRF_WARP_SIZE=64".to_string()];
    match compile_source(name, "layout_probe", &broken, &arch, &options) {
        Ok(_) => panic!("a wrong offset compiled"),
        Err(e) => assert!(e.to_string().contains("offset differs from Rust"), "{e}"),
    }
}

/// The code object really is wave64 on gfx90a/gfx942 and wave32 on
/// gfx1030/gfx1100, both when the host passes RF_WARP_SIZE and when the
/// header falls back to `__AMDGCN_WAVEFRONT_SIZE`; a wrong RF_WARP_SIZE trips
/// the static_assert.
#[test]
fn warp_size_matches_amd_wavefront() {
    let source = probe_specs()[0].source();
    for (target, wave) in
        [("gfx90a", 64u32), ("gfx1030", 32u32), ("gfx90a:xnack-", 64u32), ("gfx942", 64), ("gfx1100", 32)]
    {
        if !have_compiler("warp_size_matches_amd_wavefront", target) {
            continue;
        }
        let arch = Arch::parse(target).unwrap();
        assert_eq!(arch.warp_size(), wave);
        let given = vec![format!("-DRF_WARP_SIZE={wave}"), "-DP_DTYPE=0".to_string()];
        let code = compile_source("probe", "probe", &source, &arch, &given).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(wavefront_size(&code), Some(wave as u8), "{target} with RF_WARP_SIZE={wave}");
        let fallback = vec!["-DP_DTYPE=0".to_string()];
        let code = compile_source("probe", "probe", &source, &arch, &fallback).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(wavefront_size(&code), Some(wave as u8), "{target} with the header's fallback");
        let wrong = vec![format!("-DRF_WARP_SIZE={}", 96 - wave), "-DP_DTYPE=0".to_string()];
        match compile_source("probe", "probe", &source, &arch, &wrong) {
            Ok(_) => panic!("{target}: RF_WARP_SIZE={} compiled, the static_assert should reject it", 96 - wave),
            Err(e) => assert!(e.to_string().contains("RF_WARP_SIZE disagrees"), "{target}: {e}"),
        }
    }
}

#[test]
fn headers_are_embedded() {
    assert!(header("rf/platform.h").is_some_and(|h| h.contains("RF_WARP_SIZE")));
}

/// The kernels' mask rule (rf/mask.h, compiled as host C++ with the
/// system's c++) agrees with `Mask::key_range` on every (query, key) of a
/// grid of shapes and windows.
#[test]
fn mask_header_agrees_with_host_rule() {
    use rocmforge::Mask;
    let Some(cxx) = ["c++", "g++", "clang++"]
        .into_iter()
        .find(|c| std::process::Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
    else {
        assert!(!required("ROCMFORGE_REQUIRE_HIPCC"), "no host C++ compiler for the mask-rule test");
        println!("SKIP mask_header_agrees_with_host_rule: no host C++ compiler");
        return;
    };
    let dir = std::env::temp_dir().join(format!("rf-mask-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("rf")).unwrap();
    for name in ["rf/platform.h", "rf/mask.h"] {
        std::fs::write(dir.join(name), header(name).unwrap()).unwrap();
    }
    let main = r#"#include <cstdio>
#include <cstdlib>
#include "rf/mask.h"
int main(int argc, char** argv) {
    long long sq = atoll(argv[1]), skv = atoll(argv[2]), left = atoll(argv[3]), right = atoll(argv[4]);
    for (long long i = 0; i < sq; ++i) {
        for (long long j = 0; j < skv; ++j) putchar(rf_visible(j, rf_query_pos(i, sq, skv), left, right) ? '1' : '0');
        putchar('\n');
    }
}"#;
    std::fs::write(dir.join("main.cpp"), main).unwrap();
    let exe = dir.join("mask_rule");
    let status = std::process::Command::new(cxx)
        .args(["-DRF_HOST_ONLY", "-DRF_WARP_SIZE=32", "-std=c++17", "-I"])
        .arg(&dir)
        .arg(dir.join("main.cpp"))
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap();
    assert!(status.success(), "host compile of rf/mask.h failed");
    let masks = [
        (Mask::None, -1, -1),
        (Mask::Causal, -1, 0),
        (Mask::SlidingWindow { left: 2, right: 0 }, 2, 0),
        (Mask::SlidingWindow { left: 0, right: 3 }, 0, 3),
        (Mask::SlidingWindow { left: 1, right: 1 }, 1, 1),
    ];
    let mut checked = 0;
    for (sq, skv) in [(1, 7), (5, 5), (7, 3), (3, 9), (9, 1)] {
        for (mask, left, right) in masks {
            let out = std::process::Command::new(&exe)
                .args([sq, skv, left, right].map(|x: i64| x.to_string()))
                .output()
                .unwrap();
            let text = String::from_utf8(out.stdout).unwrap();
            for (i, line) in text.lines().enumerate() {
                let (lo, hi) = mask.key_range(i, sq as usize, skv as usize);
                let want: String = (0..skv as usize).map(|j| if (lo..hi).contains(&j) { '1' } else { '0' }).collect();
                assert_eq!(line, want, "mask {mask} sq={sq} skv={skv} row {i}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 5 * (1 + 5 + 7 + 3 + 9));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The CLI's `kernels list` names the same specializations the tests above
/// compile (plus the model kernels), and `kernels check` compiles what its
/// filter selects (one family here: the exhaustive compiles are above).
#[test]
fn kernels_list_and_check_commands_cover_every_specialization() {
    let all = all_specs(Registry::global().expect("registry builds"));
    let out = crate::cli::assert_ok(&crate::cli::run(&["kernels", "list"]));
    assert!(out.contains(&format!("\n{} specializations\n", all.len())), "count missing in: {out}");
    for spec in &all {
        assert!(out.lines().any(|l| l == spec.label()), "{} not listed", spec.label());
    }
    let target = "gfx942";
    if !have_compiler("kernels_list_and_check_commands_cover_every_specialization", target) {
        return;
    }
    let family = "replicate/";
    let expected = all.iter().filter(|s| s.label().contains(family)).count();
    assert!(expected > 0, "no {family} specialization registered");
    let out = crate::cli::assert_ok(&crate::cli::run(&["kernels", "check", "--target", target, "--filter", family]));
    let want = format!("{target}: {expected} specializations compiled by clang");
    assert!(out.contains(&want), "'{want}' not in: {out}");
    let out = crate::cli::assert_ok(&crate::cli::run(&[
        "kernels",
        "check",
        "--target",
        "gfx90a",
        "--header-free",
        "--filter",
        family,
    ]));
    assert!(out.contains(&format!("gfx90a: {expected} specializations compiled by clang")), "{out}");
}
