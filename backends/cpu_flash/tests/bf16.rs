//! The bf16 dot-product paths: the AMX and AVX512-BF16 kernels against
//! naive loops (the real instructions where the CPU has them, the
//! emulators everywhere), each path forced through the backend against the
//! f64 reference, accuracy against the f32-widening path, determinism, and
//! the bf16 rounding. Where the CPU lacks a path its tests print `SKIP`
//! with the reason on stderr (not captured by the test harness);
//! `ROCMFORGE_REQUIRE_AMX=1` turns every such skip into a failure (the GPU
//! machine's bundle sets it: its Xeon has AMX and AVX512-BF16).

use super::super::bf16::{kt_offset, vv_offset, Dot, MatMul, PvArgs, QkArgs, SK, SP};
use super::super::simd::{Lanes, PairDot};
use super::*;
use crate::env_flag::env_flag;
use crate::tensor::SplitMix64;
use half::bf16;
use std::io::Write;

/// `Some(instance)` forced to `isa`, or `None` after a visible SKIP line
/// (a panic when `ROCMFORGE_REQUIRE_AMX` is set).
fn forced(isa: CpuIsa, what: &str) -> Option<CpuFlash> {
    match CpuFlash::with_isa(isa) {
        Ok(b) => Some(b),
        Err(e) => {
            let require = env_flag("ROCMFORGE_REQUIRE_AMX").expect("ROCMFORGE_REQUIRE_AMX");
            assert!(!require, "ROCMFORGE_REQUIRE_AMX is set but {what} cannot run: {e}");
            let _ = writeln!(std::io::stderr(), "SKIP {what} on the {} path: {e}", isa.name());
            None
        }
    }
}

fn random_bits(rng: &mut SplitMix64, n: usize) -> Vec<u16> {
    (0..n).map(|_| bf16::from_f32(rng.next_unit() * 2.0 - 1.0).to_bits()).collect()
}

fn wide(x: u16) -> f64 {
    bf16::from_bits(x).to_f64()
}

fn close(got: f32, want: f64, scale: f64) -> bool {
    (got as f64 - want).abs() <= 1e-5 * scale
}

/// Random bf16 pairs (u32) of moderate magnitude.
fn random_pairs(rng: &mut SplitMix64, n: usize) -> Vec<u32> {
    (0..n).map(|_| rng.next_u64() as u32 & 0xBF80_BF80 | 0x3000_3000).collect()
}

/// The two bf16 halves of a pair.
fn pair(x: u32) -> (f64, f64) {
    (wide(x as u16), wide((x >> 16) as u16))
}

/// `mm.qk` against naive f64 sums, for several rows / keys / pair counts,
/// plain and split (`Qh·Kh + Qh·Kl + Ql·Kh`).
fn check_qk<M: MatMul>(mm: &mut M, name: &str) {
    let mut rng = SplitMix64(21);
    for split in [false, true] {
        for (pairs, rows, keys) in [(64, 64, 256), (16, 16, 32), (48, 48, 64), (32, 32, 160)] {
            let q_pitch = if split { 4 * pairs + 32 } else { 2 * pairs + 32 };
            let q = random_bits(&mut rng, BQ * q_pitch);
            let kt = [random_pairs(&mut rng, pairs * keys), random_pairs(&mut rng, pairs * keys)];
            let mut s = vec![f32::NAN; BQ * SP];
            let a = QkArgs {
                q: q.as_ptr(),
                q_pitch,
                kt: [kt[0].as_ptr(), kt[1].as_ptr()],
                split,
                pairs,
                s: s.as_mut_ptr(),
                rows,
                keys,
            };
            // SAFETY: the buffers hold what `QkArgs` names; the caller of
            // `check_qk` made sure `mm`'s features are present.
            unsafe {
                mm.begin();
                mm.qk(&a);
                mm.end();
            }
            let secs: &[(usize, usize)] = if split { &[(0, 0), (0, 1), (2 * pairs, 0)] } else { &[(0, 0)] };
            for r in 0..rows {
                for j in 0..keys {
                    let mut want = 0.0;
                    for &(q_off, h) in secs {
                        for p in 0..pairs {
                            let (k0, k1) = pair(kt[h][kt_offset(p, j, pairs)]);
                            let row = r * q_pitch + q_off + 2 * p;
                            want += wide(q[row]) * k0 + wide(q[row + 1]) * k1;
                        }
                    }
                    let got = s[r * SP + j];
                    let scale = (2 * pairs * secs.len()) as f64;
                    assert!(
                        close(got, want, scale),
                        "{name} qk {split} {pairs}/{rows}/{keys}: s[{r}][{j}] {got} vs {want}"
                    );
                }
            }
            assert!(s[rows * SP..].iter().all(|x| x.is_nan()), "{name} qk wrote past its rows");
        }
    }
}

