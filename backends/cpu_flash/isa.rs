//! Which micro-kernel family runs: detection at run time, and the one place
//! that turns a detected ISA into a call of the matching compiled task.
//!
//! Families are levels, each wider one needing the features of the ones
//! below it: `Amx` (AMX-TILE/BF16 with the OS's tile state, plus
//! everything `Avx512Bf16` needs), `Avx512Bf16` (AVX-512F/BW/DQ + BF16),
//! `Avx512`, `Avx2Fma`, `Portable`. Only bf16 has kernels of its own on
//! the two bf16 levels (`bf16/`); f32 and f16 run the AVX-512F kernels
//! there (`CpuIsa::kernels` says which kernels a dtype gets).

use super::bf16;
use super::elem::Elem;
use super::schedule::Call;
use super::scratch::Scratch;
use super::task::run_task;
use crate::dtype::DType;
use bf16::Src;

/// A micro-kernel family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuIsa {
    Amx,
    Avx512Bf16,
    Avx512,
    Avx2Fma,
    Portable,
}

/// A forced ISA this CPU (or OS) cannot run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cpu-flash: cannot run the {} kernels here: {why} (this CPU's widest family is {})", .wanted.name(), .detected.name())]
pub struct IsaUnavailable {
    pub wanted: CpuIsa,
    pub detected: CpuIsa,
    pub why: &'static str,
}

impl CpuIsa {
    /// Widest first.
    pub const ALL: [CpuIsa; 5] = [CpuIsa::Amx, CpuIsa::Avx512Bf16, CpuIsa::Avx512, CpuIsa::Avx2Fma, CpuIsa::Portable];

    /// The widest family this CPU supports, except that `Avx512Bf16` is
    /// never picked by itself: its `vdpbf16ps` kernels measured 1.8x
    /// slower than the f32-widening AVX-512 kernels on Emerald Rapids
    /// (docs/perf.md); force it with `CpuFlash::with_isa` where it may win.
    pub fn detect() -> CpuIsa {
        CpuIsa::ALL
            .into_iter()
            .filter(|isa| *isa != CpuIsa::Avx512Bf16)
            .find(|isa| isa.available())
            .unwrap_or(CpuIsa::Portable)
    }

    pub fn available(self) -> bool {
        self.unavailable().is_none()
    }

    /// Why this CPU cannot run the family (`None`: it can). For AMX this
    /// asks Linux for the tile state once per process (`bf16/amx_state`).
    pub fn unavailable(self) -> Option<&'static str> {
        #[cfg(target_arch = "x86_64")]
        let has = |features: &[bool]| features.iter().all(|&f| f);
        match self {
            #[cfg(target_arch = "x86_64")]
            CpuIsa::Amx => CpuIsa::Avx512Bf16.unavailable().or_else(|| bf16::amx_state::status().err()),
            #[cfg(target_arch = "x86_64")]
            CpuIsa::Avx512Bf16 => CpuIsa::Avx512.unavailable().or_else(|| {
                let f = [
                    is_x86_feature_detected!("avx512bw"),
                    is_x86_feature_detected!("avx512dq"),
                    is_x86_feature_detected!("avx512bf16"),
                ];
                (!has(&f)).then_some("the CPU lacks AVX512-BF16 (vdpbf16ps), AVX512-BW or AVX512-DQ")
            }),
            #[cfg(target_arch = "x86_64")]
            CpuIsa::Avx512 => CpuIsa::Avx2Fma
                .unavailable()
                .or_else(|| (!is_x86_feature_detected!("avx512f")).then_some("the CPU lacks AVX-512F")),
            #[cfg(target_arch = "x86_64")]
            CpuIsa::Avx2Fma => {
                let f = [is_x86_feature_detected!("avx2"), is_x86_feature_detected!("fma")];
                (!has(&f)).then_some("the CPU lacks AVX2 or FMA")
            }
            #[cfg(not(target_arch = "x86_64"))]
            CpuIsa::Amx | CpuIsa::Avx512Bf16 | CpuIsa::Avx512 | CpuIsa::Avx2Fma => Some("not an x86-64 CPU"),
            CpuIsa::Portable => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CpuIsa::Amx => "amx",
            CpuIsa::Avx512Bf16 => "avx512bf16",
            CpuIsa::Avx512 => "avx512",
            CpuIsa::Avx2Fma => "avx2",
            CpuIsa::Portable => "portable",
        }
    }

    pub fn parse(s: &str) -> Option<CpuIsa> {
        CpuIsa::ALL.into_iter().find(|isa| isa.name() == s)
    }

    /// The kernels this family runs for `dtype`, in words.
    pub fn kernels(self, dtype: DType) -> &'static str {
        use CpuIsa::*;
        match (self, dtype) {
            (Amx, DType::BF16) => "AMX tiles (tdpbf16ps), bf16 in, f32 accumulate",
            (Avx512Bf16, DType::BF16) => "AVX512-BF16 (vdpbf16ps), bf16 in, f32 accumulate (forced only)",
            (Amx, DType::F16) => {
                "AMX tiles (tdpbf16ps), f16 split exactly into bf16 high + low halves (3 products), f32 accumulate"
            }
            (Amx | Avx512Bf16 | Avx512, DType::F32) => "AVX-512F FMA",
            (Avx512Bf16 | Avx512, _) => "AVX-512F FMA, inputs widened to f32",
            (Avx2Fma, DType::F32) => "AVX2 FMA",
            (Avx2Fma, _) => "AVX2 FMA, inputs widened to f32",
            (Portable, _) => "portable 8-lane f32",
        }
    }
}

