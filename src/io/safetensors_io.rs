//! `.safetensors` files through the `safetensors` crate: F32, F16 and BF16.
//! A file holding one tensor is read whatever its name; a file holding
//! several must contain the requested name.
//!
//! Validation is the crate's (offsets, sizes, dtypes, header limits), plus
//! what the crate lets through: a header that does not start with `{` (the
//! format requires it) and a tensor name given twice (the crate keeps the
//! last one silently).

use super::{check_len, four_d, host_from_le, host_to_le, HostTensor, IoErrorKind};
use crate::dtype::DType;
use crate::tensor::HostData;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

/// Parses a whole `.safetensors` file and picks one tensor (see module docs).
pub fn decode_safetensors(bytes: &[u8], name: Option<&str>) -> Result<HostTensor, IoErrorKind> {
    precheck(bytes)?;
    let file = SafeTensors::deserialize(bytes).map_err(|e| map_error(e, bytes))?;
    reject_duplicate_names(bytes)?;
    let mut names: Vec<String> = file.names().into_iter().cloned().collect();
    names.sort();
    let chosen = match (names.as_slice(), name) {
        ([], _) => return Err(IoErrorKind::Empty),
        ([only], _) => only.clone(),
        (_, Some(wanted)) if names.iter().any(|n| n == wanted) => wanted.to_string(),
        (_, wanted) => {
            let mut listed: Vec<String> = names.iter().take(8).map(|n| super::shorten(n)).collect();
            if names.len() > listed.len() {
                listed.push(format!("... {} more", names.len() - listed.len()));
            }
            let wanted = super::shorten(wanted.unwrap_or("<none given>"));
            return Err(IoErrorKind::Ambiguous { count: names.len(), names: listed, wanted });
        }
    };
    let view = file.tensor(&chosen).map_err(|e| map_error(e, bytes))?;
    let dtype = match view.dtype() {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        other => {
            return Err(IoErrorKind::UnsupportedDType {
                got: format!("{other:?} (tensor '{}')", super::shorten(&chosen)),
                expected: "F32, F16 or BF16",
            })
        }
    };
    let shape = four_d(view.shape())?;
    let offset = data_start(bytes).unwrap_or(0);
    check_len(view.shape(), dtype, view.data(), offset)?;
    Ok(HostTensor { shape, data: host_from_le(dtype, view.data())? })
}

/// Catches the cases the crate reports vaguely: a file too short for its
/// header, and a file that is not safetensors at all.
fn precheck(bytes: &[u8]) -> Result<(), IoErrorKind> {
    let Some(len_field) = bytes.get(..8) else {
        return Err(IoErrorKind::Truncated(format!("{} bytes, shorter than the 8-byte header length", bytes.len())));
    };
    let mut n = [0u8; 8];
    n.copy_from_slice(len_field);
    let header_len = u64::from_le_bytes(n);
    match bytes.get(8) {
        Some(b'{') => {}
        Some(_) => {
            return Err(IoErrorKind::BadMagic {
                format: ".safetensors",
                why: "the header does not start with '{'".into(),
            })
        }
        None => return Err(IoErrorKind::Truncated("file ends before the JSON header".into())),
    }
    if header_len > (bytes.len() - 8) as u64 {
        return Err(IoErrorKind::Truncated(format!(
            "header says {header_len} bytes, file has {} after the length field",
            bytes.len() - 8
        )));
    }
    Ok(())
}

fn map_error(e: SafeTensorError, bytes: &[u8]) -> IoErrorKind {
    match e {
        SafeTensorError::HeaderTooSmall | SafeTensorError::InvalidHeaderLength => IoErrorKind::Truncated(e.to_string()),
        SafeTensorError::MetadataIncompleteBuffer => {
            let end = data_end(bytes);
            match end {
                Some(end) if end > bytes.len() => {
                    IoErrorKind::Truncated(format!("tensor data ends at byte {end}, file has {} bytes", bytes.len()))
                }
                _ => IoErrorKind::BadHeader("tensor data does not match the header's offsets".into()),
            }
        }
        other => IoErrorKind::BadHeader(super::shorten(&other.to_string())),
    }
}

