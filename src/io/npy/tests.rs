//! Malformed `.npy` files are built here byte by byte. Each rejected case is
//! one `numpy.load` rejects too (checked against numpy 2.4 when written),
//! except two that numpy reads ambiguously and we refuse on purpose: a key
//! given twice (numpy keeps the last) and bytes after the array's data
//! (numpy ignores them).

use super::*;

fn file_with(version: [u8; 2], header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&version);
    if version[0] == 1 {
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn file(version: u8, header: &str, data: &[u8]) -> Vec<u8> {
    file_with([version, 0], header, data)
}

fn f32_bytes(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| (i as f32 * 0.5).to_le_bytes()).collect()
}

const GOOD: &str = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 1, 3), }";

/// The error for `header` (version 1.0, six f32 of data), as text.
fn header_error(header: &str) -> String {
    match decode_npy(&file(1, header, &f32_bytes(6))) {
        Ok(t) => panic!("accepted {header:?} as {:?}", t.shape),
        Err(e) => e.to_string(),
    }
}

#[test]
fn reads_every_version() {
    for version in [1, 2, 3] {
        let t = decode_npy(&file(version, &format!("{GOOD}   \n"), &f32_bytes(6))).unwrap();
        assert_eq!(t.shape, [1, 2, 1, 3]);
        assert_eq!(t.data, HostData::F32(vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]));
    }
    // Other spellings numpy writes or accepts: double quotes, no trailing
    // comma, a trailing comma in the shape, Python 2 longs.
    for header in [
        r#"{"descr": "<f4", "fortran_order": False, "shape": (1, 2, 1, 3)}"#,
        "{'shape': (1, 2, 1, 3,), 'fortran_order': False, 'descr': '<f4'}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1L, 2L, 1L, 3L), }",
    ] {
        assert_eq!(decode_npy(&file(1, header, &f32_bytes(6))).unwrap().shape, [1, 2, 1, 3], "{header}");
    }
}

#[test]
fn encoded_header_is_aligned_and_round_trips() {
    for dtype in [DType::F32, DType::F16] {
        let data = HostData::from_f32(dtype, &[1.0, -2.0, 0.25, 8.0]);
        let bytes = encode_npy([1, 1, 2, 2], &data).unwrap();
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        assert_eq!(decode_npy(&bytes).unwrap(), HostTensor { shape: [1, 1, 2, 2], data });
    }
}

#[test]
fn truncated_files() {
    let good = encode_npy([1, 2, 2, 2], &HostData::F32(vec![1.0; 8])).unwrap();
    for cut in [0, 3, 7, 9, 20, good.len() - 1] {
        let err = decode_npy(&good[..cut]).unwrap_err();
        assert!(matches!(err, IoErrorKind::Truncated(_)), "cut {cut}: {err}");
    }
}

#[test]
fn bad_magic_and_versions() {
    assert!(matches!(decode_npy(b"PK\x03\x04 not numpy at all"), Err(IoErrorKind::BadMagic { .. })));
    let err = decode_npy(&file(9, GOOD, &f32_bytes(6))).unwrap_err().to_string();
    assert!(err.contains("at byte 6") && err.contains("version 9.0"), "{err}");
    // numpy knows (1, 0), (2, 0) and (3, 0) only: a minor version is an error.
    let err = decode_npy(&file_with([1, 5], GOOD, &f32_bytes(6))).unwrap_err().to_string();
    assert!(err.contains("version 1.5"), "{err}");
}

#[test]
fn trailing_garbage_after_the_dict_is_rejected() {
    let err = header_error(&format!("{GOOD} garbage"));
    let at = format!("at byte {}", 10 + GOOD.len() + 1);
    assert!(err.contains(&at) && err.contains("only spaces or a newline"), "{err}");
    assert!(header_error(&format!("{GOOD}}}")).contains("only spaces"));
    assert!(header_error(&format!("{GOOD}\0")).contains("only spaces"));
}

#[test]
fn keys_must_be_exactly_the_three() {
    let err = header_error("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 1, 3)}");
    assert!(err.contains("'descr' a second time") && err.contains("at byte 27"), "{err}");
    let err = header_error("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 1, 3), 'extra': 1}");
    assert!(err.contains("key 'extra'"), "{err}");
    let err = header_error("{'descr': '<f4', 'shape': (1, 2, 1, 3)}");
    assert!(err.contains("the key 'fortran_order'"), "{err}");
    assert!(header_error("{}").contains("the key 'descr'"));
    assert!(header_error("not a dict").contains("'{' starting the header dict"));
    assert!(header_error("").contains("the end of the header"));
}

