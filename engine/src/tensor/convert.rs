//! Getting data out of a tensor.

use crate::cpu::copy;
use crate::storage::CpuElement;
use crate::{DType, Error, Result, Tensor};

impl Tensor {
    /// The elements in row-major order. `T` must be the tensor's dtype (use `to_dtype` first).
    pub fn to_vec<T: CpuElement>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype() {
            return Err(Error::DTypeMismatch { op: "to_vec", lhs: self.dtype(), rhs: T::DTYPE });
        }
        let st = self.storage();
        let s = st.as_cpu();
        let v = T::slice(s).expect("dtype checked above");
        if self.is_contiguous() {
            let o = self.layout().offset();
            return Ok(v[o..o + self.numel()].to_vec());
        }
        let c = copy::contiguous(s, self.layout());
        Ok(T::slice(&c).expect("same dtype").to_vec())
    }

    /// The elements converted to f64, whatever the dtype (handy in tests).
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        let s = copy::cast(self.storage().as_cpu(), self.layout(), DType::F64)?;
        Ok(f64::slice(&s).expect("cast to f64").to_vec())
    }

    /// The single value of a one-element tensor, as f64.
    pub fn to_scalar(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::invalid("to_scalar", format!("expected one element, got shape {}", self.shape())));
        }
        Ok(self.to_vec_f64()?[0])
    }
}
