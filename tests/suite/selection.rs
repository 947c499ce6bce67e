//! Selection policy, on registries of fake backends built here (never the
//! global one), so the rules are tested independently of which real backends
//! exist. No test changes the process environment: the backend variable's
//! value is passed to `AttentionConfig::resolve_with_env` instead, because
//! tests that spawn the CLI run in parallel and would inherit it.

use rocmforge::capabilities::{Capabilities, HeadDims, Unsupported};
use rocmforge::registry::{ChoiceSource, Verdict};
use rocmforge::CheckedCall;
use rocmforge::{
    AttentionBackend, AttentionConfig, AttentionProblem, BackendChoice, BackendError, DType, Device, DeviceKind, Mask,
    MaskKind, Registry, SelectError, Tensor, BACKEND_ENV,
};
use serial_test::serial;

/// How often any fake backend's `run` was reached.
static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A backend that only declares things; selection never runs it.
struct Fake {
    name: &'static str,
    priority: i32,
    caps: Capabilities,
}

impl AttentionBackend for Fake {
    fn name(&self) -> &'static str {
        self.name
    }
    fn priority(&self) -> i32 {
        self.priority
    }
    fn description(&self) -> &'static str {
        "fake backend for selection tests"
    }
    fn capabilities(&self) -> Capabilities {
        self.caps.clone()
    }
    fn run(&self, _: CheckedCall<'_>) -> Result<(), BackendError> {
        RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

/// Runs everything on the CPU.
const ANYTHING: Capabilities = Capabilities {
    device: DeviceKind::Cpu,
    dtypes: &DType::ALL,
    head_dims: HeadDims::Range { min: 1, max: usize::MAX },
    max_seq_q: None,
    max_seq_kv: None,
    masks: &MaskKind::ALL,
    max_group_size: None,
    softcap: true,
    strided: true,
    matrix_units: None,
    deterministic: true,
    workspace: "none",
};

/// Rejects `problem()` for three reasons: dtype, head_dim and mask.
const PICKY: Capabilities =
    Capabilities { dtypes: &[DType::F16], head_dims: HeadDims::List(&[64, 128]), masks: &[MaskKind::None], ..ANYTHING };

/// Would run `problem()`, but only on a GPU.
const GPU_ONLY: Capabilities = Capabilities { device: DeviceKind::Gpu, ..ANYTHING };

fn fake(name: &'static str, priority: i32, caps: Capabilities) -> Box<dyn AttentionBackend> {
    Box::new(Fake { name, priority, caps })
}

fn registry(backends: Vec<Box<dyn AttentionBackend>>) -> Registry {
    match Registry::from_backends(backends) {
        Ok(r) => r,
        Err(e) => panic!("test registry: {e}"),
    }
}

/// picky (100) and gpu-only (50) outrank everyone but cannot run `problem()`
/// on the CPU; fast (10) wins auto; medium (5) and slow (1) are eligible.
fn five() -> Registry {
    registry(vec![
        fake("slow", 1, ANYTHING),
        fake("picky", 100, PICKY),
        fake("medium", 5, ANYTHING),
        fake("gpu-only", 50, GPU_ONLY),
        fake("fast", 10, ANYTHING),
    ])
}

fn problem() -> AttentionProblem {
    AttentionProblem::new(1, 8, 8, 4, 2, 32, DType::F32).with_mask(Mask::Causal)
}

fn picky_reasons() -> Vec<Unsupported> {
    vec![
        Unsupported::DType { got: DType::F32, supported: &[DType::F16] },
        Unsupported::HeadDim { got: 32, supported: HeadDims::List(&[64, 128]) },
        Unsupported::Mask { got: MaskKind::Causal, supported: &[MaskKind::None] },
    ]
}

fn prefer(names: &[&str]) -> BackendChoice {
    BackendChoice::Prefer(names.iter().map(|n| n.to_string()).collect())
}

fn config(names: &[&str]) -> AttentionConfig {
    AttentionConfig::with_backend(prefer(names))
}

/// The choice `c` resolves to when the backend variable holds `env`
/// (`None`: unset). The process environment is never changed: tests that
/// spawn the CLI run in parallel and would inherit it.
fn resolve(c: &AttentionConfig, env: Option<&str>) -> Result<(BackendChoice, ChoiceSource), SelectError> {
    c.resolve_with_env(env.map(std::ffi::OsStr::new))
}

/// `Registry::select` as it behaves with the backend variable set to `env`.
fn select_with_env<'r>(
    r: &'r Registry,
    c: &AttentionConfig,
    env: Option<&str>,
) -> Result<rocmforge::registry::Selection<'r>, SelectError> {
    let (choice, source) = resolve(c, env)?;
    r.select_choice(&problem(), &Device::Cpu, &choice, source)
}

