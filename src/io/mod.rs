//! Reading and writing attention tensors as files: NumPy `.npy` and
//! `.safetensors`, chosen by the file extension.
//!
//! Every tensor is 4-d `[batch, seq, heads, head_dim]` in f32, f16 or bf16.
//! `.npy` has no bf16 dtype, so bf16 goes through `.safetensors` only.
//! A `.safetensors` file either holds exactly one tensor, or the tensor is
//! picked by name (the CLI uses the role: `q`, `k`, `v`, and writes `out`).
//!
//! Errors name the file and what is wrong; no input makes this module panic.

mod npy;
mod safetensors_header;
mod safetensors_io;

use crate::dtype::DType;
use crate::tensor::{HostData, Tensor, TensorError};
use std::path::{Path, PathBuf};

pub use npy::{decode_npy, encode_npy, npy_descr};
pub use safetensors_header::{
    check_safetensors, crate_error_text, HeaderEntry, SafetensorsError, SafetensorsHeader, MAX_HEADER_LEN,
};
pub use safetensors_io::{decode_safetensors, encode_safetensors};

/// File formats this module reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Npy,
    Safetensors,
}

impl Format {
    /// The format named by `path`'s extension (`.npy`, `.safetensors`).
    pub fn from_path(path: &Path) -> Result<Format, IoError> {
        match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()) {
            Some(e) if e == "npy" => Ok(Format::Npy),
            Some(e) if e == "safetensors" => Ok(Format::Safetensors),
            _ => Err(IoError::new(path, IoErrorKind::UnknownFormat)),
        }
    }
}

/// What is wrong with a file, without the file's name.
#[derive(Debug, thiserror::Error)]
pub enum IoErrorKind {
    #[error("cannot read: {0}")]
    Unreadable(std::io::Error),
    #[error("cannot write: {0}")]
    Unwritable(std::io::Error),
    #[error("unknown file format: expected a .npy or .safetensors extension")]
    UnknownFormat,
    #[error("truncated: {0}")]
    Truncated(String),
    #[error("not a {format} file: {why}")]
    BadMagic { format: &'static str, why: String },
    #[error("at byte {offset}: expected {expected}, found {found}")]
    Malformed { offset: usize, expected: String, found: String },
    #[error("bad header: {0}")]
    BadHeader(String),
    #[error("unsupported dtype {got}: expected {expected}")]
    UnsupportedDType { got: String, expected: &'static str },
    #[error("bf16 cannot be stored in .npy (NumPy has no bfloat16 dtype); use a .safetensors file")]
    Bf16Npy,
    #[error("Fortran-order (column-major) arrays are not supported; save a C-order array")]
    FortranOrder,
    #[error("tensor must be 4-d [batch, seq, heads, head_dim], got shape {0:?}")]
    NotFourD(Vec<usize>),
    #[error(
        "data length mismatch: shape {shape:?} of {dtype} needs {expected} bytes after byte {offset}, file holds {got}"
    )]
    DataLength { shape: Vec<usize>, dtype: DType, expected: usize, got: usize, offset: usize },
    #[error("holds {count} tensors ({}); expected exactly one, or one named '{wanted}'", .names.join(", "))]
    Ambiguous { count: usize, names: Vec<String>, wanted: String },
    #[error("holds no tensors")]
    Empty,
    #[error("cannot allocate {bytes} bytes of host memory for {what}")]
    OutOfMemory { what: &'static str, bytes: usize },
    /// A `.safetensors` file whose header or layout is wrong (boxed: it
    /// carries names and shapes, and errors stay small).
    #[error(transparent)]
    Safetensors(Box<SafetensorsError>),
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

impl From<SafetensorsError> for IoErrorKind {
    fn from(e: SafetensorsError) -> IoErrorKind {
        IoErrorKind::Safetensors(Box::new(e))
    }
}

/// A file error: the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", .path.display())]
pub struct IoError {
    pub path: PathBuf,
    #[source]
    pub kind: IoErrorKind,
}

impl IoError {
    pub fn new(path: &Path, kind: IoErrorKind) -> IoError {
        IoError { path: path.to_path_buf(), kind }
    }
}

/// A tensor read from a file, still on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: [usize; 4],
    pub data: HostData,
}

impl HostTensor {
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn into_tensor(self) -> Result<Tensor, TensorError> {
        Tensor::from_host(self.shape, self.data)
    }
}

/// Longest piece of file content or user input quoted in an error.
const QUOTE_MAX: usize = 64;

/// `text`, cut to `QUOTE_MAX` characters with a note of its length, so a
/// megabyte of garbage never lands in an error message.
pub(crate) fn shorten(text: &str) -> String {
    crate::text::truncated(text, QUOTE_MAX)
}

/// An empty vector with room for `len` elements, or a typed error instead of
/// the abort an infallible allocation would be.
pub(crate) fn try_vec<T>(len: usize, what: &'static str) -> Result<Vec<T>, IoErrorKind> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| IoErrorKind::OutOfMemory { what, bytes: len.saturating_mul(std::mem::size_of::<T>()) })?;
    Ok(v)
}

/// Shape checks shared by both formats.
pub(crate) fn four_d(shape: &[usize]) -> Result<[usize; 4], IoErrorKind> {
    <[usize; 4]>::try_from(shape).map_err(|_| IoErrorKind::NotFourD(shape.to_vec()))
}

/// Bytes a tensor of `shape` and `dtype` holds.
pub(crate) fn byte_len(shape: &[usize], dtype: DType) -> Result<usize, IoErrorKind> {
    shape
        .iter()
        .try_fold(dtype.size_in_bytes(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| IoErrorKind::BadHeader(format!("shape {shape:?} of {dtype} holds more than usize::MAX bytes")))
}

/// Checks that `data`, which starts at byte `offset` of the file, holds
/// exactly the bytes `shape` needs.
pub(crate) fn check_len(shape: &[usize], dtype: DType, data: &[u8], offset: usize) -> Result<(), IoErrorKind> {
    let expected = byte_len(shape, dtype)?;
    if data.len() < expected {
        return Err(IoErrorKind::Truncated(format!(
            "shape {shape:?} of {dtype} needs {expected} data bytes after byte {offset}, file holds {}",
            data.len()
        )));
    }
    if data.len() > expected {
        return Err(IoErrorKind::DataLength { shape: shape.to_vec(), dtype, expected, got: data.len(), offset });
    }
    Ok(())
}

/// Decodes little-endian elements of `dtype` from `bytes` (any alignment).
pub(crate) fn host_from_le(dtype: DType, bytes: &[u8]) -> Result<HostData, IoErrorKind> {
    const WHAT: &str = "the tensor read from the file";
    Ok(match dtype {
        DType::F32 => {
            let mut v = try_vec(bytes.len() / 4, WHAT)?;
            v.extend(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
            HostData::F32(v)
        }
        DType::F16 => {
            let mut v = try_vec(bytes.len() / 2, WHAT)?;
            v.extend(bytes.chunks_exact(2).map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]]))));
            HostData::F16(v)
        }
        DType::BF16 => {
            let mut v = try_vec(bytes.len() / 2, WHAT)?;
            v.extend(bytes.chunks_exact(2).map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]]))));
            HostData::BF16(v)
        }
    })
}

