//! Little-endian element bytes: both file formats store little-endian data. On little-endian
//! hosts (all we build for in practice) these are no-ops and the loaders read straight into the
//! tensor's buffer; on big-endian hosts every element is byte-swapped in place.

use std::io::Write;

use bitgrad_engine::{CpuStorage, Tensor};

/// Turns a buffer just read from a little-endian file into native order (in place).
pub(crate) fn le_to_native(s: &mut CpuStorage) {
    if cfg!(target_endian = "big") {
        let k = s.dtype().size_in_bytes();
        for c in s.as_bytes_mut().chunks_exact_mut(k) {
            c.reverse();
        }
    }
}

/// Writes the elements of `t` (any device, any layout) as contiguous little-endian bytes. One
/// tensor at a time goes to the host, so saving from a GPU needs host memory for one tensor only.
pub(crate) fn write_le(w: &mut impl Write, t: &Tensor) -> std::result::Result<(), WriteError> {
    let c = t.detach().to_device(bitgrad_engine::Device::Cpu)?.contiguous()?;
    let k = c.dtype().size_in_bytes();
    let st = c.storage();
    let s = st.cpu("write_le")?;
    let o = c.layout().offset() * k;
    let bytes = &s.as_bytes()[o..o + c.numel() * k];
    if cfg!(target_endian = "big") {
        for chunk in bytes.chunks(1 << 20) {
            let mut v = chunk.to_vec();
            for e in v.chunks_exact_mut(k) {
                e.reverse();
            }
            w.write_all(&v)?;
        }
    } else {
        w.write_all(bytes)?;
    }
    Ok(())
}

/// What [`write_le`] can fail with: getting the tensor to the host, or the writer.
#[derive(Debug)]
pub(crate) enum WriteError {
    Engine(bitgrad_engine::Error),
    Io(std::io::Error),
}

impl From<bitgrad_engine::Error> for WriteError {
    fn from(e: bitgrad_engine::Error) -> Self {
        WriteError::Engine(e)
    }
}
impl From<std::io::Error> for WriteError {
    fn from(e: std::io::Error) -> Self {
        WriteError::Io(e)
    }
}

impl WriteError {
    pub(crate) fn into_error(self, path: &std::path::Path) -> crate::Error {
        match self {
            WriteError::Engine(e) => crate::Error::Engine(e),
            WriteError::Io(e) => crate::Error::io(path, e),
        }
    }
}
