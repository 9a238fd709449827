//! index_select and gather, whose gradients scatter back with index_add / scatter_add.

use crate::gpu::prims::index as prims;
use crate::{cpu, BackwardOp, DType, Error, Result, Storage, Tensor};

fn as_i64(v: Vec<usize>) -> Vec<i64> {
    v.into_iter().map(|o| o as i64).collect()
}

/// The index values of an i64 tensor.
fn indices(idx: &Tensor, op: &'static str) -> Result<Vec<i64>> {
    if idx.dtype() != DType::I64 {
        return Err(Error::invalid(op, format!("indices must be i64, got {}", idx.dtype())));
    }
    idx.to_vec::<i64>()
}

impl Tensor {
    /// The entries `idx[j]` of `axis`, stacked in order (`idx` is a 1-d i64 tensor).
    pub fn index_select(&self, axis: isize, idx: &Tensor) -> Result<Tensor> {
        let a = self.shape().axis(axis, "index_select")?;
        if idx.rank() != 1 {
            return Err(Error::invalid("index_select", format!("indices must be 1-d, got shape {}", idx.shape())));
        }
        let ids = cpu::index::check_indices("index_select", &indices(idx, "index_select")?, a, self.dims()[a])?;
        let out = match &*self.storage() {
            Storage::Cpu(s) => Storage::Cpu(cpu::index::index_select(s, self.layout(), a, &ids)?),
            Storage::Gpu(s) => Storage::Gpu(prims::take(s, &prims::select_offsets(self.layout(), a, &ids))?),
        };
        let mut dims = self.dims().to_vec();
        dims[a] = ids.len();
        Ok(Tensor::from_storage(out, dims).record(&[self], IndexSelectBackward { axis: a, ids }))
    }

    /// `out[p] = self[p with coordinate axis = index[p]]`; `index` is i64 with the same rank, no
    /// larger than `self` on the other axes (as `torch.gather`).
    pub fn gather(&self, axis: isize, index: &Tensor) -> Result<Tensor> {
        let a = self.shape().axis(axis, "gather")?;
        let ids = indices(index, "gather")?;
        let il = crate::Layout::contiguous(index.shape().clone());
        let out = match &*self.storage() {
            Storage::Cpu(s) => Storage::Cpu(cpu::index::gather(s, self.layout(), a, &ids, &il)?),
            Storage::Gpu(s) => {
                Storage::Gpu(prims::take(s, &as_i64(cpu::index::gather_offsets(self.layout(), a, &ids, &il)?))?)
            }
        };
        Ok(Tensor::from_storage(out, index.shape())
            .record(&[self], GatherBackward { axis: a, ids, index: index.detach() }))
    }
}

struct IndexSelectBackward {
    axis: usize,
    ids: Vec<usize>,
}

impl BackwardOp for IndexSelectBackward {
    fn name(&self) -> &'static str {
        "index_select"
    }
    fn backward(&self, inputs: &[Tensor], _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let shape = inputs[0].shape();
        let out = match &*g.storage() {
            Storage::Cpu(s) => Storage::Cpu(cpu::index::index_add(shape, self.axis, &self.ids, s, g.layout())?),
            Storage::Gpu(s) => {
                let offs = prims::select_offsets(&crate::Layout::contiguous(shape.clone()), self.axis, &self.ids);
                Storage::Gpu(prims::scatter_add(shape, &offs, s, g.layout())?)
            }
        };
        Ok(vec![Some(Tensor::from_storage(out, shape))])
    }
}

struct GatherBackward {
    axis: usize,
    ids: Vec<i64>,
    index: Tensor,
}

impl BackwardOp for GatherBackward {
    fn name(&self) -> &'static str {
        "gather"
    }
    fn backward(&self, inputs: &[Tensor], _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let il = crate::Layout::contiguous(self.index.shape().clone());
        let shape = inputs[0].shape();
        let out = match &*g.storage() {
            Storage::Cpu(s) => Storage::Cpu(cpu::index::scatter_add(shape, self.axis, &self.ids, &il, s, g.layout())?),
            Storage::Gpu(s) => {
                let offs = as_i64(cpu::index::gather_offsets(
                    &crate::Layout::contiguous(shape.clone()),
                    self.axis,
                    &self.ids,
                    &il,
                )?);
                Storage::Gpu(prims::scatter_add(shape, &offs, s, g.layout())?)
            }
        };
        Ok(vec![Some(Tensor::from_storage(out, shape))])
    }
}
