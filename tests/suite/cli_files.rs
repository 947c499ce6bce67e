//! The `rocmforge run` file paths: Q/K/V from `.npy` / `.safetensors`,
//! malformed files (built here, byte by byte), `--out` checked before any
//! work, and `--check` on inputs holding NaN.

use crate::cli::{assert_clean_error, assert_ok, run, text};
use rocmforge::io::{encode_npy, read_tensor, write_host, HostTensor};
use rocmforge::{DType, HostData};
use std::path::Path;

fn tensor(shape: [usize; 4], dtype: DType, seed: u64) -> HostTensor {
    let t = rocmforge::Tensor::random(shape, dtype, seed).unwrap();
    HostTensor { shape, data: t.download().unwrap() }
}

fn write(dir: &Path, name: &str, t: &HostTensor) -> String {
    let path = dir.join(name);
    write_host(&path, "x", t.shape, &t.data).unwrap();
    path.display().to_string()
}

fn write_bytes(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

#[test]
fn file_round_trip_npy_and_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    for (ext, dtype) in
        [("npy", DType::F32), ("npy", DType::F16), ("safetensors", DType::F32), ("safetensors", DType::BF16)]
    {
        let (q, k, v) =
            (tensor([1, 3, 4, 8], dtype, 1), tensor([1, 5, 2, 8], dtype, 2), tensor([1, 5, 2, 8], dtype, 3));
        let (qp, kp, vp) = (
            write(dir.path(), &format!("q.{ext}"), &q),
            write(dir.path(), &format!("k.{ext}"), &k),
            write(dir.path(), &format!("v.{ext}"), &v),
        );
        let op = dir.path().join(format!("o_{dtype}.{ext}"));
        let o = run(&[
            "run",
            "--q",
            &qp,
            "--k",
            &kp,
            "--v",
            &vp,
            "--out",
            op.to_str().unwrap(),
            "--check",
            "--mask",
            "none",
        ]);
        let out = assert_ok(&o);
        assert!(out.contains("seq_q=3 seq_kv=5 heads=4/2 head_dim=8"), "{out}");
        assert!(out.contains("check: PASS"), "{out}");
        let written = read_tensor(&op, None).unwrap();
        assert_eq!(written.shape, [1, 3, 4, 8]);
        assert_eq!(written.dtype(), dtype);
        assert!(written.data.to_f32().iter().all(|x| x.is_finite()));
    }
}

#[test]
fn mismatched_and_broken_files_are_clean_errors() {
    let dir = tempfile::tempdir().unwrap();
    let q = tensor([1, 2, 2, 4], DType::F32, 1);
    let k = tensor([1, 2, 1, 4], DType::F32, 2);
    let qp = write(dir.path(), "q.npy", &q);
    let kp = write(dir.path(), "k.npy", &k);
    let bytes = std::fs::read(&kp).unwrap();
    let tp = write_bytes(dir.path(), "t.npy", &bytes[..bytes.len() - 3]);
    assert_clean_error(&run(&["run", "--q", &qp, "--k", &kp, "--v", &tp]), "truncated");
    let v2 = write(dir.path(), "v2.npy", &tensor([1, 3, 1, 4], DType::F32, 3));
    assert_clean_error(&run(&["run", "--q", &qp, "--k", &kp, "--v", &v2]), "shapes differ");
    let k3 = write(dir.path(), "k3.npy", &tensor([1, 2, 1, 5], DType::F32, 3));
    assert_clean_error(&run(&["run", "--q", &qp, "--k", &k3, "--v", &k3]), "head_dim mismatch");
    let vh = write(dir.path(), "vh.npy", &tensor([1, 2, 1, 4], DType::F16, 3));
    assert_clean_error(&run(&["run", "--q", &qp, "--k", &kp, "--v", &vh]), "dtype mismatch");
    assert_clean_error(&run(&["run", "--q", &qp, "--k", &kp, "--v", &kp, "--heads", "8"]), "--heads 8 conflicts");
    let jp = write_bytes(dir.path(), "junk.npy", b"hello world, not numpy");
    assert_clean_error(&run(&["run", "--q", &jp, "--k", &kp, "--v", &kp]), "not a .npy file");
    assert_clean_error(
        &run(&["run", "--q", "/nonexistent/q.npy", "--k", "/nonexistent/k.npy", "--v", "/nonexistent/v.npy"]),
        "/nonexistent/q.npy",
    );
}

