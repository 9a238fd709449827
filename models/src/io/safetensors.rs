//! safetensors files (timm's and Hugging Face's format): an 8-byte little-endian header length
//! `N`, `N` bytes of JSON (`name → {dtype, shape, data_offsets}` plus an optional
//! `__metadata__` string map), then the tensors' little-endian bytes.
//!
//! Loading streams: the header is read and validated completely (size bound, JSON, dtypes,
//! shapes without overflow, offsets inside the file, sizes matching the shapes, no overlaps)
//! before any tensor buffer is allocated, then each tensor is read with one seek + `read_exact`
//! straight into its final buffer. Peak memory is the tensors themselves (plus one tensor while a
//! dtype conversion or a device upload runs), never the file twice, and a lying header cannot
//! make us allocate more than the file holds.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use bitgrad_engine::{CpuStorage, DType, Shape, Storage, Tensor};
use serde_json::{Map, Value};

use super::atomic::write_atomic;
use super::bytes::{le_to_native, write_le};
use super::{LoadOptions, StateDict};
use crate::{Error, Result};

const FORMAT: &str = "safetensors";

/// Headers larger than this are refused (the safetensors crate uses the same bound): a
/// 21843-class R152x4 header is well under 100 kB.
pub const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;

/// The key of the string map in the header; not a tensor name.
const METADATA_KEY: &str = "__metadata__";

/// One tensor as the header describes it, offsets relative to the data section.
#[derive(Debug)]
struct Entry {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    begin: u64,
    end: u64,
}

/// Reads a safetensors file into a [`StateDict`] (tensors in file order, `__metadata__` in
/// [`StateDict::metadata`]).
pub fn load(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<StateDict> {
    let path = path.as_ref();
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    from_reader(f, len, path, opts)
}

/// [`load`] from any seekable source of `len` bytes (a `File`, a `Cursor`, or `&mut` either);
/// `path` only names it in errors.
pub fn from_reader<R: Read + Seek>(mut r: R, len: u64, path: &Path, opts: &LoadOptions) -> Result<StateDict> {
    opts.check()?;
    let bad = |msg: String| Error::format(path, FORMAT, msg);
    if len == 0 {
        return Err(bad("the file is empty".into()));
    }
    if len < 8 {
        return Err(bad(format!("the file has {len} bytes, fewer than the 8-byte header length")));
    }
    let mut n8 = [0u8; 8];
    r.seek(SeekFrom::Start(0)).and_then(|_| r.read_exact(&mut n8)).map_err(|e| Error::io(path, e))?;
    let n = u64::from_le_bytes(n8);
    if n > MAX_HEADER_BYTES {
        return Err(bad(format!(
            "the header length field says {n} bytes, more than the {MAX_HEADER_BYTES}-byte limit (corrupt, or not a safetensors file)"
        )));
    }
    if n > len - 8 {
        return Err(bad(format!(
            "the header length field says {n} bytes but only {} follow it: the file is truncated (or not a safetensors file)",
            len - 8
        )));
    }
    // Bounded by the file's size just above, so this allocation is backed by real bytes.
    let mut header = vec![0u8; n as usize];
    r.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    let data_len = len - 8 - n;
    let (entries, metadata) = parse_header(&header, data_len).map_err(bad)?;
    drop(header);

    let mut sd = StateDict::new();
    *sd.metadata_mut() = metadata;
    for e in entries {
        let t = read_tensor(&mut r, 8 + n, &e).map_err(|err| match err.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                bad(format!("tensor `{}`: the data ends early (was the file truncated while loading?)", e.name))
            }
            _ => Error::io(path, err),
        })?;
        sd.insert(e.name, opts.apply(t)?);
    }
    Ok(sd)
}

/// Reads one validated tensor directly into its buffer (the `Vec` the tensor will own).
fn read_tensor<R: Read + Seek>(r: &mut R, data_start: u64, e: &Entry) -> std::io::Result<Tensor> {
    let numel = e.shape.iter().product();
    let mut s = CpuStorage::full(e.dtype, numel, 0.0);
    r.seek(SeekFrom::Start(data_start + e.begin))?;
    r.read_exact(s.as_bytes_mut())?;
    le_to_native(&mut s);
    Ok(Tensor::from_storage(Storage::Cpu(s), Shape::new(e.shape.clone())))
}

/// Validates the whole header against a data section of `data_len` bytes. Returns the entries
/// sorted by offset (the file's order) and the metadata.
fn parse_header(bytes: &[u8], data_len: u64) -> std::result::Result<(Vec<Entry>, BTreeMap<String, String>), String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("the header is not valid JSON: {e}"))?;
    let Value::Object(map) = v else {
        return Err("the header is not a JSON object".into());
    };
    let mut metadata = BTreeMap::new();
    let mut entries = Vec::with_capacity(map.len());
    for (name, v) in map {
        if name == METADATA_KEY {
            metadata = parse_metadata(v)?;
        } else {
            entries.push(parse_entry(name, &v, data_len)?);
        }
    }
    entries.sort_by_key(|e| (e.begin, e.end));
    for w in entries.windows(2) {
        if w[1].begin < w[0].end {
            return Err(format!(
                "tensors `{}` (bytes {}..{}) and `{}` (bytes {}..{}) overlap",
                w[0].name, w[0].begin, w[0].end, w[1].name, w[1].begin, w[1].end
            ));
        }
    }
    Ok((entries, metadata))
}

