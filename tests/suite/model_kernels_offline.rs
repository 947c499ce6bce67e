//! The model layer's kernels (kernels/model/) compile for every CI target,
//! and their parameter structs have the Rust layout. Like
//! kernels_offline.rs: a missing compiler prints SKIP, or fails under
//! ROCMFORGE_REQUIRE_NVRTC=1 / ROCMFORGE_REQUIRE_HIPCC=1.

use rocmforge::device::offline::{clang_available, compile_source, hipcc_available, nvrtc_available, OfflineCompiler};
use rocmforge::model::engine::{kernels, params};
use rocmforge::Arch;

fn have_compiler(target: &str) -> bool {
    let arch = Arch::parse(target).unwrap();
    let (ok, var) = match OfflineCompiler::for_arch(&arch) {
        OfflineCompiler::Nvrtc => (nvrtc_available(), "ROCMFORGE_REQUIRE_NVRTC"),
        OfflineCompiler::Hipcc => (hipcc_available(), "ROCMFORGE_REQUIRE_HIPCC"),
        OfflineCompiler::HeaderFreeClang => (clang_available(), "ROCMFORGE_REQUIRE_HIPCC"),
    };
    if !ok {
        assert!(std::env::var(var).as_deref() != Ok("1"), "no offline compiler for {target} and {var}=1");
        println!("SKIP model kernels for {target}: no offline compiler (set {var}=1 to fail instead)");
    }
    ok
}

fn check(target: &str) {
    if !have_compiler(target) {
        return;
    }
    let arch = Arch::parse(target).unwrap();
    let specs = kernels::all();
    assert_eq!(specs.len(), 26, "9 copy_rows dtype pairs + put_words + argmax_finish + (rope + 4 dense) per dtype");
    for spec in &specs {
        let code = compile_source(&spec.label(), spec.entry, &spec.source(), &arch, &spec.options(&arch))
            .unwrap_or_else(|e| panic!("{target}: {e}"));
        assert!(!code.is_empty());
        println!("ok {} for {target} ({} bytes)", spec.label(), code.len());
    }
    for (name, probe) in params::layout_probes() {
        let options = vec![format!("-DRF_WARP_SIZE={}", arch.warp_size())];
        compile_source(name, "layout_probe", &probe, &arch, &options)
            .unwrap_or_else(|e| panic!("{target}: {name} layout differs from Rust: {e}"));
    }
}

#[test]
fn model_kernels_compile_for_nvidia() {
    check("sm_80");
    check("sm_90");
}

#[test]
fn model_kernels_compile_for_amd() {
    for target in ["gfx90a", "gfx1030", "gfx942", "gfx1100"] {
        check(target);
    }
}

#[test]
fn a_wrong_model_struct_layout_fails_to_compile() {
    if !have_compiler("gfx90a") {
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