#[test]
fn malformed_headers_name_file_offset_and_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let kp = write(dir.path(), "k.npy", &tensor([1, 2, 1, 4], DType::F32, 2));
    let good = encode_npy([1, 2, 2, 4], &HostData::F32(vec![0.5; 16])).unwrap();
    let header_end = 10 + u16::from_le_bytes([good[8], good[9]]) as usize;
    // Garbage after the dict, inside the padding numpy would evaluate.
    let mut bad = good.clone();
    bad[header_end - 4..header_end - 1].copy_from_slice(b"xyz");
    let bp = write_bytes(dir.path(), "garbage.npy", &bad);
    let err = assert_clean_error(&run(&["run", "--q", &bp, "--k", &kp, "--v", &kp]), &bp);
    assert!(err.contains(&format!("at byte {}", header_end - 4)), "{err}");
    assert!(err.contains("expected only spaces or a newline after the header dict"), "{err}");
    // Data longer than the shape needs.
    let mut long = good;
    long.extend_from_slice(&[0; 8]);
    let lp = write_bytes(dir.path(), "long.npy", &long);
    assert_clean_error(&run(&["run", "--q", &lp, "--k", &kp, "--v", &kp]), "needs 64 bytes");
    // A .safetensors file naming its tensor twice.
    let header = r#"{"q":{"dtype":"F32","shape":[1,1,1,1],"data_offsets":[0,4]},"q":{"dtype":"F32","shape":[1,1,1,1],"data_offsets":[0,4]}}"#;
    let mut st = (header.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(header.as_bytes());
    st.extend_from_slice(&[0; 4]);
    let sp = write_bytes(dir.path(), "dup.safetensors", &st);
    assert_clean_error(&run(&["run", "--q", &sp, "--k", &kp, "--v", &kp]), "tensor name 'q' appears more than once");
}

#[test]
fn out_is_checked_before_computing() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = ["--seq-q", "4", "--heads", "2", "--kv-heads", "1", "--head-dim", "8"];
    let run_with_out = |out: &str, extra: &[&str]| {
        let mut args = vec!["run", "--out", out];
        args.extend_from_slice(&tiny);
        args.extend_from_slice(extra);
        run(&args)
    };
    for (out, extra, needle) in [
        ("/nonexistent-dir/o.npy", &[][..], "cannot write"),
        ("o.txt", &[][..], "unknown file format"),
        ("o.npy", &["--dtype", "bf16"][..], "bf16 cannot be stored in .npy"),
    ] {
        let o = run_with_out(&dir.path().join(out).display().to_string(), extra);
        assert_clean_error(&o, needle);
        let (stdout, _) = text(&o);
        assert!(!stdout.contains("time"), "computed before failing on --out {out}: {stdout}");
    }
    let ok = dir.path().join("o.safetensors");
    assert_ok(&run_with_out(&ok.display().to_string(), &["--dtype", "bf16"]));
    assert_eq!(read_tensor(&ok, None).unwrap().dtype(), DType::BF16);
}

/// NaN in the inputs: cpu-reference propagates it as the f64 reference does,
/// and `--check` says the reference itself is non-finite instead of printing
/// a zero error next to a count of bad elements.
#[test]
fn check_reports_non_finite_reference_values_honestly() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = tensor([1, 3, 2, 4], DType::F32, 1);
    if let HostData::F32(v) = &mut q.data {
        v[9] = f32::NAN; // query row 1, head 0
    }
    let (qp, kp, vp) = (
        write(dir.path(), "q.npy", &q),
        write(dir.path(), "k.npy", &tensor([1, 3, 1, 4], DType::F32, 2)),
        write(dir.path(), "v.npy", &tensor([1, 3, 1, 4], DType::F32, 3)),
    );
    let o =
        run(&["run", "--q", &qp, "--k", &kp, "--v", &vp, "--backend", "cpu-reference", "--check", "--mask", "none"]);
    let out = assert_ok(&o);
    assert!(out.contains("the reference itself has 4 non-finite values"), "{out}");
    assert!(out.contains("output has 4 NaN"), "{out}");
    assert!(out.contains("check: PASS"), "{out}");
}
