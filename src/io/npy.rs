//! NumPy `.npy` files, format versions 1.0, 2.0 and 3.0, little-endian
//! `<f4` and `<f2`, C order. Written as version 1.0.

use super::{check_len, four_d, host_from_le, host_to_le, HostTensor, IoErrorKind};
use crate::dtype::DType;
use crate::tensor::HostData;

const MAGIC: &[u8] = b"\x93NUMPY";

/// Parses a whole `.npy` file.
pub fn decode_npy(bytes: &[u8]) -> Result<HostTensor, IoErrorKind> {
    if bytes.len() < MAGIC.len() {
        if MAGIC.starts_with(bytes) {
            return Err(IoErrorKind::Truncated(format!("{} bytes, shorter than the .npy magic", bytes.len())));
        }
        return Err(bad_magic());
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(bad_magic());
    }
    let (major, minor) = match (bytes.get(6), bytes.get(7)) {
        (Some(&a), Some(&b)) => (a, b),
        _ => return Err(IoErrorKind::Truncated("file ends inside the version bytes".into())),
    };
    let (len_bytes, utf8) = match major {
        1 => (2usize, false),
        2 => (4, false),
        3 => (4, true),
        _ => return Err(IoErrorKind::BadHeader(format!("unsupported .npy version {major}.{minor}"))),
    };
    let len_end = 8 + len_bytes;
    let len_field =
        bytes.get(8..len_end).ok_or_else(|| IoErrorKind::Truncated("file ends inside the header length".into()))?;
    let header_len = if len_bytes == 2 {
        u16::from_le_bytes([len_field[0], len_field[1]]) as usize
    } else {
        u32::from_le_bytes([len_field[0], len_field[1], len_field[2], len_field[3]]) as usize
    };
    let header_end =
        len_end.checked_add(header_len).ok_or_else(|| IoErrorKind::BadHeader("header length overflows".into()))?;
    let header = bytes.get(len_end..header_end).ok_or_else(|| {
        IoErrorKind::Truncated(format!(
            "header says {header_len} bytes, file has {} after the preamble",
            bytes.len() - len_end
        ))
    })?;
    let header = if utf8 {
        std::str::from_utf8(header).map_err(|_| IoErrorKind::BadHeader("header is not UTF-8".into()))?
    } else if header.is_ascii() {
        // ASCII is valid UTF-8.
        std::str::from_utf8(header).map_err(|_| IoErrorKind::BadHeader("header is not ASCII".into()))?
    } else {
        return Err(IoErrorKind::BadHeader("header is not ASCII (versions 1 and 2)".into()));
    };
    let dict = parse_header(header)?;
    if dict.fortran_order {
        return Err(IoErrorKind::FortranOrder);
    }
    let dtype = match dict.descr.as_str() {
        "<f4" => DType::F32,
        "<f2" => DType::F16,
        other => {
            return Err(IoErrorKind::UnsupportedDType {
                got: format!("'{other}'"),
                expected: "'<f4' (f32) or '<f2' (f16); bf16 needs .safetensors",
            })
        }
    };
    let shape = four_d(&dict.shape)?;
    let data = &bytes[header_end..];
    check_len(&dict.shape, dtype, data)?;
    Ok(HostTensor { shape, data: host_from_le(dtype, data) })
}

fn bad_magic() -> IoErrorKind {
    IoErrorKind::BadMagic { format: ".npy", why: "it does not start with \\x93NUMPY".into() }
}

/// Serializes a tensor as a version 1.0 `.npy` file.
pub fn encode_npy(shape: [usize; 4], data: &HostData) -> Result<Vec<u8>, IoErrorKind> {
    let descr = match data.dtype() {
        DType::F32 => "<f4",
        DType::F16 => "<f2",
        DType::BF16 => return Err(IoErrorKind::Bf16Npy),
    };
    let shape_text = shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({shape_text}), }}");
    // Pad with spaces so the data starts on a 64-byte boundary; end with '\n'.
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let header_len =
        u16::try_from(header.len()).map_err(|_| IoErrorKind::BadHeader("header longer than 65535 bytes".into()))?;
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * data.dtype().size_in_bytes());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&host_to_le(data));
    Ok(out)
}

