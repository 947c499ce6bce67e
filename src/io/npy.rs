//! NumPy `.npy` files, format versions 1.0, 2.0 and 3.0, little-endian
//! `<f4` and `<f2`, C order. Written as version 1.0.
//!
//! The reader accepts a subset of what `numpy.load` accepts and nothing it
//! rejects: the header must be one Python dict literal with exactly the keys
//! `descr`, `fortran_order` and `shape` (no key twice), followed only by
//! whitespace; `shape` must be a real tuple (`(3)` is an int to Python);
//! integers have no leading zeros; the header is at most 10000 bytes (numpy's
//! own limit); and the data must be exactly the bytes the shape needs. Errors
//! give the byte offset in the file and what was expected there.

use super::{check_len, four_d, host_from_le, host_to_le, HostTensor, IoErrorKind};
use crate::dtype::DType;
use crate::tensor::HostData;

const MAGIC: &[u8] = b"\x93NUMPY";

/// `numpy.lib.format` refuses longer headers unless told to trust the file.
pub const MAX_HEADER_LEN: usize = 10_000;

/// Parses a whole `.npy` file.
pub fn decode_npy(bytes: &[u8]) -> Result<HostTensor, IoErrorKind> {
    let (header_start, header_end, utf8) = preamble(bytes)?;
    let raw = &bytes[header_start..header_end];
    let header = if utf8 {
        std::str::from_utf8(raw).map_err(|e| {
            malformed(header_start + e.valid_up_to(), "UTF-8 text (version 3.0 headers are UTF-8)", "invalid UTF-8")
        })?
    } else {
        match raw.iter().position(|b| !b.is_ascii()) {
            Some(i) => {
                return Err(malformed(header_start + i, "ASCII text (version 1.0/2.0 header)", "a non-ASCII byte"))
            }
            // ASCII is valid UTF-8, so this cannot fail; map it anyway rather than unwrap.
            None => std::str::from_utf8(raw).map_err(|_| malformed(header_start, "ASCII text", "invalid text"))?,
        }
    };
    let dict = HeaderParser { s: header.as_bytes(), i: 0, base: header_start }.dict()?;
    if dict.fortran_order {
        return Err(IoErrorKind::FortranOrder);
    }
    let dtype = match dict.descr.as_str() {
        "<f4" => DType::F32,
        "<f2" => DType::F16,
        other => {
            return Err(IoErrorKind::UnsupportedDType {
                got: format!("'{}'", super::shorten(other)),
                expected: "'<f4' (f32) or '<f2' (f16); bf16 needs .safetensors",
            })
        }
    };
    let shape = four_d(&dict.shape)?;
    let data = &bytes[header_end..];
    check_len(&dict.shape, dtype, data, header_end)?;
    Ok(HostTensor { shape, data: host_from_le(dtype, data)? })
}

/// Checks magic, version and header length; returns the header's byte range
/// and whether it is UTF-8 (version 3.0) rather than ASCII.
fn preamble(bytes: &[u8]) -> Result<(usize, usize, bool), IoErrorKind> {
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
        _ => return Err(IoErrorKind::Truncated("file ends inside the version bytes (offset 6)".into())),
    };
    let (len_bytes, utf8) = match (major, minor) {
        (1, 0) => (2usize, false),
        (2, 0) => (4, false),
        (3, 0) => (4, true),
        _ => return Err(malformed(6, "format version 1.0, 2.0 or 3.0", &format!("version {major}.{minor}"))),
    };
    let header_start = 8 + len_bytes;
    let len_field = bytes
        .get(8..header_start)
        .ok_or_else(|| IoErrorKind::Truncated("file ends inside the header length (offset 8)".into()))?;
    let header_len = if len_bytes == 2 {
        u16::from_le_bytes([len_field[0], len_field[1]]) as usize
    } else {
        u32::from_le_bytes([len_field[0], len_field[1], len_field[2], len_field[3]]) as usize
    };
    if header_len > MAX_HEADER_LEN {
        return Err(malformed(
            8,
            &format!("a header length of at most {MAX_HEADER_LEN} bytes (numpy's limit)"),
            &header_len.to_string(),
        ));
    }
    let header_end = header_start + header_len;
    if header_end > bytes.len() {
        return Err(IoErrorKind::Truncated(format!(
            "header says {header_len} bytes, file has {} after the preamble",
            bytes.len() - header_start
        )));
    }
    Ok((header_start, header_end, utf8))
}