fn parse_metadata(v: Value) -> std::result::Result<BTreeMap<String, String>, String> {
    let Value::Object(m) = v else {
        return Err(format!("`{METADATA_KEY}` must be an object of strings"));
    };
    m.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            other => Err(format!("`{METADATA_KEY}`.`{k}` must be a string, found {other}")),
        })
        .collect()
}

fn parse_entry(name: String, v: &Value, data_len: u64) -> std::result::Result<Entry, String> {
    let field = |f: &str| v.get(f).ok_or_else(|| format!("tensor `{name}`: the header entry has no `{f}`"));
    let dtype = match field("dtype")? {
        Value::String(s) => dtype_from_str(s).ok_or_else(|| {
            format!(
                "tensor `{name}` has dtype {s}, which bitgrad does not support (supported: F32, F64, F16, BF16, I64, U8)"
            )
        })?,
        other => return Err(format!("tensor `{name}`: `dtype` must be a string, found {other}")),
    };
    let shape = uints(field("shape")?)
        .ok_or_else(|| format!("tensor `{name}`: `shape` must be a list of non-negative integers"))?
        .into_iter()
        .map(usize::try_from)
        .collect::<std::result::Result<Vec<usize>, _>>()
        .map_err(|_| format!("tensor `{name}`: a dimension does not fit in memory addresses"))?;
    let offsets = uints(field("data_offsets")?)
        .filter(|o| o.len() == 2)
        .ok_or_else(|| format!("tensor `{name}`: `data_offsets` must be two non-negative integers [begin, end]"))?;
    let (begin, end) = (offsets[0], offsets[1]);
    let nbytes = shape
        .iter()
        .try_fold(dtype.size_in_bytes() as u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|&b| usize::try_from(b).is_ok())
        .ok_or_else(|| format!("tensor `{name}`: shape {shape:?} has too many elements"))?;
    if begin > end {
        return Err(format!("tensor `{name}`: data_offsets [{begin}, {end}] end before they begin"));
    }
    if end > data_len {
        return Err(format!(
            "tensor `{name}`: data_offsets [{begin}, {end}] reach past the end of the data ({data_len} bytes): the file is truncated or the header is wrong"
        ));
    }
    if end - begin != nbytes {
        return Err(format!(
            "tensor `{name}`: data_offsets [{begin}, {end}] hold {} bytes but shape {shape:?} of {dtype} needs {nbytes}",
            end - begin
        ));
    }
    Ok(Entry { name, dtype, shape, begin, end })
}

fn uints(v: &Value) -> Option<Vec<u64>> {
    v.as_array()?.iter().map(Value::as_u64).collect()
}

fn dtype_from_str(s: &str) -> Option<DType> {
    Some(match s {
        "F32" => DType::F32,
        "F64" => DType::F64,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "I64" => DType::I64,
        "U8" => DType::U8,
        _ => return None,
    })
}

fn dtype_to_str(d: DType) -> &'static str {
    match d {
        DType::F32 => "F32",
        DType::F64 => "F64",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::I64 => "I64",
        DType::U8 => "U8",
    }
}

/// Writes `sd` as a safetensors file, atomically: tensors in the state dict's order, contiguous
/// little-endian, `StateDict::metadata` as `__metadata__`. Tensors may live on any device; each
/// is copied to the host on its own while it is written.
pub fn save(path: impl AsRef<Path>, sd: &StateDict) -> Result<()> {
    let path = path.as_ref();
    let header = header_bytes(sd)?;
    write_atomic(path, |w| {
        w.write_all(&(header.len() as u64).to_le_bytes()).map_err(|e| Error::io(path, e))?;
        w.write_all(&header).map_err(|e| Error::io(path, e))?;
        for (_, t) in sd.iter() {
            write_le(w, t).map_err(|e| e.into_error(path))?;
        }
        Ok(())
    })
}

/// The JSON header, padded with spaces to a multiple of 8 bytes so the data section is aligned
/// (as the safetensors crate does).
fn header_bytes(sd: &StateDict) -> Result<Vec<u8>> {
    let mut map = Map::new();
    if !sd.metadata().is_empty() {
        let m = sd.metadata().iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        map.insert(METADATA_KEY.into(), Value::Object(m));
    }
    let mut offset = 0u64;
    for (name, t) in sd.iter() {
        if name == METADATA_KEY {
            return Err(Error::Msg(format!("`{METADATA_KEY}` cannot be a tensor name in a safetensors file")));
        }
        let end = offset + (t.numel() * t.dtype().size_in_bytes()) as u64;
        let entry = serde_json::json!({
            "dtype": dtype_to_str(t.dtype()),
            "shape": t.dims(),
            "data_offsets": [offset, end],
        });
        map.insert(name.to_string(), entry);
        offset = end;
    }
    let mut bytes =
        serde_json::to_vec(&Value::Object(map)).map_err(|e| Error::Msg(format!("safetensors header: {e}")))?;
    bytes.resize(bytes.len().next_multiple_of(8), b' ');
    Ok(bytes)
}
