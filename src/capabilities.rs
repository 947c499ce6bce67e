//! What a backend can run, and the typed reasons it cannot run a problem.
//! The same data drives `check`, `explain` and the generated docs matrix.

use crate::device::{Device, DeviceKind, MatrixUnit};
use crate::dtype::DType;
use crate::problem::{AttentionProblem, MaskKind, ProblemError, TensorRole};
use std::fmt;

/// Head dimensions a backend accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadDims {
    /// Every head_dim from `min` to `max` inclusive.
    Range { min: usize, max: usize },
    /// Only the listed values.
    List(&'static [usize]),
}

impl HeadDims {
    pub fn contains(&self, d: usize) -> bool {
        match *self {
            HeadDims::Range { min, max } => (min..=max).contains(&d),
            HeadDims::List(list) => list.contains(&d),
        }
    }
}

impl fmt::Display for HeadDims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadDims::Range { min, max } if *max == usize::MAX => write!(f, ">= {min}"),
            HeadDims::Range { min, max } => write!(f, "{min}..={max}"),
            HeadDims::List(list) => write!(f, "{{{}}}", join(list.iter())),
        }
    }
}

/// Everything a backend declares about itself.
#[derive(Clone, Debug, PartialEq)]
pub struct Capabilities {
    pub device: DeviceKind,
    pub dtypes: &'static [DType],
    pub head_dims: HeadDims,
    pub max_seq_q: Option<usize>,
    pub max_seq_kv: Option<usize>,
    pub masks: &'static [MaskKind],
    /// Largest num_q_heads / num_kv_heads; `None` means any.
    pub max_group_size: Option<usize>,
    pub softcap: bool,
    /// Accepts tensors with non-contiguous batch/seq/head strides.
    pub strided: bool,
    /// GPU matrix units it runs on (`None` = any, including none); ignored on the CPU.
    pub matrix_units: Option<&'static [MatrixUnit]>,
    /// Same inputs give bit-identical outputs run after run.
    pub deterministic: bool,
    /// Extra device memory, in words for the docs ("none", "O(tile) per thread").
    pub workspace: &'static str,
}

impl Capabilities {
    /// What the GPU backends share: every dtype, any sequence length and
    /// GQA group, soft-cap, strided tensors, any matrix unit,
    /// deterministic. Each backend names its head dims, masks and
    /// workspace, and overrides the rest where it differs.
    pub fn gpu(head_dims: HeadDims, masks: &'static [MaskKind], workspace: &'static str) -> Capabilities {
        Capabilities::on(DeviceKind::Gpu, head_dims, masks, workspace)
    }

    /// A CPU backend without limits: every dtype, head dim, mask, length and
    /// GQA group, soft-cap, strided tensors, deterministic.
    pub fn cpu_unlimited(workspace: &'static str) -> Capabilities {
        Capabilities::on(DeviceKind::Cpu, HeadDims::Range { min: 1, max: usize::MAX }, &MaskKind::ALL, workspace)
    }

    fn on(
        device: DeviceKind,
        head_dims: HeadDims,
        masks: &'static [MaskKind],
        workspace: &'static str,
    ) -> Capabilities {
        Capabilities {
            device,
            dtypes: &DType::ALL,
            head_dims,
            max_seq_q: None,
            max_seq_kv: None,
            masks,
            max_group_size: None,
            softcap: true,
            strided: true,
            matrix_units: None,
            deterministic: true,
            workspace,
        }
    }

    /// Every reason this capability set rejects `p` on `device` (empty = fits).
    pub fn reasons(&self, p: &AttentionProblem, device: &Device) -> Vec<Unsupported> {
        let mut out = Vec::new();
        if device.kind() != self.device {
            out.push(Unsupported::Device { needs: self.device, got: device.kind() });
        }
        if !self.dtypes.contains(&p.dtype) {
            out.push(Unsupported::DType { got: p.dtype, supported: self.dtypes });
        }
        if !self.head_dims.contains(p.head_dim) {
            out.push(Unsupported::HeadDim { got: p.head_dim, supported: self.head_dims });
        }
        if let Some(max) = self.max_seq_q.filter(|&m| p.seq_q > m) {
            out.push(Unsupported::SeqQ { got: p.seq_q, max });
        }
        if let Some(max) = self.max_seq_kv.filter(|&m| p.seq_kv > m) {
            out.push(Unsupported::SeqKv { got: p.seq_kv, max });
        }
        if !self.masks.contains(&p.mask.kind()) {
            out.push(Unsupported::Mask { got: p.mask.kind(), supported: self.masks });
        }
        if let Some(max) = self.max_group_size.filter(|&m| p.group_size() > m) {
            out.push(Unsupported::GroupSize { got: p.group_size(), max });
        }
        if p.softcap.is_some() && !self.softcap {
            out.push(Unsupported::Softcap);
        }
        if !self.strided {
            out.extend(p.strided_tensors().into_iter().map(|tensor| Unsupported::Layout { tensor }));
        }
        if let (Some(units), Device::Gpu(g)) = (self.matrix_units, device) {
            let unit = g.arch().matrix_unit();
            if !units.contains(&unit) {
                out.push(Unsupported::MatrixUnit { arch: g.arch().to_string(), got: unit, supported: units });
            }
        }
        out
    }
}

