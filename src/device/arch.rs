//! Typed GPU architectures: what a compile target is, its warp size and its
//! matrix unit, read from the target name once instead of string checks
//! scattered through the code.

use super::driver::Vendor;
use super::error::{DeviceError, DeviceResult};
use std::fmt;

/// The matrix (tensor-core) instructions a target has, as kernels see them
/// through `kernels/include/rf/mma/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MatrixUnit {
    /// No matrix instructions: kernels use their SIMT path.
    None,
    /// NVIDIA `mma.sync` with `ldmatrix` and `cp.async` (sm_80 and newer).
    MmaSync,
    /// AMD CDNA MFMA (gfx908, gfx90a, gfx94x, gfx950).
    Mfma,
    /// AMD RDNA3/4 WMMA (gfx11xx, gfx12xx).
    Wmma,
}

impl fmt::Display for MatrixUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MatrixUnit::None => "none",
            MatrixUnit::MmaSync => "mma.sync",
            MatrixUnit::Mfma => "mfma",
            MatrixUnit::Wmma => "wmma",
        })
    }
}

/// A compile target: NVIDIA `sm_XY` or AMD `gfxNNNN` (with optional target
/// features such as `:xnack-`, kept for the compiler).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Arch {
    target_id: String,
    vendor: Vendor,
    warp_size: u32,
    matrix_unit: MatrixUnit,
    /// NVIDIA compute capability as major*10+minor (90 for sm_90).
    sm: Option<u32>,
}

impl Arch {
    /// Parses "sm_90", "sm_90a", "gfx90a", "gfx90a:sramecc+:xnack-", "gfx1100".
    pub fn parse(target_id: &str) -> DeviceResult<Arch> {
        let bad = || DeviceError::UnknownTarget { target: target_id.to_string() };
        let processor = target_id.split(':').next().unwrap_or_default();
        if let Some(rest) = processor.strip_prefix("sm_") {
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            let suffix_ok =
                rest[digits.len()..].chars().all(|c| c.is_ascii_lowercase()) && rest.len() - digits.len() <= 1;
            let sm: u32 = digits.parse().map_err(|_| bad())?;
            if !(digits.len() >= 2 && suffix_ok) {
                return Err(bad());
            }
            let matrix_unit = if sm >= 80 { MatrixUnit::MmaSync } else { MatrixUnit::None };
            return Ok(Arch {
                target_id: target_id.to_string(),
                vendor: Vendor::Nvidia,
                warp_size: 32,
                matrix_unit,
                sm: Some(sm),
            });
        }
        let rest = processor.strip_prefix("gfx").ok_or_else(bad)?;
        if rest.len() < 3 || !rest.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        // gfx8/gfx9 (GCN, CDNA) run wave64; gfx10+ (RDNA) wave32 by default.
        let wave64 = rest.len() == 3 && (rest.starts_with('8') || rest.starts_with('9'));
        let matrix_unit = match processor {
            "gfx908" | "gfx90a" | "gfx940" | "gfx941" | "gfx942" | "gfx950" => MatrixUnit::Mfma,
            _ if rest.len() == 4 && (rest.starts_with("11") || rest.starts_with("12")) => MatrixUnit::Wmma,
            _ => MatrixUnit::None,
        };
        Ok(Arch {
            target_id: target_id.to_string(),
            vendor: Vendor::Amd,
            warp_size: if wave64 { 64 } else { 32 },
            matrix_unit,
            sm: None,
        })
    }

    /// The full target ID, features included, as compilers take it.
    pub fn target_id(&self) -> &str {
        &self.target_id
    }

    /// The processor without features: "gfx90a", "sm_90".
    pub fn processor(&self) -> &str {
        self.target_id.split(':').next().unwrap_or_default()
    }

    /// Target features ("xnack-", "sramecc+"); empty on NVIDIA.
    pub fn features(&self) -> Vec<&str> {
        self.target_id.split(':').skip(1).filter(|f| !f.is_empty()).collect()
    }

    pub fn vendor(&self) -> Vendor {
        self.vendor
    }

    pub fn warp_size(&self) -> u32 {
        self.warp_size
    }

    pub fn matrix_unit(&self) -> MatrixUnit {
        self.matrix_unit
    }

    /// NVIDIA compute capability as major*10+minor; `None` on AMD.
    pub fn sm(&self) -> Option<u32> {
        self.sm
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.target_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_map_to_warp_size_and_matrix_unit() {
        for (t, warp, unit) in [
            ("sm_75", 32, MatrixUnit::None),
            ("sm_80", 32, MatrixUnit::MmaSync),
            ("sm_90a", 32, MatrixUnit::MmaSync),
            ("gfx906", 64, MatrixUnit::None),
            ("gfx90a:sramecc+:xnack-", 64, MatrixUnit::Mfma),
            ("gfx942", 64, MatrixUnit::Mfma),
            ("gfx1030", 32, MatrixUnit::None),
            ("gfx1100", 32, MatrixUnit::Wmma),
            ("gfx1201", 32, MatrixUnit::Wmma),
        ] {
            let a = Arch::parse(t).unwrap();
            assert_eq!((a.warp_size(), a.matrix_unit()), (warp, unit), "{t}");
        }
        let a = Arch::parse("gfx90a:sramecc+:xnack-").unwrap();
        assert_eq!((a.processor(), a.features()), ("gfx90a", vec!["sramecc+", "xnack-"]));
        assert_eq!(Arch::parse("sm_86").unwrap().sm(), Some(86));
    }

    #[test]
    fn bad_targets_are_typed_errors() {
        for bad in ["", "gfx", "sm_", "gfxzz", "cuda", "sm_x9", "sm_9", "sm_90ab"] {
            assert_eq!(Arch::parse(bad), Err(DeviceError::UnknownTarget { target: bad.to_string() }), "{bad}");
        }
    }
}
