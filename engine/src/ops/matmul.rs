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

    /// y = a·b ⇒ ∂a = g·bᵀ, ∂b = aᵀ·g, summed over broadcast batch axes.
    fn backward(&self, inputs: &[Tensor], _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let ga = g.matmul(&b.t()?)?.sum_to_shape(a.shape())?;
        let gb = a.t()?.matmul(g)?.sum_to_shape(b.shape())?;
        Ok(vec![Some(ga), Some(gb)])
    }
}
