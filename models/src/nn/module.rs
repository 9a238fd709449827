//! The `Module` trait: a layer exposes its tensors by name (timm's names, e.g. `conv1.weight`)
//! through a visitor, and everything generic — listing parameters, state dicts, strict loading,
//! zeroing gradients — is written once on top of that visitor.

use std::collections::HashSet;

use bitgrad_engine::{DType, Device, Tensor};

use crate::error::{Error, Result, ShapeProblem};
use crate::io::StateDict;

/// What a named tensor of a module is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Trained: a leaf tensor with `requires_grad`, listed by [`Module::named_parameters`].
    Parameter,
    /// State that is saved and loaded but not trained (BatchNorm's running statistics).
    Buffer,
}

/// `prefix.name`, or `name` when the prefix is empty.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A layer or a model: named tensors (parameters and buffers) and a train/eval mode.
///
/// Implementors provide the two visitors, which must visit the same names in the same order
/// (the order of timm's `state_dict`); the provided methods build on them.
pub trait Module {
    /// Calls `f(full_name, tensor, kind)` for every tensor, in state-dict order.
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, ParamKind));

    /// Like [`Module::visit`] with mutable access, used to replace tensors when loading.
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, ParamKind));

    /// Train (`true`) or eval mode; only layers that behave differently (BatchNorm) care.
    fn set_training(&mut self, training: bool);

    /// The trainable parameters with their names, in state-dict order.
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.visit("", &mut |n, t, k| {
            if k == ParamKind::Parameter {
                out.push((n.to_string(), t.clone()));
            }
        });
        out
    }

    /// The trainable parameters, in state-dict order (what an optimizer takes).
    fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters().into_iter().map(|(_, t)| t).collect()
    }

    /// The number of trainable scalars.
    fn num_parameters(&self) -> usize {
        self.parameters().iter().map(Tensor::numel).sum()
    }

    /// Forgets the accumulated gradient of every parameter.
    fn zero_grad(&self) {
        self.visit("", &mut |_, t, _| t.zero_grad());
    }

    /// Parameters and buffers under their names, detached (handles on the same storage, so no
    /// copy is made: save or clone it before training on if a snapshot is wanted).
    fn state_dict(&self) -> StateDict {
        let mut sd = StateDict::new();
        self.visit("", &mut |n, t, _| sd.insert(n, t.detach()));
        sd
    }

    /// Replaces every tensor by the one of the same name in `sd`, converted to the module's
    /// dtype and device (`dtype`, `device`).
    ///
    /// Shapes must match exactly. `strict`: names the module has but `sd` lacks (missing) and
    /// names `sd` has but the module lacks (unexpected) are errors too; all problems are
    /// reported together in one [`Error::Keys`], and nothing is changed when there is any.
    /// Not strict: missing tensors keep their values, unexpected ones are ignored, wrong
    /// shapes are still an error.
    ///
    /// The loaded tensors share `sd`'s storage when no conversion is needed (no copy — what lets
    /// a multi-GB file load without doubling the memory); later in-place updates (training) are
    /// then visible through `sd` too.
    fn load_tensors(&mut self, sd: &StateDict, strict: bool, dtype: DType, device: Device) -> Result<()> {
        let (mut missing, mut mismatched, mut seen) = (Vec::new(), Vec::new(), HashSet::new());
        self.visit("", &mut |n, t, _| match sd.get(n) {
            None => missing.push(n.to_string()),
            Some(s) => {
                seen.insert(n.to_string());
                if s.dims() != t.dims() {
                    mismatched.push(ShapeProblem { name: n.into(), expected: t.dims().into(), found: s.dims().into() });
                }
            }
        });
        let unexpected: Vec<String> = sd.names().filter(|n| !seen.contains(*n)).map(String::from).collect();
        if !mismatched.is_empty() || (strict && !(missing.is_empty() && unexpected.is_empty())) {
            let (missing, unexpected) = if strict { (missing, unexpected) } else { (vec![], vec![]) };
            return Err(Error::Keys { missing, unexpected, mismatched });
        }
        let mut first_err = None;
        self.visit_mut("", &mut |n, t, kind| {
            let Some(s) = sd.get(n) else { return };
            match adopt(s, kind, dtype, device) {
                Ok(new) => *t = new,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        });
        first_err.map_or(Ok(()), Err)
    }
}

/// `t` as a tensor of the module: `dtype`, `device`, contiguous, a fresh leaf that requires
/// gradients for a parameter. No copy when `t` already fits.
pub(crate) fn adopt(t: &Tensor, kind: ParamKind, dtype: DType, device: Device) -> Result<Tensor> {
    let mut t = t.detach();
    if t.dtype() != dtype {
        t = t.to_dtype(dtype)?;
    }
    if t.device() != device {
        t = t.to_device(device)?;
    }
    let t = t.contiguous()?;
    Ok(t.requires_grad_(kind == ParamKind::Parameter))
}
