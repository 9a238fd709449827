//! index_select and gather, whose gradients scatter back with index_add / scatter_add.

use crate::{cpu, BackwardOp, DType, Error, Result, Storage, Tensor};

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
            Storage::Cpu(s) => cpu::index::index_select(s, self.layout(), a, &ids)?,
        };
        let mut dims = self.dims().to_vec();
        dims[a] = ids.len();
        Ok(Tensor::from_storage(Storage::Cpu(out), dims).record(&[self], IndexSelectBackward { axis: a, ids }))
    }

    /// `out[p] = self[p with coordinate axis = index[p]]`; `index` is i64 with the same rank, no
    /// larger than `self` on the other axes (as `torch.gather`).
    pub fn gather(&self, axis: isize, index: &Tensor) -> Result<Tensor> {
        let a = self.shape().axis(axis, "gather")?;
        let ids = indices(index, "gather")?;
        let il = crate::Layout::contiguous(index.shape().clone());
        let out = match &*self.storage() {
            Storage::Cpu(s) => cpu::index::gather(s, self.layout(), a, &ids, &il)?,
        };
        Ok(Tensor::from_storage(Storage::Cpu(out), index.shape())
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
        let out = match &*g.storage() {
            Storage::Cpu(s) => cpu::index::index_add(inputs[0].shape(), self.axis, &self.ids, s, g.layout())?,
        };
        Ok(vec![Some(Tensor::from_storage(Storage::Cpu(out), inputs[0].shape()))])
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
        let out = match &*g.storage() {
            Storage::Cpu(s) => cpu::index::scatter_add(inputs[0].shape(), self.axis, &self.ids, &il, s, g.layout())?,
        };
        Ok(vec![Some(Tensor::from_storage(Storage::Cpu(out), inputs[0].shape()))])
    }
}
