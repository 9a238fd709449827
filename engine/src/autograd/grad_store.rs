//! `GradStore`: gradients keyed by tensor, as returned by [`grad`](super::grad).

use std::collections::HashMap;

use crate::{Result, Tensor, TensorId};

/// The gradients of the leaves reached by one backward pass.
#[derive(Default)]
pub struct GradStore {
    grads: HashMap<TensorId, (Tensor, Tensor)>,
}

impl GradStore {
    /// The gradient for `t`, if the pass reached it.
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.grads.get(&t.id()).map(|(_, g)| g)
    }

    /// Adds `g` to the gradient stored for `t`.
    pub(crate) fn accumulate(&mut self, t: &Tensor, g: Tensor) -> Result<()> {
        match self.grads.remove(&t.id()) {
            Some((leaf, old)) => {
                let sum = old.add(&g)?;
                self.grads.insert(t.id(), (leaf, sum));
            }
            None => {
                self.grads.insert(t.id(), (t.clone(), g));
            }
        }
        Ok(())
    }

    pub(crate) fn remove(&mut self, t: &Tensor) -> Option<Tensor> {
        self.grads.remove(&t.id()).map(|(_, g)| g)
    }

    /// Consumes the store, yielding owned (leaf, gradient) pairs.
    pub(crate) fn into_pairs(self) -> impl Iterator<Item = (Tensor, Tensor)> {
        self.grads.into_values()
    }

    /// (leaf, gradient) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&Tensor, &Tensor)> {
        self.grads.values().map(|(t, g)| (t, g))
    }

    pub fn len(&self) -> usize {
        self.grads.len()
    }
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }
}
