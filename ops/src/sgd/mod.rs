//! Stochastic gradient descent with momentum, weight decay and Nesterov, as `torch.optim.SGD`
//! (with `dampening = 0`, which BiT uses and this optimizer fixes).
//!
//! For each parameter `w` with a gradient, one fused in-place pass:
//!
//! ```text
//! g ← grad + wd·w
//! buf ← μ·buf + g          (buf ← g on the parameter's first step, as PyTorch)
//! g ← g + μ·buf            if nesterov, else g ← buf
//! w ← w − lr·g
//! ```
//!
//! with `μ = 0` skipping the buffer entirely (no buffer is created). The arithmetic is done in the
//! parameter's dtype in PyTorch's order and with PyTorch's roundings (`x.add(y, alpha=a)` is one
//! fused multiply-add in its CPU kernels; see `cpu::Hyper`), hyper-parameters converted to the
//! dtype first, so f32 and f64 runs match `torch.optim.SGD` bit for bit (checked in the tests
//! against numbers from torch 2.15).
//!
//! **In place, no allocation after the first step.** Parameters are updated through
//! `Tensor::with_cpu_slice_mut`, so every view of a parameter's storage sees the new values.
//! Momentum buffers are created on a parameter's first step and updated in place afterwards
//! (their storage never moves; a test checks the pointer).
//!
//! **Buffers are keyed by [`TensorId`].** A tensor's id belongs to its *handle*:
//! `requires_grad_`, `detach` and views return new handles with new ids over the same storage. So
//! pass the very same parameter handles to every `step` (the ones that collect `.grad()`); a new
//! handle for the same weights is a new parameter to the optimizer, with a fresh buffer, while the
//! old buffer stays until [`Sgd::clear_state`]. [`Sgd::state`] and [`Sgd::load_state`] save and
//! restore the buffers in the order of a parameter list, which is also how to carry them over to
//! new handles (e.g. when resuming from a checkpoint: the resumed run is then exact).
//!
//! **On a GPU device** the same update runs as one fused kernel (`kernels/cuda/sgd.cu`), with the
//! parameter written in place through its storage and the momentum buffer on the parameter's
//! device; when every parameter with a gradient lives on one GPU device (and no two share
//! storage), [`Sgd::step`] updates them all in a single multi-tensor launch. The numbers equal the
//! CPU's bit for bit (same roundings; checked on Emu). [`Sgd::state`] copies buffers on their
//! device; [`Sgd::load_state`] puts each buffer on its parameter's device.
//!
//! Dtypes: f32 and f64 parameters; the gradient must have the parameter's dtype, shape and device.

mod bf16;
#[cfg(test)]
mod bf16_gpu_tests;
pub(crate) mod cpu;
mod gpu;
#[cfg(test)]
mod gpu_tests;
pub(crate) mod in_backward;
#[cfg(test)]
mod in_backward_tests;
#[cfg(test)]
mod tests;

pub use bf16::{sgd_step_f32_bf16, SgdBf16Param};

use std::collections::HashMap;

use bitgrad_engine::{no_grad, DType, Device, Error, FloatElem, GpuStorage, Result, Storage, Tensor, TensorId};

/// SGD with momentum (dampening 0), weight decay and optional Nesterov momentum.
#[derive(Debug)]
pub struct Sgd {
    /// Learning rate (a schedule may change it between steps).
    pub lr: f64,
    /// Momentum factor μ; 0 disables the buffers.
    pub momentum: f64,
    /// L2 penalty added to the gradient: `g + wd·w`.
    pub weight_decay: f64,
    /// Nesterov momentum (requires `momentum > 0`).
    pub nesterov: bool,
    buffers: HashMap<TensorId, Tensor>,
    /// Updates made inside backward (`in_backward`).
    updated_in_backward: usize,
}

