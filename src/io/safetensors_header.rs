//! Our own reading and checking of a `.safetensors` header, done before the
//! `safetensors` crate sees the file, so that every failure is a sentence
//! naming the tensor and the numbers rather than the crate's enum variant.
//!
//! The format: an 8-byte little-endian header length `n`, `n` bytes of JSON
//! (an object: tensor name -> `{dtype, shape, data_offsets}`, plus an
//! optional `__metadata__` object of strings), then the data. Offsets are
//! relative to the first data byte. The tensors' data must cover the data
//! section exactly: no overlap, no gap, nothing after the last tensor.
//!
//! Every size read from the file is checked against the file's length (or
//! with checked arithmetic) before it is used; nothing is allocated from it.

use super::shorten;
use safetensors::SafeTensorError;
use serde_json::Value;

/// The largest header the `safetensors` crate accepts.
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// Element dtypes of the safetensors format (as the crate in use knows
/// them) and their size in bytes.
const DTYPES: [(&str, u64); 15] = [
    ("BOOL", 1),
    ("U8", 1),
    ("I8", 1),
    ("F8_E5M2", 1),
    ("F8_E4M3", 1),
    ("I16", 2),
    ("U16", 2),
    ("F16", 2),
    ("BF16", 2),
    ("I32", 4),
    ("U32", 4),
    ("F32", 4),
    ("F64", 8),
    ("I64", 8),
    ("U64", 8),
];

/// One tensor of a checked header. Offsets are relative to the data section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderEntry {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub data_offsets: [u64; 2],
}

/// A checked header: where the data starts, and the tensors in header order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafetensorsHeader {
    /// File offset of the first data byte: 8 + the header length.
    pub data_start: u64,
    pub tensors: Vec<HeaderEntry>,
}

/// What is wrong with a `.safetensors` file, in words (without the file name).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SafetensorsError {
    #[error(
        "the file has {file_len} bytes, fewer than the 8-byte header length that starts a safetensors file \
         (empty or truncated?)"
    )]
    NoLengthField { file_len: u64 },
    #[error("{}", past_end_text(*.header_len, *.file_len))]
    HeaderPastEnd { header_len: u64, file_len: u64 },
    #[error("header length {header_len} is over the {MAX_HEADER_LEN}-byte limit of the safetensors reader")]
    HeaderTooLarge { header_len: u64 },
    #[error("not a safetensors file: {found}, where the JSON header must start with '{{'")]
    NotAnObject { found: String },
    #[error("the header is not valid UTF-8 at byte {at}")]
    NotUtf8 { at: u64 },
    #[error("the header is not valid JSON at byte {at}: {why}")]
    Json { at: u64, why: String },
    #[error("tensor name '{0}' appears more than once in the header")]
    DuplicateName(String),
    #[error("`__metadata__` {0}")]
    Metadata(String),
    /// A tensor entry with a missing or mistyped field, or an unknown dtype.
    #[error("tensor `{tensor}`: {why}")]
    Entry { tensor: String, why: String },
    #[error("tensor `{tensor}`: shape {shape:?} of {dtype} needs more than {} bytes", u64::MAX)]
    SizeOverflow { tensor: String, shape: Vec<u64>, dtype: String },
    #[error("tensor `{tensor}`: data_offsets [{start}, {end}] end before they start")]
    Reversed { tensor: String, start: u64, end: u64 },
    #[error(
        "tensor `{tensor}`: shape {shape:?} needs {needed} bytes of {dtype} \
         but its data_offsets [{start}, {end}] hold {}",
        .end - .start
    )]
    SizeMismatch { tensor: String, shape: Vec<u64>, dtype: String, needed: u64, start: u64, end: u64 },
    #[error(
        "tensor `{tensor}`: data_offsets [{}, {}] overlap tensor `{other}` at [{}, {}]",
        .span[0], .span[1], .other_span[0], .other_span[1]
    )]
    Overlap { tensor: String, span: [u64; 2], other: String, other_span: [u64; 2] },
    #[error(
        "tensor `{tensor}`: data_offsets [{}, {}] are not contiguous: \
         data bytes {gap_start}..{} {} belong to no tensor",
        .span[0], .span[1], .span[0], gap_after(.previous)
    )]
    Gap { tensor: String, span: [u64; 2], gap_start: u64, previous: Option<String> },
    #[error(
        "tensor `{tensor}`: data ends at byte {data_end} (data_offsets [{}, {}] after the {data_start}-byte \
         header) but the file has {file_len} bytes (truncated?)",
        .span[0], .span[1]
    )]
    Truncated { tensor: String, span: [u64; 2], data_start: u64, data_end: u128, file_len: u64 },
    #[error("{}", trailing_text(*.extra, *.data_end, *.file_len, .last.as_deref()))]
    Trailing { extra: u64, data_end: u64, file_len: u64, last: Option<String> },
    /// The crate rejected a file our checks accepted: its error, in words.
    #[error("{0}")]
    Crate(String),
}

