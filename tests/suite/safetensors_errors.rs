//! Damaged `.safetensors` files, as `run` inputs (`io::read_tensor`) and as
//! model weights (`Decoder::load`): every failure is a sentence naming the
//! file, the tensor where there is one, and the numbers that disagree.

use super::model_fixtures::fixture_dir;
use rocmforge::io::{check_safetensors, crate_error_text, read_tensor, IoErrorKind, SafetensorsError};
use rocmforge::model::{Decoder, DecoderOptions, ModelError, WeightsError};
use safetensors::SafeTensorError;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rocmforge-st-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Length field + header text (unpadded) + data.
fn st_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// One tensor entry of a header.
fn entry(name: &str, dtype: &str, shape: &str, start: u64, end: u64) -> String {
    format!(r#""{name}":{{"dtype":"{dtype}","shape":{shape},"data_offsets":[{start},{end}]}}"#)
}

/// Writes `bytes` as `name` in a scratch dir and reads it as a `run` input:
/// the error's text (which names the file) and its kind.
fn read_err(bytes: &[u8]) -> (String, IoErrorKind) {
    let dir = Scratch::new("run");
    let path = dir.path().join("q.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let err = read_tensor(&path, Some("q")).expect_err("a damaged file was read");
    let text = err.to_string();
    assert!(text.starts_with(&format!("{}: ", path.display())), "the file is not named: {text}");
    assert!(!text.contains("Invalid") && !text.contains("Metadata") && !text.contains("Overflow"), "{text}");
    (text, err.kind)
}

/// The `SafetensorsError` inside an io error kind.
fn st_kind(kind: IoErrorKind) -> SafetensorsError {
    match kind {
        IoErrorKind::Safetensors(e) => *e,
        other => panic!("not a safetensors header error: {other}"),
    }
}

#[test]
fn truncated_data_names_the_tensor_and_both_lengths() {
    let header = format!("{{{}}}", entry("q", "F32", "[1,4,2,8]", 0, 256));
    let bytes = st_bytes(&header, &[0; 100]);
    let data_start = 8 + header.len();
    let (text, kind) = read_err(&bytes);
    let want = format!("tensor `q`: data ends at byte {} ", data_start + 256);
    assert!(text.contains(&want), "{text}");
    assert!(text.contains(&format!("but the file has {} bytes", bytes.len())), "{text}");
    assert!(text.contains("data_offsets [0, 256]"), "{text}");
    assert!(matches!(st_kind(kind), SafetensorsError::Truncated { file_len, .. } if file_len == bytes.len() as u64));
}

#[test]
fn every_cut_of_a_good_file_says_how_long_the_file_is() {
    let header = format!("{{{},{}}}", entry("k", "F16", "[1,2,1,4]", 0, 16), entry("q", "F32", "[1,2,1,4]", 16, 48));
    let good = st_bytes(&header, &[0x11; 48]);
    check_safetensors(&good).unwrap();
    for cut in 0..good.len() {
        let err = check_safetensors(&good[..cut]).expect_err("a cut file was accepted").to_string();
        assert!(err.contains(&format!("{cut} bytes")), "cut at {cut}: {err}");
    }
}

#[test]
fn trailing_bytes_are_an_error_in_words() {
    let header = format!("{{{}}}", entry("q", "F32", "[1,1,1,4]", 0, 16));
    let bytes = st_bytes(&header, &[0; 16 + 64]);
    let (text, kind) = read_err(&bytes);
    let end = 8 + header.len() + 16;
    assert!(text.contains("64 bytes after the last tensor's data"), "{text}");
    assert!(text.contains(&format!("tensor `q` ends at byte {end}, the file has {} bytes", end + 64)), "{text}");
    assert!(matches!(st_kind(kind), SafetensorsError::Trailing { extra: 64, .. }));
}

#[test]
fn huge_header_length_is_compared_with_the_file() {
    let mut bytes = (1u64 << 60).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    bytes.resize(4096, b' ');
    let (text, _) = read_err(&bytes);
    assert!(text.ends_with("header length 1152921504606846976 is larger than the file (4096 bytes)"), "{text}");
    // A length just past the end, smaller than the file.
    let mut bytes = 20u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}               ");
    let (text, _) = read_err(&bytes);
    assert!(text.contains("header length 20 runs past the end of the file"), "{text}");
    assert!(text.contains("would end at byte 28 but the file has 25 bytes"), "{text}");
}

#[test]
fn non_json_header_gives_the_byte() {
    // Byte 8 + 6 is the `}` where a value should be.
    let (text, kind) = read_err(&st_bytes(r#"{"q": }"#, &[]));
    assert!(text.contains("the header is not valid JSON at byte 14: expected value"), "{text}");
    assert!(matches!(st_kind(kind), SafetensorsError::Json { at: 14, .. }));
    // A header cut short, and one that is not UTF-8.
    let (text, _) = read_err(&st_bytes(r#"{"q": [1,"#, &[]));
    assert!(text.contains("not valid JSON at byte 17: EOF while parsing"), "{text}");
    let bad_utf8 = b"{\"q\xff\": 1}";
    let mut bytes = (bad_utf8.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(bad_utf8);
    let (text, _) = read_err(&bytes);
    assert!(text.contains("the header is not valid UTF-8 at byte 11"), "{text}");
    // Not a JSON object at all (a .npy file renamed).
    let (text, _) = read_err(b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'}");
    assert!(text.contains("not a safetensors file: byte 8 is 0x76 ('v')"), "{text}");
}

#[test]
fn negative_and_overflowing_shapes_name_the_tensor() {
    let header = format!("{{{}}}", entry("q", "F32", "[-1,4,2,8]", 0, 256));
    let (text, _) = read_err(&st_bytes(&header, &[0; 256]));
    assert!(text.contains("tensor `q`: shape [-1,4,2,8]: dimension 0 is -1, not a non-negative integer"), "{text}");
    let big = 1u64 << 40;
    let header = format!("{{{}}}", entry("q", "F32", &format!("[{big},{big},{big},8]"), 0, 0));
    let (text, kind) = read_err(&st_bytes(&header, &[]));
    assert!(text.contains(&format!("tensor `q`: shape [{big}, {big}, {big}, 8] of F32 needs more than")), "{text}");
    assert!(text.contains(&u64::MAX.to_string()), "{text}");
    assert!(matches!(st_kind(kind), SafetensorsError::SizeOverflow { .. }));
    let header = format!("{{{}}}", entry("q", "F32", "[1.5,4]", 0, 24));
    let (text, _) = read_err(&st_bytes(&header, &[0; 24]));
    assert!(text.contains("dimension 0 is 1.5"), "{text}");
}

#[test]
fn shape_that_disagrees_with_its_offsets() {
    let header = format!("{{{}}}", entry("q", "F32", "[2,4,2,8]", 0, 100));
    let (text, kind) = read_err(&st_bytes(&header, &[0; 100]));
    assert!(
        text.contains("tensor `q`: shape [2, 4, 2, 8] needs 512 bytes of F32 but its data_offsets [0, 100] hold 100"),
        "{text}"
    );
    assert!(matches!(st_kind(kind), SafetensorsError::SizeMismatch { needed: 512, .. }));
    let header = format!("{{{}}}", entry("q", "F32", "[1,1,1,1]", 8, 4));
    let (text, _) = read_err(&st_bytes(&header, &[0; 8]));
    assert!(text.contains("tensor `q`: data_offsets [8, 4] end before they start"), "{text}");
    let header = r#"{"q":{"dtype":"F32","shape":[1,1,1,1],"data_offsets":[0]}}"#;
    let (text, _) = read_err(&st_bytes(header, &[0; 4]));
    assert!(text.contains("tensor `q`: data_offsets [0] must be a list of 2 non-negative integers"), "{text}");
}

#[test]
fn overlapping_and_gapped_offsets_name_both_tensors() {
    let header = format!("{{{},{}}}", entry("q", "F32", "[1,4,2,8]", 0, 256), entry("k", "F32", "[1,4,2,8]", 128, 384));
    let (text, kind) = read_err(&st_bytes(&header, &[0; 384]));
    assert!(text.contains("tensor `k`: data_offsets [128, 384] overlap tensor `q` at [0, 256]"), "{text}");
    assert!(matches!(st_kind(kind), SafetensorsError::Overlap { .. }));
    let header = format!("{{{},{}}}", entry("q", "F32", "[1,1,1,4]", 0, 16), entry("k", "F32", "[1,1,1,4]", 20, 36));
    let (text, _) = read_err(&st_bytes(&header, &[0; 36]));
    assert!(text.contains("tensor `k`: data_offsets [20, 36] are not contiguous"), "{text}");
    assert!(text.contains("data bytes 16..20 after tensor `q` belong to no tensor"), "{text}");
}

#[test]
fn wrong_dtype_strings_and_fields() {
    let header = format!("{{{}}}", entry("q", "F33", "[1,1,1,4]", 0, 16));
    let (text, _) = read_err(&st_bytes(&header, &[0; 16]));
    assert!(text.contains("tensor `q`: unknown dtype \"F33\" (safetensors dtypes: BOOL, U8"), "{text}");
    let header = r#"{"q":{"dtype":4,"shape":[1,1,1,4],"data_offsets":[0,16]}}"#;
    let (text, _) = read_err(&st_bytes(header, &[0; 16]));
    assert!(text.contains("tensor `q`: `dtype` must be a string, found 4"), "{text}");
    let header = r#"{"q":{"dtype":"F32","data_offsets":[0,16]}}"#;
    let (text, _) = read_err(&st_bytes(header, &[0; 16]));
    assert!(text.contains("tensor `q`: missing field `shape`"), "{text}");
    let header = format!(r#"{{"__metadata__":{{"format":1}},{}}}"#, entry("q", "F32", "[1,1,1,4]", 0, 16));
    let (text, _) = read_err(&st_bytes(&header, &[0; 16]));
    assert!(text.contains("`__metadata__` values must be strings, but `format` is 1"), "{text}");
    // A known dtype the reader does not take is still reported as before.
    let header = format!("{{{}}}", entry("q", "F64", "[1,1,1,2]", 0, 16));
    let (text, _) = read_err(&st_bytes(&header, &[0; 16]));
    assert!(text.contains("unsupported dtype F64 (tensor 'q')"), "{text}");
}

#[test]
fn long_or_odd_tensor_names_are_quoted_short() {
    let name = format!("x\n{}", "y".repeat(500));
    let header = format!("{{{}}}", entry(&name.replace('\n', "\\n"), "F32", "[1]", 0, 8));
    let (text, _) = read_err(&st_bytes(&header, &[0; 8]));
    assert!(text.contains("tensor `x\\nyyy") && !text.contains('\n') && text.len() < 400, "{text}");
}

#[test]
fn the_crate_errors_read_as_sentences() {
    let all = [
        SafeTensorError::InvalidHeader,
        SafeTensorError::InvalidHeaderStart,
        SafeTensorError::InvalidHeaderDeserialization,
        SafeTensorError::HeaderTooLarge,
        SafeTensorError::HeaderTooSmall,
        SafeTensorError::InvalidHeaderLength,
        SafeTensorError::TensorNotFound("lm_head.weight".into()),
        SafeTensorError::TensorInvalidInfo,
        SafeTensorError::InvalidOffset("lm_head.weight".into()),
        SafeTensorError::MetadataIncompleteBuffer,
        SafeTensorError::ValidationOverflow,
        SafeTensorError::InvalidTensorView(safetensors::Dtype::F32, vec![2, 2], 3),
    ];
    for e in &all {
        let text = crate_error_text(e).to_string();
        let variant = format!("{e:?}");
        let variant = variant.split('(').next().unwrap();
        assert!(!text.contains(variant) && text.contains(' ') && text.len() > 20, "{e:?} -> {text}");
        if let SafeTensorError::InvalidOffset(name) | SafeTensorError::TensorNotFound(name) = e {
            assert!(text.contains(&format!("`{name}`")), "{text}");
        }
    }
}

/// A writable copy of a model fixture under a scratch dir.
fn copy_model(name: &str) -> Scratch {
    let dir = Scratch::new(name);
    for entry in std::fs::read_dir(fixture_dir(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    dir
}

fn load_err(dir: &Path) -> (WeightsError, String) {
    match Decoder::load(dir, DecoderOptions::default()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(ModelError::Weights(e)) => {
            let text = e.to_string();
            (e, text)
        }
        Err(other) => panic!("not a weights error: {other}"),
    }
}

#[test]
fn truncated_shard_of_a_sharded_model() {
    let dir = copy_model("qwen2");
    let shard = dir.path().join("model-00002-of-00005.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    let header = check_safetensors(&bytes).unwrap();
    let cut = bytes.len() - 10;
    std::fs::write(&shard, &bytes[..cut]).unwrap();
    // The first tensor, in file order, whose data runs past the new end.
    let mut order: Vec<_> = header.tensors.iter().collect();
    order.sort_by_key(|t| t.data_offsets);
    let first = order.iter().find(|t| header.data_start + t.data_offsets[1] > cut as u64).unwrap();
    let ends_at = header.data_start + first.data_offsets[1];
    let (err, text) = load_err(dir.path());
    assert!(matches!(&err, WeightsError::Format { file, .. } if *file == shard), "{text}");
    assert!(text.starts_with(&format!("{}: ", shard.display())), "{text}");
    assert!(text.contains(&format!("tensor `{}`: data ends at byte {ends_at} ", first.name)), "{text}");
    assert!(text.contains(&format!("but the file has {cut} bytes")), "{text}");
}

#[test]
fn damaged_single_file_models() {
    let dir = copy_model("llama");
    let file = dir.path().join("model.safetensors");
    let good = std::fs::read(&file).unwrap();
    let mut long = good.clone();
    long.extend_from_slice(&[0; 64]);
    std::fs::write(&file, &long).unwrap();
    let (_, text) = load_err(dir.path());
    assert!(
        text.contains("model.safetensors: not a valid safetensors file: 64 bytes after the last tensor's data"),
        "{text}"
    );
    assert!(text.contains(&format!("the file has {} bytes", long.len())), "{text}");

    let mut huge = good.clone();
    huge[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    std::fs::write(&file, &huge).unwrap();
    let (_, text) = load_err(dir.path());
    let want = format!("header length 1152921504606846976 is larger than the file ({} bytes)", good.len());
    assert!(text.contains(&want), "{text}");

    std::fs::write(&file, []).unwrap();
    let (_, text) = load_err(dir.path());
    assert!(text.contains("the file has 0 bytes, fewer than the 8-byte header length"), "{text}");
}

#[test]
fn shape_lie_and_overlap_in_model_weights() {
    let dir = copy_model("llama");
    let file = dir.path().join("model.safetensors");
    let good = std::fs::read(&file).unwrap();
    let header = check_safetensors(&good).unwrap();
    let norm = header.tensors.iter().find(|t| t.name == "model.norm.weight").unwrap();
    let [start, end] = norm.data_offsets;
    let text_of = |from: &str, to: &str| {
        let header_len = header.data_start as usize - 8;
        let json = std::str::from_utf8(&good[8..8 + header_len]).unwrap();
        assert!(json.contains(from), "fixture header changed: {from}");
        let new = json.replacen(from, to, 1);
        let padded = format!("{new:<width$}", width = header_len);
        assert_eq!(padded.len(), header_len, "edit must keep the header length");
        let mut bytes = good.clone();
        bytes[8..8 + header_len].copy_from_slice(padded.as_bytes());
        std::fs::write(&file, bytes).unwrap();
        load_err(dir.path()).1
    };
    let shape = format!("{:?}", norm.shape).replace(' ', "");
    let old = format!(r#""shape":{shape},"data_offsets":[{start},{end}]"#);
    let text = text_of(&old, &format!(r#""shape":[1],"data_offsets":[{start},{end}]"#));
    let want = format!(
        "tensor `model.norm.weight`: shape [1] needs {} bytes of {} but its data_offsets [{start}, {end}] hold {}",
        (end - start) / norm.shape.iter().product::<u64>(),
        norm.dtype,
        end - start
    );
    assert!(text.contains(&want), "{text}");
    let text = text_of(&old, &format!(r#""shape":{shape},"data_offsets":[0,{}]"#, end - start));
    // Sorted by offsets, the norm's [0, n] comes first: the tensor really at 0 overlaps it.
    let want = format!("overlap tensor `model.norm.weight` at [0, {}]", end - start);
    assert!(text.contains(&want) && text.contains("tensor `model."), "{text}");
}

#[test]
fn weights_path_that_is_a_directory_or_a_dangling_link() {
    let dir = copy_model("llama");
    let file = dir.path().join("model.safetensors");
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    let (err, text) = load_err(dir.path());
    assert!(matches!(err, WeightsError::NotAFile { .. }), "{text}");
    assert_eq!(text, format!("{}: is a directory, not a file", file.display()));
    std::fs::remove_dir(&file).unwrap();
    #[cfg(unix)]
    {
        let target = dir.path().join("gone.safetensors");
        std::os::unix::fs::symlink(&target, &file).unwrap();
        let (_, text) = load_err(dir.path());
        assert!(text.starts_with(&format!("{}: is a dangling symbolic link", file.display())), "{text}");
        assert!(text.contains(&target.display().to_string()), "{text}");
        // A link to a directory says both.
        std::fs::create_dir(&target).unwrap();
        let (_, text) = load_err(dir.path());
        assert!(text.contains("is a symbolic link to") && text.contains("which is a directory"), "{text}");
    }
}
