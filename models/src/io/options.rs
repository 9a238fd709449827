//! `LoadOptions`: where loaded tensors go and which float type they get. Applied one tensor at a
//! time as it is read, so a conversion or a device upload never holds two copies of a whole file.

use bitgrad_engine::{DType, Device, Tensor};

use crate::{Error, Result};

/// How to load a weight file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Where the tensors end up (default: the CPU).
    pub device: Device,
    /// Convert every floating-point tensor to this float type (e.g. an f16 file to f32);
    /// integer tensors are left as they are. `None` keeps the file's types.
    pub dtype: Option<DType>,
}

impl LoadOptions {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = Some(dtype);
        self
    }

    /// Checked before reading anything: a bad option should not cost reading a 4 GB file first.
    pub(crate) fn check(&self) -> Result<()> {
        if let Some(d) = self.dtype {
            if !d.is_float() {
                return Err(Error::Config(format!(
                    "LoadOptions::dtype must be a float type (f32, f64, f16, bf16), not {d}: only \
                     floating-point weights are converted"
                )));
            }
        }
        self.device.check_available()?;
        Ok(())
    }

    /// Converts (floats only) and moves one freshly loaded CPU tensor.
    pub(crate) fn apply(&self, t: Tensor) -> Result<Tensor> {
        let t = match self.dtype {
            Some(d) if t.dtype().is_float() => t.to_dtype(d)?,
            _ => t,
        };
        Ok(t.to_device(self.device)?)
    }
}