/// The three keys of an `.npy` header dictionary.
#[derive(Debug, PartialEq)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// Parses the Python dict literal of an `.npy` header, e.g.
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
fn parse_header(text: &str) -> Result<Header, IoErrorKind> {
    let bad = |why: &str| IoErrorKind::BadHeader(format!("{why} in {:?}", text.trim_end()));
    let mut p = Parser { s: text.as_bytes(), i: 0 };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    p.expect(b'{').map_err(|_| bad("expected '{'"))?;
    loop {
        p.skip_ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string().ok_or_else(|| bad("expected a quoted key"))?;
        p.skip_ws();
        p.expect(b':').map_err(|_| bad("expected ':'"))?;
        p.skip_ws();
        match key.as_str() {
            "descr" => descr = Some(p.string().ok_or_else(|| bad("descr is not a string"))?),
            "fortran_order" => fortran = Some(p.boolean().ok_or_else(|| bad("fortran_order is not True/False"))?),
            "shape" => shape = Some(p.tuple().ok_or_else(|| bad("shape is not a tuple of integers"))?),
            _ => return Err(bad(&format!("unexpected key '{key}'"))),
        }
        p.skip_ws();
        if !p.eat(b',') {
            p.skip_ws();
            p.expect(b'}').map_err(|_| bad("expected ',' or '}'"))?;
            break;
        }
    }
    Ok(Header {
        descr: descr.ok_or_else(|| bad("missing 'descr'"))?,
        fortran_order: fortran.ok_or_else(|| bad("missing 'fortran_order'"))?,
        shape: shape.ok_or_else(|| bad("missing 'shape'"))?,
    })
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), ()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(())
        }
    }

    fn string(&mut self) -> Option<String> {
        let quote = self.peek().filter(|&q| q == b'\'' || q == b'"')?;
        self.i += 1;
        let start = self.i;
        while self.peek()? != quote {
            self.i += 1;
        }
        let out = std::str::from_utf8(&self.s[start..self.i]).ok()?.to_string();
        self.i += 1;
        Some(out)
    }

    fn boolean(&mut self) -> Option<bool> {
        for (word, value) in [(&b"True"[..], true), (&b"False"[..], false)] {
            if self.s.get(self.i..self.i + word.len()) == Some(word) {
                self.i += word.len();
                return Some(value);
            }
        }
        None
    }

    fn tuple(&mut self) -> Option<Vec<usize>> {
        if !self.eat(b'(') {
            return None;
        }
        let mut dims = Vec::new();
        loop {
            self.skip_ws();
            if self.eat(b')') {
                return Some(dims);
            }
            let start = self.i;
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.i += 1;
            }
            let digits = std::str::from_utf8(&self.s[start..self.i]).ok()?;
            // numpy may write Python 2 longs as "3L".
            self.eat(b'L');
            dims.push(digits.parse().ok()?);
            self.skip_ws();
            if !self.eat(b',') {
                self.skip_ws();
                return if self.eat(b')') { Some(dims) } else { None };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(version: u8, header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[version, 0]);
        if version == 1 {
            out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn f32_bytes(n: usize) -> Vec<u8> {
        (0..n).flat_map(|i| (i as f32 * 0.5).to_le_bytes()).collect()
    }

    #[test]
    fn reads_every_version() {
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 1, 3), }\n";
        for version in [1, 2, 3] {
            let t = decode_npy(&file(version, h, &f32_bytes(6))).unwrap();
            assert_eq!(t.shape, [1, 2, 1, 3]);
            assert_eq!(t.data, HostData::F32(vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]));
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
    fn bad_magic_and_headers() {
        assert!(matches!(decode_npy(b"PK\x03\x04 not numpy at all"), Err(IoErrorKind::BadMagic { .. })));
        let bad = file(1, "{'descr': '<f4', 'shape': (1, 1, 1, 1), }", &f32_bytes(1));
        assert!(matches!(decode_npy(&bad), Err(IoErrorKind::BadHeader(_))));
        let bad = file(1, "not a dict", &f32_bytes(1));
        assert!(matches!(decode_npy(&bad), Err(IoErrorKind::BadHeader(_))));
        let bad = file(9, "{}", &[]);
        assert!(matches!(decode_npy(&bad), Err(IoErrorKind::BadHeader(_))));
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
        assert!(matches!(decode_npy(&file(1, h, &f32_bytes(3))), Err(IoErrorKind::DataLength { .. })));
    }

    #[test]
    fn never_panics_on_garbage() {
        let good = encode_npy([1, 1, 1, 2], &HostData::F32(vec![1.0, 2.0])).unwrap();
        for i in 0..good.len() {
            for byte in [0u8, b'(', b')', b',', b'\'', 0xFF] {
                let mut bad = good.clone();
                bad[i] = byte;
                let _ = decode_npy(&bad);
            }
        }
    }
}
