//! Problem validation over the whole usize range, overflow included: 64
//! bytes become the sizes, the mask, scale and soft-cap. A problem that
//! validates must have byte counts that fit in usize for every tensor, an
//! O(1) FLOP count, and a verdict from every registered CPU backend.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rocmforge::problem::{checked_bytes, Mask};
use rocmforge::{AttentionProblem, DType, Device, Registry};

fn word(data: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    for (j, slot) in b.iter_mut().enumerate() {
        *slot = data.get(i * 8 + j).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

/// Mostly small numbers (so valid problems are common), sometimes any.
fn size(data: &[u8], i: usize) -> usize {
    let w = word(data, i);
    match w & 3 {
        0 => (w >> 2) as usize,
        1 => ((w >> 2) % 5000) as usize,
        _ => ((w >> 2) % 70) as usize,
    }
}

fuzz_target!(|data: &[u8]| {
    let dtype = DType::ALL[(word(data, 6) % 3) as usize];
    let mut p = AttentionProblem::new(
        size(data, 0),
        size(data, 1),
        size(data, 2),
        size(data, 3),
        size(data, 4),
        size(data, 5),
        dtype,
    );
    let m = word(data, 7);
    p.mask = match m % 3 {
        0 => Mask::None,
        1 => Mask::Causal,
        _ => Mask::SlidingWindow { left: size(data, 8), right: size(data, 9) },
    };
    if m & 4 != 0 {
        p.scale = Some(f32::from_bits(word(data, 10) as u32));
    }
    if m & 8 != 0 {
        p.softcap = Some(f32::from_bits((word(data, 10) >> 32) as u32));
    }
    let flops = p.flops();
    assert!(flops >= 0.0);
    if p.validate().is_ok() {
        for shape in [p.q_shape(), p.kv_shape(), p.out_shape()] {
            assert!(checked_bytes(shape, p.dtype).is_some(), "validated {p} but {shape:?} overflows");
        }
        let registry = Registry::global().expect("registry");
        for backend in registry.backends() {
            let _ = Registry::reasons(backend, &p, &Device::Cpu);
        }
        let _ = p.to_string();
    }
});