/// The bf16 products run by an emulator instead of the ISA (tests: the
/// AMX and AVX512-BF16 kernels' logic on any CPU).
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Emulated {
    Tiles,
    PairDot,
    /// The tile emulator with the AVX-512 softmax (integer bf16 rounding):
    /// needs AVX-512F/BW.
    TilesAvx512,
}

/// An ISA this CPU was confirmed to support: the only thing `dispatch`
/// accepts, so the unsafe feature-enabled calls below are sound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct VerifiedIsa {
    isa: CpuIsa,
    #[cfg(test)]
    emulated: Option<Emulated>,
}

impl VerifiedIsa {
    pub(super) fn new(isa: CpuIsa) -> Result<VerifiedIsa, IsaUnavailable> {
        match isa.unavailable() {
            None => Ok(VerifiedIsa::unchecked(isa)),
            Some(why) => Err(IsaUnavailable { wanted: isa, detected: CpuIsa::detect(), why }),
        }
    }

    pub(super) fn detect() -> VerifiedIsa {
        VerifiedIsa::unchecked(CpuIsa::detect())
    }

    fn unchecked(isa: CpuIsa) -> VerifiedIsa {
        VerifiedIsa {
            isa,
            #[cfg(test)]
            emulated: None,
        }
    }

    /// The portable kernels, bf16 products through `e`.
    #[cfg(test)]
    pub(super) fn emulated(e: Emulated) -> VerifiedIsa {
        VerifiedIsa { isa: CpuIsa::Portable, emulated: Some(e) }
    }

    pub(super) fn isa(self) -> CpuIsa {
        self.isa
    }

    /// Runs task `t` with this ISA's f32 micro-kernels.
    #[inline]
    pub(super) fn dispatch<T: Elem>(self, c: &Call<T>, sc: &mut Scratch, t: usize) {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `VerifiedIsa` only holds an ISA whose features
            // `unavailable()` confirmed at run time; every family from
            // Avx512 up has AVX-512F, AVX2 and FMA.
            CpuIsa::Amx | CpuIsa::Avx512Bf16 | CpuIsa::Avx512 => unsafe { x86::task_avx512(c, sc, t) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above; AVX2 and FMA were detected.
            CpuIsa::Avx2Fma => unsafe { x86::task_avx2(c, sc, t) },
            // SAFETY: the portable kernels need no CPU feature.
            _ => unsafe { run_task::<super::simd::Portable, T>(c, sc, t) },
        }
    }