fn past_end_text(header_len: u64, file_len: u64) -> String {
    if header_len > file_len {
        format!("header length {header_len} is larger than the file ({file_len} bytes)")
    } else {
        let end = u128::from(header_len) + 8;
        format!(
            "header length {header_len} runs past the end of the file: \
             the header would end at byte {end} but the file has {file_len} bytes"
        )
    }
}

fn gap_after(previous: &Option<String>) -> String {
    match previous {
        Some(p) => format!("after tensor `{p}`"),
        None => "at the start of the data".into(),
    }
}

fn trailing_text(extra: u64, data_end: u64, file_len: u64, last: Option<&str>) -> String {
    let whose = match last {
        Some(name) => format!("tensor `{name}` ends at byte {data_end}"),
        None => format!("the header lists no tensors and ends at byte {data_end}"),
    };
    format!(
        "{extra} bytes after the last tensor's data ({whose}, the file has {file_len} bytes); \
         safetensors allows no trailing bytes"
    )
}

/// A name or value from the file, safe to print: control characters
/// escaped, cut to a short length.
fn quote(text: &str) -> String {
    shorten(&text.escape_debug().to_string())
}

/// Reads and checks the header of a whole `.safetensors` file in `bytes`:
/// the length field, the JSON, every tensor entry, and that the tensors'
/// data exactly fills the rest of the file.
pub fn check_safetensors(bytes: &[u8]) -> Result<SafetensorsHeader, SafetensorsError> {
    let file_len = bytes.len() as u64;
    let Some(len_field) = bytes.get(..8) else {
        return Err(SafetensorsError::NoLengthField { file_len });
    };
    let mut n = [0u8; 8];
    n.copy_from_slice(len_field);
    let header_len = u64::from_le_bytes(n);
    check_header_start(bytes, header_len)?;
    if header_len > file_len - 8 {
        return Err(SafetensorsError::HeaderPastEnd { header_len, file_len });
    }
    if header_len > MAX_HEADER_LEN {
        return Err(SafetensorsError::HeaderTooLarge { header_len });
    }
    // In range of `bytes`, so it fits in usize.
    let data_start = 8 + header_len as usize;
    let raw = &bytes[8..data_start];
    let text = std::str::from_utf8(raw).map_err(|e| SafetensorsError::NotUtf8 { at: 8 + e.valid_up_to() as u64 })?;
    let pairs = parse_json(text)?;
    let tensors = entries(pairs)?;
    check_layout(&tensors, data_start as u64, file_len)?;
    Ok(SafetensorsHeader { data_start: data_start as u64, tensors })
}

/// The header must be a JSON object; a file whose byte 8 is not `{` is
/// most likely not safetensors at all, whatever its length field says.
fn check_header_start(bytes: &[u8], header_len: u64) -> Result<(), SafetensorsError> {
    let found = match bytes.get(8) {
        Some(b'{') => return Ok(()),
        Some(&b) if b.is_ascii_graphic() => format!("byte 8 is 0x{b:02x} ('{}')", b as char),
        Some(&b) => format!("byte 8 is 0x{b:02x}"),
        None if header_len == 0 => "the header length is 0 (an empty header)".into(),
        // No byte 8 but a nonzero length: the length check says more.
        None => return Ok(()),
    };
    Err(SafetensorsError::NotAnObject { found })
}

/// The header's top-level members in file order, duplicates kept.
struct Members(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Vec<(String, Value)>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Value>()? {
                    out.push((key, value));
                }
                Ok(out)
            }
        }
        d.deserialize_map(Visit).map(Members)
    }
}

