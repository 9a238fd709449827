//! Matrix product with NumPy semantics: 1-d operands are promoted (and the axis removed again),
//! leading batch axes broadcast.

use crate::{cpu, BackwardOp, Error, Result, Storage, Tensor};

impl Tensor {
    /// `self @ rhs`. Transposed views are multiplied in place through gemm's strides.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        match (self.rank(), rhs.rank()) {
            (0, _) | (_, 0) => Err(Error::invalid("matmul", "operands must have at least one dimension")),
            (1, 1) => self.unsqueeze(0)?.matmul(&rhs.unsqueeze(1)?)?.reshape(()),
            (1, _) => self.unsqueeze(0)?.matmul(rhs)?.squeeze(-2),
            (_, 1) => self.matmul(&rhs.unsqueeze(1)?)?.squeeze(-1),
            _ => self.matmul_nd(rhs),
        }
    }

    fn matmul_nd(&self, rhs: &Tensor) -> Result<Tensor> {
        self.same_device(rhs, "matmul")?;
        self.same_dtype(rhs, "matmul")?;
        let (ra, rb) = (self.rank(), rhs.rank());
        let (m, k) = (self.dims()[ra - 2], self.dims()[ra - 1]);
        let (k2, n) = (rhs.dims()[rb - 2], rhs.dims()[rb - 1]);
        if k != k2 {
            return Err(Error::ShapeMismatch { op: "matmul", lhs: self.shape().clone(), rhs: rhs.shape().clone() });
        }
        let batch_a = crate::Shape::from(&self.dims()[..ra - 2]);
        let batch_b = crate::Shape::from(&rhs.dims()[..rb - 2]);
        let batch = batch_a.broadcast(&batch_b, "matmul")?;
        let with = |tail: [usize; 2]| crate::Shape::from([batch.dims(), &tail].concat());
        let la = self.layout().broadcast_to(&with([m, k]))?;
        let lb = rhs.layout().broadcast_to(&with([k, n]))?;
        let out = match (&*self.storage(), &*rhs.storage()) {
            (Storage::Cpu(a), Storage::Cpu(b)) => Storage::Cpu(cpu::matmul::matmul(a, &la, b, &lb)?),
            (Storage::Gpu(a), Storage::Gpu(b)) => Storage::Gpu(crate::gpu::prims::matmul::matmul(a, &la, b, &lb)?),
            _ => return Err(self.device_mismatch(rhs, "matmul")),
        };
        Ok(Tensor::from_storage(out, with([m, n])).record(&[self, rhs], MatmulBackward))
    }
}

struct MatmulBackward;

impl BackwardOp for MatmulBackward {
    fn name(&self) -> &'static str {
        "matmul"
    }

    /// y = a·b ⇒ ∂a = g·bᵀ, ∂b = aᵀ·g, summed over broadcast batch axes; each only when its
    /// operand requires a gradient.
    ///
    /// A 2-d operand that is a transposed view of a row-major matrix (a linear layer's `w.t()`)
    /// gets its gradient as the transpose of the transposed product (∂b = (gᵀ·a)ᵀ), a view
    /// laid out as the operand is: the gradient then reaches the row-major matrix as it is,
    /// instead of through a transposing copy (for R50x1's head, 8 MB per step; within the
    /// noise of a train step's profile on a 2-core machine).
    fn backward(&self, inputs: &[Tensor], _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let transposed =
            |t: &Tensor| t.rank() == 2 && g.rank() == 2 && !t.is_contiguous() && t.t().is_ok_and(|v| v.is_contiguous());
        let ga = match a.requires_grad() {
            false => None,
            true if transposed(a) => Some(b.matmul(&g.t()?)?.t()?),
            true => Some(g.matmul(&b.t()?)?.sum_to_shape(a.shape())?),
        };
        let gb = match b.requires_grad() {
            false => None,
            true if transposed(b) => Some(g.t()?.matmul(a)?.t()?),
            true => Some(a.t()?.matmul(g)?.sum_to_shape(b.shape())?),
        };
        Ok(vec![ga, gb])
    }
}
