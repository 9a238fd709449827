//! add, sub, mul, div, maximum, minimum with NumPy broadcasting; comparisons; where/masked_fill.
//!
//! The backward of a broadcasting op sums the gradient over the broadcast axes
//! (`sum_to_shape`), because one input element fed every output element along them.

use super::format::OutputOrder;
use super::{BinaryOp, CmpOp};
use crate::gpu::prims;
use crate::{cpu, BackwardOp, DType, Error, Layout, Result, Shape, Storage, Tensor};

impl Tensor {
    /// Checks device and dtype, and broadcasts both layouts to the common shape.
    fn broadcast_pair(&self, rhs: &Tensor, op: &'static str) -> Result<(Shape, Layout, Layout)> {
        self.same_device(rhs, op)?;
        self.same_dtype(rhs, op)?;
        let shape = self.shape().broadcast(rhs.shape(), op)?;
        Ok((shape.clone(), self.layout().broadcast_to(&shape)?, rhs.layout().broadcast_to(&shape)?))
    }

    fn binary(&self, rhs: &Tensor, op: BinaryOp) -> Result<Tensor> {
        let (shape, la, lb) = self.broadcast_pair(rhs, op.name())?;
        // The output keeps the strides of the first dense full-shape operand (channels-last in,
        // channels-last out, also against a broadcast [C] or [1, C, 1, 1] operand).
        let order = OutputOrder::of(&shape, &[self.layout(), rhs.layout()]);
        let (la, lb) = (order.apply(&la), order.apply(&lb));
        let out = match (&*self.storage(), &*rhs.storage()) {
            (Storage::Cpu(a), Storage::Cpu(b)) => Storage::Cpu(cpu::elementwise::binary(a, &la, b, &lb, op)?),
            (Storage::Gpu(a), Storage::Gpu(b)) => Storage::Gpu(prims::elementwise::binary(a, &la, b, &lb, op)?),
            _ => return Err(self.device_mismatch(rhs, op.name())),
        };
        Ok(order.wrap(out, shape).record(&[self, rhs], BinaryBackward(op)))
    }

    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Add)
    }
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Sub)
    }
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Mul)
    }
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Div)
    }
    /// Elementwise maximum (NaN propagates; at ties the gradient is split in half, as in PyTorch).
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Max)
    }
    /// Elementwise minimum.
    pub fn minimum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Min)
    }

    fn compare(&self, rhs: &Tensor, op: CmpOp) -> Result<Tensor> {
        let (shape, la, lb) = self.broadcast_pair(rhs, "compare")?;
        let order = OutputOrder::of(&shape, &[self.layout(), rhs.layout()]);
        let (la, lb) = (order.apply(&la), order.apply(&lb));
        let out = match (&*self.storage(), &*rhs.storage()) {
            (Storage::Cpu(a), Storage::Cpu(b)) => Storage::Cpu(cpu::elementwise::compare(a, &la, b, &lb, op)?),
            (Storage::Gpu(a), Storage::Gpu(b)) => Storage::Gpu(prims::elementwise::compare(a, &la, b, &lb, op)?),
            _ => return Err(self.device_mismatch(rhs, "compare")),
        };
        Ok(order.wrap(out, shape))
    }
    /// `self == rhs` as a u8 mask (not differentiable).
    pub fn eq(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare(rhs, CmpOp::Eq)
    }
    pub fn ne(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare(rhs, CmpOp::Ne)
    }
    pub fn lt(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare(rhs, CmpOp::Lt)
    }
    pub fn le(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare(rhs, CmpOp::Le)
    }
    pub fn gt(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare(rhs, CmpOp::Gt)
    }
    pub fn ge(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare(rhs, CmpOp::Ge)
    }

    /// `mask ? on_true : on_false` elementwise, all three broadcast together. `mask` is u8
    /// (as comparisons return); gradients flow to the chosen side.
    pub fn where_cond(mask: &Tensor, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        if mask.dtype() != DType::U8 {
            return Err(Error::invalid(
                "where_cond",
                format!("the mask must be u8 (a comparison result), got {}", mask.dtype()),
            ));
        }
        mask.same_device(on_true, "where_cond")?;
        let (shape, lt, lf) = on_true.broadcast_pair(on_false, "where_cond")?;
        let shape = mask.shape().broadcast(&shape, "where_cond")?;
        let (lt, lf, lm) = (lt.broadcast_to(&shape)?, lf.broadcast_to(&shape)?, mask.layout().broadcast_to(&shape)?);
        let order = OutputOrder::of(&shape, &[on_true.layout(), on_false.layout(), mask.layout()]);
        let (lt, lf, lm) = (order.apply(&lt), order.apply(&lf), order.apply(&lm));
        let out = match (&*mask.storage(), &*on_true.storage(), &*on_false.storage()) {
            (Storage::Cpu(m), Storage::Cpu(a), Storage::Cpu(b)) => {
                Storage::Cpu(cpu::elementwise::where_cond(m, &lm, a, &lt, b, &lf)?)
            }
            (Storage::Gpu(m), Storage::Gpu(a), Storage::Gpu(b)) => {
                Storage::Gpu(prims::elementwise::where_cond(m, &lm, a, &lt, b, &lf)?)
            }
            _ => return Err(mask.device_mismatch(on_true, "where_cond")),
        };
        Ok(order.wrap(out, shape).record(&[on_true, on_false], WhereBackward(mask.detach())))
    }

    /// `value` where `mask` is set, `self` elsewhere.
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Tensor> {
        let v = Tensor::scalar(value, self.dtype(), self.device())?;
        Tensor::where_cond(mask, &v, self)
    }
}

struct BinaryBackward(BinaryOp);

impl BackwardOp for BinaryBackward {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn backward(&self, inputs: &[Tensor], y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let (ga, gb) = match self.0 {
            BinaryOp::Add => (g.clone(), g.clone()),
            BinaryOp::Sub => (g.clone(), g.neg()?),
            BinaryOp::Mul => (g.mul(b)?, g.mul(a)?),
            // d(a/b)/db = -a/b² = -y/b
            BinaryOp::Div => (g.div(b)?, g.mul(y)?.div(b)?.neg()?),
            BinaryOp::Max | BinaryOp::Min => {
                let (win_a, win_b) = if self.0 == BinaryOp::Max { (a.gt(b)?, b.gt(a)?) } else { (a.lt(b)?, b.lt(a)?) };
                // Ties share the gradient equally, as torch.maximum does.
                let tie = a.eq(b)?.to_dtype(g.dtype())?.mul_scalar(0.5)?;
                let wa = win_a.to_dtype(g.dtype())?.add(&tie)?;
                let wb = win_b.to_dtype(g.dtype())?.add(&tie)?;
                (g.mul(&wa)?, g.mul(&wb)?)
            }
        };
        Ok(vec![Some(ga.sum_to_shape(a.shape())?), Some(gb.sum_to_shape(b.shape())?)])
    }
}

struct WhereBackward(Tensor);

impl BackwardOp for WhereBackward {
    fn name(&self) -> &'static str {
        "where_cond"
    }

    fn backward(&self, inputs: &[Tensor], _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let zero = Tensor::scalar(0.0, g.dtype(), g.device())?;
        let gt = Tensor::where_cond(&self.0, g, &zero)?;
        let gf = Tensor::where_cond(&self.0, &zero, g)?;
        Ok(vec![Some(gt.sum_to_shape(inputs[0].shape())?), Some(gf.sum_to_shape(inputs[1].shape())?)])
    }
}