fn bad_magic() -> IoErrorKind {
    IoErrorKind::BadMagic { format: ".npy", why: "it does not start with \\x93NUMPY".into() }
}

fn malformed(offset: usize, expected: &str, found: &str) -> IoErrorKind {
    IoErrorKind::Malformed { offset, expected: expected.to_string(), found: super::shorten(found) }
}

/// Serializes a tensor as a version 1.0 `.npy` file.
pub fn encode_npy(shape: [usize; 4], data: &HostData) -> Result<Vec<u8>, IoErrorKind> {
    let descr = npy_descr(data.dtype())?;
    let shape_text = shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({shape_text}), }}");
    // Pad with spaces so the data starts on a 64-byte boundary; end with '\n'.
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let header_len =
        u16::try_from(header.len()).map_err(|_| IoErrorKind::BadHeader("header longer than 65535 bytes".into()))?;
    let body = host_to_le(data)?;
    let mut out = super::try_vec(10 + header.len() + body.len(), "the .npy file being written")?;
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// The `.npy` descriptor of `dtype`, or why it has none.
pub fn npy_descr(dtype: DType) -> Result<&'static str, IoErrorKind> {
    match dtype {
        DType::F32 => Ok("<f4"),
        DType::F16 => Ok("<f2"),
        DType::BF16 => Err(IoErrorKind::Bf16Npy),
    }
}

