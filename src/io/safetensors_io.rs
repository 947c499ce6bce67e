//! `.safetensors` files through the `safetensors` crate: F32, F16 and BF16.
//! A file holding one tensor is read whatever its name; a file holding
//! several must contain the requested name.
//!
//! The header is first read and checked by [`check_safetensors`] (length,
//! JSON, each entry, offsets against shapes and the file length, duplicate
//! names), so failures are sentences naming the tensor and the numbers;
//! the crate then parses the file, and its errors, should any remain, are
//! put in words too.

use super::safetensors_header::{check_safetensors, crate_error_text};
use super::{check_len, four_d, host_from_le, host_to_le, HostTensor, IoErrorKind};
use crate::dtype::DType;
use crate::tensor::HostData;
use safetensors::{Dtype, SafeTensors};

/// Parses a whole `.safetensors` file and picks one tensor (see module docs).
pub fn decode_safetensors(bytes: &[u8], name: Option<&str>) -> Result<HostTensor, IoErrorKind> {
    let header = check_safetensors(bytes)?;
    let file = SafeTensors::deserialize(bytes).map_err(|e| crate_error_text(&e))?;
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
    let view = file.tensor(&chosen).map_err(|e| crate_error_text(&e))?;
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
    let start = header.tensors.iter().find(|t| t.name == chosen).map_or(0, |t| t.data_offsets[0]);
    let offset = usize::try_from(header.data_start + start).unwrap_or(usize::MAX);
    check_len(view.shape(), dtype, view.data(), offset)?;
    Ok(HostTensor { shape, data: host_from_le(dtype, view.data())? })
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

    /// The header error `decode_safetensors` gives for `bytes`.
    fn st_err(bytes: &[u8]) -> super::super::SafetensorsError {
        match decode_safetensors(bytes, None) {
            Err(IoErrorKind::Safetensors(e)) => *e,
            other => panic!("not a header error: {other:?}"),
        }
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
        use super::super::SafetensorsError as E;
        let good = encode_safetensors("x", [1, 1, 2, 2], &HostData::F32(vec![1.0; 4])).unwrap();
        assert_eq!(st_err(&good[..5]), E::NoLengthField { file_len: 5 });
        for cut in [8, 12] {
            assert!(matches!(st_err(&good[..cut]), E::HeaderPastEnd { .. }), "cut {cut}");
        }
        assert!(matches!(st_err(&good[..good.len() - 1]), E::Truncated { tensor, .. } if tensor == "x"));
        assert!(matches!(st_err(b"\x93NUMPY\x01\x00garbage-garbage"), E::NotAnObject { .. }));
        assert!(matches!(st_err(&raw("{not json}", &[])), E::Json { at: 9, .. }));
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
        use super::super::SafetensorsError as E;
        let st = |h: &str, data: &[u8]| st_err(&raw(h, data));
        // Same name twice with the same offsets: the crate alone accepts it.
        let h = r#"{"x":{"dtype":"F32","shape":[1,1,1,1],"data_offsets":[0,4]},"x":{"dtype":"F32","shape":[1,1,1,1],"data_offsets":[0,4]}}"#;
        assert_eq!(st(h, &[0; 4]), E::DuplicateName("x".into()));
        // The format requires the header to start with '{'.
        let h = r#" {"x":{"dtype":"F32","shape":[1,1,1,1],"data_offsets":[0,4]}}"#;
        assert!(matches!(st(h, &[0; 4]), E::NotAnObject { .. }));
        // Offsets that leave a gap, and bytes past the last tensor.
        let h = r#"{"x":{"dtype":"F32","shape":[1,1,1,1],"data_offsets":[4,8]}}"#;
        assert!(matches!(st(h, &[0; 8]), E::Gap { gap_start: 0, previous: None, .. }));
        let h = r#"{"x":{"dtype":"F32","shape":[1,1,1,1],"data_offsets":[0,4]}}"#;
        assert!(matches!(st(h, &[0; 8]), E::Trailing { extra: 4, .. }));
        // A shape whose byte count overflows.
        let h = r#"{"x":{"dtype":"F32","shape":[4294967296,4294967296,4,1],"data_offsets":[0,4]}}"#;
        assert!(matches!(st(h, &[0; 4]), E::SizeOverflow { .. }));
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
