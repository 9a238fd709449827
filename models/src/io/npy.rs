//! NumPy `.npy` arrays, the entries of a `.npz`: the magic `\x93NUMPY`, a version byte pair,
//! a header length (u16 for v1, u32 for v2/v3), a Python dict literal such as
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (7, 7, 3, 64), }`, then the raw data.
//!
//! Reading supports v1–v3, little-endian `<f4`, `<f8`, `<f2`, `<i8` and `|u1`, C order only;
//! anything else is a clear error. Sizes are checked against the bytes the entry really has
//! before the data buffer is allocated. Writing produces v1 (v2 if a header ever needs more than
//! 64 KiB) with the header padded to a multiple of 64 bytes, as NumPy does.

use std::io::{Read, Write};

use bitgrad_engine::{CpuStorage, DType, Shape, Storage, Tensor};

use super::bytes::le_to_native;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// NumPy's own limit is far below this; it only stops a corrupt length from allocating.
const MAX_HEADER_BYTES: u64 = 1 << 20;

/// A parsed header: what the data that follows it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Bytes from the start of the entry to the first data byte.
    pub data_offset: u64,
}

/// Reads one array from `r`, which holds exactly `size` bytes (the entry's uncompressed size).
/// Errors are messages for the caller to attach the file and entry name to.
pub fn read(r: &mut impl Read, size: u64) -> Result<Tensor, String> {
    let h = read_header(r, size)?;
    let numel: usize = h.shape.iter().product();
    let nbytes = (numel * h.dtype.size_in_bytes()) as u64; // no overflow: checked in read_header
    let have = size - h.data_offset;
    if nbytes != have {
        return Err(format!(
            "the header says shape {:?} of {} ({nbytes} bytes) but the entry has {have} bytes of data{}",
            h.shape,
            h.dtype,
            if nbytes > have { ": truncated" } else { "" }
        ));
    }
    let mut s = CpuStorage::full(h.dtype, numel, 0.0);
    r.read_exact(s.as_bytes_mut()).map_err(|e| data_error(&e))?;
    le_to_native(&mut s);
    Ok(Tensor::from_storage(Storage::Cpu(s), Shape::new(h.shape)))
}

fn data_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "the data is truncated".into(),
        _ => format!("reading the data failed: {e}"),
    }
}

/// Reads and validates the header of an entry of `size` bytes.
pub fn read_header(r: &mut impl Read, size: u64) -> Result<NpyHeader, String> {
    let mut pre = [0u8; 8];
    if size < 10 {
        return Err(format!("{size} bytes is too short for a .npy header: truncated"));
    }
    r.read_exact(&mut pre).map_err(|e| data_error(&e))?;
    if &pre[..6] != MAGIC {
        return Err("not a .npy array (the magic \\x93NUMPY is missing)".into());
    }
    let (major, minor) = (pre[6], pre[7]);
    let (len_bytes, utf8) = match major {
        1 => (2, false),
        2 => (4, false),
        3 => (4, true),
        _ => return Err(format!(".npy format version {major}.{minor} is not supported (1.0, 2.0, 3.0 are)")),
    };
    let mut lb = [0u8; 4];
    r.read_exact(&mut lb[..len_bytes]).map_err(|e| data_error(&e))?;
    let hlen = u32::from_le_bytes(lb) as u64;
    let data_offset = 8 + len_bytes as u64 + hlen;
    if hlen > MAX_HEADER_BYTES || data_offset > size {
        return Err(format!("the header length {hlen} does not fit the entry's {size} bytes: truncated or corrupt"));
    }
    let mut hb = vec![0u8; hlen as usize];
    r.read_exact(&mut hb).map_err(|e| data_error(&e))?;
    // v1/v2 headers are latin-1; a valid one is ASCII, so only v3 needs real UTF-8 decoding.
    let text = if utf8 {
        String::from_utf8(hb).map_err(|_| "the v3 header is not UTF-8".to_string())?
    } else {
        hb.iter().map(|&b| b as char).collect()
    };
    let dict = parse_dict(&text).map_err(|m| format!("cannot parse the header {:?}: {m}", text.trim_end()))?;
    let get =
        |k: &str| dict.iter().find(|(n, _)| n == k).map(|(_, v)| v).ok_or_else(|| format!("the header has no '{k}'"));
    let descr = match get("descr")? {
        Lit::Str(s) => s.as_str(),
        _ => return Err("'descr' is not a simple type string (structured arrays are not supported)".into()),
    };
    let dtype = dtype_from_descr(descr)?;
    match get("fortran_order")? {
        Lit::Bool(false) => {}
        Lit::Bool(true) => {
            return Err(
                "fortran_order is True: Fortran-ordered arrays are not supported (save with np.ascontiguousarray)"
                    .into(),
            )
        }
        _ => return Err("'fortran_order' is not True or False".into()),
    }
    let shape = match get("shape")? {
        Lit::Shape(s) => s.clone(),
        _ => return Err("'shape' is not a tuple of integers".into()),
    };
    shape
        .iter()
        .try_fold(dtype.size_in_bytes(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} has too many elements"))?;
    Ok(NpyHeader { dtype, shape, data_offset })
}

fn dtype_from_descr(d: &str) -> Result<DType, String> {
    Ok(match d {
        "<f4" => DType::F32,
        "<f8" => DType::F64,
        "<f2" => DType::F16,
        "<i8" => DType::I64,
        "|u1" | "<u1" => DType::U8,
        _ if d.starts_with('>') => {
            return Err(format!("big-endian data (descr '{d}') is not supported: save it little-endian"))
        }
        _ => return Err(format!("unsupported descr '{d}' (supported: <f4, <f8, <f2, <i8, |u1)")),
    })
}

fn descr(d: DType) -> Option<&'static str> {
    Some(match d {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::F16 => "<f2",
        DType::I64 => "<i8",
        DType::U8 => "|u1",
        DType::BF16 => return None,
    })
}

/// A value in the header dict: all a .npy header ever holds.
#[derive(Debug)]
enum Lit {
    Str(String),
    Bool(bool),
    Shape(Vec<usize>),
}

/// Parses `{'key': value, ...}` with values `'str'`, `True`/`False` or a tuple of integers
/// (a trailing `L` from Python 2 writers allowed). Not a general Python parser: nothing else
/// appears in a .npy header of a plain array.
fn parse_dict(s: &str) -> Result<Vec<(String, Lit)>, String> {
    let mut p = Parser { b: s.as_bytes(), i: 0 };
    p.expect(b'{')?;
    let mut out = Vec::new();
    loop {
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.expect(b':')?;
        let v = p.value()?;
        out.push((key, v));
        if p.eat(b',') {
            continue;
        }
        p.expect(b'}')?;
        break;
    }
    p.ws();
    if p.i != p.b.len() {
        return Err("text after the closing brace".into());
    }
    Ok(out)
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected '{}' at byte {}", c as char, self.i))
        }
    }
    fn string(&mut self) -> Result<String, String> {
        self.ws();
        let q = match self.b.get(self.i) {
            Some(&q @ (b'\'' | b'"')) => q,
            _ => return Err(format!("expected a quoted string at byte {}", self.i)),
        };
        let start = self.i + 1;
        let len = self.b[start..].iter().position(|&c| c == q).ok_or("unterminated string")?;
        self.i = start + len + 1;
        String::from_utf8(self.b[start..start + len].to_vec()).map_err(|_| "a string is not UTF-8".into())
    }
    fn word(&mut self, w: &str) -> bool {
        self.ws();
        if self.b[self.i..].starts_with(w.as_bytes()) {
            self.i += w.len();
            true
        } else {
            false
        }
    }
    fn value(&mut self) -> Result<Lit, String> {
        self.ws();
        match self.b.get(self.i) {
            Some(b'\'' | b'"') => Ok(Lit::Str(self.string()?)),
            Some(b'(') => self.tuple(),
            Some(b'[') => Err("a list value (structured dtype?) is not supported".into()),
            _ if self.word("True") => Ok(Lit::Bool(true)),
            _ if self.word("False") => Ok(Lit::Bool(false)),
            _ => Err(format!("unexpected value at byte {}", self.i)),
        }
    }
    fn tuple(&mut self) -> Result<Lit, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            if self.eat(b')') {
                break;
            }
            dims.push(self.uint()?);
            self.eat(b'L');
            if self.eat(b',') {
                continue;
            }
            self.expect(b')')?;
            break;
        }
        Ok(Lit::Shape(dims))
    }
    fn uint(&mut self) -> Result<usize, String> {
        self.ws();
        let start = self.i;
        while self.i < self.b.len() && self.b[self.i].is_ascii_digit() {
            self.i += 1;
        }
        std::str::from_utf8(&self.b[start..self.i])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("expected a dimension (a non-negative integer) at byte {start}"))
    }
}

/// The bytes of a .npy header for a C-order array; `None` for bf16, which NumPy has no type for.
pub fn header_bytes(dtype: DType, shape: &[usize]) -> Option<Vec<u8>> {
    let dims = match shape {
        [d] => format!("({d},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let dict = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {dims}, }}", descr(dtype)?);
    // Pad with spaces and end with '\n' so the data starts at a multiple of 64 bytes.
    let build = |major: u8, len_bytes: usize| {
        let unpadded = 8 + len_bytes + dict.len() + 1;
        let hlen = dict.len() + 1 + (unpadded.next_multiple_of(64) - unpadded);
        let mut out = Vec::with_capacity(8 + len_bytes + hlen);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[major, 0]);
        out.extend_from_slice(&(hlen as u32).to_le_bytes()[..len_bytes]);
        out.extend_from_slice(dict.as_bytes());
        out.resize(8 + len_bytes + hlen - 1, b' ');
        out.push(b'\n');
        (out, hlen)
    };
    let (v1, hlen) = build(1, 2);
    Some(if hlen <= u16::MAX as usize { v1 } else { build(2, 4).0 })
}

/// Writes a header and `t`'s elements (copied to the host, contiguous, little-endian).
pub(crate) fn write(w: &mut impl Write, t: &Tensor) -> Result<(), super::bytes::WriteError> {
    let h = header_bytes(t.dtype(), t.dims())
        .ok_or_else(|| std::io::Error::other(format!("{} has no .npy type: convert it first", t.dtype())))?;
    w.write_all(&h)?;
    super::bytes::write_le(w, t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_parse_variants() {
        let d = parse_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (7, 7, 3, 64), }  \n").unwrap();
        assert!(matches!(&d[2].1, Lit::Shape(s) if s == &[7, 7, 3, 64]));
        let d = parse_dict("{\"descr\":\"<f8\",\"fortran_order\":True,\"shape\":(3L,)}").unwrap();
        assert!(matches!(d[1].1, Lit::Bool(true)));
        assert!(matches!(&d[2].1, Lit::Shape(s) if s == &[3]));
        let d = parse_dict("{'shape': (), 'descr': '<f2', 'fortran_order': False}").unwrap();
        assert!(matches!(&d[0].1, Lit::Shape(s) if s.is_empty()));
        assert!(parse_dict("{'descr': [('a', '<f4')]}").unwrap_err().contains("structured"));
        assert!(parse_dict("{'descr': '<f4'").is_err());
        assert!(parse_dict("{'shape': (1, -2)}").is_err());
    }

    #[test]
    fn written_header_is_aligned_and_reads_back() {
        for shape in [vec![], vec![5], vec![7, 7, 3, 64]] {
            let h = header_bytes(DType::F16, &shape).unwrap();
            assert_eq!(h.len() % 64, 0);
            assert_eq!(*h.last().unwrap(), b'\n');
            let size = h.len() as u64 + 2 * shape.iter().product::<usize>() as u64;
            let got = read_header(&mut &h[..], size).unwrap();
            assert_eq!(got, NpyHeader { dtype: DType::F16, shape, data_offset: h.len() as u64 });
        }
        assert!(header_bytes(DType::BF16, &[1]).is_none());
    }
}