/// `mm.pv` against naive f64 sums (alpha applied by the kernel or, when
/// it does not rescale, by this check before the call, as the task does),
/// plain and split (`Ph·Vh + Ph·Vl + Pl·Vh`).
fn check_pv<M: MatMul>(mm: &mut M, name: &str) {
    let mut rng = SplitMix64(22);
    for split in [false, true] {
        for (dp, rows, keys) in [(128, 64, 256), (16, 16, 32), (80, 48, 96), (208, 32, 32)] {
            let (vv_group, p_pitch) = ((keys / 2 + 1) * 16, if split { 2 * SK } else { SK });
            let p = random_bits(&mut rng, BQ * p_pitch);
            let vv_len = dp / 16 * vv_group;
            let vv = [random_pairs(&mut rng, vv_len), random_pairs(&mut rng, vv_len)];
            let o0: Vec<f32> = (0..BQ * dp).map(|_| rng.next_unit()).collect();
            let alpha: Vec<f32> = (0..BQ).map(|_| rng.next_unit()).collect();
            let mut o = o0.clone();
            if !M::RESCALES_O {
                for r in 0..rows {
                    o[r * dp..(r + 1) * dp].iter_mut().for_each(|x| *x *= alpha[r]);
                }
            }
            let a = PvArgs {
                p: p.as_ptr(),
                p_pitch,
                vv: [vv[0].as_ptr(), vv[1].as_ptr()],
                split,
                vv_group,
                keys,
                o: o.as_mut_ptr(),
                dp,
                alpha: alpha.as_ptr(),
                rows,
            };
            // SAFETY: as in `check_qk`.
            unsafe {
                mm.begin();
                mm.pv(&a);
                mm.end();
            }
            let secs: &[(usize, usize)] = if split { &[(0, 0), (0, 1), (SK, 0)] } else { &[(0, 0)] };
            for r in 0..BQ {
                for c in 0..dp {
                    let got = o[r * dp + c];
                    if r >= rows {
                        assert_eq!(got, o0[r * dp + c], "{name} pv wrote row {r} past rows {rows}");
                        continue;
                    }
                    let mut want = alpha[r] as f64 * o0[r * dp + c] as f64;
                    for &(p_off, h) in secs {
                        for j in 0..keys {
                            let (v0, v1) = pair(vv[h][vv_offset(j / 2, c, vv_group)]);
                            want += wide(p[r * p_pitch + p_off + j]) * if j % 2 == 0 { v0 } else { v1 };
                        }
                    }
                    let scale = (keys * secs.len()) as f64;
                    assert!(
                        close(got, want, scale),
                        "{name} pv {split} {dp}/{rows}/{keys}: o[{r}][{c}] {got} vs {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn amx_kernels_match_naive_loops() {
    use super::super::bf16::{tiles::TileEmu, Amx};
    check_qk(&mut Amx(TileEmu::default()), "tile emulator");
    check_pv(&mut Amx(TileEmu::default()), "tile emulator");
    #[cfg(target_arch = "x86_64")]
    if forced(CpuIsa::Amx, "the AMX kernel check").is_some() {
        // The tile state was granted (`forced` checked `available`).
        check_qk(&mut Amx(super::super::bf16::tiles::AmxTiles), "amx");
        check_pv(&mut Amx(super::super::bf16::tiles::AmxTiles), "amx");
    }
}

#[test]
fn pair_dot_kernels_match_naive_loops() {
    check_qk(&mut Dot::<Lanes<16>>::default(), "pair-dot emulator");
    check_pv(&mut Dot::<Lanes<16>>::default(), "pair-dot emulator");
    #[cfg(target_arch = "x86_64")]
    if forced(CpuIsa::Avx512Bf16, "the AVX512-BF16 kernel check").is_some() {
        use super::super::simd::Avx512Bf16;
        check_qk(&mut Dot::<Avx512Bf16>::default(), "avx512bf16");
        check_pv(&mut Dot::<Avx512Bf16>::default(), "avx512bf16");
    }
}

#[test]
fn pair_dot_emulation_is_exact_on_bf16_pairs() {
    let mut rng = SplitMix64(23);
    for _ in 0..1000 {
        let [a, b, c] = [0; 3].map(|_| f32::from_bits(rng.next_u64() as u32 & 0xBFFF_BFFF | 0x3000_3000));
        // SAFETY: the portable lanes need no CPU feature.
        let got = unsafe { <Lanes<1> as PairDot>::dot_pairs([c], [a], [b]) }[0];
        let h = |x: f32, hi: bool| f32::from_bits(if hi { x.to_bits() & 0xFFFF_0000 } else { x.to_bits() << 16 });
        let want = c + (h(a, false) * h(b, false) + h(a, true) * h(b, true));
        assert_eq!(got.to_bits(), want.to_bits());
    }
}

/// The bf16 problems every path runs: head dims (odd, not a multiple of
/// 32, the common 64/128), masks with odd first keys, GQA, partial query
/// blocks, soft-cap, a custom scale, and a head too large for the copies.
fn bf16_problems() -> Vec<AttentionProblem> {
    dot_problems(DType::BF16)
}

/// `bf16_problems` in `dtype`.
fn dot_problems(dtype: DType) -> Vec<AttentionProblem> {
    let mut v = Vec::new();
    for (i, d) in [1, 3, 48, 64, 96, 128, 200].into_iter().enumerate() {
        let mask = [Mask::None, Mask::Causal, Mask::SlidingWindow { left: 37, right: 5 }][i % 3];
        v.push(problem((1, 4, 2), (70, 131), d, dtype, mask));
    }
    for mask in MASKS {
        v.push(problem((2, 6, 2), (65, 65), 64, dtype, mask));
        v.push(problem((1, 2, 1), (140, 37), 32, dtype, mask));
    }
    let mut p = problem((1, 4, 1), (33, 100), 128, dtype, Mask::SlidingWindow { left: 20, right: 3 });
    p.softcap = Some(3.0);
    p.scale = Some(0.9);
    v.push(p);
    let mut p = problem((1, 2, 2), (17, 90), 64, dtype, Mask::Causal);
    p.scale = Some(0.02);
    v.push(p);
    // seq_kv · dp past VHEAD_MAX: K^T and V packed per tile.
    v.push(problem((1, 2, 1), (3, VHEAD_MAX / 64 + 77), 64, dtype, Mask::SlidingWindow { left: 300, right: 2 }));
    v
}

/// `backend` on every bf16 and f16 problem against the f64 reference.
fn check_all(backend: &CpuFlash) {
    let problems = [bf16_problems(), dot_problems(DType::F16)].concat();
    for (i, p) in problems.iter().enumerate() {
        let seed = 900 + 3 * i as u64;
        let q = Tensor::random(p.q_shape(), p.dtype, seed).unwrap();
        let k = Tensor::random(p.kv_shape(), p.dtype, seed + 1).unwrap();
        let v = Tensor::random(p.kv_shape(), p.dtype, seed + 2).unwrap();
        let expected = reference_attention(p, q.host().unwrap(), k.host().unwrap(), v.host().unwrap());
        let got = run(backend, p, (&q, &k, &v));
        let tol = p.dtype.tolerance();
        for (i, (&g, &e)) in got.iter().zip(&expected).enumerate() {
            assert!(tol.accepts(g as f64, e), "{p} {backend:?}: element {i}: got {g}, expected {e}");
        }
    }
}

#[test]
fn amx_path_matches_the_reference() {
    check_all(&CpuFlash::emulated(isa::Emulated::Tiles));
    match avx512_softmax_emulated() {
        Some(b) => check_all(&b),
        None => {
            let _ = writeln!(std::io::stderr(), "SKIP the AVX-512 softmax with emulated tiles: no AVX-512F/BW");
        }
    }
    if let Some(b) = forced(CpuIsa::Amx, "the AMX path") {
        check_all(&b);
    }
}

#[test]
fn avx512_bf16_path_matches_the_reference() {
    check_all(&CpuFlash::emulated(isa::Emulated::PairDot));
    if let Some(b) = forced(CpuIsa::Avx512Bf16, "the AVX512-BF16 path") {
        check_all(&b);
    }
}

/// Mean and max |got - reference| over a problem's output.
fn errors(got: &[f32], expected: &[f64]) -> (f64, f64) {
    let e: Vec<f64> = got.iter().zip(expected).map(|(&g, &e)| (g as f64 - e).abs()).collect();
    (e.iter().sum::<f64>() / e.len() as f64, e.iter().cloned().fold(0.0, f64::max))
}

#[test]
fn dot_paths_are_about_as_accurate_as_the_f32_widening_path() {
    // All round the output to the dtype. bf16: the dot-product paths also
    // round P to bf16 (their weights are then exactly normalised), which
    // costs ~1.7x the f32-widening path's mean error here (PyTorch's CPU
    // flash kernel rounds P too; its own error is measured in
    // docs/perf.md). f16 (AMX only, split into bf16 halves): P keeps ~16
    // bits and the products drop only `ql·kl`, so it matches the widening
    // path. Dense inputs over long rows, where P's rounding matters most.
    for (dtype, bound) in [(DType::BF16, 2.0), (DType::F16, 1.2)] {
        let p = problem((1, 4, 2), (128, 512), 128, dtype, Mask::None);
        let q = Tensor::random(p.q_shape(), p.dtype, 1).unwrap();
        let k = Tensor::random(p.kv_shape(), p.dtype, 2).unwrap();
        let v = Tensor::random(p.kv_shape(), p.dtype, 3).unwrap();
        let expected = reference_attention(&p, q.host().unwrap(), k.host().unwrap(), v.host().unwrap());
        let f32_path = CpuFlash::with_isa(CpuIsa::Portable).unwrap();
        let (base_mean, base_max) = errors(&run(&f32_path, &p, (&q, &k, &v)), &expected);
        let mut paths = vec![CpuFlash::emulated(isa::Emulated::Tiles), CpuFlash::emulated(isa::Emulated::PairDot)];
        paths.extend(avx512_softmax_emulated());
        paths.extend(forced(CpuIsa::Amx, "the AMX accuracy check"));
        if dtype == DType::BF16 {
            paths.extend(forced(CpuIsa::Avx512Bf16, "the AVX512-BF16 accuracy check"));
        }
        for b in paths {
            let (mean, max) = errors(&run(&b, &p, (&q, &k, &v)), &expected);
            let _ = writeln!(
                std::io::stderr(),
                "{dtype} accuracy {b:?}: mean |err| {mean:.3e} max {max:.3e} (f32-widening path: mean {base_mean:.3e} max {base_max:.3e})"
            );
            assert!(mean <= bound * base_mean && max <= bound * base_max, "{dtype} {b:?}: mean {mean:e} max {max:e}");
        }
    }
}

#[test]
fn bf16_paths_are_deterministic_across_thread_counts() {
    let p = problem((1, 4, 2), (200, 300), 128, DType::BF16, Mask::Causal);
    let q = Tensor::random(p.q_shape(), p.dtype, 7).unwrap();
    let k = Tensor::random(p.kv_shape(), p.dtype, 8).unwrap();
    let v = Tensor::random(p.kv_shape(), p.dtype, 9).unwrap();
    let mut paths = vec![CpuFlash::emulated(isa::Emulated::Tiles)];
    paths.extend(avx512_softmax_emulated());
    paths.extend(forced(CpuIsa::Amx, "the AMX determinism check"));
    paths.extend(forced(CpuIsa::Avx512Bf16, "the AVX512-BF16 determinism check"));
    for b in paths {
        let outs: Vec<Vec<f32>> = [1, 3]
            .into_iter()
            .map(|threads| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| run(&b, &p, (&q, &k, &v)))
            })
            .collect();
        assert!(outs[0].iter().zip(&outs[1]).all(|(a, b)| a.to_bits() == b.to_bits()), "{b:?}");
    }
}

#[test]
fn rounding_to_bf16_matches_half() {
    use super::super::bf16::round_bf16;
    let mut rng = SplitMix64(24);
    let specials = [0.0f32, -0.0, 1.0, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, f32::MIN_POSITIVE, 1e-40];
    let ties = [f32::from_bits(0x3F80_8000), f32::from_bits(0x3F81_8000), f32::from_bits(0x3F80_7FFF)];
    let randoms = (0..100_000).map(|_| f32::from_bits(rng.next_u64() as u32));
    for x in specials.into_iter().chain(ties).chain(randoms) {
        let got = round_bf16(x);
        if x.is_nan() {
            assert!(bf16::from_bits(got).is_nan(), "{x:e}");
        } else {
            assert_eq!(got, bf16::from_f32(x).to_bits(), "{x:e} ({:#x})", x.to_bits());
        }
    }
}

/// The bf16 softmax's `exp2` (degree 3, for P that is rounded to bf16):
/// relative error below 8e-5 on [-126, 0], zero below -126 and for
/// -inf, NaN kept, masked lanes zero. Needs AVX-512F/DQ (SKIP elsewhere).
#[test]
fn bf16_exp2_is_accurate_enough_and_keeps_the_special_values() {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512dq") {
        use super::super::bf16::exp2_bf16_lanes;
        let mut worst = 0.0f64;
        let mut rng = SplitMix64(31);
        for i in 0..20_000 {
            // A dense sweep of [-8, 0] (every fraction), then random points
            // of the whole range.
            let x: [f32; 16] = std::array::from_fn(|l| {
                if i < 4000 {
                    -((i * 16 + l) as f32) / 8000.0
                } else {
                    -((rng.next_u64() % 1_260_000) as f32) / 10_000.0
                }
            });
            // SAFETY: AVX-512F/DQ detected above.
            let y = unsafe { exp2_bf16_lanes(x, 0xFFFF) };
            for (&xi, &yi) in x.iter().zip(&y) {
                let want = (xi as f64).exp2();
                worst = worst.max((yi as f64 - want).abs() / want);
            }
        }
        let _ = writeln!(std::io::stderr(), "bf16 exp2: worst relative error {worst:.3e}");
        assert!(worst < 8e-5, "relative error {worst:e}");
        let specials = [-126.5f32, -1e30, f32::NEG_INFINITY, f32::NAN, 0.0, -126.0, -0.5, 0.5];
        let x: [f32; 16] = std::array::from_fn(|l| specials[l % 8]);
        // SAFETY: as above. Lanes 8..16 masked off.
        let y = unsafe { exp2_bf16_lanes(x, 0x00FF) };
        assert_eq!(&y[..3], &[0.0, 0.0, 0.0], "below -126 and -inf give 0");
        assert!(y[3].is_nan(), "NaN stays NaN");
        assert!((y[4] - 1.0).abs() < 8e-5 && (y[6] as f64 - 0.5f64.sqrt()).abs() < 8e-5);
        assert!(y[5] > 0.0, "2^-126 is kept");
        assert!(y[8..].iter().all(|&v| v == 0.0), "masked lanes are 0");
        return;
    }
    let require = env_flag("ROCMFORGE_REQUIRE_AMX").expect("ROCMFORGE_REQUIRE_AMX");
    assert!(!require, "ROCMFORGE_REQUIRE_AMX is set but the CPU lacks AVX-512F/DQ");
    let _ = writeln!(std::io::stderr(), "SKIP bf16 exp2: the CPU lacks AVX-512F/DQ");
}

#[test]
fn each_dtype_names_its_kernels() {
    for isa in CpuIsa::ALL {
        for dtype in DType::ALL {
            assert!(!isa.kernels(dtype).is_empty());
        }
    }
    assert!(CpuIsa::Amx.kernels(DType::BF16).contains("tdpbf16ps"));
    assert!(CpuIsa::Avx512Bf16.kernels(DType::BF16).contains("vdpbf16ps"));
    assert_eq!(CpuIsa::Amx.kernels(DType::F32), CpuIsa::Avx512.kernels(DType::F32));
}

#[test]
fn packing_k_transposed_matches_the_definition() {
    use super::super::bf16::pack_kt_for_test;
    use super::super::scratch::HeadRows;
    let mut rng = SplitMix64(25);
    for (count, d, stride) in [(64, 128, 300), (37, 64, 70), (16, 33, 33), (90, 7, 9), (48, 200, 1000)] {
        let src = random_bits(&mut rng, 5 + count * stride + d);
        let rows = HeadRows { base: 5, stride, count, d };
        let pairs = d.next_multiple_of(32) / 2;
        let mut dst = vec![0xDEAD_BEEFu32; count.next_multiple_of(32) * pairs];
        pack_kt_for_test(&src, rows, &mut dst, pairs);
        for j in 0..count {
            for p in 0..d.div_ceil(2) {
                let lo = src[5 + j * stride + 2 * p] as u32;
                let hi = if 2 * p + 1 < d { src[5 + j * stride + 2 * p + 1] as u32 } else { 0 };
                assert_eq!(dst[kt_offset(p, j, pairs)], lo | hi << 16, "count {count} d {d}: key {j} pair {p}");
            }
        }
    }
}

#[test]
fn the_backend_names_its_kernels_per_dtype() {
    let b: &dyn AttentionBackend = &CpuFlash::new();
    for dtype in DType::ALL {
        let k = b.kernels_here(dtype).expect("cpu-flash always says");
        assert!(k.contains(CpuFlash::new().isa().name()), "{k}");
        assert!(k.contains(CpuFlash::new().kernels(dtype)), "{k}");
    }
    if CpuFlash::new().isa() != CpuIsa::Amx {
        let k = b.kernels_here(DType::BF16).unwrap();
        assert!(k.contains("amx: "), "the reason AMX is not used: {k}");
    }
}
