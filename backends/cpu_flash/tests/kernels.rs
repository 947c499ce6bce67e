//! The micro-kernels against naive loops, for every block plan: the
//! default (4 × 2 vectors, AVX2 and portable) and the 16-lane AVX-512 plan
//! (run here through portable 16-lane vectors, so it is tested on CPUs
//! without AVX-512), at the compile-time K strides (144, 80) and others.

use super::super::kernels::{Kernels, PvTile, QkTile};
use super::super::simd::{Lanes, Portable};
use super::super::{BK, BQ, QTS};
use crate::tensor::SplitMix64;

fn random(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.next_unit() * 2.0 - 1.0).collect()
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-5 + 1e-5 * b.abs()
}

fn check_qk<K: Kernels>(name: &str) {
    let mut rng = SplitMix64(11);
    for (d, ks) in [(128, 144), (64, 80), (40, 40), (3, 19), (128, 128)] {
        for keys in [8, 24, 64] {
            let k = random(&mut rng, BK * ks + d);
            let qt = random(&mut rng, d * QTS);
            let mut s = vec![f32::NAN; BK * BQ];
            let mut max = random(&mut rng, BQ);
            let max0 = max.clone();
            let cols = BQ;
            let a = QkTile {
                k: k.as_ptr(),
                k_stride: ks,
                qt: qt.as_ptr(),
                d,
                s: s.as_mut_ptr(),
                max: max.as_mut_ptr(),
                keys,
                cols,
            };
            // SAFETY: every buffer holds what `QkTile` names; keys is a
            // multiple of KEY_ALIGN <= BK, cols = BQ.
            unsafe { K::qk(&a) };
            for c in 0..cols {
                let mut m = max0[c];
                for j in 0..keys {
                    let want: f32 = (0..d).map(|x| k[j * ks + x] * qt[x * QTS + c]).sum();
                    let got = s[j * BQ + c];
                    assert!(close(got, want), "{name} qk d {d} ks {ks} keys {keys}: s[{j}][{c}] {got} vs {want}");
                    m = m.max(got);
                }
                assert_eq!(max[c], m, "{name} qk max of column {c}");
            }
        }
    }
}

fn check_pv<K: Kernels>(name: &str) {
    let mut rng = SplitMix64(12);
    for (dp, vs) in [(128, 144), (64, 80), (48, 48), (16, 40), (208, 208)] {
        for (keys, rows) in [(64, 64), (13, 24), (1, 8), (64, 40)] {
            let p = random(&mut rng, BK * BQ);
            let v = random(&mut rng, keys * vs + dp);
            let mut o = random(&mut rng, BQ * dp);
            let o0 = o.clone();
            let alpha = random(&mut rng, BQ);
            let a = PvTile {
                p: p.as_ptr(),
                keys,
                v: v.as_ptr(),
                v_stride: vs,
                dp,
                o: o.as_mut_ptr(),
                alpha: alpha.as_ptr(),
                rows,
            };
            // SAFETY: every buffer holds what `PvTile` names; rows is a
            // multiple of ROW_ALIGN <= BQ, dp of DIM_ALIGN.
            unsafe { K::pv(&a) };
            for r in 0..BQ {
                for c in 0..dp {
                    let got = o[r * dp + c];
                    if r >= rows {
                        assert_eq!(got, o0[r * dp + c], "{name} pv wrote row {r} past rows {rows}");
                        continue;
                    }
                    let sum: f32 = (0..keys).map(|j| p[j * BQ + r] * v[j * vs + c]).sum();
                    let want = alpha[r] * o0[r * dp + c] + sum;
                    assert!(close(got, want), "{name} pv dp {dp} keys {keys} rows {rows}: o[{r}][{c}] {got} vs {want}");
                }
            }
        }
    }
}

#[test]
fn default_plan_matches_naive_loops() {
    check_qk::<Portable>("portable");
    check_pv::<Portable>("portable");
    #[cfg(target_arch = "x86_64")]
    if super::CpuIsa::Avx2Fma.available() {
        check_qk::<super::super::simd::Avx2>("avx2");
        check_pv::<super::super::simd::Avx2>("avx2");
    }
}

#[test]
fn avx512_plan_matches_naive_loops() {
    check_qk::<Lanes<16>>("16 portable lanes");
    check_pv::<Lanes<16>>("16 portable lanes");
    #[cfg(target_arch = "x86_64")]
    if super::CpuIsa::Avx512.available() {
        check_qk::<super::super::simd::Avx512>("avx512");
        check_pv::<super::super::simd::Avx512>("avx512");
    }
}
