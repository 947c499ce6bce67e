use super::*;
use crate::backend::{BackendError, CheckedCall};
use crate::capabilities::{Capabilities, HeadDims};
use crate::device::DeviceKind;
use crate::dtype::DType;
use crate::problem::{Mask, MaskKind};
use crate::registry::BackendChoice;

/// A backend that only declares capabilities; selection never runs it.
struct Declared {
    name: &'static str,
    priority: i32,
    max_seq_q: Option<usize>,
    max_seq_kv: Option<usize>,
}

impl AttentionBackend for Declared {
    fn name(&self) -> &'static str {
        self.name
    }
    fn priority(&self) -> i32 {
        self.priority
    }
    fn description(&self) -> &'static str {
        "test double"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            device: DeviceKind::Cpu,
            dtypes: &DType::ALL,
            head_dims: HeadDims::Range { min: 1, max: usize::MAX },
            max_seq_q: self.max_seq_q,
            max_seq_kv: self.max_seq_kv,
            masks: &MaskKind::ALL,
            max_group_size: None,
            softcap: true,
            strided: true,
            matrix_units: None,
            deterministic: true,
            workspace: "none",
        }
    }
    fn run(&self, _: CheckedCall<'_>) -> Result<(), BackendError> {
        unreachable!("selection tests never run a backend")
    }
}

/// decode-only (seq_q <= 8, seq_kv <= 64) beats general, which beats fallback.
fn registry() -> &'static Registry {
    let backends: Vec<Box<dyn AttentionBackend>> = vec![
        Box::new(Declared { name: "decode-only", priority: 30, max_seq_q: Some(8), max_seq_kv: Some(64) }),
        Box::new(Declared { name: "general", priority: 20, max_seq_q: None, max_seq_kv: None }),
        Box::new(Declared { name: "fallback", priority: 0, max_seq_q: None, max_seq_kv: None }),
    ];
    Box::leak(Box::new(Registry::from_backends(backends).unwrap()))
}

fn problem(seq_q: usize, seq_kv: usize) -> AttentionProblem {
    AttentionProblem::new(1, seq_q, seq_kv, 4, 2, 16, DType::F32).with_mask(Mask::Causal)
}

fn auto() -> AttentionConfig {
    AttentionConfig::with_backend(BackendChoice::Auto)
}

#[test]
fn prefill_and_decode_are_chosen_and_cached_separately() {
    let mut d = Dispatcher::with_registry(3, registry(), auto(), Device::Cpu);
    assert_eq!(d.backend_for(&problem(16, 16)).unwrap().name(), "general");
    assert_eq!(d.backend_for(&problem(1, 17)).unwrap().name(), "decode-only");
    for kv in 18..30 {
        assert_eq!(d.backend_for(&problem(1, kv)).unwrap().name(), "decode-only");
    }
    let choices = d.choices();
    assert_eq!(choices[&ShapeClass::Prefill].backend, "general");
    assert_eq!(choices[&ShapeClass::Decode].calls, 13);
    assert!(choices[&ShapeClass::Decode].reason.contains("decode"), "{}", choices[&ShapeClass::Decode].reason);
    assert!(choices[&ShapeClass::Prefill].reason.contains("prefill"), "{}", choices[&ShapeClass::Prefill].reason);
}

#[test]
fn a_cached_choice_that_stops_fitting_is_replaced_and_says_why() {
    let mut d = Dispatcher::with_registry(0, registry(), auto(), Device::Cpu);
    assert_eq!(d.backend_for(&problem(1, 64)).unwrap().name(), "decode-only");
    // The cache grew past decode-only's seq_kv limit.
    assert_eq!(d.backend_for(&problem(1, 65)).unwrap().name(), "general");
    let c = &d.choices()[&ShapeClass::Decode];
    assert_eq!((c.backend, c.calls), ("general", 1));
    assert!(c.reason.contains("replaced decode-only"), "{}", c.reason);
}

#[test]
fn forced_choice_is_obeyed_or_fails_with_every_reason() {
    let forced = AttentionConfig::with_backend(BackendChoice::Prefer(vec!["decode-only".into()]));
    let mut d = Dispatcher::with_registry(5, registry(), forced, Device::Cpu);
    assert_eq!(d.backend_for(&problem(2, 10)).unwrap().name(), "decode-only");
    assert!(d.choices()[&ShapeClass::Prefill].reason.contains("requested by config"));
    let err = d.backend_for(&problem(16, 100)).err().expect("decode-only cannot run this");
    let text = err.to_string();
    assert!(matches!(err, ModelError::Select { layer: 5, .. }), "{text}");
    assert!(text.contains("seq_q 16 exceeds 8") && text.contains("seq_kv 100 exceeds 64"), "{text}");
}
