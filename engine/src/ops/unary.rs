//! neg, exp, log, sqrt, rsqrt, recip, sqr, relu, sigmoid, tanh, abs, powf, affine.

use super::format::OutputOrder;
use super::UnaryOp;
use crate::{cpu, BackwardOp, Result, Storage, Tensor};

impl Tensor {
    /// Applies `op` without recording (used directly for masks such as `step`).
    pub(crate) fn map_unary(&self, op: UnaryOp) -> Result<Tensor> {
        // The output keeps a dense input's strides (a channels-last input stays channels-last).
        let order = OutputOrder::of(self.shape(), &[self.layout()]);
        let l = order.apply(self.layout());
        let out = match &*self.storage() {
            Storage::Cpu(s) => Storage::Cpu(cpu::elementwise::unary(s, &l, op)?),
            Storage::Gpu(s) => Storage::Gpu(crate::gpu::prims::elementwise::unary(s, &l, op)?),
        };
        Ok(order.wrap(out, self.shape().clone()))
    }

    fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        if !matches!(
            op,
            UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu | UnaryOp::Sqr | UnaryOp::Sign | UnaryOp::Affine { .. }
        ) {
            self.expect_float(op.name())?;
        }
        Ok(self.map_unary(op)?.record(&[self], UnaryBackward(op)))
    }

    pub fn neg(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Neg)
    }
    pub fn exp(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Exp)
    }
    /// Natural logarithm.
    pub fn log(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Log)
    }
    pub fn sqrt(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sqrt)
    }
    /// `1 / sqrt(x)`.
    pub fn rsqrt(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Rsqrt)
    }
    /// `1 / x`.
    pub fn recip(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Recip)
    }
    /// `x * x`.
    pub fn sqr(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sqr)
    }
    pub fn relu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Relu)
    }
    pub fn sigmoid(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sigmoid)
    }
    pub fn tanh(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Tanh)
    }
    pub fn abs(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Abs)
    }
    /// -1, 0 or 1 per element (gradient zero).
    pub fn sign(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sign)
    }
    /// `x^p` for a scalar exponent.
    pub fn powf(&self, p: f64) -> Result<Tensor> {
        self.unary(UnaryOp::Powf(p))
    }
    /// `x * mul + add` in one pass.
    pub fn affine(&self, mul: f64, add: f64) -> Result<Tensor> {
        self.unary(UnaryOp::Affine { mul, add })
    }
    pub fn add_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(1.0, v)
    }
    pub fn mul_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(v, 0.0)
    }
}

struct UnaryBackward(UnaryOp);

impl BackwardOp for UnaryBackward {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn backward(&self, inputs: &[Tensor], y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let gx = match self.0 {
            UnaryOp::Neg => g.neg()?,
            UnaryOp::Exp => g.mul(y)?,
            UnaryOp::Log => g.div(x)?,
            // d sqrt(x) = 1 / (2 sqrt(x))
            UnaryOp::Sqrt => g.div(y)?.mul_scalar(0.5)?,
            // d x^-1/2 = -1/2 x^-3/2 = -1/2 y^3
            UnaryOp::Rsqrt => g.mul(&y.powf(3.0)?)?.mul_scalar(-0.5)?,
            UnaryOp::Recip => g.mul(&y.sqr()?)?.neg()?,
            UnaryOp::Sqr => g.mul(x)?.mul_scalar(2.0)?,
            UnaryOp::Relu => g.mul(&x.map_unary(UnaryOp::Step)?)?,
            // σ' = σ(1 − σ)
            UnaryOp::Sigmoid => g.mul(&y.mul(&y.affine(-1.0, 1.0)?)?)?,
            // tanh' = 1 − tanh²
            UnaryOp::Tanh => g.mul(&y.sqr()?.affine(-1.0, 1.0)?)?,
            UnaryOp::Abs => g.mul(&x.map_unary(UnaryOp::Sign)?)?,
            UnaryOp::Sign | UnaryOp::Step => Tensor::zeros_like(x)?,
            UnaryOp::Powf(p) => g.mul(&x.powf(p - 1.0)?)?.mul_scalar(p)?,
            UnaryOp::Affine { mul, .. } => g.mul_scalar(mul)?,
        };
        Ok(vec![Some(gx)])
    }
}
