//! One optimiser step as BiT's `train.py` makes it: `batch_split` micro-batches, each forward,
//! loss, `(loss / batch_split).backward()` (gradients accumulate), then one SGD update with the
//! step's lr and a cleared gradient.
//!
//! With MixUp, each micro-batch is mixed with its own permutation partner at the step's shared λ,
//! and the loss is `λ·CE(y_a) + (1 − λ)·CE(y_b)`, computed as one cross-entropy against the soft
//! target `λ·onehot(y_a) + (1 − λ)·onehot(y_b)` (the same number and gradient: CE is linear in
//! its target; one kernel instead of two).
//!
//! A non-finite loss is detected *before* the update: the gradients are dropped and the weights
//! are left as they were, so the caller can stop with the last good state intact.

use bitgrad_engine::Tensor;
use bitgrad_ops::sgd::Sgd;
use bitgrad_ops::softmax_xent::{cross_entropy, Target};

use crate::data::{Batch, MixUp};
use crate::dist::{Collectives, ReduceOp, Reducer};
use crate::{Error, ResNetV2, Result};

/// The engine's error type carries a reducer's failure through backward's hook.
fn engine_error(e: Error) -> bitgrad_engine::Error {
    match e {
        Error::Engine(e) => e,
        other => bitgrad_engine::Error::Autograd(other.to_string()),
    }
}

/// What one optimiser step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    /// The mean of the micro-batches' losses (unscaled by the split; NaN/Inf when diverged).
    pub loss: f64,
    /// Examples in the step (short at an epoch's end, as `drop_last=False` makes them).
    pub images: usize,
    /// MixUp's λ for the step (1 without MixUp).
    pub lambda: f64,
    /// False when the loss was NaN/Inf: no update was made.
    pub applied: bool,
}

/// Forward and backward of one micro-batch, the loss scaled by `scale` before backward
/// (1 / batch_split). Returns the unscaled loss.
pub fn micro_step(model: &ResNetV2, batch: &Batch, mix: Option<(&MixUp, u64, u64, f64)>, scale: f64) -> Result<f64> {
    micro_step_with(model, batch, mix, scale, After::Nothing)
}

/// What a micro-batch's backward does besides collecting gradients.
enum After<'a> {
    Nothing,
    /// Reports each parameter to the reducer once its gradient is final (data-parallel training
    /// starts communicating from there).
    Reduce(&'a mut Reducer),
    /// The step's SGD update, fused into the ops that finish the parameters' gradients
    /// (`Sgd::update_in_backward`, the `ws-sgd` fusion) — only if this micro-batch's loss is
    /// finite; the caller's `step` updates the rest.
    Update(&'a mut Sgd, &'a [Tensor]),
}

/// [`micro_step`] with [`After`].
fn micro_step_with(
    model: &ResNetV2,
    batch: &Batch,
    mix: Option<(&MixUp, u64, u64, f64)>,
    scale: f64,
    after: After<'_>,
) -> Result<f64> {
    let device = model.device();
    let k = model.config().num_classes;
    let n = batch.labels.len();
    if let Some(&bad) = batch.labels.iter().find(|&&l| l < 0 || l as usize >= k) {
        return Err(Error::Msg(format!("label {bad} is out of range for a head of {k} classes")));
    }
    let (images, soft) = match mix {
        Some((mixup, step, micro, lambda)) if lambda < 1.0 => {
            let m = mixup.apply(&batch.images, &batch.labels, step, micro, lambda)?;
            let mut t = vec![0.0f64; n * k];
            for (i, (&a, &b)) in m.labels_a.iter().zip(&m.labels_b).enumerate() {
                t[i * k + a as usize] += lambda;
                t[i * k + b as usize] += 1.0 - lambda;
            }
            (m.images, Some(Tensor::from_f64_vec(t, [n, k], model.dtype(), device)?))
        }
        _ => (batch.images.clone(), None),
    };
    let x = images.to_dtype(model.dtype())?.to_device(device)?;
    let logits = model.forward(&x)?;
    let loss = match &soft {
        Some(t) => cross_entropy(&logits, Target::Soft(t), 0.0)?,
        None => {
            let labels = Tensor::from_vec(batch.labels.clone(), [n], device)?;
            cross_entropy(&logits, Target::Hard(&labels), 0.0)?
        }
    };
    let value = loss.to_scalar()?;
    let scaled = loss.mul_scalar(scale)?;
    match after {
        After::Reduce(r) => scaled.backward_with_hook(&mut |leaf| r.grad_ready(leaf).map_err(engine_error))?,
        After::Update(sgd, params) if value.is_finite() => sgd.update_in_backward(params, || scaled.backward())?,
        After::Nothing | After::Update(..) => scaled.backward()?,
    }
    Ok(value)
}

