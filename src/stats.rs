//! Timing statistics shared by `rocmforge run`, `rocmforge bench` and the
//! examples: median, minimum and spread of repeated measurements.

/// Summary of repeated timings, in the unit they were given in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub count: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    /// `None` for no samples. NaN samples sort last (`total_cmp`), so they
    /// can move the maximum but never hide in the median of a clean run.
    pub fn of(samples: &[f64]) -> Option<Stats> {
        let mut sorted = samples.to_vec();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let n = sorted.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Some(Stats { count: n, median, min: sorted[0], max: sorted[n - 1] })
    }

    /// (max - min) / median: 0.05 means the runs spread over 5 % of the median.
    pub fn spread(&self) -> f64 {
        if self.median > 0.0 {
            (self.max - self.min) / self.median
        } else {
            0.0
        }
    }

    /// "1.234 ms (median of 5, min 1.200, spread 4.1 %)", or "1.234 ms" for one run.
    pub fn describe_ms(&self) -> String {
        if self.count == 1 {
            format!("{:.3} ms", self.median)
        } else {
            format!(
                "{:.3} ms (median of {}, min {:.3}, spread {:.1} %)",
                self.median,
                self.count,
                self.min,
                self.spread() * 100.0
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_spread() {
        assert_eq!(Stats::of(&[]), None);
        let s = Stats::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.count), (2.0, 1.0, 3.0, 3));
        assert_eq!(s.spread(), 1.0);
        assert_eq!(Stats::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert_eq!(Stats::of(&[2.0]).unwrap().describe_ms(), "2.000 ms");
        assert!(Stats::of(&[1.0, 1.1]).unwrap().describe_ms().contains("median of 2, min 1.000, spread 9.5 %"));
    }
}
