//! The engine's differentiable ops, as `Tensor` methods, each with its backward rule.
//!
//! One file per family. Forward code checks its arguments, calls the device kernel (today the
//! CPU in `crate::cpu`) and `record`s a [`BackwardOp`](crate::BackwardOp); backward rules are
//! written with other tensor ops, which keeps them short and lets them run on any device.
//! Backward runs with recording off, so higher-order gradients are not supported.

mod binary;
mod cast;
mod cat;
mod format;
mod index;
mod matmul;
mod reduce;
mod softmax;
mod unary;
mod view;

pub(crate) use format::OutputOrder;

/// Elementwise functions of one tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Recip,
    Sqr,
    Relu,
    Sigmoid,
    Tanh,
    Abs,
    /// -1, 0 or 1.
    Sign,
    /// 1 where x > 0, else 0 (the derivative of relu).
    Step,
    Powf(f64),
    /// `x * mul + add`.
    Affine {
        mul: f64,
        add: f64,
    },
}

impl UnaryOp {
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Recip => "recip",
            UnaryOp::Sqr => "sqr",
            UnaryOp::Relu => "relu",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Abs => "abs",
            UnaryOp::Sign => "sign",
            UnaryOp::Step => "step",
            UnaryOp::Powf(_) => "powf",
            UnaryOp::Affine { .. } => "affine",
        }
    }
}

/// Elementwise functions of two tensors (broadcast together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
}

impl BinaryOp {
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Max => "maximum",
            BinaryOp::Min => "minimum",
        }
    }
}

/// Elementwise comparisons; the result is a u8 mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Reductions over a set of axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
    ArgMax,
    ArgMin,
}

impl ReduceOp {
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::ArgMax => "argmax",
            ReduceOp::ArgMin => "argmin",
        }
    }
}
