//! Offline kernel compiles, no GPU needed: every kernel specialization any
//! registered backend can request, plus a prelude probe kernel, compiled
//! for AMD targets by `hipcc` (gfx90a wave64, gfx1030 wave32) and for NVIDIA
//! targets by NVRTC (sm_80, sm_90). This is the library-level twin of
//! `rocmforge kernels check --target ...`.
//!
//! A missing compiler prints SKIP; `ROCMFORGE_REQUIRE_HIPCC=1` /
//! `ROCMFORGE_REQUIRE_NVRTC=1` turn SKIP into a failure (CI sets both).

use rocmforge::device::offline::{
    all_specs, compile_all, compile_hipcc_source, hipcc_available, nvrtc_available, split_target_id, target_warp_size,
};
use rocmforge::kernels::{KernelSpec, PRELUDE};
use rocmforge::Registry;

/// A throwaway kernel that touches every prelude helper: 16-bit
/// conversions both ways, warp and block reductions, the raw shuffle.
const PROBE: &str = r#"
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
    if (i < n) {
        out[i] = wsum + wmax + neighbour + expf(v - bmax) / bsum;
#if P_DTYPE == RF_F16
        out16[i] = rf_float_to_half(out[i]);
#elif P_DTYPE == RF_BF16
        out16[i] = rf_float_to_bf16(out[i]);
#endif
    }
}
"#;

fn probe_specs() -> Vec<KernelSpec> {
    (0..3)
        .map(|dtype| KernelSpec {
            file: "prelude_probe.hip",
            source: PROBE,
            entry: "rf_prelude_probe",
            defines: vec![("P_DTYPE".to_string(), dtype.to_string())],
        })
        .collect()
}

/// Every registered specialization plus the probe.
fn specs_under_test() -> Vec<KernelSpec> {
    let registry = Registry::global().expect("registry builds");
    let mut specs = all_specs(registry);
    let registered = specs.len();
    assert!(registered > 0, "no registered backend requests a kernel: a GPU backend was dropped");
    specs.extend(probe_specs());
    println!("{registered} registered kernel specialization(s) + {} prelude probe(s)", probe_specs().len());
    specs
}

fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// True when hipcc is usable; otherwise prints SKIP, or fails if required.
fn have_hipcc(test: &str) -> bool {
    if hipcc_available() {
        return true;
    }
    assert!(
        !required("ROCMFORGE_REQUIRE_HIPCC"),
        "{test}: hipcc not found (install Debian's hipcc package or set HIPCC) and ROCMFORGE_REQUIRE_HIPCC=1"
    );
    println!("SKIP {test}: hipcc not found (set ROCMFORGE_REQUIRE_HIPCC=1 to make this a failure)");
    false
}

fn have_nvrtc(test: &str) -> bool {
    if nvrtc_available() {
        return true;
    }
    assert!(
        !required("ROCMFORGE_REQUIRE_NVRTC"),
        "{test}: libnvrtc could not be loaded and ROCMFORGE_REQUIRE_NVRTC=1 (install the nvidia-cuda-nvrtc wheel \
         and put its lib dir on LD_LIBRARY_PATH)"
    );
    println!("SKIP {test}: libnvrtc not loadable (set ROCMFORGE_REQUIRE_NVRTC=1 to make this a failure)");
    false
}

/// The value of `.wavefront_size` in an AMDGPU code object's metadata note
/// (msgpack: the key as a fixstr, then the value as a positive fixint).
fn wavefront_size(code_object: &[u8]) -> Option<u8> {
    let key = b"\xaf.wavefront_size";
    code_object.windows(key.len()).position(|w| w == key).and_then(|at| code_object.get(at + key.len()).copied())
}

fn check_amd_target(target: &str) {
    let test = format!("kernels_compile_for_{target}");
    if !have_hipcc(&test) {
        return;
    }
    let specs = specs_under_test();
    let reports = compile_all(&specs, target).unwrap_or_else(|e| panic!("{target}: {e}"));
    assert_eq!(reports.len(), specs.len());
    for r in &reports {
        assert!(r.bytes > 0, "{r:?}");
        println!("ok {} for {} ({} bytes)", r.kernel, r.target, r.bytes);
    }
}

#[test]
fn kernels_compile_for_gfx90a() {
    check_amd_target("gfx90a");
}

#[test]
fn kernels_compile_for_gfx1030() {
    check_amd_target("gfx1030");
}

/// The code object really is wave64 on gfx90a and wave32 on gfx1030, both
/// when the host passes RF_WARP_SIZE and when the prelude falls back to
/// `__AMDGCN_WAVEFRONT_SIZE`; a wrong RF_WARP_SIZE trips the static_assert.
#[test]
fn prelude_warp_size_matches_amd_wavefront() {
    if !have_hipcc("prelude_warp_size_matches_amd_wavefront") {
        return;
    }
    let source = probe_specs()[0].full_source();
    for (target, wave) in [("gfx90a", 64u32), ("gfx1030", 32u32), ("gfx90a:xnack-", 64u32)] {
        assert_eq!(target_warp_size(target).unwrap(), wave);
        let given = vec![format!("-DRF_WARP_SIZE={wave}"), "-DP_DTYPE=0".to_string()];
        let code = compile_hipcc_source("probe", "probe", &source, target, &given).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(wavefront_size(&code), Some(wave as u8), "{target} with RF_WARP_SIZE={wave}");
        let fallback = vec!["-DP_DTYPE=0".to_string()];
        let code = compile_hipcc_source("probe", "probe", &source, target, &fallback).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(wavefront_size(&code), Some(wave as u8), "{target} with the prelude's fallback");
        let wrong = vec![format!("-DRF_WARP_SIZE={}", 96 - wave), "-DP_DTYPE=0".to_string()];
        match compile_hipcc_source("probe", "probe", &source, target, &wrong) {
            Ok(_) => panic!("{target}: RF_WARP_SIZE={} compiled, the static_assert should reject it", 96 - wave),
            Err(e) => assert!(e.to_string().contains("RF_WARP_SIZE disagrees"), "{target}: {e}"),
        }
    }
}

#[test]
fn nvrtc_compiles_for_sm80_and_sm90() {
    if !have_nvrtc("nvrtc_compiles_for_sm80_and_sm90") {
        return;
    }
    let specs = specs_under_test();
    for target in ["sm_80", "sm_90"] {
        let reports = compile_all(&specs, target).unwrap_or_else(|e| panic!("{target}: {e}"));
        assert_eq!(reports.len(), specs.len());
        for r in &reports {
            assert!(r.bytes > 0, "{r:?}");
            println!("ok {} for {} ({} bytes)", r.kernel, r.target, r.bytes);
        }
    }
}

#[test]
fn target_ids_split_and_map_to_warp_sizes() {
    assert_eq!(split_target_id("gfx90a:sramecc+:xnack-"), ("gfx90a", vec!["sramecc+", "xnack-"]));
    assert_eq!(split_target_id("gfx1030"), ("gfx1030", vec![]));
    assert_eq!(split_target_id("sm_90"), ("sm_90", vec![]));
    for (t, w) in [("gfx906", 64), ("gfx90a", 64), ("gfx942", 64), ("gfx1030", 32), ("gfx1100", 32), ("sm_80", 32)] {
        assert_eq!(target_warp_size(t).unwrap(), w, "{t}");
    }
    for bad in ["", "gfx", "sm_", "gfxzz", "cuda", "sm_x9"] {
        assert!(target_warp_size(bad).is_err(), "{bad}");
    }
    assert!(PRELUDE.contains("RF_WARP_SIZE"));
}
