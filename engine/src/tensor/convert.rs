//! Getting data out of a tensor.

use crate::cpu::copy;
use crate::storage::CpuElement;
use crate::{DType, Device, Error, Result, Tensor};

impl Tensor {
    /// The elements in row-major order. `T` must be the tensor's dtype (use `to_dtype` first).
    pub fn to_vec<T: CpuElement>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype() {
            return Err(Error::DTypeMismatch { op: "to_vec", lhs: self.dtype(), rhs: T::DTYPE });
        }
        if self.device().is_gpu() {
            return self.to_device(Device::Cpu)?.to_vec();
        }
        let st = self.storage();
        let s = st.cpu("to_vec")?;
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
        if self.device().is_gpu() {
            return self.to_device(Device::Cpu)?.to_vec_f64();
        }
        let s = copy::cast(self.storage().cpu("to_vec_f64")?, self.layout(), DType::F64)?;
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

impl Tensor {
    /// Calls `f` with the elements of this contiguous CPU tensor, without copying. Kernels in the
    /// ops crate use this to read their inputs (call `contiguous()` first when unsure).
    pub fn with_cpu_slice<T: CpuElement, R>(&self, f: impl FnOnce(&[T]) -> R) -> Result<R> {
        let st = self.storage();
        let v = self.checked_slice::<T>(st.cpu("with_cpu_slice")?, "with_cpu_slice")?;
        Ok(f(&v[self.layout().offset()..self.layout().offset() + self.numel()]))
    }

    /// Calls `f` with mutable access to the elements of this contiguous CPU tensor, in place.
    /// Every view of the same storage sees the change (this is how optimizers update weights).
    pub fn with_cpu_slice_mut<T: CpuElement, R>(&self, f: impl FnOnce(&mut [T]) -> R) -> Result<R> {
        if !self.is_contiguous() {
            return Err(Error::invalid(
                "with_cpu_slice_mut",
                format!("tensor of shape {} is not contiguous", self.shape()),
            ));
        }
        if T::DTYPE != self.dtype() {
            return Err(Error::DTypeMismatch { op: "with_cpu_slice_mut", lhs: self.dtype(), rhs: T::DTYPE });
        }
        let (o, n) = (self.layout().offset(), self.numel());
        let mut st = self.storage_mut();
        let v = T::slice_mut(st.cpu_mut("with_cpu_slice_mut")?).expect("dtype checked above");
        Ok(f(&mut v[o..o + n]))
    }

    fn checked_slice<'a, T: CpuElement>(&self, s: &'a crate::CpuStorage, op: &'static str) -> Result<&'a [T]> {
        if !self.is_contiguous() {
            return Err(Error::invalid(op, format!("tensor of shape {} is not contiguous", self.shape())));
        }
        T::slice(s).ok_or(Error::DTypeMismatch { op, lhs: self.dtype(), rhs: T::DTYPE })
    }
}