fn select_name_env(r: &Registry, c: &AttentionConfig, env: Option<&str>) -> (&'static str, ChoiceSource) {
    match select_with_env(r, c, env) {
        Ok(s) => (s.backend.name(), s.source),
        Err(e) => panic!("selection failed: {e}"),
    }
}

#[test]
fn registry_orders_by_priority_then_name() {
    let r = registry(vec![fake("b-tie", 3, ANYTHING), fake("low", 0, ANYTHING), fake("a-tie", 3, ANYTHING)]);
    assert_eq!(r.names(), ["a-tie", "b-tie", "low"]);
    assert_eq!(five().names(), ["picky", "gpu-only", "fast", "medium", "slow"]);
}

#[test]
fn auto_picks_the_highest_priority_eligible_backend() {
    let r = five();
    let s = r.select_choice(&problem(), &Device::Cpu, &BackendChoice::Auto, ChoiceSource::Default).unwrap();
    assert_eq!(s.backend.name(), "fast");
    assert_eq!(s.source, ChoiceSource::Default);
    assert!(s.reason.to_string().contains("auto") && s.reason.to_string().contains("10"), "{}", s.reason.to_string());

    // Equal priorities: the order is deterministic (by name).
    let r = registry(vec![fake("b-tie", 3, ANYTHING), fake("a-tie", 3, ANYTHING), fake("picky", 9, PICKY)]);
    let s = r.select_choice(&problem(), &Device::Cpu, &BackendChoice::Auto, ChoiceSource::Default).unwrap();
    assert_eq!(s.backend.name(), "a-tie");
}

#[test]
fn config_beats_env_beats_auto() {
    let r = five();
    let default = AttentionConfig::default();
    assert_eq!(select_name_env(&r, &default, None), ("fast", ChoiceSource::Default));
    assert_eq!(select_name_env(&r, &config(&["slow"]), None), ("slow", ChoiceSource::CONFIG));

    assert_eq!(select_name_env(&r, &default, Some("medium")), ("medium", ChoiceSource::Env));
    assert_eq!(select_name_env(&r, &config(&["slow"]), Some("medium")), ("slow", ChoiceSource::CONFIG));
    // An explicit `auto` in the config also beats the environment.
    let auto = AttentionConfig::with_backend(BackendChoice::Auto);
    assert_eq!(select_name_env(&r, &auto, Some("medium")), ("fast", ChoiceSource::CONFIG));

    assert_eq!(select_name_env(&r, &default, Some("auto")), ("fast", ChoiceSource::Env));

    let s = select_with_env(&r, &default, Some("picky, slow")).unwrap();
    assert_eq!((s.backend.name(), s.source), ("slow", ChoiceSource::Env));
    assert!(s.reason.to_string().contains("picky"), "{}", s.reason.to_string());
}

#[test]
fn preference_list_picks_first_runnable_and_reports_skipped() {
    let r = five();
    let s = r
        .select_choice(&problem(), &Device::Cpu, &prefer(&["picky", "gpu-only", "slow", "fast"]), ChoiceSource::CONFIG)
        .unwrap();
    assert_eq!(s.backend.name(), "slow");
    assert!(
        s.reason.to_string().contains("picky") && s.reason.to_string().contains("gpu-only"),
        "reason must list skipped: {}",
        s.reason
    );
    assert!(!s.reason.to_string().contains("fast"), "{}", s.reason.to_string());

    let s = r.select_choice(&problem(), &Device::Cpu, &prefer(&["medium", "fast"]), ChoiceSource::CONFIG).unwrap();
    assert_eq!(s.backend.name(), "medium", "the list order wins over priority");
}

