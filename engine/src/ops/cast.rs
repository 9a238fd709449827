//! Dtype and device conversion.

use crate::{cpu, BackwardOp, DType, Device, Result, Storage, Tensor};

impl Tensor {
    /// A converted copy (or `self` when already of that dtype). Differentiable between float
    /// types: the gradient is converted back.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let out = match &*self.storage() {
            Storage::Cpu(s) => cpu::copy::cast(s, self.layout(), dtype)?,
        };
        let t = Tensor::from_storage(Storage::Cpu(out), self.shape());
        if dtype.is_float() && self.dtype().is_float() {
            Ok(t.record(&[self], CastBackward(self.dtype())))
        } else {
            Ok(t)
        }
    }

    /// This tensor on another device (`self` when already there).
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        device.check_available()?;
        Ok(self.clone())
    }
}

struct CastBackward(DType);

impl BackwardOp for CastBackward {
    fn name(&self) -> &'static str {
        "to_dtype"
    }
    fn backward(&self, _inputs: &[Tensor], _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.to_dtype(self.0)?)])
    }
}