/// The three keys of an `.npy` header dictionary.
#[derive(Debug, PartialEq)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// A parser for the one Python literal an `.npy` header holds, e.g.
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`. `base` is
/// the header's offset in the file, so errors point into the file.
struct HeaderParser<'a> {
    s: &'a [u8],
    i: usize,
    base: usize,
}

impl HeaderParser<'_> {
    fn err(&self, expected: &str) -> IoErrorKind {
        let rest = &self.s[self.i.min(self.s.len())..];
        let found = if rest.is_empty() {
            "the end of the header".to_string()
        } else {
            format!("{:?}", String::from_utf8_lossy(&rest[..rest.len().min(24)]))
        };
        malformed(self.base + self.i, expected, &found)
    }

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

    fn expect(&mut self, c: u8, what: &str) -> Result<(), IoErrorKind> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.err(what))
        }
    }

    fn dict(&mut self) -> Result<Header, IoErrorKind> {
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        self.expect(b'{', "'{' starting the header dict")?;
        loop {
            self.skip_ws();
            if self.eat(b'}') {
                break;
            }
            let key_at = self.i;
            let key = self.string().ok_or_else(|| self.err("a quoted key or '}'"))?;
            self.skip_ws();
            self.expect(b':', "':' after the key")?;
            self.skip_ws();
            let duplicate = || malformed(self.base + key_at, "each key once", &format!("'{key}' a second time"));
            match key.as_str() {
                "descr" if descr.is_some() => return Err(duplicate()),
                "fortran_order" if fortran.is_some() => return Err(duplicate()),
                "shape" if shape.is_some() => return Err(duplicate()),
                "descr" => descr = Some(self.string().ok_or_else(|| self.err("a quoted descr such as '<f4'"))?),
                "fortran_order" => fortran = Some(self.boolean().ok_or_else(|| self.err("True or False"))?),
                "shape" => shape = Some(self.tuple()?),
                other => {
                    return Err(malformed(
                        self.base + key_at,
                        "only the keys 'descr', 'fortran_order' and 'shape'",
                        &format!("key '{other}'"),
                    ))
                }
            }
            self.skip_ws();
            if !self.eat(b',') {
                self.skip_ws();
                self.expect(b'}', "',' or '}' after a value")?;
                break;
            }
        }
        // Only padding may follow the dict: numpy evaluates the whole header
        // as one literal, so anything else is a syntax error there.
        self.skip_ws();
        if self.i != self.s.len() {
            return Err(self.err("only spaces or a newline after the header dict"));
        }
        let missing = |key: &str| malformed(self.base + self.s.len(), &format!("the key '{key}'"), "no such key");
        Ok(Header {
            descr: descr.ok_or_else(|| missing("descr"))?,
            fortran_order: fortran.ok_or_else(|| missing("fortran_order"))?,
            shape: shape.ok_or_else(|| missing("shape"))?,
        })
    }

    /// A quoted string without escapes (none of the three keys needs one).
    fn string(&mut self) -> Option<String> {
        let quote = self.peek().filter(|&q| q == b'\'' || q == b'"')?;
        let start = self.i + 1;
        let len = self.s.get(start..)?.iter().position(|&c| c == quote || c == b'\\' || c == b'\n')?;
        if self.s[start + len] != quote {
            return None;
        }
        let out = std::str::from_utf8(&self.s[start..start + len]).ok()?.to_string();
        self.i = start + len + 1;
        Some(out)
    }

    fn boolean(&mut self) -> Option<bool> {
        for (word, value) in [(&b"True"[..], true), (&b"False"[..], false)] {
            let end = self.i + word.len();
            let follows_ident = self.s.get(end).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
            if self.s.get(self.i..end) == Some(word) && !follows_ident {
                self.i = end;
                return Some(value);
            }
        }
        None
    }

    /// A Python tuple of non-negative integers: `()`, `(n,)`, `(a, b)` or
    /// `(a, b,)`. `(n)` is rejected: to Python it is an int, not a tuple.
    fn tuple(&mut self) -> Result<Vec<usize>, IoErrorKind> {
        self.expect(b'(', "a shape tuple such as (1, 16, 8, 64)")?;
        let mut dims = Vec::new();
        let mut trailing_comma = false;
        loop {
            self.skip_ws();
            if self.eat(b')') {
                if dims.len() == 1 && !trailing_comma {
                    return Err(malformed(self.base + self.i - 1, "a tuple: (n,) with a comma", "(n), an int"));
                }
                return Ok(dims);
            }
            dims.push(self.integer()?);
            self.skip_ws();
            trailing_comma = self.eat(b',');
            if !trailing_comma {
                self.skip_ws();
                self.expect(b')', "',' or ')' in the shape tuple")?;
                if dims.len() == 1 {
                    return Err(malformed(self.base + self.i - 1, "a tuple: (n,) with a comma", "(n), an int"));
                }
                return Ok(dims);
            }
        }
    }

    /// A decimal integer as Python 3 writes it (no leading zeros), with the
    /// `L` suffix Python 2 numpy wrote accepted as numpy still does.
    fn integer(&mut self) -> Result<usize, IoErrorKind> {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        let digits = &self.s[start..self.i];
        if digits.is_empty() {
            return Err(self.err("a non-negative integer dimension"));
        }
        if digits.len() > 1 && digits[0] == b'0' {
            return Err(malformed(self.base + start, "an integer without leading zeros", "a leading zero"));
        }
        let text = std::str::from_utf8(digits).map_err(|_| self.err("digits"))?;
        let value = text.parse::<usize>().map_err(|_| {
            malformed(self.base + start, "a dimension that fits in usize", &format!("{text} (too large)"))
        })?;
        self.eat(b'L');
        Ok(value)
    }
}

#[cfg(test)]
mod tests;
