//! Problem flags shared by `explain` and `run`.

use super::CliError;
use rocmforge::dtype::DType;
use rocmforge::io::HostTensor;
use rocmforge::problem::{AttentionProblem, Mask};

/// Defaults: the Llama-like problem (batch 1, 32 q heads, 8 kv heads,
/// seq 1024, head_dim 128, causal, f32).
pub const DEFAULT_BATCH: usize = 1;
pub const DEFAULT_HEADS: usize = 32;
pub const DEFAULT_KV_HEADS: usize = 8;
pub const DEFAULT_SEQ: usize = 1024;
pub const DEFAULT_HEAD_DIM: usize = 128;

/// The attention problem's shape, mask, scale and soft-cap.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ShapeArgs {
    /// Batch size [default: 1].
    #[arg(long, value_name = "N")]
    pub batch: Option<usize>,
    /// Query sequence length [default: 1024].
    #[arg(long, value_name = "N")]
    pub seq_q: Option<usize>,
    /// Key/value sequence length [default: --seq-q].
    #[arg(long, value_name = "N")]
    pub seq_kv: Option<usize>,
    /// Number of query heads [default: 32].
    #[arg(long, value_name = "N")]
    pub heads: Option<usize>,
    /// Number of key/value heads; must divide --heads [default: 8, or --heads when that is given].
    #[arg(long, value_name = "N")]
    pub kv_heads: Option<usize>,
    /// Head dimension [default: 128].
    #[arg(long, value_name = "N")]
    pub head_dim: Option<usize>,
    /// Element type: f32, f16 or bf16 [default: f32].
    #[arg(long, value_name = "DTYPE")]
    pub dtype: Option<DType>,
    /// Mask: none, causal (bottom-right aligned) or window:LEFT,RIGHT [default: causal].
    #[arg(long, value_name = "MASK")]
    pub mask: Option<Mask>,
    /// Logit soft-cap: logits become cap * tanh(logit / cap).
    #[arg(long, value_name = "CAP")]
    pub softcap: Option<f32>,
    /// Softmax scale [default: 1/sqrt(head_dim)].
    #[arg(long, value_name = "S")]
    pub scale: Option<f32>,
}

impl ShapeArgs {
    /// The problem from the flags and the defaults.
    pub fn problem(&self) -> AttentionProblem {
        let heads = self.heads.unwrap_or(DEFAULT_HEADS);
        let kv_heads = self.kv_heads.unwrap_or(if self.heads.is_some() { heads } else { DEFAULT_KV_HEADS });
        let seq_q = self.seq_q.unwrap_or(DEFAULT_SEQ);
        let mut p = AttentionProblem::new(
            self.batch.unwrap_or(DEFAULT_BATCH),
            seq_q,
            self.seq_kv.unwrap_or(seq_q),
            heads,
            kv_heads,
            self.head_dim.unwrap_or(DEFAULT_HEAD_DIM),
            self.dtype.unwrap_or(DType::F32),
        )
        .with_mask(self.mask.unwrap_or(Mask::Causal));
        p.scale = self.scale;
        p.softcap = self.softcap;
        p
    }

    /// The problem whose shape and dtype come from Q, K and V read from
    /// files; shape flags given too must agree with the files.
    pub fn problem_from_tensors(
        &self,
        q: (&str, &HostTensor),
        k: (&str, &HostTensor),
        v: (&str, &HostTensor),
    ) -> Result<AttentionProblem, CliError> {
        let (qn, qt) = q;
        let (kn, kt) = k;
        let (vn, vt) = v;
        if kt.shape != vt.shape {
            return Err(CliError::Usage(format!(
                "k and v shapes differ: {kn} is {:?}, {vn} is {:?}",
                kt.shape, vt.shape
            )));
        }
        for (name, t) in [(kn, kt), (vn, vt)] {
            if t.dtype() != qt.dtype() {
                return Err(CliError::Usage(format!(
                    "dtype mismatch: {qn} is {}, {name} is {}",
                    qt.dtype(),
                    t.dtype()
                )));
            }
        }
        let [b, sq, hq, d] = qt.shape;
        let [bk, skv, hkv, dk] = kt.shape;
        if b != bk {
            return Err(CliError::Usage(format!("batch mismatch: {qn} has batch {b}, {kn} has {bk}")));
        }
        if d != dk {
            return Err(CliError::Usage(format!("head_dim mismatch: {qn} has head_dim {d}, {kn} has {dk}")));
        }
        let from_files = [
            ("--batch", self.batch, b),
            ("--seq-q", self.seq_q, sq),
            ("--seq-kv", self.seq_kv, skv),
            ("--heads", self.heads, hq),
            ("--kv-heads", self.kv_heads, hkv),
            ("--head-dim", self.head_dim, d),
        ];
        for (flag, given, file) in from_files {
            if let Some(given) = given.filter(|&g| g != file) {
                return Err(CliError::Usage(format!("{flag} {given} conflicts with the input files ({file})")));
            }
        }
        if let Some(dt) = self.dtype.filter(|&dt| dt != qt.dtype()) {
            return Err(CliError::Usage(format!("--dtype {dt} conflicts with the input files ({})", qt.dtype())));
        }
        let mut p =
            AttentionProblem::new(b, sq, skv, hq, hkv, d, qt.dtype()).with_mask(self.mask.unwrap_or(Mask::Causal));
        p.scale = self.scale;
        p.softcap = self.softcap;
        Ok(p)
    }
}