/// Runs `f(w, buffer)` on the elements of the CPU parameter `p` (in place) and its momentum
/// buffer from `buffers`: none without momentum, `(buffer, false)` when it has one, and on its
/// first step a new buffer `(zeros, true)` — the update starts it as the (decayed) gradient —
/// which is kept in `buffers` afterwards.
fn with_param_and_buffer<T: FloatElem>(
    buffers: &mut HashMap<TensorId, Tensor>,
    momentum: f64,
    p: &Tensor,
    f: impl FnOnce(&mut [T], Option<(&mut [T], bool)>),
) -> Result<()> {
    if momentum == 0.0 {
        return p.with_cpu_slice_mut(|w: &mut [T]| f(w, None));
    }
    match buffers.get(&p.id()) {
        Some(buf) => {
            p.with_cpu_slice_mut(|w: &mut [T]| buf.with_cpu_slice_mut(|b: &mut [T]| f(w, Some((b, false)))))?
        }
        None => {
            let mut b = vec![T::zero(); p.numel()];
            p.with_cpu_slice_mut(|w: &mut [T]| f(w, Some((&mut b, true))))?;
            buffers.insert(p.id(), Tensor::from_storage(Storage::Cpu(T::into_storage(b)), p.shape()));
            Ok(())
        }
    }
}

/// Clears the `.grad()` of every parameter.
pub fn zero_grad(params: &[Tensor]) {
    params.iter().for_each(Tensor::zero_grad);
}

impl Sgd {
    /// An optimizer with the given hyper-parameters (checked as PyTorch does).
    pub fn new(lr: f64, momentum: f64, weight_decay: f64, nesterov: bool) -> Result<Sgd> {
        let sgd = Sgd { lr, momentum, weight_decay, nesterov, buffers: HashMap::new(), updated_in_backward: 0 };
        sgd.check()?;
        Ok(sgd)
    }

