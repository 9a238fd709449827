//! Dtype and device conversion.

use super::format::OutputOrder;
use crate::{cpu, BackwardOp, DType, Device, GpuStorage, Result, Storage, Tensor};

impl Tensor {
    /// A converted copy (or `self` when already of that dtype). Differentiable between float
    /// types: the gradient is converted back.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        // A dense input's strides are kept (channels-last stays channels-last).
        let order = OutputOrder::of(self.shape(), &[self.layout()]);
        let l = order.apply(self.layout());
        let out = match &*self.storage() {
            Storage::Cpu(s) => Storage::Cpu(cpu::copy::cast(s, &l, dtype)?),
            Storage::Gpu(s) => Storage::Gpu(crate::gpu::prims::copy::cast(s, &l, dtype)?),
        };
        let t = order.wrap(out, self.shape().clone());
        if dtype.is_float() && self.dtype().is_float() {
            Ok(t.record(&[self], CastBackward(self.dtype())))
        } else {
            Ok(t)
        }
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

impl Tensor {
    /// This tensor on `device`: the same handle when it is there already, else a copy (only the
    /// elements the view covers). A dense tensor keeps its strides (a channels-last tensor
    /// stays channels-last); other views arrive row-major. Differentiable: the gradient goes
    /// back to the source device.
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        // Dense in some order: its elements are the `numel` storage slots from its offset on.
        let src = if self.layout().dense_order().is_some() { self.clone() } else { self.contiguous()? };
        let st = src.storage();
        let o = src.layout().offset();
        let n = src.numel();
        let out_layout = crate::Layout::new(src.shape().clone(), src.layout().strides().to_vec(), 0);
        let out = match (&*st, device) {
            (Storage::Cpu(s), d) => {
                let rt = crate::gpu::runtime(d)?;
                let host = crate::cpu::copy::contiguous(s, &crate::Layout::new([n].into(), vec![1], o));
                Storage::Gpu(GpuStorage::from_cpu(&rt, &host)?)
            }
            (Storage::Gpu(g), Device::Cpu) => {
                let mut host = crate::CpuStorage::full(g.dtype(), n, 0.0);
                if n > 0 {
                    g.runtime().dtoh(g.ptr_at(o), host.as_bytes_mut())?;
                }
                Storage::Cpu(host)
            }
            (Storage::Gpu(_), d) => {
                drop(st);
                return self.to_device(Device::Cpu)?.to_device(d);
            }
        };
        drop(st);
        let out = if src.is_contiguous() {
            Tensor::from_storage(out, self.shape())
        } else {
            Tensor::from_storage_in(out, out_layout)
        };
        Ok(out.record(&[self], ToDeviceBackward(self.device())))
    }
}

/// The gradient of a device move is the gradient moved back.
struct ToDeviceBackward(Device);

impl BackwardOp for ToDeviceBackward {
    fn name(&self) -> &'static str {
        "to_device"
    }
    fn backward(&self, _inputs: &[Tensor], _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.to_device(self.0)?)])
    }
}
