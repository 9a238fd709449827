//! Reverse-mode automatic differentiation, kept small enough to read in one sitting.
//!
//! * A tensor made by a differentiable op while recording holds a [`Node`]: the op's
//!   [`BackwardOp`] (with whatever it saved) and its input tensors.
//! * [`Tensor::backward`](crate::Tensor::backward) sorts the graph topologically, walks it from
//!   the output back to the leaves, calls each op's `backward`, and sums the gradients that meet
//!   at a tensor used more than once. Leaves that require grad collect theirs in `.grad()`.
//! * Each node is taken out of its tensor as it is processed, so the graph (and every tensor it
//!   saved) is freed by the time backward returns.
//!
//! docs/autograd.md walks through this file and `backward.rs` with a worked example.

mod backward;
mod grad_store;
mod no_grad;
pub mod profile;

pub use backward::{grad, is_last_use};
pub use grad_store::GradStore;
pub use no_grad::{is_grad_enabled, no_grad, NoGradGuard};

use crate::{Result, Tensor};

/// The backward rule of one differentiable op.
///
/// Implemented by every op in the engine and by the ops crate for its own ops (conv, group norm,
/// …). `backward` receives the op's inputs, its output, and the gradient of the loss with
/// respect to that output; it returns one gradient per input (`None` when an input needs none,
/// e.g. integer indices). Gradients must have their input's shape. It runs with recording off.
pub trait BackwardOp: Send + Sync {
    /// A short name for error messages and graph dumps.
    fn name(&self) -> &'static str;
    fn backward(&self, inputs: &[Tensor], output: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>>;
}

/// How a tensor was made: the op and the inputs it was applied to.
pub struct Node {
    pub(crate) op: Box<dyn BackwardOp>,
    pub(crate) inputs: Vec<Tensor>,
}

impl Node {
    pub(crate) fn new(op: Box<dyn BackwardOp>, inputs: Vec<Tensor>) -> Self {
        Node { op, inputs }
    }
}

impl Drop for Node {
    /// Dropping a graph that backward did not free (an evaluation run without `no_grad`, a
    /// running total that was never detached) would otherwise recurse once per op along the
    /// chain (tensor → node → input tensor → node …) and overflow the stack on deep graphs.
    /// Unlink it with an explicit stack instead: take the node out of each input this node held
    /// the last handle to, before that handle is dropped.
    fn drop(&mut self) {
        let mut stack = std::mem::take(&mut self.inputs);
        while let Some(t) = stack.pop() {
            if std::sync::Arc::strong_count(&t.0) == 1 {
                if let Some(mut node) = t.take_node() {
                    stack.append(&mut node.inputs);
                }
            }
        }
    }
}