/// Parses the header text, turning serde_json's line and column into a
/// byte offset of the file.
fn parse_json(text: &str) -> Result<Vec<(String, Value)>, SafetensorsError> {
    match serde_json::from_str::<Members>(text) {
        Ok(Members(pairs)) => Ok(pairs),
        Err(e) => {
            let at = if e.is_eof() {
                text.len()
            } else {
                let line_start: usize = text.split_inclusive('\n').take(e.line().saturating_sub(1)).map(str::len).sum();
                (line_start + e.column().saturating_sub(1)).min(text.len())
            };
            let full = e.to_string();
            let why = full.rsplit_once(" at line ").map_or(full.as_str(), |(msg, _)| msg);
            Err(SafetensorsError::Json { at: 8 + at as u64, why: shorten(why) })
        }
    }
}

/// Checks each member: `__metadata__` and the tensor entries; rejects a
/// name given twice (serde would keep only the last one).
fn entries(pairs: Vec<(String, Value)>) -> Result<Vec<HeaderEntry>, SafetensorsError> {
    let mut names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(SafetensorsError::DuplicateName(quote(pair[0])));
    }
    let mut out = Vec::with_capacity(pairs.len());
    for (name, value) in pairs {
        if name == "__metadata__" {
            check_metadata(&value)?;
        } else {
            out.push(entry(name, &value)?);
        }
    }
    Ok(out)
}

fn check_metadata(value: &Value) -> Result<(), SafetensorsError> {
    let map = match value {
        Value::Null => return Ok(()),
        Value::Object(map) => map,
        other => {
            return Err(SafetensorsError::Metadata(format!(
                "must be an object of strings, found {}",
                quote(&other.to_string())
            )))
        }
    };
    match map.iter().find(|(_, v)| !v.is_string()) {
        None => Ok(()),
        Some((k, v)) => Err(SafetensorsError::Metadata(format!(
            "values must be strings, but `{}` is {}",
            quote(k),
            quote(&v.to_string())
        ))),
    }
}

/// One tensor entry: its fields, then its byte count against its offsets.
fn entry(name: String, value: &Value) -> Result<HeaderEntry, SafetensorsError> {
    let bad = |why: String| SafetensorsError::Entry { tensor: quote(&name), why };
    let Some(obj) = value.as_object() else {
        return Err(bad(format!(
            "must be an object with `dtype`, `shape` and `data_offsets`, found {}",
            quote(&value.to_string())
        )));
    };
    let field = |key: &str| obj.get(key).ok_or_else(|| bad(format!("missing field `{key}`")));
    let dtype = match field("dtype")? {
        Value::String(s) => s.clone(),
        other => return Err(bad(format!("`dtype` must be a string, found {}", quote(&other.to_string())))),
    };
    let Some(&(_, size)) = DTYPES.iter().find(|(d, _)| *d == dtype) else {
        let known: Vec<&str> = DTYPES.iter().map(|(d, _)| *d).collect();
        return Err(bad(format!("unknown dtype \"{}\" (safetensors dtypes: {})", quote(&dtype), known.join(", "))));
    };
    let shape_value = field("shape")?;
    let shape = integers(shape_value, None, "dimension").map_err(|why| bad(format!("shape {why}")))?;
    let offsets =
        integers(field("data_offsets")?, Some(2), "offset").map_err(|why| bad(format!("data_offsets {why}")))?;
    let (start, end) = (offsets[0], offsets[1]);
    let tensor = quote(&name);
    if end < start {
        return Err(SafetensorsError::Reversed { tensor, start, end });
    }
    let Some(needed) = shape.iter().try_fold(size, |acc, &d| acc.checked_mul(d)) else {
        return Err(SafetensorsError::SizeOverflow { tensor, shape, dtype });
    };
    if needed != end - start {
        return Err(SafetensorsError::SizeMismatch { tensor, shape, dtype, needed, start, end });
    }
    Ok(HeaderEntry { name, dtype, shape, data_offsets: [start, end] })
}

