//! Measurement overrides for `flash-decode`, from the environment variable
//! `ROCMFORGE_DECODE_TUNE` (comma-separated `key=value`), read once per
//! process, so that one build can time kernel variants side by side
//! (`scripts/decode_sweep.sh`). Unset, the tuned defaults apply; nothing
//! else reads it. Keys:
//! - `stages=N`: K/V pipeline depth (`RF_DECODE_STAGES`);
//! - `bn=N`: keys per tile (`RF_DECODE_BN`, a multiple of 16);
//! - `l2=N`: ask L2 to fetch N bytes (64, 128, 256; 0 = no hint) around
//!   each K/V copy (`RF_DECODE_L2_PREFETCH`, NVIDIA sm_80+; the f16/bf16
//!   kernel's default is 256, the f32 one's none);
//! - `split_tiles=N`: every split covers N tiles (the split count follows);
//! - `prefetch=N`: partials the merging thread loads before the weights
//!   (`RF_DECODE_MERGE_PREFETCH`, at most 32);
//! - `merge_batch=N`: partial loads issued together (`RF_DECODE_MERGE_BATCH`);
//! - `pdl=0|1`: programmatic dependent launch on NVIDIA sm_90+ (launch.rs);
//! - `row_walk=0`: K/V copies through the general loader
//!   (`RF_DECODE_ROW_WALK`, `rf/decode_common.h`);
//! - `early=N`: K/V rows of each block's first N tiles (at most 8, by
//!   default one) prefetched into L2 before the wait for the previous
//!   kernel (`RF_DECODE_EARLY_L2`, NVIDIA sm_90+; 0 = none);
//! - `paged_runs=0`: paged copies look a pool block up per row instead of
//!   once per run of rows (`RF_DECODE_PAGED_RUNS`);
//! - `wide=0|1`: the f16/bf16 kernel's wide variant off or on for every
//!   call where it exists (head_dim 128), instead of by `split::wide`
//!   (`RF_DECODE_WIDE`, launch.rs);
//! - `warps=N`: warps per block of the f16/bf16 kernel (`RF_DECODE_WARPS`,
//!   1 to 8; the tile's keys must split into 16 per warp).
//!
//! An unknown key or a value out of its range makes every flash-decode call
//! fail with `BackendError::Environment` naming the item (a typo must not
//! time the default by mistake); a variant the kernel cannot take fails to
//! compile, which the call reports as an error too.

use crate::backend::BackendError;
use crate::kernels::KernelSpec;
use std::sync::OnceLock;

/// The environment variable.
pub const TUNE_ENV: &str = "ROCMFORGE_DECODE_TUNE";

/// Overrides; `None` = the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tuning {
    pub stages: Option<usize>,
    pub block_n: Option<usize>,
    pub l2_prefetch: Option<usize>,
    pub split_tiles: Option<usize>,
    pub prefetch: Option<usize>,
    pub merge_batch: Option<usize>,
    pub pdl: Option<bool>,
    pub row_walk: Option<usize>,
    pub early: Option<usize>,
    pub paged_runs: Option<usize>,
    pub wide: Option<bool>,
    pub warps: Option<usize>,
}

/// The keys `Tuning::parse` takes (each has a guarded arm there).
const KEYS: [&str; 12] = [
    "stages",
    "bn",
    "l2",
    "split_tiles",
    "prefetch",
    "merge_batch",
    "pdl",
    "row_walk",
    "early",
    "paged_runs",
    "wide",
    "warps",
];

impl Tuning {
    /// Parses `key=value,...` (empty items are skipped); names the first
    /// item that is not a known key with a value in its range.
    pub fn parse(text: &str) -> Result<Tuning, String> {
        let mut t = Tuning::default();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let parsed = item.split_once('=').and_then(|(k, v)| Some((k.trim(), v.trim().parse::<usize>().ok()?)));
            let Some((key, value)) = parsed else {
                return Err(format!("`{item}` is not key=N (N a non-negative integer)"));
            };
            match key {
                "stages" if value >= 1 => t.stages = Some(value),
                "bn" if value >= 16 && value % 16 == 0 => t.block_n = Some(value),
                "l2" if [0, 64, 128, 256].contains(&value) => t.l2_prefetch = Some(value),
                "split_tiles" if value >= 1 => t.split_tiles = Some(value),
                "prefetch" if value <= 32 => t.prefetch = Some(value),
                "merge_batch" if (1..=32).contains(&value) => t.merge_batch = Some(value),
                "pdl" if value <= 1 => t.pdl = Some(value == 1),
                "row_walk" if value <= 1 => t.row_walk = Some(value),
                "early" if value <= 8 => t.early = Some(value),
                "paged_runs" if value <= 1 => t.paged_runs = Some(value),
                "wide" if value <= 1 => t.wide = Some(value == 1),
                "warps" if (1..=8).contains(&value) => t.warps = Some(value),
                known if KEYS.contains(&known) => {
                    return Err(format!("`{item}`: value out of range (see backends/flash_decode/tuning.rs)"));
                }
                _ => return Err(format!("unknown key in `{item}` (known: {})", KEYS.join(", "))),
            }
        }
        Ok(t)
    }

    /// `spec` with the kernel defines of these overrides.
    pub fn apply(&self, mut spec: KernelSpec) -> KernelSpec {
        for (name, value) in [
            ("RF_DECODE_STAGES", self.stages),
            ("RF_DECODE_BN", self.block_n),
            ("RF_DECODE_L2_PREFETCH", self.l2_prefetch),
            ("RF_DECODE_MERGE_PREFETCH", self.prefetch),
            ("RF_DECODE_MERGE_BATCH", self.merge_batch),
            ("RF_DECODE_ROW_WALK", self.row_walk),
            ("RF_DECODE_EARLY_L2", self.early),
            ("RF_DECODE_PAGED_RUNS", self.paged_runs),
            ("RF_DECODE_WARPS", self.warps),
        ] {
            if let Some(v) = value {
                spec = spec.define(name, v);
            }
        }
        spec
    }
}

