//! softmax and log_softmax along one axis.

use crate::{cpu, BackwardOp, Result, Storage, Tensor};

impl Tensor {
    fn softmax_impl(&self, axis: isize, log: bool) -> Result<Tensor> {
        let name = if log { "log_softmax" } else { "softmax" };
        self.expect_float(name)?;
        let a = self.shape().axis(axis, name)?;
        let out = match &*self.storage() {
            Storage::Cpu(s) => Storage::Cpu(cpu::softmax::softmax(s, self.layout(), a, log)?),
            Storage::Gpu(s) => Storage::Gpu(crate::gpu::prims::softmax::softmax(s, self.layout(), a, log)?),
        };
        Ok(Tensor::from_storage(out, self.shape()).record(&[self], SoftmaxBackward { axis: a as isize, log }))
    }

    /// `exp(x) / sum(exp(x))` along `axis`, computed stably.
    pub fn softmax(&self, axis: isize) -> Result<Tensor> {
        self.softmax_impl(axis, false)
    }
    /// `x - logsumexp(x)` along `axis`, computed stably.
    pub fn log_softmax(&self, axis: isize) -> Result<Tensor> {
        self.softmax_impl(axis, true)
    }
}

struct SoftmaxBackward {
    axis: isize,
    log: bool,
}

impl BackwardOp for SoftmaxBackward {
    fn name(&self) -> &'static str {
        if self.log {
            "log_softmax"
        } else {
            "softmax"
        }
    }

    fn backward(&self, _inputs: &[Tensor], y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let gx = if self.log {
            // y = x − lse ⇒ ∂x = g − softmax · Σg
            g.sub(&y.exp()?.mul(&g.sum(&[self.axis], true)?)?)?
        } else {
            // y = softmax ⇒ ∂x = y ⊙ (g − Σ g⊙y)
            y.mul(&g.sub(&g.mul(y)?.sum(&[self.axis], true)?)?)?
        };
        Ok(vec![Some(gx)])
    }
}