/// A JSON list of non-negative integers (of exactly `len` items when given);
/// the error says what the list is and which `item` is wrong.
fn integers(value: &Value, len: Option<usize>, item: &str) -> Result<Vec<u64>, String> {
    let shown = quote(&value.to_string());
    let what = match len {
        Some(n) => format!("a list of {n} non-negative integers"),
        None => "a list of non-negative integers".to_string(),
    };
    let Some(items) = value.as_array().filter(|a| len.is_none_or(|n| a.len() == n)) else {
        return Err(format!("{shown} must be {what}"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_u64()
                .ok_or_else(|| format!("{shown}: {item} {i} is {}, not a non-negative integer", quote(&v.to_string())))
        })
        .collect()
}

/// The tensors, in offset order, must tile the data section exactly: from
/// data byte 0 to the end of the file, without overlap or gap.
fn check_layout(tensors: &[HeaderEntry], data_start: u64, file_len: u64) -> Result<(), SafetensorsError> {
    let mut order: Vec<&HeaderEntry> = tensors.iter().collect();
    order.sort_by_key(|t| t.data_offsets);
    let mut pos = 0u64;
    let mut previous: Option<&HeaderEntry> = None;
    for t in &order {
        let span = t.data_offsets;
        match previous {
            // Sorted by start: a start before `pos` overlaps the tensor ending there.
            Some(other) if span[0] < pos => {
                return Err(SafetensorsError::Overlap {
                    tensor: quote(&t.name),
                    span,
                    other: quote(&other.name),
                    other_span: other.data_offsets,
                })
            }
            _ if span[0] > pos => {
                return Err(SafetensorsError::Gap {
                    tensor: quote(&t.name),
                    span,
                    gap_start: pos,
                    previous: previous.map(|p| quote(&p.name)),
                })
            }
            _ => {}
        }
        pos = span[1];
        previous = Some(t);
    }
    let past_end = |t: &&&HeaderEntry| u128::from(data_start) + u128::from(t.data_offsets[1]) > u128::from(file_len);
    // The first tensor whose data runs past the end of the file, if any.
    if let Some(t) = order.iter().find(past_end) {
        return Err(SafetensorsError::Truncated {
            tensor: quote(&t.name),
            span: t.data_offsets,
            data_start,
            data_end: u128::from(data_start) + u128::from(t.data_offsets[1]),
            file_len,
        });
    }
    // No tensor ends past the file, so this fits in u64.
    let data_end = data_start + pos;
    if data_end < file_len {
        let last = previous.map(|p| quote(&p.name));
        return Err(SafetensorsError::Trailing { extra: file_len - data_end, data_end, file_len, last });
    }
    Ok(())
}

/// The `safetensors` crate's error as a sentence. Our own checks run first,
/// so this is only reached for what they let through.
pub fn crate_error_text(e: &SafeTensorError) -> SafetensorsError {
    use SafeTensorError as E;
    let text = match e {
        E::InvalidHeader => "the header is not valid UTF-8".to_string(),
        E::InvalidHeaderStart => "the header does not start with '{'".to_string(),
        E::InvalidHeaderDeserialization => "the header is not a valid safetensors header: a tensor entry has \
            a missing or mistyped field, an unknown dtype, or a negative dimension"
            .to_string(),
        E::HeaderTooLarge => format!("the header length is over the {MAX_HEADER_LEN}-byte limit"),
        E::HeaderTooSmall => "the file is shorter than the 8-byte header length".to_string(),
        E::InvalidHeaderLength => "the header length runs past the end of the file".to_string(),
        E::TensorNotFound(name) => format!("no tensor `{}` in the file", quote(name)),
        E::TensorInvalidInfo => {
            "a tensor's shape and dtype need a different number of bytes than its data_offsets hold".to_string()
        }
        E::InvalidOffset(name) => format!(
            "tensor `{}`: data_offsets do not start where the previous tensor's data ends \
             (they overlap it or leave a gap)",
            quote(name)
        ),
        E::IoError(io) => format!("cannot read: {io}"),
        E::JsonError(json) => format!("the header is not valid JSON: {}", shorten(&json.to_string())),
        E::InvalidTensorView(dtype, shape, n) => format!("shape {shape:?} of {dtype:?} does not match {n} bytes"),
        E::MetadataIncompleteBuffer => "the tensors' data does not end exactly at the end of the file: \
            the file is truncated, or has bytes after the last tensor"
            .to_string(),
        E::ValidationOverflow => "a tensor's shape times its dtype size overflows".to_string(),
    };
    SafetensorsError::Crate(text)
}