/// Encodes `data` as little-endian bytes.
pub(crate) fn host_to_le(data: &HostData) -> Result<Vec<u8>, IoErrorKind> {
    let mut out = try_vec(data.as_bytes().len(), "the bytes of the tensor being written")?;
    match data {
        HostData::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        HostData::F16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_bits().to_le_bytes())),
        HostData::BF16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_bits().to_le_bytes())),
    }
    Ok(out)
}

/// The whole file, read into memory with a fallible allocation.
fn read_all(path: &Path) -> Result<Vec<u8>, IoErrorKind> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(IoErrorKind::Unreadable)?;
    let len = file.metadata().map_err(IoErrorKind::Unreadable)?.len();
    let len = usize::try_from(len).map_err(|_| IoErrorKind::OutOfMemory { what: "the file", bytes: usize::MAX })?;
    let mut bytes = try_vec(len, "the file")?;
    file.read_to_end(&mut bytes).map_err(IoErrorKind::Unreadable)?;
    Ok(bytes)
}

/// Reads one tensor. For `.safetensors` files holding several tensors,
/// `name` picks one; a file with exactly one tensor is read whatever its name.
pub fn read_tensor(path: &Path, name: Option<&str>) -> Result<HostTensor, IoError> {
    let format = Format::from_path(path)?;
    let bytes = read_all(path).map_err(|kind| IoError::new(path, kind))?;
    let decoded = match format {
        Format::Npy => decode_npy(&bytes),
        Format::Safetensors => decode_safetensors(&bytes, name),
    };
    decoded.map_err(|kind| IoError::new(path, kind))
}

/// Writes `data` with `shape` to `path` in the format its extension names;
/// `.safetensors` files get one tensor called `name`.
pub fn write_host(path: &Path, name: &str, shape: [usize; 4], data: &HostData) -> Result<(), IoError> {
    let format = Format::from_path(path)?;
    let bytes = match format {
        Format::Npy => encode_npy(shape, data),
        Format::Safetensors => encode_safetensors(name, shape, data),
    }
    .map_err(|kind| IoError::new(path, kind))?;
    std::fs::write(path, bytes).map_err(|e| IoError::new(path, IoErrorKind::Unwritable(e)))
}

