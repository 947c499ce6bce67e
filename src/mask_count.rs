//! How many (query, key) pairs a mask lets through, in O(1): the sum over
//! rows of `Mask::key_range`'s length, without walking the rows. FLOP counts
//! use it, and a loop over 2^40 query rows would hang `explain`.

use crate::problem::Mask;

/// count·(count-1)/2 without the intermediate overflowing.
fn triangle(count: i128) -> i128 {
    if count % 2 == 0 {
        (count / 2).saturating_mul(count - 1)
    } else {
        count.saturating_mul((count - 1) / 2)
    }
}

/// Σ_{i < n} max(0, v + s·i) for slope `s` in {-1, 0, 1}. Saturates far
/// past any size a valid problem can have.
fn sum_positive(v: i128, s: i128, n: i128) -> i128 {
    if n <= 0 {
        return 0;
    }
    match s {
        0 => v.max(0).saturating_mul(n),
        1 => {
            // Terms are positive from i = max(0, 1 - v) on.
            let start = (1 - v).clamp(0, n);
            let count = n - start;
            count.saturating_mul(v + start).saturating_add(triangle(count))
        }
        _ => {
            // Terms are positive for i < v.
            let count = v.clamp(0, n);
            count.saturating_mul(v).saturating_sub(triangle(count))
        }
    }
}

/// Σ_{i < n} max(0, min(i + a, cap) - max(i + b, 0)): the length of row i's
/// key range when the range is `[i + b, i + a)` clamped to `[0, cap)`.
fn clamped_range_sum(n: i128, a: i128, b: i128, cap: i128) -> i128 {
    // min(i + a, cap) changes form at i = cap - a; max(i + b, 0) at i = -b.
    let mut cuts = vec![0, n, (cap - a).clamp(0, n), (-b).clamp(0, n)];
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2)
        .map(|w| {
            let (lo, len) = (w[0], w[1] - w[0]);
            let upper_is_cap = lo + a >= cap;
            // At i = -b both forms of the lower bound are 0; from there on
            // it is i + b, so a segment starting there takes that form.
            let lower_is_zero = lo + b < 0;
            let (v, s) = match (upper_is_cap, lower_is_zero) {
                (true, true) => (cap, 0),
                (true, false) => (cap - (lo + b), -1),
                (false, true) => (lo + a, 1),
                (false, false) => (a - b, 0),
            };
            sum_positive(v, s, len)
        })
        .sum()
}

/// Σ over the `seq_q` rows of `mask.key_range(i, seq_q, seq_kv)`'s length.
pub fn unmasked_pairs(mask: Mask, seq_q: usize, seq_kv: usize) -> u128 {
    let (n, cap) = (seq_q as i128, seq_kv as i128);
    let offset = cap - n; // row i sits at key position i + offset
    let total = match mask {
        Mask::None => return seq_q as u128 * seq_kv as u128,
        // Causal has no lower bound: any b <= -n keeps max(i + b, 0) at 0.
        Mask::Causal => clamped_range_sum(n, offset + 1, -n, cap),
        Mask::SlidingWindow { left, right } => {
            clamped_range_sum(n, offset + right as i128 + 1, offset - left as i128, cap)
        }
    };
    total.max(0) as u128
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn by_rows(mask: Mask, sq: usize, skv: usize) -> u128 {
        (0..sq)
            .map(|i| {
                let (lo, hi) = mask.key_range(i, sq, skv);
                hi.saturating_sub(lo) as u128
            })
            .sum()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn agrees_with_key_range(sq in 0usize..80, skv in 0usize..80, l in 0usize..100, r in 0usize..100, kind in 0u8..3) {
            let mask = match kind {
                0 => Mask::None,
                1 => Mask::Causal,
                _ => Mask::SlidingWindow { left: l, right: r },
            };
            prop_assert_eq!(unmasked_pairs(mask, sq, skv), by_rows(mask, sq, skv), "{} sq {} skv {}", mask, sq, skv);
        }
    }

    #[test]
    fn huge_sizes_are_instant_and_exact() {
        let s = 1usize << 40;
        assert_eq!(unmasked_pairs(Mask::Causal, s, s), (s as u128) * (s as u128 + 1) / 2);
        assert_eq!(unmasked_pairs(Mask::None, usize::MAX, usize::MAX), (usize::MAX as u128).pow(2));
        let w = Mask::SlidingWindow { left: usize::MAX, right: usize::MAX };
        assert_eq!(unmasked_pairs(w, 1 << 50, 3), 3 << 50);
    }
}