    /// Runs task `t` of a bf16 or f16 call: bf16 on the dot-product
    /// families' products, f16 (split into bf16 halves) on AMX; the f32
    /// kernels otherwise.
    #[inline]
    pub(super) fn dispatch_dot<S: Src>(self, c: &Call<S>, sc: &mut Scratch, t: usize) {
        #[cfg(test)]
        if let Some(e) = self.emulated {
            use super::simd::Lanes;
            let tiles = || bf16::Amx(bf16::tiles::TileEmu::default());
            type Soft = bf16::PortableSoftmax;
            // SAFETY: the emulators and the portable code need no CPU feature.
            match e {
                Emulated::Tiles => unsafe { bf16::run_task::<_, Soft, S>(&mut tiles(), c, sc, t) },
                Emulated::PairDot => unsafe {
                    bf16::run_task::<_, Soft, S>(&mut bf16::Dot::<Lanes<16>>::default(), c, sc, t)
                },
                #[cfg(target_arch = "x86_64")]
                Emulated::TilesAvx512 => {
                    assert!(
                        CpuIsa::Avx512.available()
                            && is_x86_feature_detected!("avx512bw")
                            && is_x86_feature_detected!("avx512dq")
                    );
                    // SAFETY: AVX-512F/BW/DQ, AVX2 and FMA checked just above.
                    unsafe { x86::task_emulated_tiles_avx512(c, sc, t) }
                }
                #[cfg(not(target_arch = "x86_64"))]
                Emulated::TilesAvx512 => unreachable!("an x86-64 test"),
            }
            return;
        }
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AMX-TILE/BF16, the tile state, AVX512-BF16/BW, AVX-512F,
            // AVX2 and FMA were all confirmed (`CpuIsa::unavailable`).
            CpuIsa::Amx => unsafe { x86::task_amx(c, sc, t) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX512-BF16/BW, AVX-512F, AVX2 and FMA were confirmed.
            CpuIsa::Avx512Bf16 if !S::SPLIT => unsafe { x86::task_dpbf16(c, sc, t) },
            _ => self.dispatch(c, sc, t),
        }
    }
}

/// The task compiled with each ISA's features enabled, so the generic code
/// inlined into it (kernels, softmax, conversions) uses them.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::simd::{Avx2, Avx512, Avx512Bf16};
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

    /// # Safety
    /// The CPU must support AMX-TILE/BF16 with the tile state granted, and
    /// the features enabled here; see `bf16::run_task`.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16,avx2,fma")]
    pub(super) unsafe fn task_amx<S: Src>(c: &Call<S>, sc: &mut Scratch, t: usize) {
        let mut tiles = bf16::Amx(bf16::tiles::AmxTiles);
        // SAFETY: forwarded contract.
        unsafe { bf16::run_task::<_, bf16::Avx512Softmax<true>, S>(&mut tiles, c, sc, t) }
    }

    /// # Safety
    /// The CPU must support the features enabled here.
    #[cfg(test)]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx2,fma")]
    pub(super) unsafe fn task_emulated_tiles_avx512<S: Src>(c: &Call<S>, sc: &mut Scratch, t: usize) {
        let mut tiles = bf16::Amx(bf16::tiles::TileEmu::default());
        // SAFETY: the features the softmax needs are enabled here.
        unsafe { bf16::run_task::<_, bf16::Avx512Softmax<false>, S>(&mut tiles, c, sc, t) }
    }

    /// # Safety
    /// The CPU must support the features enabled here; see `bf16::run_task`.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16,avx2,fma")]
    pub(super) unsafe fn task_dpbf16<S: Src>(c: &Call<S>, sc: &mut Scratch, t: usize) {
        let mut dot = bf16::Dot::<Avx512Bf16>::default();
        // SAFETY: the features `Avx512Bf16` needs are enabled on this function.
        unsafe { bf16::run_task::<_, bf16::Avx512Softmax<true>, S>(&mut dot, c, sc, t) }
    }
}
