//! Hostile arguments: sizes past the machine, bounds of `--repeats` /
//! `--warmup` / `--threads`, and megabyte-long inputs. Every one must end
//! in one `error:` line and exit 1 or 2: no abort (SIGABRT from a failed
//! allocation), no panic, no hang, and no echo of the whole input.

use crate::cli::{assert_clean_error, rocmforge, run, run_owned, tiny};

#[test]
fn sizes_past_the_machine_are_refused_before_allocating() {
    let o = run(&["run", "--seq-q", "1099511627776", "--heads", "32", "--kv-heads", "8", "--head-dim", "128"]);
    let err = assert_clean_error(&o, "this run needs 40.0 PiB of host memory");
    assert!(err.contains("q 16.0 PiB = 1 × 1099511627776 × 32 × 128 × 4 bytes"), "{err}");
    // f16 halves the bytes: the check counts what is allocated, in the dtype.
    let o = run(&["run", "--seq-q", "1099511627776", "--heads", "32", "--kv-heads", "8", "--dtype", "f16"]);
    assert_clean_error(&o, "this run needs 20.0 PiB");
    let o = run(&["bench", "--shape", "1,32,8,1099511627776,1099511627776,128", "--backends", "cpu-flash"]);
    assert_clean_error(&o, "bench shape 1,32,8,1099511627776,1099511627776,128 needs");
    // Past usize: an invalid problem, reported as such.
    let max = usize::MAX.to_string();
    assert_clean_error(&run(&["run", "--batch", &max, "--seq-q", "2"]), "invalid problem: tensor q would hold more");
    assert_clean_error(&run(&["explain", "--batch", &max, "--seq-q", "2"]), "invalid problem");
    assert_clean_error(&run(&["run", "--seq-q", "99999999999999999999999"]), "--seq-q");
    assert_clean_error(&run(&["run", "--scale", "nan"]), "scale must be finite");
    assert_clean_error(&run(&["run", "--softcap=-inf"]), "softcap must be finite");
    assert_clean_error(&run(&["run", "--mask", "window:99999999999,0"]), "exceeds the limit");
}

#[test]
fn repeat_warmup_and_thread_counts_are_bounded() {
    for (flag, value) in [
        ("--repeats", "0"),
        ("--repeats", "1001"),
        ("--repeats", "4294967296"),
        ("--warmup", "1001"),
        ("--warmup=-1", "1"),
        ("--threads", "0"),
        ("--threads", "1025"),
    ] {
        assert_clean_error(&run_owned(&tiny(&["run", flag, value])), flag.trim_end_matches("=-1"));
    }
    assert_clean_error(&run(&["bench", "--repeats", "100000", "--shape", "1,1,1,1,1,1"]), "--repeats");
    assert_clean_error(&run(&["bench", "--warmup", "100000", "--shape", "1,1,1,1,1,1"]), "--warmup");
}

#[test]
fn long_inputs_are_shortened_in_errors() {
    let long = "x".repeat(100_000);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (tiny(&["run", "--backend", &long]), "unknown attention backend"),
        (tiny(&["run", "--mask", &long]), "--mask"),
        (tiny(&["run", "--dtype", &long]), "--dtype"),
        (vec!["bench".into(), "--shape".into(), long.clone()], "--shape"),
        (vec!["bench".into(), "--backends".into(), long.clone()], "unknown attention backend"),
        (vec!["kernels".into(), "check".into(), "--target".into(), long.clone()], "unknown target"),
    ];
    for (args, needle) in cases {
        let o = run_owned(&args);
        let err = assert_clean_error(&o, needle);
        assert!(err.len() < 1000, "{} bytes of error for {:?}...: {}", err.len(), &args[..2], &err[..200]);
    }
    let args = tiny(&["run"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = rocmforge(&refs).env(rocmforge::BACKEND_ENV, &long).output().unwrap();
    let err = assert_clean_error(&o, "unknown attention backend");
    assert!(err.len() < 1000, "{} bytes", err.len());
}

#[test]
fn huge_problems_are_explained_without_walking_every_row() {
    // FLOP counts used to loop over the query rows: 2^40 rows hung explain.
    let start = std::time::Instant::now();
    let o =
        run(&["explain", "--seq-q", "1099511627776", "--heads", "1", "--kv-heads", "1", "--head-dim", "1", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("explain --json");
    let s = (1u64 << 40) as f64;
    assert_eq!(doc["problem"]["flops"].as_f64().unwrap(), 4.0 * s * (s + 1.0) / 2.0);
    assert_eq!(doc["host_memory"]["fits"], false);
    assert!(start.elapsed().as_secs() < 10, "took {:?}", start.elapsed());
}
