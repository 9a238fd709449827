//! The SGD update inside backward: the `ws-sgd` fusion (`crate::fusion`).
//!
//! A weight-standardized parameter's gradient is finished by WS's backward, one filter row at
//! a time: `∂w = r·(g − mean(g) − ŵ·mean(g·ŵ))`. Unfused, that writes a full-size `∂w`, the
//! engine stores it in `.grad()`, and [`Sgd::step`] later reads the weight, `∂w` and the momentum
//! buffer back from memory and writes the weight and the buffer. Fused, each row's `∂w` goes to
//! a row-sized scratch and the row's update runs at once: the weight row is still in cache from
//! the WS backward that just read ŵ, and no full-size gradient exists at all.
//!
//! How the pieces meet:
//! * [`Sgd::update_in_backward`] runs a backward with this optimizer *registered* on the calling
//!   thread (backward's nodes run there) for a list of parameters;
//! * an op whose backward finishes a registered parameter's gradient (today: `weight_std` on the
//!   CPU, f32 and f64) asks [`apply`]; it applies only when the engine says this node's
//!   gradient is the parameter's whole gradient from the pass
//!   ([`bitgrad_engine::autograd::is_last_use`]: a weight used by two ops is not updated early);
//!   the gradient accumulated by earlier passes (micro-batches) is added first, as `.grad()`
//!   would have summed it, and cleared;
//! * the op then returns no gradient for the parameter, and a later [`Sgd::step`] skips it (it has
//!   no `.grad()`) and updates the rest.
//!
//! The arithmetic is [`super::cpu::step`]'s on the same values in the same order, so weights and
//! momentum buffers are bit for bit those of `backward(); step()` (tests in `in_backward_tests`).
//! What changes is when: a parameter is updated while backward still runs, so the caller must
//! only register when the step will be applied (the loss is finite; every micro-batch's
//! gradient is in — the last micro-batch's backward; no gradient averaging across processes
//! still to come). If backward fails half-way, the parameters it already passed are updated.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use bitgrad_engine::{autograd::is_last_use, Device, FloatElem, Result, Tensor, TensorId};

use super::{cpu, with_param_and_buffer, Sgd};
use crate::fusion::{self, Fusion};

/// The optimizer's state while a backward may update its parameters.
struct Registered {
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    nesterov: bool,
    params: HashSet<TensorId>,
    /// The optimizer's momentum buffers, lent for the pass (new ones are added here).
    buffers: HashMap<TensorId, Tensor>,
    /// Parameters updated so far.
    updated: usize,
}

thread_local! {
    static REGISTERED: RefCell<Option<Registered>> = const { RefCell::new(None) };
}

impl Sgd {
    /// Runs `backward` (a closure that calls `loss.backward()` or a variant) with the update of
    /// `params` fused into the ops that finish their gradients, where such an op exists and the
    /// `ws-sgd` fusion is on (see the module docs); without either, it only runs `backward`.
    /// Parameters updated this way have no `.grad()` afterwards; call [`Sgd::step`] on the same
    /// `params` after it to update the others.
    ///
    /// Only register a step that will be applied: the updates happen during the call. Errors:
    /// the optimizer's hyper-parameters are invalid (before anything runs), a call inside
    /// another one on the same thread, or `backward`'s own error.
    pub fn update_in_backward<R>(&mut self, params: &[Tensor], backward: impl FnOnce() -> Result<R>) -> Result<R> {
        self.check()?;
        if !fusion::enabled(Fusion::WsSgd) {
            return backward();
        }
        if REGISTERED.with(|r| r.borrow().is_some()) {
            return Err(bitgrad_engine::Error::invalid(
                "sgd update_in_backward",
                "an optimizer is already registered on this thread (a call inside another)",
            ));
        }
        let registered = Registered {
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            nesterov: self.nesterov,
            params: params.iter().map(Tensor::id).collect(),
            buffers: std::mem::take(&mut self.buffers),
            updated: 0,
        };
        REGISTERED.with(|r| *r.borrow_mut() = Some(registered));
        // The buffers come back also when backward fails or panics.
        struct Return<'a>(&'a mut Sgd);
        impl Drop for Return<'_> {
            fn drop(&mut self) {
                if let Some(r) = REGISTERED.with(|r| r.borrow_mut().take()) {
                    self.0.buffers = r.buffers;
                    self.0.updated_in_backward += r.updated;
                }
            }
        }
        let _return = Return(self);
        backward()
    }

    /// How many parameter updates ran inside backward ([`Sgd::update_in_backward`]) since this
    /// optimizer was made: one per parameter and step.
    pub fn updates_in_backward(&self) -> usize {
        self.updated_in_backward
    }
}

/// Whether an optimizer is registered on this thread (ops skip their preparations otherwise).
pub(crate) fn is_registered() -> bool {
    REGISTERED.with(|r| r.borrow().is_some())
}

/// The row-wise update an op runs for a parameter: `update(w, earlier, buffer, hyper)` must
/// finish the gradient (adding `earlier`, the gradient of earlier passes, where given) and
/// apply [`super::cpu::step`]'s arithmetic to `w` and `buffer` (`(buffer, first step)`).
pub(crate) type Update<'a, T> = dyn Fn(&mut [T], Option<&[T]>, Option<(&mut [T], bool)>, &cpu::Hyper<T>) + 'a;

/// Called from the backward of an op that finishes the gradient of its input `leaf`: runs
/// `update` on the parameter and returns true when an optimizer registered `leaf` on this thread
/// and the update may happen here (see the module docs); else false, and the op returns the
/// gradient as usual.
pub(crate) fn apply<T: FloatElem>(leaf: &Tensor, update: &Update<'_, T>) -> Result<bool> {
    REGISTERED.with(|r| {
        let mut r = r.borrow_mut();
        let Some(reg) = r.as_mut() else { return Ok(false) };
        let fits = |t: &Tensor| t.device() == Device::Cpu && t.dtype() == T::DTYPE && t.shape() == leaf.shape();
        if !reg.params.contains(&leaf.id()) || !fits(leaf) || !leaf.is_contiguous() || !is_last_use(leaf) {
            return Ok(false);
        }
        let earlier = match leaf.grad() {
            Some(g) if !fits(&g) => return Ok(false),
            Some(g) => Some(g.contiguous()?),
            None => None,
        };
        if reg.buffers.get(&leaf.id()).is_some_and(|b| !fits(b)) {
            return Ok(false);
        }
        let h = cpu::Hyper::<T>::new(reg.lr, reg.momentum, reg.weight_decay, reg.nesterov);
        let (buffers, momentum) = (&mut reg.buffers, reg.momentum);
        match &earlier {
            Some(e) => e.with_cpu_slice(|e: &[T]| {
                with_param_and_buffer(buffers, momentum, leaf, |w, b| update(w, Some(e), b, &h))
            })??,
            None => with_param_and_buffer(buffers, momentum, leaf, |w, b| update(w, None, b, &h))?,
        }
        // The earlier passes' part is in the update now.
        leaf.zero_grad();
        reg.updated += 1;
        Ok(true)
    })
}
