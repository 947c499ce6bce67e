//! The one text syntax for attention shapes, shared by `rocmforge bench
//! --shape`, the criterion bench (`ROCMFORGE_BENCH_SHAPES`) and the
//! examples: `B,HQ,HKV,SQ,SKV,D[:MASK]`, e.g. `1,32,8,1024,1024,128:causal`.

use crate::dtype::DType;
use crate::problem::{AttentionProblem, Mask};
use std::fmt;
use std::str::FromStr;

/// What the syntax says, before a dtype and default mask make it a problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShapeSpec {
    pub batch: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub seq_q: usize,
    pub seq_kv: usize,
    pub head_dim: usize,
    /// The `:MASK` suffix, if given.
    pub mask: Option<Mask>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad shape '{input}': {why}; expected B,HQ,HKV,SQ,SKV,D[:MASK] (six integers, e.g. 1,32,8,1024,1024,128:causal)"
)]
pub struct ShapeSyntaxError {
    /// The input, shortened if long.
    pub input: String,
    pub why: String,
}

impl FromStr for ShapeSpec {
    type Err = ShapeSyntaxError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: String| ShapeSyntaxError { input: shorten(s), why };
        let (dims, mask) = match s.split_once(':') {
            Some((dims, mask)) => (dims, Some(mask.trim().parse::<Mask>().map_err(|e| err(e.why.to_string()))?)),
            None => (s, None),
        };
        let fields: Vec<&str> = dims.split(',').map(str::trim).collect();
        if fields.len() != 6 {
            return Err(err(format!("{} numbers", fields.len())));
        }
        let mut n = [0usize; 6];
        for (slot, field) in n.iter_mut().zip(&fields) {
            *slot = field.parse().map_err(|_| err(format!("'{}' is not a non-negative integer", shorten(field))))?;
        }
        let [batch, q_heads, kv_heads, seq_q, seq_kv, head_dim] = n;
        Ok(ShapeSpec { batch, q_heads, kv_heads, seq_q, seq_kv, head_dim, mask })
    }
}

impl ShapeSpec {
    /// The problem, with `default_mask` where the spec names none. Not
    /// validated: callers validate once, where they report errors.
    pub fn problem(&self, dtype: DType, default_mask: Mask) -> AttentionProblem {
        AttentionProblem::new(self.batch, self.seq_q, self.seq_kv, self.q_heads, self.kv_heads, self.head_dim, dtype)
            .with_mask(self.mask.unwrap_or(default_mask))
    }

    /// The spec of an existing problem, mask included.
    pub fn of(p: &AttentionProblem) -> ShapeSpec {
        ShapeSpec {
            batch: p.batch,
            q_heads: p.num_q_heads,
            kv_heads: p.num_kv_heads,
            seq_q: p.seq_q,
            seq_kv: p.seq_kv,
            head_dim: p.head_dim,
            mask: Some(p.mask),
        }
    }
}

/// A `;`-separated list of specs (empty entries ignored).
pub fn parse_list(s: &str) -> Result<Vec<ShapeSpec>, ShapeSyntaxError> {
    s.split(';').map(str::trim).filter(|x| !x.is_empty()).map(str::parse).collect()
}

impl fmt::Display for ShapeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{},{},{},{},{},{}",
            self.batch, self.q_heads, self.kv_heads, self.seq_q, self.seq_kv, self.head_dim
        )?;
        match self.mask {
            Some(m) => write!(f, ":{m}"),
            None => Ok(()),
        }
    }
}

fn shorten(s: &str) -> String {
    crate::text::truncated(s, 40)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let s: ShapeSpec = "1,32,8,1024,512,128:causal".parse().unwrap();
        assert_eq!((s.batch, s.q_heads, s.kv_heads, s.seq_q, s.seq_kv, s.head_dim), (1, 32, 8, 1024, 512, 128));
        assert_eq!(s.mask, Some(Mask::Causal));
        assert_eq!(s.to_string(), "1,32,8,1024,512,128:causal");
        let p = " 2, 4, 2, 3, 5, 8 ".parse::<ShapeSpec>().unwrap().problem(DType::F16, Mask::None);
        assert_eq!((p.batch, p.seq_q, p.seq_kv, p.num_q_heads, p.num_kv_heads, p.head_dim), (2, 3, 5, 4, 2, 8));
        assert_eq!(ShapeSpec::of(&p).problem(DType::F16, Mask::Causal), p);
        let list = parse_list("1,2,1,4,4,8;1,2,2,4,4,8:window:2,0;").unwrap();
        assert_eq!(list[1].mask, Some(Mask::SlidingWindow { left: 2, right: 0 }));
    }

    #[test]
    fn errors_say_what_is_wrong_and_stay_short() {
        for (input, needle) in [
            ("1,2,3", "3 numbers"),
            ("1,2,3,4,5,x", "'x' is not"),
            ("1,2,3,4,5,-6", "'-6' is not"),
            ("1,2,1,4,4,8:diagonal", "unknown mask"),
            ("1,2,1,4,4,99999999999999999999999", "is not a non-negative integer"),
        ] {
            let e = input.parse::<ShapeSpec>().unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("B,HQ,HKV,SQ,SKV,D"), "{input}: {e}");
        }
        let e = "9".repeat(100_000).parse::<ShapeSpec>().unwrap_err().to_string();
        assert!(e.len() < 300, "{} bytes", e.len());
    }
}
