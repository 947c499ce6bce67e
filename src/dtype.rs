//! Element types. 16-bit types use the `half` crate on the host and raw 16-bit
//! values in kernels.

use std::fmt;
use std::str::FromStr;

/// The element type of a tensor and of an attention problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    pub const ALL: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// The element-type code kernels use (`RF_F32`/`RF_F16`/`RF_BF16` in
    /// `kernels/include/rf/convert.h`; a test checks both agree).
    pub fn kernel_code(self) -> u32 {
        match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::BF16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }

    /// Largest error against the f64 reference that the differential tests
    /// accept, as `abs + rel * |reference|`. 16-bit outputs are rounded once
    /// (about 2^-8 relative for bf16), so their bound is wider.
    pub fn tolerance(self) -> Tolerance {
        match self {
            DType::F32 => Tolerance { abs: 2e-5, rel: 1e-5 },
            DType::F16 => Tolerance { abs: 2e-3, rel: 1e-2 },
            DType::BF16 => Tolerance { abs: 1e-2, rel: 1e-2 },
        }
    }
}

/// Error bound `abs + rel * |expected|` for one element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub abs: f64,
    pub rel: f64,
}

impl Tolerance {
    pub fn accepts(self, got: f64, expected: f64) -> bool {
        // NaN compares false, so a NaN never passes.
        (got - expected).abs() <= self.abs + self.rel * expected.abs()
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dtype '{0}': expected one of f32, f16, bf16")]
pub struct UnknownDType(pub String);

impl FromStr for DType {
    type Err = UnknownDType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "float" => Ok(DType::F32),
            "f16" | "float16" | "half" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            _ => Err(UnknownDType(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_rejects_others() {
        assert_eq!("bf16".parse::<DType>(), Ok(DType::BF16));
        assert_eq!("F32".parse::<DType>(), Ok(DType::F32));
        assert!("f64".parse::<DType>().is_err());
    }

    #[test]
    fn tolerance_rejects_nan() {
        let t = DType::F32.tolerance();
        assert!(!t.accepts(f64::NAN, 1.0));
        assert!(t.accepts(1.0, 1.0));
        assert!(!t.accepts(1.001, 1.0));
    }
}
