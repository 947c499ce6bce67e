//! `flash-decode`: split-KV attention for decode-like problems (seq_q up
//! to 8) over a long KV sequence (`kernels/decode/`). The keys of each
//! (sequence, KV head) are split across blocks sized to the GPU's
//! multiprocessor count; each block writes a partial output with its
//! log-sum-exp and the last block of the row to finish merges them, in the
//! same launch. GQA-aware: one block reads
//! a K/V tile once for every query head of its KV head's group (group ×
//! seq_q rows). Reads dense K/V through strides (a KV cache with capacity >
//! length, in place) and paged K/V (block pool + block table + per-sequence
//! lengths). docs/kernels.md ("Decode") explains the kernel.

pub mod counters;
pub mod launch;
pub mod split;
pub mod tuning;

use crate::backend::{AttentionBackend, BackendError, BackendRegistration, CheckedCall};
use crate::capabilities::{Capabilities, HeadDims, Unsupported};
use crate::device::{Device, DeviceError};
use crate::kernels::KernelSpec;
use crate::problem::{AttentionProblem, MaskKind};
use launch::DecodePointers;

/// Auto priority: above the flash kernels (300), so a decode step (seq_q <=
/// 8) picks this backend and a prefill (longer seq_q, rejected here) falls
/// to flash or gpu-unfused.
pub const FLASH_DECODE_PRIORITY: i32 = 400;

pub struct FlashDecode;

inventory::submit! { BackendRegistration { create: || Box::new(FlashDecode) } }

impl AttentionBackend for FlashDecode {
    fn name(&self) -> &'static str {
        "flash-decode"
    }

    fn priority(&self) -> i32 {
        FLASH_DECODE_PRIORITY
    }

    fn description(&self) -> &'static str {
        "split-KV decode (seq_q <= 8): KV split across blocks merged in one launch, GQA rows packed, paged or strided KV"
    }

    fn capabilities(&self) -> Capabilities {
        let workspace = "f32 partial outputs: splits x batch x q_heads x seq_q x (head_dim + 1)";
        Capabilities {
            max_seq_q: Some(launch::MAX_SEQ_Q),
            ..Capabilities::gpu(HeadDims::List(launch::HEAD_DIMS), &MaskKind::ALL, workspace)
        }
    }

    fn check(&self, p: &AttentionProblem, device: &Device) -> Vec<Unsupported> {
        let mut reasons = self.capabilities().reasons(p, device);
        reasons.extend(launch::layout_reasons(p));
        reasons
    }

    fn kernels(&self) -> Vec<KernelSpec> {
        launch::all_specs()
    }

    fn accepts_paged_kv(&self) -> bool {
        true
    }

    fn run(&self, call: CheckedCall<'_>) -> Result<(), BackendError> {
        let g = call.gpu_pointers(self.name())?;
        let ptr = |v: Option<u64>, tensor| v.ok_or(DeviceError::NotOnGpu { tensor });
        let (block_table, seq_lens) = match call.paged() {
            Some(refs) => (ptr(refs.block_table.gpu_ptr(), "block_table")?, ptr(refs.seq_lens.gpu_ptr(), "seq_lens")?),
            None => (0, 0),
        };
        let ptrs = DecodePointers { q: g.q, k: g.k, v: g.v, o: g.o, block_table, seq_lens };
        launch::launch(&g.gpu, self.name(), call.problem(), ptrs, g.strides)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::problem::{Mask, PagedKv};

    fn wants_gpu_only(r: &[Unsupported]) -> bool {
        r.iter().all(|r| matches!(r, Unsupported::Device { .. }))
    }

    #[test]
    fn takes_decode_shapes_and_rejects_prefill_with_the_reason() {
        let decode = AttentionProblem::new(4, 1, 4096, 32, 8, 128, DType::BF16).with_mask(Mask::Causal);
        assert!(wants_gpu_only(&FlashDecode.check(&decode, &Device::Cpu)));
        let eight = AttentionProblem { seq_q: 8, ..decode.clone() };
        assert!(wants_gpu_only(&FlashDecode.check(&eight, &Device::Cpu)));
        let prefill = AttentionProblem { seq_q: 9, ..decode };
        let reasons = FlashDecode.check(&prefill, &Device::Cpu);
        assert!(reasons.contains(&Unsupported::SeqQ { got: 9, max: 8 }), "{reasons:?}");
    }

    #[test]
    fn paged_block_sizes_and_odd_layouts_are_reasons() {
        let paged = PagedKv { block_size: 8, num_blocks: 64, table_width: 64 };
        let p = AttentionProblem::new(2, 1, 512, 8, 2, 64, DType::F16).with_paged(paged);
        let reasons = FlashDecode.check(&p, &Device::Cpu);
        assert!(reasons.iter().any(|r| matches!(r, Unsupported::BlockSize { got: 8, .. })), "{reasons:?}");
        let ok = p.clone().with_paged(PagedKv { block_size: 16, ..paged });
        assert!(wants_gpu_only(&FlashDecode.check(&ok, &Device::Cpu)));
        let mut s = AttentionProblem::new(1, 1, 64, 4, 2, 64, DType::BF16);
        s.strides.k = Some([64 * 2 * 68, 2 * 68, 68]);
        let reasons = FlashDecode.check(&s, &Device::Cpu);
        assert!(reasons.iter().any(|r| r.to_string().contains("multiples of 8 elements")), "{reasons:?}");
        let odd = AttentionProblem::new(1, 1, 64, 4, 2, 80, DType::BF16);
        assert!(FlashDecode.check(&odd, &Device::Cpu).iter().any(|r| matches!(r, Unsupported::HeadDim { .. })));
    }

    #[test]
    fn one_specialization_per_dtype_and_head_dim_plus_the_wide_ones() {
        let specs = launch::all_specs();
        assert_eq!(specs.len(), 3 * launch::HEAD_DIMS.len() + 2 * launch::WIDE_HEAD_DIMS.len());
        for dtype in DType::ALL {
            for &d in launch::HEAD_DIMS {
                assert!(specs.contains(&launch::split_spec(dtype, d, false)), "{dtype} d={d}");
                assert_eq!(
                    specs.contains(&launch::split_spec(dtype, d, true)),
                    launch::has_wide(dtype, d),
                    "{dtype} d={d}"
                );
            }
        }
        assert!(!launch::has_wide(DType::F32, 128) && launch::has_wide(DType::BF16, 128));
    }
}
