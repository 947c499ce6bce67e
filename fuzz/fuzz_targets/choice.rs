//! Text the user types: backend choices (`--backend`, the environment
//! variable), shapes, masks and dtypes. Parsing must never panic, and a
//! parsed choice must select or fail with a typed error on a small problem.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rocmforge::registry::{BackendChoice, ChoiceSource};
use rocmforge::shape_syntax::ShapeSpec;
use rocmforge::{AttentionProblem, DType, Device, Mask, Registry};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(choice) = BackendChoice::parse(text) {
        let registry = Registry::global().expect("registry");
        let p = AttentionProblem::new(1, 2, 3, 2, 1, 8, DType::F32);
        match registry.select_choice(&p, &Device::Cpu, &choice, ChoiceSource::CONFIG) {
            Ok(sel) => assert!(registry.get(sel.backend.name()).is_some()),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        let _ = choice.to_string();
    }
    if let Ok(spec) = text.parse::<ShapeSpec>() {
        // What parses prints back to something that parses to the same spec.
        assert_eq!(spec.to_string().parse::<ShapeSpec>().ok(), Some(spec));
        let _ = spec.problem(DType::F16, Mask::Causal).validate();
    }
    if let Ok(mask) = text.parse::<Mask>() {
        assert_eq!(mask.to_string().parse::<Mask>().ok(), Some(mask));
    }
    let _ = text.parse::<DType>();
});