    fn check(&self) -> Result<()> {
        for (name, v) in [("learning rate", self.lr), ("momentum", self.momentum), ("weight_decay", self.weight_decay)]
        {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::invalid("sgd", format!("invalid {name}: {v} (must be finite and ≥ 0)")));
            }
        }
        if self.nesterov && self.momentum == 0.0 {
            return Err(Error::invalid("sgd", "Nesterov momentum requires a momentum > 0"));
        }
        Ok(())
    }

    /// One update of every parameter that has a gradient (others are skipped). Each parameter
    /// must appear once in `params`.
    pub fn step(&mut self, params: &[Tensor]) -> Result<()> {
        self.check()?;
        let _no_grad = no_grad();
        let work: Vec<(usize, &Tensor, Tensor)> =
            params.iter().enumerate().filter_map(|(i, p)| p.grad().map(|g| (i, p, g))).collect();
        if let Some(device) = one_gpu_device(&work) {
            return self.step_multi(device, &work);
        }
        for (i, p, grad) in &work {
            let g = self.prepare(*i, p, grad)?;
            if p.device().is_gpu() {
                let (r, first) = self.record(p, &g)?;
                gpu::step_one(p.storage().gpu("sgd step")?.runtime(), p.dtype(), &r, &self.hyper())?;
                self.keep_buffer(p, first);
            } else {
                match p.dtype() {
                    DType::F32 => self.update_typed::<f32>(p, &g)?,
                    DType::F64 => self.update_typed::<f64>(p, &g)?,
                    d => return Err(Error::UnsupportedDType { op: "sgd step", dtype: d }),
                }
            }
        }
        Ok(())
    }

    /// Every parameter of `work` updated by one multi-tensor launch on `device`.
    fn step_multi(&mut self, device: Device, work: &[(usize, &Tensor, Tensor)]) -> Result<()> {
        let mut grads = Vec::with_capacity(work.len());
        for (i, p, grad) in work {
            grads.push(self.prepare(*i, p, grad)?);
        }
        let dtype = work[0].1.dtype();
        let mut records = Vec::with_capacity(work.len());
        let mut firsts = Vec::with_capacity(work.len());
        for ((_, p, _), g) in work.iter().zip(&grads) {
            let (r, first) = self.record(p, g)?;
            records.push(r);
            firsts.push(first);
        }
        let rt = bitgrad_engine::gpu::runtime(device)?;
        gpu::step_multi(&rt, dtype, &records, &self.hyper())?;
        for ((_, p, _), first) in work.iter().zip(firsts) {
            self.keep_buffer(p, first);
        }
        Ok(())
    }

    fn hyper(&self) -> gpu::Hyper {
        gpu::Hyper::new(self.lr, self.momentum, self.weight_decay, self.nesterov)
    }

    /// The kernel record of parameter `p` (on a GPU, contiguous) with its contiguous gradient `g`:
    /// its buffer, moved to `p`'s device if needed, or a new one (then `Some(buffer)` is returned
    /// to be kept once the update is queued).
    fn record(&mut self, p: &Tensor, g: &Tensor) -> Result<(gpu::Record, Option<Tensor>)> {
        let addr = |t: &Tensor, write: bool| -> Result<bitgrad_engine::gpu::DevicePtr> {
            // The parameter is written in place: its pointer is taken under the storage's write lock.
            let off = t.layout().offset();
            if write {
                Ok(t.storage_mut().gpu("sgd step")?.ptr_at(off))
            } else {
                Ok(t.storage().gpu("sgd step")?.ptr_at(off))
            }
        };
        let (w, gp) = (addr(p, true)?, addr(g, false)?);
        if self.momentum == 0.0 {
            return Ok((gpu::Record::new(w, gp, None, p.numel(), false), None));
        }
        if let Some(b) = self.buffers.get(&p.id()) {
            return Ok((gpu::Record::new(w, gp, Some(addr(b, true)?), p.numel(), false), None));
        }
        let st = GpuStorage::alloc(p.storage().gpu("sgd step")?.runtime(), p.dtype(), p.numel())?;
        let buf = Tensor::from_storage(Storage::Gpu(st), p.shape());
        Ok((gpu::Record::new(w, gp, Some(addr(&buf, true)?), p.numel(), true), Some(buf)))
    }

    fn keep_buffer(&mut self, p: &Tensor, first: Option<Tensor>) {
        if let Some(buf) = first {
            self.buffers.insert(p.id(), buf);
        }
    }

    /// Checks a parameter and its gradient and returns the gradient contiguous, in a storage of
    /// its own; moves the parameter's buffer to the parameter's device if it is elsewhere.
    fn prepare(&mut self, index: usize, p: &Tensor, grad: &Tensor) -> Result<Tensor> {
        if grad.shape() != p.shape() {
            return Err(Error::ShapeMismatch { op: "sgd step", lhs: p.shape().clone(), rhs: grad.shape().clone() });
        }
        if grad.dtype() != p.dtype() {
            return Err(Error::DTypeMismatch { op: "sgd step", lhs: p.dtype(), rhs: grad.dtype() });
        }
        if !p.is_contiguous() {
            return Err(Error::invalid(
                "sgd step",
                format!("parameter {index} (shape {}) is a non-contiguous view; pass the parameter itself", p.shape()),
            ));
        }
        if grad.device() != p.device() {
            return Err(Error::DeviceMismatch { op: "sgd step", lhs: p.device(), rhs: grad.device() });
        }
        if !matches!(p.dtype(), DType::F32 | DType::F64) {
            return Err(Error::UnsupportedDType { op: "sgd step", dtype: p.dtype() });
        }
        let mut g = grad.contiguous()?;
        if g.same_storage(p) {
            // Never read and write one storage under two locks: work from a copy (never happens
            // with gradients computed by backward).
            g = Tensor::from_f64_vec(g.to_vec_f64()?, g.shape(), g.dtype(), g.device())?;
        }
        if let Some(b) = self.buffers.get(&p.id()) {
            if b.device() != p.device() {
                let moved = b.to_device(p.device())?.detach();
                self.buffers.insert(p.id(), moved);
            }
        }
        Ok(g)
    }

    fn update_typed<T: FloatElem>(&mut self, p: &Tensor, g: &Tensor) -> Result<()> {
        let h = cpu::Hyper::<T>::new(self.lr, self.momentum, self.weight_decay, self.nesterov);
        g.with_cpu_slice(|g: &[T]| {
            with_param_and_buffer(&mut self.buffers, self.momentum, p, |w, buf| cpu::step(w, g, buf, &h))
        })?
    }

    /// Clears the `.grad()` of every parameter.
    pub fn zero_grad(&self, params: &[Tensor]) {
        zero_grad(params)
    }

    /// The live momentum buffer of `param` (updated in place by later steps), if it has one.
    pub fn momentum_buffer(&self, param: &Tensor) -> Option<&Tensor> {
        self.buffers.get(&param.id())
    }

    /// Copies of the momentum buffers of `params`, in order (`None` where a parameter has no
    /// buffer yet), for a checkpoint. Later steps do not change the copies.
    pub fn state(&self, params: &[Tensor]) -> Result<Vec<Option<Tensor>>> {
        params
            .iter()
            .map(|p| {
                self.buffers
                    .get(&p.id())
                    .map(|b| Tensor::from_f64_vec(b.to_vec_f64()?, b.shape(), b.dtype(), b.device()))
                    .transpose()
            })
            .collect()
    }

    /// Restores momentum buffers saved by [`Sgd::state`] for `params` (the same order; the
    /// handles may be new). Each buffer is copied onto its parameter's device, so the optimizer
    /// owns its storage. A `None`
    /// removes the parameter's buffer (its next step starts the momentum afresh).
    pub fn load_state(&mut self, params: &[Tensor], buffers: &[Option<Tensor>]) -> Result<()> {
        if params.len() != buffers.len() {
            return Err(Error::invalid(
                "sgd load_state",
                format!("{} parameters but {} saved buffers", params.len(), buffers.len()),
            ));
        }
        for (i, (p, b)) in params.iter().zip(buffers).enumerate() {
            if let Some(b) = b {
                if b.shape() != p.shape() || b.dtype() != p.dtype() {
                    return Err(Error::invalid(
                        "sgd load_state",
                        format!(
                            "buffer {i} is {} {} but its parameter is {} {}",
                            b.shape(),
                            b.dtype(),
                            p.shape(),
                            p.dtype()
                        ),
                    ));
                }
            }
        }
        for (p, b) in params.iter().zip(buffers) {
            match b {
                Some(b) => {
                    let copy = Tensor::from_f64_vec(b.to_vec_f64()?, b.shape(), b.dtype(), p.device())?;
                    self.buffers.insert(p.id(), copy);
                }
                None => {
                    self.buffers.remove(&p.id());
                }
            }
        }
        Ok(())
    }

    /// Forgets every momentum buffer.
    pub fn clear_state(&mut self) {
        self.buffers.clear();
    }
}

/// The GPU device of every parameter in `work`, when they all share one GPU device and dtype
/// and no two of them (or a parameter and another's gradient) share a storage — the conditions
/// for one multi-tensor launch to do exactly what the sequential updates do.
fn one_gpu_device(work: &[(usize, &Tensor, Tensor)]) -> Option<Device> {
    let (_, first, _) = work.first()?;
    let (device, dtype) = (first.device(), first.dtype());
    let uniform = work.iter().all(|(_, p, g)| p.device() == device && g.device() == device && p.dtype() == dtype);
    if !device.is_gpu() || !uniform {
        return None;
    }
    let aliased = work.iter().enumerate().any(|(i, (_, p, _))| {
        work.iter().enumerate().any(|(j, (_, q, g))| i != j && (p.same_storage(q) || p.same_storage(g)))
    });
    (!aliased).then_some(device)
}