/// One optimiser step over `micro_batches` (exactly `batch_split` of them): accumulate, then
/// `sgd.step(params)` at `lr` and clear the gradients. With the `ws-sgd` fusion on (the
/// default) and one process, the weight-standardized convolution weights are updated inside
/// the last backward instead, bit for bit the same (`Sgd::update_in_backward`). `mixup` is
/// `Some` when α > 0; `step` keys its λ and permutations.
pub fn accumulate_step(
    model: &ResNetV2,
    params: &[Tensor],
    sgd: &mut Sgd,
    micro_batches: &[Batch],
    step: u64,
    lr: f64,
    mixup: Option<&MixUp>,
) -> Result<StepOutcome> {
    accumulate_step_ddp(model, params, sgd, micro_batches, step, lr, mixup, None)
}

/// [`accumulate_step`] of one rank of a data-parallel run: only the last micro-batch's backward
/// communicates (the earlier ones accumulate locally, DDP's `no_sync`), its gradients are
/// averaged over the ranks bucket by bucket while backward runs, and the loss and image count
/// are summed over the ranks, so every rank sees the same loss and takes the same decision on
/// a NaN/Inf. `ddp` is `None` for a single process.
#[allow(clippy::too_many_arguments)]
pub fn accumulate_step_ddp(
    model: &ResNetV2,
    params: &[Tensor],
    sgd: &mut Sgd,
    micro_batches: &[Batch],
    step: u64,
    lr: f64,
    mixup: Option<&MixUp>,
    mut ddp: Option<(&mut Reducer, &dyn Collectives)>,
) -> Result<StepOutcome> {
    if micro_batches.is_empty() {
        return Err(Error::Msg("an optimiser step needs at least one micro-batch".into()));
    }
    let split = micro_batches.len();
    let lambda = mixup.map_or(1.0, |m| m.lambda(step));
    let (mut total, mut images) = (0.0f64, 0);
    sgd.lr = lr;
    for (micro, batch) in micro_batches.iter().enumerate() {
        let mix = mixup.map(|m| (m, step, micro as u64, lambda));
        // The last micro-batch's backward communicates (data-parallel), or else updates the
        // weights as it finishes their gradients when every loss so far is finite (the step
        // is then applied: the mean loss is finite exactly when each one is).
        let after = match &mut ddp {
            Some((r, _)) if micro + 1 == split => After::Reduce(r),
            None if micro + 1 == split && total.is_finite() => After::Update(&mut *sgd, params),
            _ => After::Nothing,
        };
        total += micro_step_with(model, batch, mix, 1.0 / split as f64, after)?;
        images += batch.labels.len();
    }
    let mut loss = total / split as f64;
    if let Some((reducer, comm)) = ddp {
        reducer.finish()?;
        let mut sums = [loss as f32, images as f32];
        comm.all_reduce(&mut sums, ReduceOp::Sum)?;
        loss = sums[0] as f64 / comm.world_size() as f64;
        images = sums[1] as usize;
    }
    let applied = loss.is_finite();
    if applied {
        // (The parameters the last backward updated have no gradient left: this updates the rest.)
        sgd.step(params)?;
    }
    sgd.zero_grad(params);
    Ok(StepOutcome { loss, images, lambda, applied })
}