/// The top-level keys of the JSON header, in file order, duplicates kept.
struct HeaderKeys(Vec<String>);

impl<'de> serde::Deserialize<'de> for HeaderKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(keys)
            }
        }
        d.deserialize_map(Keys).map(HeaderKeys)
    }
}

/// Called after the crate accepted the file, so the header is valid JSON.
fn reject_duplicate_names(bytes: &[u8]) -> Result<(), IoErrorKind> {
    let end = data_start(bytes).ok_or_else(|| IoErrorKind::BadHeader("header length out of range".into()))?;
    let HeaderKeys(mut keys) = serde_json::from_slice(&bytes[8..end])
        .map_err(|e| IoErrorKind::BadHeader(format!("header JSON: {}", super::shorten(&e.to_string()))))?;
    keys.sort_unstable();
    match keys.windows(2).find(|w| w[0] == w[1]) {
        Some(pair) => Err(IoErrorKind::DuplicateName(super::shorten(&pair[0]))),
        None => Ok(()),
    }
}

/// File offset of the first data byte (8 + header length), if in range.
fn data_start(bytes: &[u8]) -> Option<usize> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let end = n.checked_add(8)?;
    (end <= bytes.len()).then_some(end)
}

/// File offset where the header says the tensor data ends.
fn data_end(bytes: &[u8]) -> Option<usize> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header: serde_json::Value = serde_json::from_slice(bytes.get(8..8 + n)?).ok()?;
    let max = header
        .as_object()?
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    (8 + n).checked_add(usize::try_from(max).ok()?)
}

