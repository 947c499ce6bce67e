//! The model layer's kernels (kernels/model/) compile for every CI target,
//! and their parameter structs have the Rust layout. Like
//! kernels_offline.rs: every specialization through NVRTC (sm_80, sm_90)
//! and header-free clang-19 (gfx90a, gfx1030, gfx942, gfx1100), one per
//! entry through Debian's hipcc (real HIP headers: 3-4x slower a compile,
//! and what it adds does not depend on the element type, which the header
//! probe of kernels_offline.rs covers for every dtype). A missing compiler
//! prints SKIP, or fails under ROCMFORGE_REQUIRE_NVRTC=1 /
//! ROCMFORGE_REQUIRE_HIPCC=1.

use rocmforge::device::offline::{
    clang_available, compile_all_by, compile_source, compile_source_by, hipcc_available, nvrtc_available,
    OfflineCompiler,
};
use rocmforge::kernels::KernelSpec;
use rocmforge::model::engine::{kernels, params};
use rocmforge::Arch;

fn have(compiler: OfflineCompiler, target: &str) -> bool {
    let (ok, var) = match compiler {
        OfflineCompiler::Nvrtc => (nvrtc_available(), "ROCMFORGE_REQUIRE_NVRTC"),
        OfflineCompiler::Hipcc => (hipcc_available(), "ROCMFORGE_REQUIRE_HIPCC"),
        OfflineCompiler::HeaderFreeClang => (clang_available(), "ROCMFORGE_REQUIRE_HIPCC"),
    };
    if !ok {
        assert!(std::env::var(var).as_deref() != Ok("1"), "no {} for {target} and {var}=1", compiler.name());
        println!("SKIP model kernels for {target}: no {} (set {var}=1 to fail instead)", compiler.name());
    }
    ok
}

fn all_model_specs() -> Vec<KernelSpec> {
    let specs = kernels::all();
    assert_eq!(specs.len(), 26, "9 copy_rows dtype pairs + put_words + argmax_finish + (rope + 4 dense) per dtype");
    specs
}

/// Compiles `specs` (in parallel) and the layout probes for `target`.
fn check(specs: &[KernelSpec], target: &str, compiler: OfflineCompiler) {
    if !have(compiler, target) {
        return;
    }
    let arch = Arch::parse(target).unwrap();
    let reports = compile_all_by(specs, &arch, compiler).unwrap_or_else(|e| panic!("{target}: {e}"));
    assert_eq!(reports.len(), specs.len());
    for r in &reports {
        assert!(r.bytes > 0, "{r:?}");
        println!("ok {} for {target} by {} ({} bytes)", r.kernel, r.compiler, r.bytes);
    }
    for (name, probe) in params::layout_probes() {
        let options = vec![format!("-DRF_WARP_SIZE={}", arch.warp_size())];
        compile_source_by(compiler, name, "layout_probe", &probe, &arch, &options)
            .unwrap_or_else(|e| panic!("{target}: {name} layout differs from Rust: {e}"));
    }
}

#[test]
fn model_kernels_compile_for_nvidia() {
    let specs = all_model_specs();
    for target in ["sm_80", "sm_90"] {
        check(&specs, target, OfflineCompiler::Nvrtc);
    }
}

#[test]
fn model_kernels_compile_for_amd_header_free() {
    let specs = all_model_specs();
    for target in ["gfx90a", "gfx1030", "gfx942", "gfx1100"] {
        check(&specs, target, OfflineCompiler::HeaderFreeClang);
    }
}

#[test]
fn model_kernels_compile_with_hipcc_one_per_entry() {
    let all = all_model_specs();
    let mut sample: Vec<KernelSpec> = Vec::new();
    for spec in &all {
        if !sample.iter().any(|s| s.file.path == spec.file.path && s.entry == spec.entry) {
            sample.push(spec.clone());
        }
    }
    assert_eq!(
        sample.len(),
        8,
        "copy_rows, put_words, argmax_finish, rope, rms_norm, swiglu, add_rows, argmax_partial"
    );
    for target in ["gfx90a", "gfx1030"] {
        check(&sample, target, OfflineCompiler::Hipcc);
    }
}

#[test]
fn a_wrong_model_struct_layout_fails_to_compile() {
    if !have(OfflineCompiler::for_arch(&Arch::parse("gfx90a").unwrap()), "gfx90a") {
        return;
    }
    let arch = Arch::parse("gfx90a").unwrap();
    for (name, probe) in params::layout_probes() {
        let broken = probe.replacen("== 0,", "== 4,", 1);
        assert_ne!(broken, probe);
        let err = compile_source(name, "layout_probe", &broken, &arch, &["-DRF_WARP_SIZE=64".to_string()]);
        assert!(err.is_err(), "{name}: a wrong offset compiled");
    }
}