#[test]
fn forced_backend_that_cannot_run_lists_every_reason() {
    let r = five();
    let err = r.select_choice(&problem(), &Device::Cpu, &prefer(&["picky"]), ChoiceSource::Env).err().unwrap();
    match &err {
        SelectError::ForcedUnsupported { rejected, source_, .. } => {
            assert_eq!(*source_, ChoiceSource::Env);
            assert_eq!(rejected, &[("picky", picky_reasons())]);
        }
        other => panic!("expected ForcedUnsupported, got {other}"),
    }
    let text = err.to_string();
    for reason in picky_reasons() {
        assert!(text.contains(&reason.to_string()), "'{reason}' missing from: {text}");
    }
    assert!(text.contains("picky") && text.contains(BACKEND_ENV), "{text}");
    assert!(text.contains(&problem().to_string()), "the message names the problem: {text}");

    // A list where nothing runs: every backend and every reason.
    let err = r.select_choice(&problem(), &Device::Cpu, &prefer(&["picky", "gpu-only"]), ChoiceSource::CONFIG);
    let text = err.err().unwrap().to_string();
    for needle in ["picky", "dtype f32", "head_dim 32", "mask causal", "gpu-only", "runs on gpu, problem is on cpu"] {
        assert!(text.contains(needle), "'{needle}' missing from: {text}");
    }
}

#[test]
fn forced_backend_never_falls_back() {
    // A GPU backend asked for on the CPU is an error even though CPU backends could run it.
    let r = five();
    let result = r.select_choice(&problem(), &Device::Cpu, &prefer(&["gpu-only"]), ChoiceSource::CONFIG);
    assert!(matches!(result, Err(SelectError::ForcedUnsupported { .. })));
}

#[test]
fn unknown_name_lists_valid_names() {
    let r = five();
    for choice in [prefer(&["nope"]), prefer(&["fast", "nope"])] {
        let err = r.select_choice(&problem(), &Device::Cpu, &choice, ChoiceSource::CONFIG).err().unwrap();
        match &err {
            SelectError::UnknownName { name, valid, .. } => {
                assert_eq!(name, "nope");
                assert_eq!(valid, &r.names());
            }
            other => panic!("expected UnknownName for {choice}, got {other}"),
        }
        let text = err.to_string();
        for name in r.names() {
            assert!(text.contains(name), "'{name}' missing from: {text}");
        }
    }
}

#[test]
fn duplicate_names_are_rejected() {
    let result =
        Registry::from_backends(vec![fake("fast", 1, ANYTHING), fake("x", 2, ANYTHING), fake("fast", 9, PICKY)]);
    match result {
        Err(e @ SelectError::Duplicate("fast")) => assert!(e.to_string().contains("fast")),
        Err(e) => panic!("expected Duplicate(\"fast\"), got {e}"),
        Ok(r) => panic!("duplicate accepted: {:?}", r.names()),
    }
}

#[test]
fn nothing_eligible_lists_every_backends_reasons() {
    let r = registry(vec![fake("picky", 100, PICKY), fake("gpu-only", 50, GPU_ONLY)]);
    let err = r.select_choice(&problem(), &Device::Cpu, &BackendChoice::Auto, ChoiceSource::Default).err().unwrap();
    match &err {
        SelectError::NothingEligible { rejected, .. } => {
            assert_eq!(
                rejected,
                &[
                    ("picky", picky_reasons()),
                    ("gpu-only", vec![Unsupported::Device { needs: DeviceKind::Gpu, got: DeviceKind::Cpu }]),
                ]
            );
        }
        other => panic!("expected NothingEligible, got {other}"),
    }
    let text = err.to_string();
    for needle in ["picky", "gpu-only", "dtype f32 not in {f16}", "runs on gpu"] {
        assert!(text.contains(needle), "'{needle}' missing from: {text}");
    }
}