/// Serializes one tensor named `name`.
pub fn encode_safetensors(name: &str, shape: [usize; 4], data: &HostData) -> Result<Vec<u8>, IoErrorKind> {
    let dtype = match data.dtype() {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
    };
    let bytes = host_to_le(data)?;
    let view = safetensors::tensor::TensorView::new(dtype, shape.to_vec(), &bytes)
        .map_err(|e| IoErrorKind::BadHeader(e.to_string()))?;
    safetensors::serialize([(name, view)], &None).map_err(|e| IoErrorKind::BadHeader(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn round_trip_every_dtype() {
        for dtype in DType::ALL {
            let data = HostData::from_f32(dtype, &[1.0, -2.0, 0.5, 3.0, 4.0, -0.25]);
            let bytes = encode_safetensors("q", [1, 3, 1, 2], &data).unwrap();
            let t = decode_safetensors(&bytes, None).unwrap();
            assert_eq!(t, HostTensor { shape: [1, 3, 1, 2], data });
        }
    }

    #[test]
    fn several_tensors_pick_by_name() {
        let a = HostData::F32(vec![1.0; 4]);
        let b = HostData::F32(vec![2.0; 4]);
        let ab_bytes = host_to_le(&a).unwrap();
        let ab = safetensors::tensor::TensorView::new(Dtype::F32, vec![1, 1, 1, 4], &ab_bytes).unwrap();
        let bb = host_to_le(&b).unwrap();
        let bv = safetensors::tensor::TensorView::new(Dtype::F32, vec![1, 1, 1, 4], &bb).unwrap();
        let bytes = safetensors::serialize([("k", ab), ("v", bv)], &None).unwrap();
        assert_eq!(decode_safetensors(&bytes, Some("v")).unwrap().data, b);
        let err = decode_safetensors(&bytes, Some("q")).unwrap_err();
        assert!(matches!(err, IoErrorKind::Ambiguous { .. }));
        assert!(err.to_string().contains("k, v"), "{err}");
        assert!(decode_safetensors(&bytes, None).is_err());
    }

    #[test]
    fn truncated_and_bad_magic() {
        let good = encode_safetensors("x", [1, 1, 2, 2], &HostData::F32(vec![1.0; 4])).unwrap();
        for cut in [0, 5, 8, 12, good.len() - 1] {
            let err = decode_safetensors(&good[..cut], None).unwrap_err();
            assert!(matches!(err, IoErrorKind::Truncated(_)), "cut {cut}: {err}");
        }
        let err = decode_safetensors(b"\x93NUMPY\x01\x00garbage-garbage", None).unwrap_err();
        assert!(matches!(err, IoErrorKind::BadMagic { .. }), "{err}");
        let err = decode_safetensors(&raw("{not json}", &[]), None).unwrap_err();
        assert!(matches!(err, IoErrorKind::BadHeader(_)), "{err}");
    }

    #[test]
    fn wrong_rank_and_dtype() {
        let h = r#"{"x":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
        assert!(matches!(decode_safetensors(&raw(h, &[0; 16]), None), Err(IoErrorKind::NotFourD(_))));
        let h = r#"{"x":{"dtype":"I32","shape":[1,1,1,4],"data_offsets":[0,16]}}"#;
        assert!(matches!(decode_safetensors(&raw(h, &[0; 16]), None), Err(IoErrorKind::UnsupportedDType { .. })));
        let h = r#"{"x":{"dtype":"F64","shape":[1,1,1,2],"data_offsets":[0,16]}}"#;
        assert!(matches!(decode_safetensors(&raw(h, &[0; 16]), None), Err(IoErrorKind::UnsupportedDType { .. })));
        assert!(matches!(decode_safetensors(&raw("{}", &[]), None), Err(IoErrorKind::Empty)));
    }

    #[test]
    fn duplicate_names_and_header_start_are_rejected() {
        // Same name twice with the same offsets: the crate alone accepts it.
        let h = r#"{"x":{"dtype":"F32","shape":[1,1,1,1],"data_offsets":[0,4]},"x":{"dtype":"F32","shape":[1,1,1,1],"data_offsets":[0,4]}}"#;
        let err = decode_safetensors(&raw(h, &[0; 4]), None).unwrap_err();
        assert!(matches!(&err, IoErrorKind::DuplicateName(n) if n == "x"), "{err}");
        // The format requires the header to start with '{'.
        let h = r#" {"x":{"dtype":"F32","shape":[1,1,1,1],"data_offsets":[0,4]}}"#;
        assert!(matches!(decode_safetensors(&raw(h, &[0; 4]), None), Err(IoErrorKind::BadMagic { .. })));
        // Offsets that leave a gap, and bytes past the last tensor.
        let h = r#"{"x":{"dtype":"F32","shape":[1,1,1,1],"data_offsets":[4,8]}}"#;
        assert!(decode_safetensors(&raw(h, &[0; 8]), None).is_err());
        let h = r#"{"x":{"dtype":"F32","shape":[1,1,1,1],"data_offsets":[0,4]}}"#;
        assert!(decode_safetensors(&raw(h, &[0; 8]), None).is_err());
        // A shape whose byte count overflows.
        let h = r#"{"x":{"dtype":"F32","shape":[4294967296,4294967296,4,1],"data_offsets":[0,4]}}"#;
        assert!(decode_safetensors(&raw(h, &[0; 4]), None).is_err());
    }

    #[test]
    fn many_names_are_listed_briefly() {
        let bytes: Vec<Vec<u8>> = (0..20).map(|i| host_to_le(&HostData::F32(vec![i as f32])).unwrap()).collect();
        let names: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
        let views: Vec<_> = names
            .iter()
            .zip(&bytes)
            .map(|(n, b)| (n.as_str(), safetensors::tensor::TensorView::new(Dtype::F32, vec![1, 1, 1, 1], b).unwrap()))
            .collect();
        let file = safetensors::serialize(views, &None).unwrap();
        let err = decode_safetensors(&file, Some("q")).unwrap_err().to_string();
        assert!(err.contains("holds 20 tensors") && err.contains("... 12 more"), "{err}");
    }
}