/// Why a backend cannot run a problem. `Display` gives the human sentence
/// used by `explain`, by errors and by logs.
#[derive(Clone, Debug, PartialEq)]
pub enum Unsupported {
    Device {
        needs: DeviceKind,
        got: DeviceKind,
    },
    DType {
        got: DType,
        supported: &'static [DType],
    },
    HeadDim {
        got: usize,
        supported: HeadDims,
    },
    SeqQ {
        got: usize,
        max: usize,
    },
    SeqKv {
        got: usize,
        max: usize,
    },
    Mask {
        got: MaskKind,
        supported: &'static [MaskKind],
    },
    GroupSize {
        got: usize,
        max: usize,
    },
    Softcap,
    /// Needs a contiguous `tensor`, the problem gives it strides.
    Layout {
        tensor: TensorRole,
    },
    /// A stride of `tensor` is not a multiple of the kernel's vector width.
    StrideMultiple {
        tensor: TensorRole,
        multiple: usize,
    },
    /// A tensor's first element is not 16-byte aligned (a call-time fact).
    Misaligned {
        tensor: &'static str,
        address: u64,
    },
    /// The GPU's matrix unit is not one the backend has kernels for.
    MatrixUnit {
        arch: String,
        got: MatrixUnit,
        supported: &'static [MatrixUnit],
    },
    /// Scratch memory over the backend's cap (`needed: None` = over usize).
    Workspace {
        what: &'static str,
        needed: Option<usize>,
        cap: usize,
    },
    /// A size over what the kernels or libraries can index.
    IndexRange {
        what: &'static str,
        value: usize,
        max: usize,
    },
    /// K/V come as blocks of a pool (a paged cache) and the backend reads
    /// only dense K/V tensors.
    PagedKv,
    /// The paged pool's block size is not one the kernels are built for.
    BlockSize {
        got: usize,
        supported: &'static [usize],
    },
    /// A GPU backend was asked for and no GPU can be opened.
    NoGpu {
        why: String,
    },
    /// An environment variable that configures the backend has a value it
    /// cannot use (the backend refuses rather than guess).
    Environment {
        var: &'static str,
        problem: String,
    },
    /// The problem is invalid, so no backend can take it.
    InvalidProblem(ProblemError),
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsupported::Device { needs, got } => write!(f, "runs on {needs}, problem is on {got}"),
            Unsupported::DType { got, supported } => write!(f, "dtype {got} not in {{{}}}", join(supported.iter())),
            Unsupported::HeadDim { got, supported } => write!(f, "head_dim {got} not in {supported}"),
            Unsupported::SeqQ { got, max } => write!(f, "seq_q {got} exceeds {max}"),
            Unsupported::SeqKv { got, max } => write!(f, "seq_kv {got} exceeds {max}"),
            Unsupported::Mask { got, supported } => write!(f, "mask {got} not in {{{}}}", join(supported.iter())),
            Unsupported::GroupSize { got, max } => write!(f, "q/kv head ratio {got} exceeds {max}"),
            Unsupported::Softcap => f.write_str("logit soft-cap not supported"),
            Unsupported::Layout { tensor } => write!(f, "needs contiguous {tensor}"),
            Unsupported::StrideMultiple { tensor, multiple } => {
                write!(f, "{tensor} strides must be multiples of {multiple} elements (16-byte vector loads)")
            }
            Unsupported::Misaligned { tensor, address } => {
                write!(f, "{tensor} starts at 0x{address:x}, not 16-byte aligned")
            }
            Unsupported::MatrixUnit { arch, got, supported } => {
                write!(f, "{arch} has matrix unit {got}, kernels exist for {{{}}}", join(supported.iter()))
            }
            Unsupported::Workspace { what, needed: Some(n), cap } => {
                write!(f, "{what} need {n} bytes, over the workspace cap of {cap} bytes")
            }
            Unsupported::Workspace { what, needed: None, cap } => {
                write!(f, "{what} need more than usize::MAX bytes, over the workspace cap of {cap} bytes")
            }
            Unsupported::IndexRange { what, value, max } => write!(f, "{what} {value} exceeds the index limit {max}"),
            Unsupported::PagedKv => f.write_str("reads dense K/V only, not blocks of a paged pool"),
            Unsupported::BlockSize { got, supported } => {
                write!(f, "paged block size {got} not in {{{}}}", join(supported.iter()))
            }
            Unsupported::NoGpu { why } => write!(f, "needs a GPU: {why}"),
            Unsupported::Environment { var, problem } => write!(f, "{var}: {problem}"),
            Unsupported::InvalidProblem(why) => write!(f, "invalid problem: {why}"),
        }
    }
}

pub(crate) fn join<T: fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::Mask;

    const CAPS: Capabilities = Capabilities {
        device: DeviceKind::Cpu,
        dtypes: &[DType::F32],
        head_dims: HeadDims::List(&[64, 128]),
        max_seq_q: Some(16),
        max_seq_kv: None,
        masks: &[MaskKind::None],
        max_group_size: Some(1),
        softcap: false,
        strided: false,
        matrix_units: None,
        deterministic: true,
        workspace: "none",
    };

    #[test]
    fn every_reason_is_listed() {
        let mut p = AttentionProblem::new(1, 32, 32, 4, 2, 96, DType::BF16).with_mask(Mask::Causal);
        p.softcap = Some(30.0);
        let reasons: Vec<String> = CAPS.reasons(&p, &Device::Cpu).iter().map(|r| r.to_string()).collect();
        assert_eq!(
            reasons,
            [
                "dtype bf16 not in {f32}",
                "head_dim 96 not in {64, 128}",
                "seq_q 32 exceeds 16",
                "mask causal not in {none}",
                "q/kv head ratio 2 exceeds 1",
                "logit soft-cap not supported",
            ]
        );
    }

    #[test]
    fn fitting_problem_has_no_reasons() {
        let p = AttentionProblem::new(1, 8, 32, 4, 4, 64, DType::F32);
        assert!(CAPS.reasons(&p, &Device::Cpu).is_empty());
    }
}