#[test]
fn values_must_have_numpys_types() {
    for (header, needle) in [
        ("{'descr': '<f4', 'fortran_order': 0, 'shape': (1, 2, 1, 3)}", "True or False"),
        ("{'descr': '<f4', 'fortran_order': Falsey, 'shape': (1, 2, 1, 3)}", "True or False"),
        ("{'descr': <f4, 'fortran_order': False, 'shape': (1, 2, 1, 3)}", "a quoted descr"),
        ("{'descr': '<f4, 'fortran_order': False, 'shape': (1, 2, 1, 3)}", "',' or '}'"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': [1, 2, 1, 3]}", "a shape tuple"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (6)}", "(n), an int"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1, -2, 1, 3)}", "non-negative integer"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 02, 1, 3)}", "leading zero"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2.0, 1, 3)}", "',' or ')'"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 1, 3}", "',' or ')'"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,, 2)}", "non-negative integer"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999, 1)}", "too large"),
    ] {
        let err = header_error(header);
        assert!(err.contains(needle), "{header}: '{needle}' not in {err}");
        assert!(err.contains("at byte"), "{header}: no offset in {err}");
    }
}

#[test]
fn header_encoding_and_size_limits() {
    let mut bytes = file(1, GOOD, &f32_bytes(6));
    bytes[12] = 0xE9; // 'é' in latin-1, inside the first key
    let err = decode_npy(&bytes).unwrap_err().to_string();
    assert!(err.contains("at byte 12") && err.contains("non-ASCII"), "{err}");
    let mut bytes = file(3, GOOD, &f32_bytes(6));
    bytes[14] = 0xFF;
    assert!(decode_npy(&bytes).unwrap_err().to_string().contains("UTF-8"));
    let long = format!("{GOOD}{}\n", " ".repeat(MAX_HEADER_LEN));
    let err = decode_npy(&file(2, &long, &f32_bytes(6))).unwrap_err().to_string();
    assert!(err.contains("at most 10000"), "{err}");
    // A length field far past the end is truncation, not an allocation.
    let mut bytes = file(2, GOOD, &[]);
    bytes[8..12].copy_from_slice(&9_000u32.to_le_bytes());
    assert!(matches!(decode_npy(&bytes), Err(IoErrorKind::Truncated(_))));
}

#[test]
fn wrong_rank_dtype_order_and_length() {
    let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    assert!(matches!(decode_npy(&file(1, h, &f32_bytes(6))), Err(IoErrorKind::NotFourD(s)) if s == [2, 3]));
    let h = "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1, 1, 1), }";
    assert!(matches!(decode_npy(&file(1, h, &[0; 8])), Err(IoErrorKind::UnsupportedDType { .. })));
    let h = "{'descr': '>f4', 'fortran_order': False, 'shape': (1, 1, 1, 1), }";
    assert!(matches!(decode_npy(&file(1, h, &[0; 4])), Err(IoErrorKind::UnsupportedDType { .. })));
    let h = "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 1, 1, 1), }";
    assert!(matches!(decode_npy(&file(1, h, &[0; 4])), Err(IoErrorKind::FortranOrder)));
    let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 2), }";
    let err = decode_npy(&file(1, h, &f32_bytes(3))).unwrap_err();
    assert!(matches!(err, IoErrorKind::DataLength { expected: 8, got: 12, .. }), "{err}");
    assert!(err.to_string().contains(&format!("after byte {}", 10 + h.len())), "{err}");
    // Overflowing shapes are an error, not a panic or an allocation.
    let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 2, 1), }";
    assert!(decode_npy(&file(1, h, &[])).unwrap_err().to_string().contains("usize::MAX"));
}

#[test]
fn long_descr_is_shortened_in_the_error() {
    let descr = "x".repeat(5000);
    let h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (1, 1, 1, 1), }}");
    let err = decode_npy(&file(1, &h, &[0; 4])).unwrap_err().to_string();
    assert!(err.len() < 300 && err.contains("5000 bytes)"), "{err}");
}

#[test]
fn never_panics_on_single_byte_mutations() {
    let good = encode_npy([1, 1, 1, 2], &HostData::F32(vec![1.0, 2.0])).unwrap();
    let mut accepted = 0;
    for i in 0..good.len() {
        for byte in [0u8, b'(', b')', b',', b'\'', b'{', b'}', b'0', b'L', 0xFF] {
            let mut bad = good.clone();
            bad[i] = byte;
            if let Ok(t) = decode_npy(&bad) {
                // Only mutations numpy would also read as the same array
                // (padding, data bytes) may pass.
                assert_eq!(t.shape, [1, 1, 1, 2], "byte {i} -> {byte}");
                accepted += 1;
            }
        }
    }
    assert!(accepted > 0, "no mutation of padding or data was accepted");
}
