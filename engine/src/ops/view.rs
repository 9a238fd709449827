//! Views: reshape, permute/transpose, narrow, broadcast_to, squeeze/unsqueeze — new layouts over
//! the same storage, no data moved (reshape copies only when the layout cannot be re-viewed);
//! and `contiguous`, which copies only when needed.

use crate::{cpu, BackwardOp, Error, Layout, Result, Shape, Storage, Tensor};

impl Tensor {
    fn view_of(&self, layout: Layout, op: ViewBackward) -> Tensor {
        self.with_layout(layout).record(&[self], op)
    }

    /// The same elements with a new shape: a view when the strides allow it, a copy otherwise.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.numel() != self.numel() {
            return Err(Error::ElementCount {
                op: "reshape",
                len: self.numel(),
                shape: shape.clone(),
                expected: shape.numel(),
            });
        }
        match self.layout().reshape(&shape) {
            Some(l) => Ok(self.view_of(l, ViewBackward::Reshape)),
            None => self.contiguous()?.reshape(shape),
        }
    }

    /// Collapses axes `start..=end` into one.
    pub fn flatten(&self, start: isize, end: isize) -> Result<Tensor> {
        if self.rank() == 0 {
            return self.reshape([1]);
        }
        let (s, e) = (self.shape().axis(start, "flatten")?, self.shape().axis(end, "flatten")?);
        if s > e {
            return Err(Error::invalid("flatten", format!("start axis {s} is after end axis {e}")));
        }
        let d = self.dims();
        let dims: Vec<usize> = [&d[..s], &[d[s..=e].iter().product()], &d[e + 1..]].concat();
        self.reshape(dims)
    }

    /// Reorders axes: axis `i` of the result is axis `perm[i]` of `self`.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let l = self.layout().permute(perm)?;
        let mut inverse = vec![0; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p] = i;
        }
        Ok(self.view_of(l, ViewBackward::Permute(inverse)))
    }

    /// Swaps two axes.
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        let (a, b) = (self.shape().axis(a, "transpose")?, self.shape().axis(b, "transpose")?);
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Swaps the last two axes (the matrix transpose of each matrix in a batch).
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::invalid("t", format!("needs at least 2 axes, got shape {}", self.shape())));
        }
        self.transpose(-2, -1)
    }

    /// Entries `start..start + len` of `axis`.
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Result<Tensor> {
        let a = self.shape().axis(axis, "narrow")?;
        let l = self.layout().narrow(a, start, len)?;
        Ok(self.view_of(l, ViewBackward::Narrow { axis: a, start, full: self.dims()[a] }))
    }

    /// Repeats size-1 (or missing leading) axes to `shape` without copying (stride 0).
    pub fn broadcast_to(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if &shape == self.shape() {
            return Ok(self.clone());
        }
        let l = self.layout().broadcast_to(&shape)?;
        Ok(self.view_of(l, ViewBackward::Broadcast))
    }

    /// Removes an axis of size 1.
    pub fn squeeze(&self, axis: isize) -> Result<Tensor> {
        let a = self.shape().axis(axis, "squeeze")?;
        if self.dims()[a] != 1 {
            return Err(Error::invalid("squeeze", format!("axis {a} of shape {} is not of size 1", self.shape())));
        }
        let mut dims = self.dims().to_vec();
        dims.remove(a);
        self.reshape(dims)
    }

    /// Inserts an axis of size 1 at `axis` (which may equal the rank, to append).
    pub fn unsqueeze(&self, axis: isize) -> Result<Tensor> {
        let rank = self.rank() as isize;
        let a = if axis < 0 { axis + rank + 1 } else { axis };
        if a < 0 || a > rank {
            return Err(Error::AxisOutOfRange {
                op: "unsqueeze",
                axis,
                rank: self.rank() + 1,
                shape: self.shape().clone(),
            });
        }
        let mut dims = self.dims().to_vec();
        dims.insert(a as usize, 1);
        self.reshape(dims)
    }

    /// A row-major copy, or `self` when already row-major. For a 4-d tensor that is NCHW, as
    /// in PyTorch: a channels-last tensor is copied to NCHW. [`Tensor::to_memory_format`] asks
    /// for a given format (and returns its gradient in the input's format).
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        self.copy()
    }

    /// A fresh contiguous copy in storage of its own, also when `self` is already contiguous
    /// (`contiguous` would share it): for a tensor that will be updated in place without touching
    /// the original. Differentiable, as `contiguous`.
    pub fn copy(&self) -> Result<Tensor> {
        let out = match &*self.storage() {
            Storage::Cpu(s) => Storage::Cpu(cpu::copy::contiguous(s, self.layout())),
            Storage::Gpu(s) => Storage::Gpu(crate::gpu::prims::copy::contiguous(s, self.layout())?),
        };
        Ok(Tensor::from_storage(out, self.shape()).record(&[self], ViewBackward::Contiguous))
    }
}

enum ViewBackward {
    Reshape,
    Permute(Vec<usize>),
    Narrow { axis: usize, start: usize, full: usize },
    Broadcast,
    Contiguous,
}

impl BackwardOp for ViewBackward {
    fn name(&self) -> &'static str {
        match self {
            ViewBackward::Reshape => "reshape",
            ViewBackward::Permute(_) => "permute",
            ViewBackward::Narrow { .. } => "narrow",
            ViewBackward::Broadcast => "broadcast_to",
            ViewBackward::Contiguous => "contiguous",
        }
    }

    fn backward(&self, inputs: &[Tensor], _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let gx = match self {
            ViewBackward::Reshape => g.reshape(x.shape())?,
            ViewBackward::Permute(inverse) => g.permute(inverse)?,
            ViewBackward::Narrow { axis, start, full } => {
                // Zeros around the narrowed slice: [before | g | after] along the axis.
                let mut parts = Vec::new();
                let zeros = |n: usize| {
                    let mut d = g.dims().to_vec();
                    d[*axis] = n;
                    Tensor::zeros(d, g.dtype(), g.device())
                };
                if *start > 0 {
                    parts.push(zeros(*start)?);
                }
                parts.push(g.clone());
                let after = full - start - g.dims()[*axis];
                if after > 0 {
                    parts.push(zeros(after)?);
                }
                Tensor::cat(&parts.iter().collect::<Vec<_>>(), *axis as isize)?
            }
            ViewBackward::Broadcast => g.sum_to_shape(x.shape())?,
            ViewBackward::Contiguous => g.clone(),
        };
        Ok(vec![Some(gx)])
    }
}
