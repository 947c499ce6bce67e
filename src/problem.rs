//! The attention problem: shapes, mask, scale, soft-cap, and the one
//! validation function that every entry point goes through.

use crate::dtype::DType;
use crate::tensor::{contiguous_strides, Layout, Strides};
use std::fmt;

/// Which keys a query may attend to. Positions are aligned bottom-right: query
/// `i` of `seq_q` sits at key position `i + seq_kv - seq_q`, so a decode step
/// (seq_q = 1) sees the whole cache and chunked prefill stays causal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mask {
    None,
    Causal,
    /// Keys in `[pos - left, pos + right]` around the aligned position `pos`.
    SlidingWindow {
        left: usize,
        right: usize,
    },
}

/// The mask family without its parameters, used in capability lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MaskKind {
    None,
    Causal,
    SlidingWindow,
}

impl MaskKind {
    pub const ALL: [MaskKind; 3] = [MaskKind::None, MaskKind::Causal, MaskKind::SlidingWindow];
}

impl fmt::Display for MaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MaskKind::None => "none",
            MaskKind::Causal => "causal",
            MaskKind::SlidingWindow => "window",
        })
    }
}

impl Mask {
    pub fn kind(&self) -> MaskKind {
        match self {
            Mask::None => MaskKind::None,
            Mask::Causal => MaskKind::Causal,
            Mask::SlidingWindow { .. } => MaskKind::SlidingWindow,
        }
    }

    /// Half-open range of keys that query `i` may see. Empty (`start >= end`)
    /// when the row is fully masked; such rows produce zeros.
    pub fn key_range(&self, i: usize, seq_q: usize, seq_kv: usize) -> (usize, usize) {
        let pos = i as i64 + seq_kv as i64 - seq_q as i64;
        let (lo, hi) = match *self {
            Mask::None => return (0, seq_kv),
            Mask::Causal => (0, pos + 1),
            Mask::SlidingWindow { left, right } => (pos - left as i64, pos + right as i64 + 1),
        };
        let clamp = |x: i64| x.clamp(0, seq_kv as i64) as usize;
        (clamp(lo), clamp(hi))
    }
}

impl fmt::Display for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mask::None => f.write_str("none"),
            Mask::Causal => f.write_str("causal"),
            Mask::SlidingWindow { left, right } => write!(f, "window:{left},{right}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad mask '{input}': {why} (expected none, causal or window:LEFT,RIGHT)")]
pub struct MaskParseError {
    pub input: String,
    pub why: &'static str,
}

impl std::str::FromStr for Mask {
    type Err = MaskParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| MaskParseError { input: s.to_string(), why };
        match s {
            "none" => Ok(Mask::None),
            "causal" => Ok(Mask::Causal),
            _ => {
                let rest = s.strip_prefix("window:").ok_or_else(|| err("unknown mask"))?;
                let (l, r) = rest.split_once(',').ok_or_else(|| err("window needs two numbers"))?;
                let left = l.trim().parse().map_err(|_| err("window left is not a non-negative integer"))?;
                let right = r.trim().parse().map_err(|_| err("window right is not a non-negative integer"))?;
                Ok(Mask::SlidingWindow { left, right })
            }
        }
    }
}

/// The four tensors of a call, for strides and messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorRole {
    Q,
    K,
    V,
    Out,
}

impl TensorRole {
    pub const ALL: [TensorRole; 4] = [TensorRole::Q, TensorRole::K, TensorRole::V, TensorRole::Out];

    pub fn name(self) -> &'static str {
        match self {
            TensorRole::Q => "q",
            TensorRole::K => "k",
            TensorRole::V => "v",
            TensorRole::Out => "out",
        }
    }
}

impl fmt::Display for TensorRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Batch/seq/head strides (elements) of tensors that are not contiguous;
/// `None` means contiguous. Part of the problem so that capabilities can
/// reject a layout ("needs contiguous k") before any tensor exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TensorStrides {
    pub q: Option<Strides>,
    pub k: Option<Strides>,
    pub v: Option<Strides>,
    pub out: Option<Strides>,
}