#[test]
fn invalid_problem_is_rejected_by_every_backend() {
    let r = five();
    let mut bad = problem();
    bad.num_kv_heads = 3; // 4 q heads are not a multiple of 3
    let only_invalid = |reasons: &[Unsupported]| matches!(reasons, [Unsupported::InvalidProblem(why)] if why.to_string().contains("num_kv_heads"));

    // Selection reports an invalid problem once, not once per backend.
    for choice in [BackendChoice::Auto, prefer(&["fast"])] {
        match r.select_choice(&bad, &Device::Cpu, &choice, ChoiceSource::Default) {
            Err(SelectError::InvalidProblem(e)) => assert!(e.to_string().contains("num_kv_heads"), "{e}"),
            Err(e) => panic!("expected InvalidProblem, got {e}"),
            Ok(s) => panic!("invalid problem selected {}", s.backend.name()),
        }
    }
    let err = r.choose(&bad, &AttentionConfig::default()).err().unwrap();
    assert_eq!(err.to_string().matches("num_kv_heads").count(), 1, "{err}");
    let (verdicts, chosen) = r.explain(&bad, &Device::Cpu, &AttentionConfig::with_backend(BackendChoice::Auto));
    assert!(chosen.is_err());
    assert_eq!(verdicts.len(), 5);
    for (name, verdict) in verdicts {
        assert!(matches!(&verdict, Verdict::Rejected(reasons) if only_invalid(reasons)), "{name}: {verdict:?}");
    }
}

#[test]
fn explain_gives_one_verdict_per_backend_and_exactly_one_chosen() {
    let r = five();
    let auto = AttentionConfig::with_backend(BackendChoice::Auto);
    let (verdicts, chosen) = r.explain(&problem(), &Device::Cpu, &auto);
    let names: Vec<&str> = verdicts.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, r.names());
    assert_eq!(
        verdicts,
        vec![
            ("picky", Verdict::Rejected(picky_reasons())),
            ("gpu-only", Verdict::Rejected(vec![Unsupported::Device { needs: DeviceKind::Gpu, got: DeviceKind::Cpu }])),
            ("fast", Verdict::Chosen),
            ("medium", Verdict::Eligible),
            ("slow", Verdict::Eligible),
        ]
    );
    assert!(chosen.as_ref().is_ok_and(|c| c.starts_with("fast")), "{chosen:?}");

    // A forced choice moves the single Chosen.
    let (verdicts, _) = r.explain(&problem(), &Device::Cpu, &config(&["slow"]));
    let chosen: Vec<&str> = verdicts.iter().filter(|(_, v)| *v == Verdict::Chosen).map(|(n, _)| *n).collect();
    assert_eq!(chosen, ["slow"]);
    assert!(verdicts.contains(&("fast", Verdict::Eligible)));

    // Failed selection: no Chosen at all, and the error says why.
    let (verdicts, chosen) = r.explain(&problem(), &Device::Cpu, &config(&["picky"]));
    assert_eq!(verdicts.len(), 5);
    assert!(verdicts.iter().all(|(_, v)| *v != Verdict::Chosen));
    assert!(matches!(chosen, Err(SelectError::ForcedUnsupported { .. })));
}

#[test]
fn bad_env_value_is_an_error() {
    let r = five();
    let default = AttentionConfig::default();
    match resolve(&default, Some("a,,b")) {
        Err(SelectError::EmptyName { input }) => assert_eq!(input, "a,,b"),
        other => panic!("expected EmptyName, got {other:?}"),
    }
    assert!(matches!(select_with_env(&r, &default, Some("a,,b")), Err(SelectError::EmptyName { .. })));
    // The config is stronger, so a bad environment does not matter then.
    assert_eq!(resolve(&config(&["slow"]), Some("a,,b")), Ok((prefer(&["slow"]), ChoiceSource::CONFIG)));

    match select_with_env(&r, &default, Some("nope")) {
        Err(SelectError::UnknownName { name, source_, .. }) => {
            assert_eq!((name.as_str(), source_), ("nope", ChoiceSource::Env))
        }
        Err(e) => panic!("expected UnknownName, got {e}"),
        Ok(s) => panic!("unknown env name selected {}", s.backend.name()),
    }
}