/// The process's overrides (`ROCMFORGE_DECODE_TUNE`, read once), or the
/// error that names its bad item.
pub fn tuning() -> Result<&'static Tuning, BackendError> {
    static TUNING: OnceLock<Result<Tuning, String>> = OnceLock::new();
    let parsed = TUNING.get_or_init(|| match std::env::var(TUNE_ENV) {
        Ok(text) => Tuning::parse(&text),
        Err(std::env::VarError::NotPresent) => Ok(Tuning::default()),
        Err(std::env::VarError::NotUnicode(_)) => Err("not valid unicode".to_string()),
    });
    parsed.as_ref().map_err(|problem| BackendError::Environment { var: TUNE_ENV, problem: problem.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    #[test]
    fn parses_known_keys() {
        let t = Tuning::parse("stages=4, bn=128,l2=256,split_tiles=8,,").unwrap();
        let want = Tuning {
            stages: Some(4),
            block_n: Some(128),
            l2_prefetch: Some(256),
            split_tiles: Some(8),
            ..Tuning::default()
        };
        assert_eq!(t, want);
        let t = Tuning::parse("prefetch=16,merge_batch=8,pdl=0,row_walk=0").unwrap();
        assert_eq!((t.prefetch, t.merge_batch, t.pdl, t.row_walk), (Some(16), Some(8), Some(false), Some(0)));
        let t = Tuning::parse("early=2,paged_runs=0").unwrap();
        assert_eq!((t.early, t.paged_runs), (Some(2), Some(0)));
        assert_eq!(Tuning::parse("early=0").unwrap().early, Some(0));
        assert_eq!(Tuning::parse("").unwrap(), Tuning::default());
        assert_eq!(Tuning::parse("l2=0").unwrap().l2_prefetch, Some(0));
        // Every listed key has an arm: a valid value of each parses.
        let valid = "stages=2,bn=64,l2=0,split_tiles=1,prefetch=0,merge_batch=1,pdl=1,row_walk=1,early=1,paged_runs=1,\
                     wide=1,warps=8";
        let keys: Vec<&str> = valid.split(',').map(|i| i.split('=').next().unwrap()).collect();
        assert_eq!(keys, super::KEYS);
        let all = Tuning {
            stages: Some(2),
            block_n: Some(64),
            l2_prefetch: Some(0),
            split_tiles: Some(1),
            prefetch: Some(0),
            merge_batch: Some(1),
            pdl: Some(true),
            row_walk: Some(1),
            early: Some(1),
            paged_runs: Some(1),
            wide: Some(true),
            warps: Some(8),
        };
        assert_eq!(Tuning::parse(valid).unwrap(), all);
    }

    #[test]
    fn bad_items_are_named_errors() {
        for (text, named) in [
            ("bogus=1", "bogus=1"),
            ("bn=x", "bn=x"),
            ("stages", "stages"),
            ("bn=40", "bn=40"),
            ("l2=100", "l2=100"),
            ("stages=0", "stages=0"),
            ("prefetch=33", "prefetch=33"),
            ("merge_batch=0", "merge_batch=0"),
            ("pdl=2", "pdl=2"),
            ("row_walk=2", "row_walk=2"),
            ("early=9", "early=9"),
            ("early=-1", "early=-1"),
            ("paged_runs=2", "paged_runs=2"),
            ("wide=2", "wide=2"),
            ("cluster=8", "cluster=8"),
            ("warps=0", "warps=0"),
            ("warps=9", "warps=9"),
            ("blocks=3", "blocks=3"),
            ("bn=64,probe=2", "probe=2"),
            ("ticket=0", "ticket=0"),
        ] {
            let err = Tuning::parse(text).expect_err(text);
            assert!(err.contains(named), "{text}: {err}");
        }
    }

    #[test]
    fn overrides_become_defines() {
        let spec = super::super::launch::split_spec(DType::BF16, 128, false);
        assert_eq!(Tuning::default().apply(spec.clone()), spec);
        let tuned = Tuning {
            stages: Some(2),
            l2_prefetch: Some(128),
            early: Some(0),
            paged_runs: Some(0),
            ..Tuning::default()
        }
        .apply(spec);
        assert!(tuned.defines.contains(&("RF_DECODE_STAGES".to_string(), "2".to_string())));
        assert!(tuned.defines.contains(&("RF_DECODE_L2_PREFETCH".to_string(), "128".to_string())));
        assert!(tuned.defines.contains(&("RF_DECODE_EARLY_L2".to_string(), "0".to_string())));
        assert!(tuned.defines.contains(&("RF_DECODE_PAGED_RUNS".to_string(), "0".to_string())));
        assert!(!tuned.defines.iter().any(|(k, _)| k == "RF_DECODE_BN"));
    }
}