impl TensorStrides {
    pub fn get(&self, role: TensorRole) -> Option<Strides> {
        match role {
            TensorRole::Q => self.q,
            TensorRole::K => self.k,
            TensorRole::V => self.v,
            TensorRole::Out => self.out,
        }
    }

    pub fn set(&mut self, role: TensorRole, strides: Option<Strides>) {
        match role {
            TensorRole::Q => self.q = strides,
            TensorRole::K => self.k = strides,
            TensorRole::V => self.v = strides,
            TensorRole::Out => self.out = strides,
        }
    }
}

/// K and V stored as blocks of a pool (a paged KV cache) instead of one
/// `[batch, seq_kv, kv_heads, head_dim]` tensor each. K and V are then pools
/// of shape `[num_blocks, block_size, kv_heads, head_dim]` (strides as usual:
/// the "batch" stride is one block). Position `j` of sequence `b` lives in
/// block `block_table[b][j / block_size]` at row `j % block_size`, and each
/// sequence has its own length `seq_lens[b] <= seq_kv`: masks align
/// bottom-right to that length (query `i` sits at key position
/// `i + seq_lens[b] - seq_q`). The block table (`[batch, table_width]`) and
/// the lengths (`[batch]`), 32-bit integers, travel with the call
/// ([`crate::backend::PagedKvRefs`]); only backends that declare
/// `accepts_paged_kv` take such problems.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PagedKv {
    /// Rows per block.
    pub block_size: usize,
    /// Blocks in the K (and V) pool.
    pub num_blocks: usize,
    /// Entries per sequence in the block table; `table_width * block_size`
    /// must cover `seq_kv`.
    pub table_width: usize,
}

impl PagedKv {
    /// Shape of the K and V pools.
    pub fn pool_shape(&self, num_kv_heads: usize, head_dim: usize) -> [usize; 4] {
        [self.num_blocks, self.block_size, num_kv_heads, head_dim]
    }
}

/// One scaled-dot-product attention call. Tensors are `[batch, seq, heads,
/// head_dim]`, contiguous unless `strides` says otherwise; with `paged`, K and
/// V are block pools instead (see [`PagedKv`]).
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionProblem {
    pub batch: usize,
    pub seq_q: usize,
    pub seq_kv: usize,
    pub num_q_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub dtype: DType,
    pub mask: Mask,
    /// `None` means `1 / sqrt(head_dim)`.
    pub scale: Option<f32>,
    /// Logits become `cap * tanh(logit / cap)` before masking.
    pub softcap: Option<f32>,
    /// Non-contiguous tensor strides (default: all contiguous).
    pub strides: TensorStrides,
    /// K and V as blocks of a pool with per-sequence lengths (default: `None`,
    /// one dense tensor each, every sequence `seq_kv` long).
    pub paged: Option<PagedKv>,
}

/// Largest window offset accepted; kernels index keys with 32-bit integers.
pub const MAX_WINDOW: usize = i32::MAX as usize;

