//! `flash-causal` and `flash-noncausal`: the fused FlashAttention-2 style
//! forward (`kernels/flash/fwd.hip`): no seq_q × seq_kv buffer, online
//! softmax, K/V tiles staged in shared memory, f16/bf16 on the matrix units
//! with f32 accumulation, f32 at f32 accuracy (split-TF32 on sm_80+, SIMT
//! elsewhere), native GQA (each query head reads its KV head, no copies),
//! strided Q/K/V/O. One kernel source; two registrations so selection and
//! `explain` name the mask family: `flash-noncausal` takes unmasked
//! problems, `flash-causal` causal and sliding-window ones.
//! docs/kernels.md explains the kernel.

pub mod launch;

use crate::backend::{AttentionBackend, BackendError, BackendRegistration, CheckedCall};
use crate::capabilities::{Capabilities, HeadDims, Unsupported};
use crate::device::Device;
use crate::kernels::KernelSpec;
use crate::problem::{AttentionProblem, MaskKind};
use launch::FlashPointers;

/// Auto priority: above mqa-replicate (200) and gpu-unfused (100).
pub const FLASH_PRIORITY: i32 = 300;

pub struct GpuFlash {
    name: &'static str,
    masks: &'static [MaskKind],
}

/// Unmasked attention.
pub const NONCAUSAL: GpuFlash = GpuFlash { name: "flash-noncausal", masks: &[MaskKind::None] };
/// Causal (bottom-right aligned) and sliding-window attention.
pub const CAUSAL: GpuFlash = GpuFlash { name: "flash-causal", masks: &[MaskKind::Causal, MaskKind::SlidingWindow] };

inventory::submit! { BackendRegistration { create: || Box::new(NONCAUSAL) } }
inventory::submit! { BackendRegistration { create: || Box::new(CAUSAL) } }

impl AttentionBackend for GpuFlash {
    fn name(&self) -> &'static str {
        self.name
    }

    fn priority(&self) -> i32 {
        FLASH_PRIORITY
    }

    fn description(&self) -> &'static str {
        "fused tiled attention (FlashAttention-2 style), tensor cores, native GQA"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::gpu(HeadDims::List(launch::HEAD_DIMS), self.masks, "none")
    }

    fn check(&self, p: &AttentionProblem, device: &Device) -> Vec<Unsupported> {
        let mut reasons = self.capabilities().reasons(p, device);
        reasons.extend(launch::layout_reasons(p));
        reasons
    }

    fn kernels(&self) -> Vec<KernelSpec> {
        launch::all_specs()
    }

    fn run(&self, call: CheckedCall<'_>) -> Result<(), BackendError> {
        let g = call.gpu_pointers(self.name)?;
        let ptrs = FlashPointers { q: g.q, k: g.k, v: g.v, o: g.o, lse: 0 };
        launch::launch(&g.gpu, self.name, call.problem(), ptrs, g.strides)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::problem::Mask;

    #[test]
    fn masks_split_between_the_two_backends() {
        let p = AttentionProblem::new(1, 8, 8, 4, 2, 64, DType::BF16);
        let wants_gpu = |r: &Vec<Unsupported>| r.iter().all(|r| matches!(r, Unsupported::Device { .. }));
        assert!(wants_gpu(&NONCAUSAL.check(&p, &Device::Cpu)));
        assert!(!wants_gpu(&CAUSAL.check(&p, &Device::Cpu)));
        let causal = p.clone().with_mask(Mask::Causal);
        assert!(wants_gpu(&CAUSAL.check(&causal, &Device::Cpu)));
        let window = p.with_mask(Mask::SlidingWindow { left: 3, right: 0 });
        assert!(wants_gpu(&CAUSAL.check(&window, &Device::Cpu)));
    }

    #[test]
    fn odd_head_dims_and_unaligned_strides_are_rejected_with_reasons() {
        let p = AttentionProblem::new(1, 8, 8, 4, 2, 80, DType::BF16);
        let reasons = NONCAUSAL.check(&p, &Device::Cpu);
        assert!(reasons.iter().any(|r| matches!(r, Unsupported::HeadDim { got: 80, .. })), "{reasons:?}");
        let mut s = AttentionProblem::new(1, 8, 8, 4, 2, 64, DType::BF16);
        s.strides.k = Some([8 * 2 * 68, 2 * 68, 68]);
        let reasons = NONCAUSAL.check(&s, &Device::Cpu);
        assert!(reasons.iter().any(|r| r.to_string().contains("multiples of 8 elements")), "{reasons:?}");
    }

    #[test]
    fn every_head_dim_and_dtype_has_a_specialization() {
        let specs = launch::all_specs();
        // Every (dtype, head dim) with the kernel's default f32 mode, plus
        // the one explicit SIMT variant.
        assert_eq!(specs.len(), launch::HEAD_DIMS.len() * DType::ALL.len() + 1);
        assert!(specs.contains(&launch::spec(DType::F32, 128, Some(launch::F32Mode::Simt))));
        for &d in launch::HEAD_DIMS {
            for dtype in DType::ALL {
                assert!(specs.contains(&launch::spec(dtype, d, None)), "{dtype} d={d}");
            }
        }
    }
}
