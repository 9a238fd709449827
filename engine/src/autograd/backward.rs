//! The backward pass: topological order, then the chain rule from the output to the leaves.

use std::collections::{HashMap, HashSet};

use super::{no_grad, GradStore};
use crate::{Error, Result, Tensor, TensorId};

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

/// Called with a leaf and its gradient from this pass once no node left to process can add to
/// it (see [`Tensor::backward_with_hook`]).
type OnFinal<'a> = &'a mut dyn FnMut(&Tensor, Tensor) -> Result<()>;

/// Backpropagates `seed` (the gradient of some loss with respect to `root`) and returns the
/// gradients of the leaves that require grad. Frees the graph as it goes.
pub fn grad(root: &Tensor, seed: &Tensor) -> Result<GradStore> {
    grad_impl(root, seed, None)
}

/// How many times each leaf that requires grad appears as an input of a node in `order`: a
/// leaf's gradient is final once that many node inputs have been processed.
fn leaf_uses(order: &[Tensor]) -> HashMap<TensorId, usize> {
    let mut uses = HashMap::new();
    for t in order {
        for i in t.node_inputs().into_iter().flatten() {
            if i.is_leaf() && i.requires_grad() {
                *uses.entry(i.id()).or_insert(0) += 1;
            }
        }
    }
    uses
}

/// [`grad`], handing each leaf's gradient to `on_final` as soon as it is final (the leaves left
/// in the returned store are those never reached through a processed node).
fn grad_impl(root: &Tensor, seed: &Tensor, mut on_final: Option<OnFinal<'_>>) -> Result<GradStore> {
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
    let mut order = topo_order(root)?;
    let mut uses = leaf_uses(&order);
    // Gradients of the intermediate tensors still waiting to be propagated.
    let mut pending = GradStore::default();
    let mut leaves = GradStore::default();
    if root.is_leaf() {
        if let Some(f) = on_final.as_mut() {
            f(root, seed.clone())?;
            return Ok(leaves);
        }
        leaves.accumulate(root, seed.clone())?;
        return Ok(leaves);
    }
    pending.accumulate(root, seed.clone())?;
    // Taken off the end, so that the order's own handle on each tensor goes with it: once its
    // node has run, every consumer has run before it, and nothing of the graph keeps the tensor
    // (an activation) alive any more: memory shrinks as the pass goes, as PyTorch's does.
    while let Some(t) = order.pop() {
        let t = &t;
        let Some(node) = t.take_node() else { continue }; // another pass freed it meanwhile
        let Some(g) = pending.remove(t) else {
            // Nothing flowed here: still a use of its leaf inputs that is now done.
            deliver_final(&node.inputs, &mut uses, &mut leaves, &mut on_final)?;
            continue;
        };
        let timer = super::profile::start();
        let grads = {
            let _last = LastUses::set(last_uses_of(&node.inputs, &uses, &leaves));
            node.op.backward(&node.inputs, t, &g)?
        };
        super::profile::stop(timer, node.op.name());
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
            let timer = super::profile::start();
            if input.is_leaf() {
                leaves.accumulate(input, gi)?;
            } else {
                pending.accumulate(input, gi)?;
            }
            super::profile::stop(timer, "(gradient accumulation)");
        }
        deliver_final(&node.inputs, &mut uses, &mut leaves, &mut on_final)?;
        // `node` (the op and its saved tensors) and the order's handle on `t` are dropped here:
        // memory is released as we go.
    }
    Ok(leaves)
}

/// Counts one use of each leaf among `inputs` as done and hands the leaves with no use left to
/// `on_final` (only counting without a callback).
fn deliver_final(
    inputs: &[Tensor],
    uses: &mut HashMap<TensorId, usize>,
    leaves: &mut GradStore,
    on_final: &mut Option<OnFinal<'_>>,
) -> Result<()> {
    for input in inputs {
        let Some(n) = uses.get_mut(&input.id()) else { continue };
        *n -= 1;
        if *n == 0 {
            uses.remove(&input.id());
            if let Some(f) = on_final.as_mut() {
                if let Some(g) = leaves.remove(input) {
                    f(input, g)?;
                }
            }
        }
    }
    Ok(())
}

/// The leaves among a node's `inputs` whose whole gradient from this pass is the one this node
/// is about to compute: every use they have left is in this node, and no other node gave them
/// a gradient yet.
fn last_uses_of(inputs: &[Tensor], uses: &HashMap<TensorId, usize>, leaves: &GradStore) -> Vec<TensorId> {
    let mut last = Vec::new();
    for input in inputs {
        let id = input.id();
        let here = inputs.iter().filter(|i| i.id() == id).count();
        if uses.get(&id) == Some(&here) && leaves.get(input).is_none() && !last.contains(&id) {
            last.push(id);
        }
    }
    last
}

thread_local! {
    /// [`last_uses_of`] for the node whose backward runs now on this thread (nodes run on the
    /// thread that called backward).
    static LAST_USES: std::cell::RefCell<Vec<TensorId>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Holds [`LAST_USES`] for one node's backward and puts the previous value back (a backward
/// that runs another backward inside sees its own).
struct LastUses(Vec<TensorId>);

impl LastUses {
    fn set(ids: Vec<TensorId>) -> LastUses {
        LastUses(LAST_USES.with(|l| std::mem::replace(&mut *l.borrow_mut(), ids)))
    }
}

impl Drop for LastUses {
    fn drop(&mut self) {
        let previous = std::mem::take(&mut self.0);
        LAST_USES.with(|l| *l.borrow_mut() = previous);
    }
}

/// Inside a [`BackwardOp::backward`](super::BackwardOp::backward): whether the gradient that op
/// computes for its input `leaf` is the leaf's whole gradient from this backward pass — `leaf`
/// is a leaf, no node left to run uses it, and no node has given it a gradient yet. An op may
/// then consume that gradient itself (an optimizer update fused into the op that finishes the
/// gradient, `bitgrad_ops::sgd`) and return `None` for it. False outside a backward.
pub fn is_last_use(leaf: &Tensor) -> bool {
    leaf.is_leaf() && LAST_USES.with(|l| l.borrow().contains(&leaf.id()))
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

    /// [`Tensor::backward`] that calls `ready(leaf)` for every leaf as soon as its `.grad()` is
    /// final for this pass — after the last node that feeds it has run, while the rest of the
    /// graph is still being processed. Data-parallel training starts communicating a gradient
    /// bucket from here while backward goes on (docs/distributed.md). Each leaf is reported once;
    /// an error from `ready` stops the pass and is returned.
    pub fn backward_with_hook(&self, ready: &mut dyn FnMut(&Tensor) -> Result<()>) -> Result<()> {
        if self.numel() != 1 {
            return Err(Error::Autograd(format!("backward_with_hook() needs a scalar, got shape {}", self.shape())));
        }
        let seed = Tensor::ones_like(self)?;
        let mut on_final = |leaf: &Tensor, g: Tensor| -> Result<()> {
            leaf.accumulate_grad_owned(g)?;
            ready(leaf)
        };
        let rest = grad_impl(self, &seed, Some(&mut on_final))?;
        // Leaves whose last use was in a node freed by another pass meanwhile.
        for (leaf, g) in rest.into_pairs() {
            on_final(&leaf, g)?;
        }
        Ok(())
    }
}
