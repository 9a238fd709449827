//! The backward pass: topological order, then the chain rule from the output to the leaves.

use std::collections::HashSet;

use super::{no_grad, GradStore};
use crate::{Error, Result, Tensor};

/// Every tensor with a node that `root` depends on, each after all of its inputs
/// (an iterative depth-first post-order, so deep graphs cannot overflow the stack).
fn topo_order(root: &Tensor) -> Result<Vec<Tensor>> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    // (tensor, inputs already pushed?)
    let mut stack = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !seen.insert(t.id()) {
            continue;
        }
        if t.graph_freed() {
            return Err(Error::Autograd(format!(
                "the graph behind a tensor of shape {} was already freed by an earlier backward(); \
                 run the forward pass again",
                t.shape()
            )));
        }
        let Some(inputs) = t.node_inputs() else { continue };
        stack.push((t, true));
        for i in inputs.into_iter().rev() {
            if i.requires_grad() && !seen.contains(&i.id()) {
                stack.push((i, false));
            }
        }
    }
    Ok(order)
}

/// Backpropagates `seed` (the gradient of some loss with respect to `root`) and returns the
/// gradients of the leaves that require grad. Frees the graph as it goes.
pub fn grad(root: &Tensor, seed: &Tensor) -> Result<GradStore> {
    if !root.requires_grad() {
        return Err(Error::Autograd(
            "this tensor does not require grad: no parameter with requires_grad_(true) led to it, \
             or it was computed under no_grad()"
                .into(),
        ));
    }
    if seed.shape() != root.shape() || seed.dtype() != root.dtype() {
        return Err(Error::Autograd(format!(
            "the seed gradient is {} {} but the tensor is {} {}",
            seed.shape(),
            seed.dtype(),
            root.shape(),
            root.dtype()
        )));
    }
    let _recording_off = no_grad();
    let order = topo_order(root)?;
    // Gradients of the intermediate tensors still waiting to be propagated.
    let mut pending = GradStore::default();
    let mut leaves = GradStore::default();
    if root.is_leaf() {
        leaves.accumulate(root, seed.clone())?;
        return Ok(leaves);
    }
    pending.accumulate(root, seed.clone())?;
    for t in order.iter().rev() {
        let Some(node) = t.take_node() else { continue }; // another pass freed it meanwhile
        let Some(g) = pending.remove(t) else { continue }; // nothing flowed here
        let grads = node.op.backward(&node.inputs, t, &g)?;
        if grads.len() != node.inputs.len() {
            return Err(Error::Autograd(format!(
                "{} returned {} gradients for {} inputs",
                node.op.name(),
                grads.len(),
                node.inputs.len()
            )));
        }
        for (input, gi) in node.inputs.iter().zip(grads) {
            let Some(gi) = gi else { continue };
            if !input.requires_grad() {
                continue;
            }
            if gi.shape() != input.shape() {
                return Err(Error::Autograd(format!(
                    "{} produced a gradient of shape {} for an input of shape {}",
                    node.op.name(),
                    gi.shape(),
                    input.shape()
                )));
            }
            if input.is_leaf() {
                leaves.accumulate(input, gi)?;
            } else {
                pending.accumulate(input, gi)?;
            }
        }
        // `node` (the op and its saved tensors) is dropped here: memory is released as we go.
    }
    Ok(leaves)
}

impl Tensor {
    /// Backpropagates from this scalar (e.g. a loss) and adds the gradients into the `.grad()`
    /// of every leaf that requires grad. The graph is freed afterwards.
    pub fn backward(&self) -> Result<()> {
        if self.numel() != 1 {
            return Err(Error::Autograd(format!(
                "backward() needs a scalar, got shape {}; use backward_with(grad) for a tensor",
                self.shape()
            )));
        }
        let seed = Tensor::ones_like(self)?;
        self.backward_with(&seed)
    }

    /// Backpropagates a given gradient of some loss with respect to this tensor.
    pub fn backward_with(&self, grad_output: &Tensor) -> Result<()> {
        let store = grad(self, grad_output)?;
        for (leaf, g) in store.into_pairs() {
            leaf.accumulate_grad_owned(g)?;
        }
        Ok(())
    }
}