/// Validation failures, each naming the field and what was expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProblemError {
    #[error("{field} must be at least 1, got 0")]
    Zero { field: &'static str },
    #[error("num_q_heads ({q}) must be a multiple of num_kv_heads ({kv})")]
    HeadRatio { q: usize, kv: usize },
    #[error("tensor {tensor} would hold more than usize::MAX bytes ({shape:?}, {dtype})")]
    Overflow { tensor: &'static str, shape: [usize; 4], dtype: DType },
    #[error("scale must be finite and greater than 0, got {0}")]
    Scale(f32),
    #[error("softcap must be finite and greater than 0, got {0}")]
    Softcap(f32),
    #[error("mask window {side} = {value} exceeds the limit {MAX_WINDOW}")]
    Window { side: &'static str, value: usize },
    #[error("tensor {tensor}: shape {got:?} does not match the expected {expected:?} ([batch, seq, heads, head_dim])")]
    Shape { tensor: &'static str, got: [usize; 4], expected: [usize; 4] },
    #[error("tensor {tensor}: dtype {got} does not match the problem's dtype {expected}")]
    DType { tensor: &'static str, got: DType, expected: DType },
    #[error("tensors {a} and {b} live on different devices ({a_dev} vs {b_dev})")]
    MixedDevices { a: &'static str, b: &'static str, a_dev: String, b_dev: String },
    #[error(
        "tensor {tensor}: strides {got:?} do not match the problem's {expected:?} (batch, seq, head; in elements)"
    )]
    Strides { tensor: &'static str, got: Strides, expected: Strides },
    #[error("tensor out: strides {strides:?} address some elements twice for shape {shape:?}")]
    OverlappingOut { strides: Strides, shape: [usize; 4] },
    #[error("paged K/V: {field} must be at least 1, got 0")]
    PagedZero { field: &'static str },
    #[error("paged K/V: table_width {table_width} x block_size {block_size} cannot hold seq_kv {seq_kv} positions")]
    PagedTable { table_width: usize, block_size: usize, seq_kv: usize },
    #[error("paged K/V: {what} holds {got} entries, the problem needs {expected}")]
    PagedIndexLen { what: &'static str, got: usize, expected: usize },
    #[error("paged K/V: {what}[{index}] = {value} is outside 0..={max}")]
    PagedIndexValue { what: &'static str, index: usize, value: i64, max: usize },
    #[error("the problem has paged K/V: call forward_paged with the block table and the sequence lengths")]
    MissingPagedRefs,
    #[error("a block table and sequence lengths were given for a problem without paged K/V")]
    UnexpectedPagedRefs,
}

impl AttentionProblem {
    /// A problem with the default scale, no soft-cap and no mask.
    pub fn new(
        batch: usize,
        seq_q: usize,
        seq_kv: usize,
        num_q_heads: usize,
        num_kv_heads: usize,
        head_dim: usize,
        dtype: DType,
    ) -> Self {
        AttentionProblem {
            batch,
            seq_q,
            seq_kv,
            num_q_heads,
            num_kv_heads,
            head_dim,
            dtype,
            mask: Mask::None,
            scale: None,
            softcap: None,
            strides: TensorStrides::default(),
            paged: None,
        }
    }

    /// The same problem with K and V in a paged pool (see [`PagedKv`]).
    pub fn with_paged(mut self, paged: PagedKv) -> Self {
        self.paged = Some(paged);
        self
    }

    pub fn with_mask(mut self, mask: Mask) -> Self {
        self.mask = mask;
        self
    }

    pub fn effective_scale(&self) -> f32 {
        self.scale.unwrap_or(1.0 / (self.head_dim as f32).sqrt())
    }

    /// Query heads that share one key/value head.
    pub fn group_size(&self) -> usize {
        self.num_q_heads / self.num_kv_heads.max(1)
    }

    pub fn q_shape(&self) -> [usize; 4] {
        [self.batch, self.seq_q, self.num_q_heads, self.head_dim]
    }

    /// Shape of K and V: `[batch, seq_kv, kv_heads, head_dim]`, or the pool
    /// `[num_blocks, block_size, kv_heads, head_dim]` when paged.
    pub fn kv_shape(&self) -> [usize; 4] {
        match self.paged {
            Some(paged) => paged.pool_shape(self.num_kv_heads, self.head_dim),
            None => [self.batch, self.seq_kv, self.num_kv_heads, self.head_dim],
        }
    }

    pub fn out_shape(&self) -> [usize; 4] {
        self.q_shape()
    }

    pub fn shape_of(&self, role: TensorRole) -> [usize; 4] {
        match role {
            TensorRole::Q | TensorRole::Out => self.q_shape(),
            TensorRole::K | TensorRole::V => self.kv_shape(),
        }
    }

    /// The strides `role`'s tensor must have (contiguous unless set).
    pub fn strides_of(&self, role: TensorRole) -> Strides {
        self.strides.get(role).unwrap_or_else(|| contiguous_strides(self.shape_of(role)))
    }

    /// Shape and strides of `role`'s tensor, offset 0.
    pub fn layout_of(&self, role: TensorRole) -> Layout {
        Layout { shape: self.shape_of(role), strides: self.strides_of(role), offset: 0 }
    }

    /// The tensors whose strides differ from contiguous.
    pub fn strided_tensors(&self) -> Vec<TensorRole> {
        TensorRole::ALL.into_iter().filter(|&r| !self.layout_of(r).is_contiguous()).collect()
    }

    /// Checks every field; the error names the first field that is wrong.
    pub fn validate(&self) -> Result<(), ProblemError> {
        for (field, value) in [
            ("batch", self.batch),
            ("seq_q", self.seq_q),
            ("seq_kv", self.seq_kv),
            ("num_q_heads", self.num_q_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
        ] {
            if value == 0 {
                return Err(ProblemError::Zero { field });
            }
        }
        if !self.num_q_heads.is_multiple_of(self.num_kv_heads) {
            return Err(ProblemError::HeadRatio { q: self.num_q_heads, kv: self.num_kv_heads });
        }
        for role in TensorRole::ALL {
            let (tensor, shape) = (role.name(), self.shape_of(role));
            let end = self.layout_of(role).end();
            if checked_bytes(shape, self.dtype).is_none()
                || end.and_then(|e| checked_bytes([e, 1, 1, 1], self.dtype)).is_none()
            {
                return Err(ProblemError::Overflow { tensor, shape, dtype: self.dtype });
            }
        }
        let out = self.layout_of(TensorRole::Out);
        if !out.is_non_overlapping() {
            return Err(ProblemError::OverlappingOut { strides: out.strides, shape: out.shape });
        }
        if let Some(s) = self.scale {
            if !(s.is_finite() && s > 0.0) {
                return Err(ProblemError::Scale(s));
            }
        }
        if let Some(c) = self.softcap {
            if !(c.is_finite() && c > 0.0) {
                return Err(ProblemError::Softcap(c));
            }
        }
        if let Mask::SlidingWindow { left, right } = self.mask {
            for (side, value) in [("left", left), ("right", right)] {
                if value > MAX_WINDOW {
                    return Err(ProblemError::Window { side, value });
                }
            }
        }
        if let Some(paged) = self.paged {
            validate_paged(&paged, self.seq_kv)?;
        }
        Ok(())
    }

    /// Floating-point operations of the two matrix products, counting only
    /// the (query, key) pairs the mask lets through: 4 * d per pair
    /// (2 for QK^T, 2 for PV) over every batch and query head. For a causal
    /// square problem this is 4·b·h·d·s(s+1)/2, about half the dense count.
    pub fn flops(&self) -> f64 {
        let pairs = crate::mask_count::unmasked_pairs(self.mask, self.seq_q, self.seq_kv);
        4.0 * self.batch as f64 * self.num_q_heads as f64 * self.head_dim as f64 * pairs as f64
    }
}

fn validate_paged(paged: &PagedKv, seq_kv: usize) -> Result<(), ProblemError> {
    for (field, value) in
        [("block_size", paged.block_size), ("num_blocks", paged.num_blocks), ("table_width", paged.table_width)]
    {
        if value == 0 {
            return Err(ProblemError::PagedZero { field });
        }
    }
    if paged.table_width.checked_mul(paged.block_size).is_none_or(|n| n < seq_kv) {
        return Err(ProblemError::PagedTable { table_width: paged.table_width, block_size: paged.block_size, seq_kv });
    }
    Ok(())
}

/// Bytes held by a tensor of this shape, or `None` on overflow.
pub fn checked_bytes(shape: [usize; 4], dtype: DType) -> Option<usize> {
    shape.iter().try_fold(dtype.size_in_bytes(), |acc, &d| acc.checked_mul(d))
}

impl fmt::Display for AttentionProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "batch={} seq_q={} seq_kv={} heads={}/{} head_dim={} {} mask={}",
            self.batch,
            self.seq_q,
            self.seq_kv,
            self.num_q_heads,
            self.num_kv_heads,
            self.head_dim,
            self.dtype,
            self.mask
        )?;
        if let Some(s) = self.scale {
            write!(f, " scale={s}")?;
        }
        if let Some(c) = self.softcap {
            write!(f, " softcap={c}")?;
        }
        for role in self.strided_tensors() {
            write!(f, " {role}_strides={:?}", self.strides_of(role))?;
        }
        if let Some(p) = self.paged {
            write!(f, " paged={}x{} table_width={}", p.num_blocks, p.block_size, p.table_width)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> AttentionProblem {
        AttentionProblem::new(2, 4, 6, 8, 2, 16, DType::F32)
    }

    #[test]
    fn zero_sizes_name_the_field() {
        let mut p = base();
        p.seq_kv = 0;
        assert_eq!(p.validate(), Err(ProblemError::Zero { field: "seq_kv" }));
        let mut p = base();
        p.head_dim = 0;
        assert!(p.validate().unwrap_err().to_string().contains("head_dim"));
    }

    #[test]
    fn head_ratio_must_divide() {
        let mut p = base();
        p.num_kv_heads = 3;
        assert_eq!(p.validate(), Err(ProblemError::HeadRatio { q: 8, kv: 3 }));
    }

    #[test]
    fn overflow_is_caught() {
        let mut p = base();
        p.batch = usize::MAX / 2;
        assert!(matches!(p.validate(), Err(ProblemError::Overflow { tensor: "q", .. })));
    }

    #[test]
    fn bad_scale_softcap_window() {
        let mut p = base();
        p.scale = Some(f32::NAN);
        assert!(matches!(p.validate(), Err(ProblemError::Scale(_))));
        let mut p = base();
        p.softcap = Some(-1.0);
        assert!(matches!(p.validate(), Err(ProblemError::Softcap(_))));
        let p = base().with_mask(Mask::SlidingWindow { left: MAX_WINDOW + 1, right: 0 });
        assert_eq!(p.validate(), Err(ProblemError::Window { side: "left", value: MAX_WINDOW + 1 }));
    }

    #[test]
    fn causal_is_bottom_right_aligned() {
        // seq_q 2, seq_kv 5: query 0 sits at position 3, query 1 at 4.
        assert_eq!(Mask::Causal.key_range(0, 2, 5), (0, 4));
        assert_eq!(Mask::Causal.key_range(1, 2, 5), (0, 5));
        // More queries than keys: the first rows see nothing.
        assert_eq!(Mask::Causal.key_range(0, 5, 2), (0, 0));
        let w = Mask::SlidingWindow { left: 1, right: 1 };
        assert_eq!(w.key_range(0, 3, 3), (0, 2));
        assert_eq!(w.key_range(2, 3, 3), (1, 3));
    }

    #[test]
    fn mask_parsing() {
        assert_eq!("causal".parse::<Mask>(), Ok(Mask::Causal));
        assert_eq!("window:4,0".parse::<Mask>(), Ok(Mask::SlidingWindow { left: 4, right: 0 }));
        assert!("window:4".parse::<Mask>().is_err());
        assert!("window:-1,2".parse::<Mask>().is_err());
        assert!("diagonal".parse::<Mask>().is_err());
    }

    #[test]
    fn paged_kv_is_validated_and_shapes_the_pools() {
        let paged = PagedKv { block_size: 16, num_blocks: 9, table_width: 4 };
        let p = AttentionProblem::new(2, 1, 64, 8, 2, 32, DType::BF16).with_paged(paged);
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(p.kv_shape(), [9, 16, 2, 32]);
        assert_eq!(p.q_shape(), [2, 1, 8, 32]);
        assert!(p.to_string().contains("paged=9x16 table_width=4"), "{p}");
        let short = AttentionProblem { seq_kv: 65, ..p.clone() };
        assert!(matches!(short.validate(), Err(ProblemError::PagedTable { seq_kv: 65, .. })));
        let zero = p.clone().with_paged(PagedKv { num_blocks: 0, ..paged });
        assert_eq!(zero.validate(), Err(ProblemError::PagedZero { field: "num_blocks" }));
    }

    #[test]
    fn flops_halve_for_causal() {
        let p = AttentionProblem::new(1, 4, 4, 1, 1, 8, DType::F32);
        assert_eq!(p.flops(), 4.0 * 8.0 * 16.0);
        assert_eq!(p.clone().with_mask(Mask::Causal).flops(), 4.0 * 8.0 * 10.0);
    }
}
