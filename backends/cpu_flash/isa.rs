//! Which micro-kernel family runs: detection at run time, and the one place
//! that turns a detected ISA into a call of the matching compiled task.

use super::elem::Elem;
use super::schedule::Call;
use super::scratch::Scratch;
use super::task::run_task;

/// A micro-kernel family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuIsa {
    Avx512,
    Avx2Fma,
    Portable,
}

/// A forced ISA the CPU does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cpu-flash: this CPU lacks the {} instructions (it has {})", .wanted.name(), .detected.name())]
pub struct IsaUnavailable {
    pub wanted: CpuIsa,
    pub detected: CpuIsa,
}

impl CpuIsa {
    pub const ALL: [CpuIsa; 3] = [CpuIsa::Avx512, CpuIsa::Avx2Fma, CpuIsa::Portable];

    /// The widest family this CPU supports.
    pub fn detect() -> CpuIsa {
        CpuIsa::ALL.into_iter().find(|isa| isa.available()).unwrap_or(CpuIsa::Portable)
    }

    pub fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            CpuIsa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            CpuIsa::Avx2Fma => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(not(target_arch = "x86_64"))]
            CpuIsa::Avx512 | CpuIsa::Avx2Fma => false,
            CpuIsa::Portable => true,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CpuIsa::Avx512 => "avx512",
            CpuIsa::Avx2Fma => "avx2",
            CpuIsa::Portable => "portable",
        }
    }

    pub fn parse(s: &str) -> Option<CpuIsa> {
        CpuIsa::ALL.into_iter().find(|isa| isa.name() == s)
    }
}

/// An ISA this CPU was confirmed to support: the only thing `dispatch`
/// accepts, so the unsafe feature-enabled calls below are sound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct VerifiedIsa(CpuIsa);

impl VerifiedIsa {
    pub(super) fn new(isa: CpuIsa) -> Result<VerifiedIsa, IsaUnavailable> {
        if isa.available() {
            Ok(VerifiedIsa(isa))
        } else {
            Err(IsaUnavailable { wanted: isa, detected: CpuIsa::detect() })
        }
    }

    pub(super) fn detect() -> VerifiedIsa {
        VerifiedIsa(CpuIsa::detect())
    }

    pub(super) fn isa(self) -> CpuIsa {
        self.0
    }

    /// Runs task `t` with this ISA's micro-kernels.
    #[inline]
    pub(super) fn dispatch<T: Elem>(self, c: &Call<T>, sc: &mut Scratch, t: usize) {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `VerifiedIsa` only holds an ISA whose features
            // `available()` confirmed at run time.
            CpuIsa::Avx512 => unsafe { x86::task_avx512(c, sc, t) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above; AVX2 and FMA were detected.
            CpuIsa::Avx2Fma => unsafe { x86::task_avx2(c, sc, t) },
            // SAFETY: the portable kernels need no CPU feature.
            _ => unsafe { run_task::<super::simd::Portable, T>(c, sc, t) },
        }
    }
}

/// The task compiled with each ISA's features enabled, so the generic code
/// inlined into it (kernels, softmax, conversions) uses them.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::simd::{Avx2, Avx512};
    use super::*;

    /// # Safety
    /// The CPU must support avx512f; see `run_task`.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn task_avx512<T: Elem>(c: &Call<T>, sc: &mut Scratch, t: usize) {
        // SAFETY: the features `Avx512` needs are enabled on this function.
        unsafe { run_task::<Avx512, T>(c, sc, t) }
    }

    /// # Safety
    /// The CPU must support avx2 and fma; see `run_task`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn task_avx2<T: Elem>(c: &Call<T>, sc: &mut Scratch, t: usize) {
        // SAFETY: the features `Avx2` needs are enabled on this function.
        unsafe { run_task::<Avx2, T>(c, sc, t) }
    }
}