/// Checks, before any work is done, that a tensor of `dtype` can be written
/// to `path`: a known extension, a dtype that format can hold, and a place
/// the process may write. An existing file is opened for writing but left
/// untouched; a new file is created and removed again.
pub fn check_writable(path: &Path, dtype: DType) -> Result<(), IoError> {
    let err = |kind| IoError::new(path, kind);
    if Format::from_path(path)? == Format::Npy {
        npy_descr(dtype).map_err(err)?;
    }
    if path.is_dir() {
        return Err(err(IoErrorKind::Unwritable(std::io::Error::other("is a directory"))));
    }
    let existed = path.exists();
    std::fs::OpenOptions::new().append(true).create(true).open(path).map_err(|e| err(IoErrorKind::Unwritable(e)))?;
    if !existed {
        std::fs::remove_file(path).map_err(|e| err(IoErrorKind::Unwritable(e)))?;
    }
    Ok(())
}

/// Writes a tensor (downloading it first if it lives on a GPU).
pub fn write_tensor(path: &Path, name: &str, tensor: &Tensor) -> Result<(), IoError> {
    let data = tensor.download().map_err(|e| IoError::new(path, IoErrorKind::Tensor(e)))?;
    write_host(path, name, tensor.shape(), &data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dtype: DType) -> HostTensor {
        let shape = [1, 3, 2, 5];
        let values: Vec<f32> = (0..30).map(|i| (i as f32 - 12.5) / 7.0).collect();
        HostTensor { shape, data: HostData::from_f32(dtype, &values) }
    }

    #[test]
    fn file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        for dtype in DType::ALL {
            for ext in ["npy", "safetensors"] {
                if dtype == DType::BF16 && ext == "npy" {
                    continue;
                }
                let t = sample(dtype);
                let path = dir.path().join(format!("t_{dtype}.{ext}"));
                write_host(&path, "x", t.shape, &t.data).unwrap();
                assert_eq!(read_tensor(&path, None).unwrap(), t, "{dtype} {ext}");
            }
        }
    }

    #[test]
    fn bf16_npy_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let t = sample(DType::BF16);
        let err = write_host(&dir.path().join("b.npy"), "x", t.shape, &t.data).unwrap_err();
        assert!(matches!(err.kind, IoErrorKind::Bf16Npy));
        assert!(err.to_string().contains("safetensors"));
    }

    #[test]
    fn missing_and_unknown_files() {
        let err = read_tensor(Path::new("/nonexistent/q.npy"), None).unwrap_err();
        assert!(matches!(err.kind, IoErrorKind::Unreadable(_)));
        assert!(err.to_string().contains("/nonexistent/q.npy"));
        let err = read_tensor(Path::new("q.txt"), None).unwrap_err();
        assert!(matches!(err.kind, IoErrorKind::UnknownFormat));
    }

    #[test]
    fn out_path_is_checked_before_any_work() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("o.npy");
        check_writable(&fresh, DType::F32).unwrap();
        assert!(!fresh.exists(), "the check must not leave a file behind");
        let err = check_writable(&fresh, DType::BF16).unwrap_err();
        assert!(matches!(err.kind, IoErrorKind::Bf16Npy), "{err}");
        check_writable(&dir.path().join("o.safetensors"), DType::BF16).unwrap();
        assert!(matches!(
            check_writable(&dir.path().join("o.txt"), DType::F32).unwrap_err().kind,
            IoErrorKind::UnknownFormat
        ));
        let err = check_writable(&dir.path().join("missing/o.npy"), DType::F32).unwrap_err();
        assert!(matches!(err.kind, IoErrorKind::Unwritable(_)), "{err}");
        std::fs::create_dir(dir.path().join("d.npy")).unwrap();
        assert!(check_writable(&dir.path().join("d.npy"), DType::F32).is_err());
        // An existing file is left as it was.
        std::fs::write(&fresh, b"keep").unwrap();
        check_writable(&fresh, DType::F32).unwrap();
        assert_eq!(std::fs::read(&fresh).unwrap(), b"keep");
    }

    #[test]
    fn long_text_is_shortened() {
        assert_eq!(shorten("abc"), "abc");
        let long = "é".repeat(1000);
        let short = shorten(&long);
        assert!(short.ends_with("(2000 bytes)") && short.chars().count() < 100, "{short}");
    }
}
