//! cat and stack.

use crate::{cpu, BackwardOp, CpuStorage, Error, Layout, Result, Storage, Tensor};

impl Tensor {
    /// Joins tensors along an existing axis; all other axes must match.
    pub fn cat(tensors: &[&Tensor], axis: isize) -> Result<Tensor> {
        let first = *tensors.first().ok_or_else(|| Error::invalid("cat", "needs at least one tensor"))?;
        let a = first.shape().axis(axis, "cat")?;
        for t in &tensors[1..] {
            first.same_device(t, "cat")?;
            first.same_dtype(t, "cat")?;
            let same_rest = t.rank() == first.rank() && (0..t.rank()).all(|i| i == a || t.dims()[i] == first.dims()[i]);
            if !same_rest {
                return Err(Error::ShapeMismatch { op: "cat", lhs: first.shape().clone(), rhs: t.shape().clone() });
            }
        }
        let sizes: Vec<usize> = tensors.iter().map(|t| t.dims()[a]).collect();
        let mut dims = first.dims().to_vec();
        dims[a] = sizes.iter().sum();
        let out_l = Layout::contiguous(dims.clone());
        let mut out = match first.device() {
            crate::Device::Cpu => Storage::Cpu(CpuStorage::full(first.dtype(), out_l.numel(), 0.0)),
            d => Storage::Gpu(crate::GpuStorage::alloc(&crate::gpu::runtime(d)?, first.dtype(), out_l.numel())?),
        };
        let mut at = 0;
        for (t, &n) in tensors.iter().zip(&sizes) {
            let region = out_l.narrow(a, at, n)?;
            match (&mut out, &*t.storage()) {
                (Storage::Cpu(o), Storage::Cpu(s)) => cpu::copy::copy_into(o, &region, s, t.layout())?,
                (Storage::Gpu(o), Storage::Gpu(s)) => crate::gpu::prims::copy::copy_into(o, &region, s, t.layout())?,
                _ => return Err(first.device_mismatch(t, "cat")),
            }
            at += n;
        }
        Ok(Tensor::from_storage(out, dims).record(tensors, CatBackward { axis: a, sizes }))
    }

    /// Joins same-shaped tensors along a new axis.
    pub fn stack(tensors: &[&Tensor], axis: isize) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| Error::invalid("stack", "needs at least one tensor"))?;
        let rank = first.rank() as isize;
        let a = if axis < 0 { axis + rank + 1 } else { axis };
        // The new axis goes anywhere in 0..=rank. Check here: `unsqueeze` would read a value
        // that is still negative as counted from the end a second time (-4 on rank 2 → axis 2).
        if a < 0 || a > rank {
            return Err(Error::AxisOutOfRange {
                op: "stack",
                axis,
                rank: first.rank() + 1,
                shape: first.shape().clone(),
            });
        }
        for t in tensors {
            if t.shape() != first.shape() {
                return Err(Error::ShapeMismatch { op: "stack", lhs: first.shape().clone(), rhs: t.shape().clone() });
            }
        }
        let parts = tensors.iter().map(|t| t.unsqueeze(a)).collect::<Result<Vec<_>>>()?;
        Tensor::cat(&parts.iter().collect::<Vec<_>>(), a)
    }
}

struct CatBackward {
    axis: usize,
    sizes: Vec<usize>,
}

impl BackwardOp for CatBackward {
    fn name(&self) -> &'static str {
        "cat"
    }
    /// Each input gets its own slice of the gradient (a view, no copy).
    fn backward(&self, _inputs: &[Tensor], _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let mut at = 0;
        let mut out = Vec::with_capacity(self.sizes.len());
        for &n in &self.sizes {
            out.push(Some(g.narrow(self.axis as isize, at, n)?));
            at += n;
        }
        Ok(out)
    }
}