#[test]
fn non_unicode_env_value_is_an_error() {
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"fast\xff");
    assert_eq!(AttentionConfig::default().resolve_with_env(Some(bad)), Err(SelectError::EnvNotUnicode));
}

#[test]
fn choice_parsing() {
    assert_eq!(BackendChoice::parse("AUTO"), Ok(BackendChoice::Auto));
    assert_eq!(BackendChoice::parse("  "), Ok(BackendChoice::Auto));
    assert_eq!(BackendChoice::parse(" fast , slow "), Ok(prefer(&["fast", "slow"])));
    assert!(matches!(BackendChoice::parse("fast,"), Err(SelectError::EmptyName { .. })));
    assert_eq!(prefer(&["fast", "slow"]).to_string(), "fast,slow");
}

/// The library's device + backend policy: explicit CPU, auto, and a forced
/// GPU backend with no GPU (an error naming the reason, never a CPU run).
#[test]
fn choose_picks_device_and_backend_in_the_library() {
    let r = five();
    // An explicit `auto`, so the test's result does not depend on the
    // backend variable of the environment the tests were started in.
    let cpu =
        AttentionConfig { device: rocmforge::DeviceChoice::Cpu, ..AttentionConfig::with_backend(BackendChoice::Auto) };
    let c = r.choose(&problem(), &cpu).unwrap();
    assert_eq!((c.backend.name(), c.device.label()), ("fast", "cpu".to_string()));
    let forced = AttentionConfig { origin: "--backend", ..AttentionConfig::with_backend(prefer(&["gpu-only"])) };
    match r.choose(&problem(), &forced) {
        Ok(c) => assert!(matches!(c.device, Device::Gpu(_)), "a GPU backend ran on {}", c.device.label()),
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains("gpu-only") && text.contains("--backend"), "{text}");
            assert!(text.contains("needs a GPU") || text.contains("runs on gpu"), "{text}");
        }
    }
    let explained = r.explain_choice(&problem(), &cpu).unwrap();
    assert_eq!(explained.verdicts.len(), 5);
    assert_eq!(explained.chosen.unwrap().backend.name(), "fast");
}

/// `forward` validates before any backend code runs: a wrong shape, dtype
/// or stride never reaches `run`; a correct call does, exactly once.
#[test]
#[serial]
fn forward_validates_before_run() {
    use std::sync::atomic::Ordering;
    let backend: &dyn AttentionBackend = &Fake { name: "fake", priority: 1, caps: ANYTHING };
    let p = problem();
    let q = Tensor::random(p.q_shape(), p.dtype, 1).unwrap();
    let k = Tensor::random(p.kv_shape(), p.dtype, 2).unwrap();
    let v = Tensor::random(p.kv_shape(), p.dtype, 3).unwrap();
    let mut out = Tensor::nan(p.out_shape(), p.dtype, &Device::Cpu).unwrap();
    let before = RUNS.load(Ordering::SeqCst);
    assert!(backend.forward(&p, &q, &q, &v, &mut out).is_err(), "k with q's shape");
    let wrong_dtype = Tensor::random(p.kv_shape(), DType::BF16, 2).unwrap();
    assert!(backend.forward(&p, &q, &wrong_dtype, &v, &mut out).is_err());
    let mut strided = p.clone();
    strided.strides.k = Some([1 << 20, 1 << 10, 8]);
    assert!(backend.forward(&strided, &q, &k, &v, &mut out).is_err(), "k is contiguous, problem says strided");
    assert_eq!(RUNS.load(Ordering::SeqCst), before, "run was reached by an invalid call");
    backend.forward(&p, &q, &k, &v, &mut out).unwrap();
    assert_eq!(RUNS.load(Ordering::SeqCst), before + 1);
}
