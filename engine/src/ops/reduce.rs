//! sum, mean, max, min, var over any set of axes (with keepdim); argmax/argmin; sum_to_shape.

use super::ReduceOp;
use crate::{cpu, BackwardOp, DType, Error, Result, Shape, Storage, Tensor};

/// The shape after reducing `axes`, with size-1 axes kept in their place.
fn keepdim_shape(shape: &Shape, axes: &[usize]) -> Shape {
    shape.dims().iter().enumerate().map(|(i, &d)| if axes.contains(&i) { 1 } else { d }).collect::<Vec<_>>().into()
}

impl Tensor {
    /// Runs the reduction kernel; returns the result with size-1 axes kept.
    fn reduce_raw(&self, axes: &[usize], op: ReduceOp) -> Result<Tensor> {
        let out = match &*self.storage() {
            Storage::Cpu(s) => Storage::Cpu(cpu::reduce::reduce(s, self.layout(), axes, op)?),
            Storage::Gpu(s) => Storage::Gpu(crate::gpu::prims::reduce::reduce(s, self.layout(), axes, op)?),
        };
        Ok(Tensor::from_storage(out, keepdim_shape(self.shape(), axes)))
    }

    fn reduce(&self, axes: &[isize], keepdim: bool, op: ReduceOp) -> Result<Tensor> {
        let ax = self.shape().axes(axes, op.name())?;
        let kept = self.reduce_raw(&ax, op)?;
        let out = kept.record(&[self], ReduceBackward { op, axes: ax.clone() });
        if keepdim {
            Ok(out)
        } else {
            let dims: Vec<usize> =
                self.dims().iter().enumerate().filter(|(i, _)| !ax.contains(i)).map(|(_, &d)| d).collect();
            out.reshape(dims)
        }
    }

    /// Sum over `axes` (negative counts from the end).
    pub fn sum(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        self.reduce(axes, keepdim, ReduceOp::Sum)
    }
    /// Sum of all elements, as a 0-d tensor.
    pub fn sum_all(&self) -> Result<Tensor> {
        let all: Vec<isize> = (0..self.rank() as isize).collect();
        self.sum(&all, false)
    }
    /// Largest element over `axes` (gradient shared equally among ties, as `torch.amax`).
    pub fn max(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        self.reduce(axes, keepdim, ReduceOp::Max)
    }
    pub fn min(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        self.reduce(axes, keepdim, ReduceOp::Min)
    }

    /// Mean over `axes`.
    pub fn mean(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let ax = self.shape().axes(axes, "mean")?;
        let n: usize = ax.iter().map(|&a| self.dims()[a]).product();
        self.sum(axes, keepdim)?.mul_scalar(1.0 / n as f64)
    }
    pub fn mean_all(&self) -> Result<Tensor> {
        let all: Vec<isize> = (0..self.rank() as isize).collect();
        self.mean(&all, false)
    }

    /// Variance over `axes`: divides by `n` (biased, as normalization layers use) or by
    /// `n - 1` when `unbiased` (PyTorch's default for `torch.var`).
    pub fn var(&self, axes: &[isize], keepdim: bool, unbiased: bool) -> Result<Tensor> {
        let ax = self.shape().axes(axes, "var")?;
        let n: usize = ax.iter().map(|&a| self.dims()[a]).product();
        let denom = if unbiased { n.saturating_sub(1) } else { n };
        let centered = self.sub(&self.mean(axes, true)?)?;
        centered.sqr()?.sum(axes, keepdim)?.mul_scalar(1.0 / denom as f64)
    }

    fn arg_reduce(&self, axis: isize, keepdim: bool, op: ReduceOp) -> Result<Tensor> {
        let a = self.shape().axis(axis, op.name())?;
        let out = self.reduce_raw(&[a], op)?;
        if keepdim {
            return Ok(out);
        }
        let mut dims = self.dims().to_vec();
        dims.remove(a);
        out.reshape(dims)
    }
    /// Index (i64) of the largest element along `axis`; the first one at ties.
    pub fn argmax(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        self.arg_reduce(axis, keepdim, ReduceOp::ArgMax)
    }
    pub fn argmin(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        self.arg_reduce(axis, keepdim, ReduceOp::ArgMin)
    }

    /// Sums a broadcast result back down to `shape` (the gradient rule of broadcasting).
    pub fn sum_to_shape(&self, shape: &Shape) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let lead = self.rank().checked_sub(shape.rank()).ok_or_else(|| Error::BroadcastIncompatible {
            op: "sum_to_shape",
            lhs: self.shape().clone(),
            rhs: shape.clone(),
        })?;
        let mut axes: Vec<isize> = (0..lead as isize).collect();
        for (i, &d) in shape.dims().iter().enumerate() {
            if d == 1 && self.dims()[lead + i] != 1 {
                axes.push((lead + i) as isize);
            } else if d != self.dims()[lead + i] {
                return Err(Error::BroadcastIncompatible {
                    op: "sum_to_shape",
                    lhs: self.shape().clone(),
                    rhs: shape.clone(),
                });
            }
        }
        self.sum(&axes, true)?.reshape(shape)
    }
}

struct ReduceBackward {
    op: ReduceOp,
    axes: Vec<usize>,
}

impl BackwardOp for ReduceBackward {
    fn name(&self) -> &'static str {
        self.op.name()
    }

    /// `y` and `g` have the keepdim shape, so broadcasting spreads them over the reduced axes.
    fn backward(&self, inputs: &[Tensor], y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let gx = match self.op {
            ReduceOp::Sum => g.broadcast_to(x.shape())?,
            ReduceOp::Max | ReduceOp::Min => {
                let hit = x.eq(y)?.to_dtype(x.dtype())?;
                let axes: Vec<isize> = self.axes.iter().map(|&a| a as isize).collect();
                let count = hit.sum(&axes, true)?;
                hit.mul(&g.div(&count)?)?
            }
            ReduceOp::ArgMax | ReduceOp::ArgMin => return Ok(vec![None]),
        };
        debug_assert!(gx.dtype() == x.dtype() || x.dtype() == DType::I64);
        Ok(vec![Some(gx)])
    }
}
