//! Softmax cross-entropy with hard or soft targets and label smoothing, mean over the batch:
//! `cross_entropy(logits [N, K], target, ε)`, one fused kernel forward and one backward.
//!
//! **Loss.** With `log p_nk = x_nk − lse_n` (`lse_n = m_n + ln Σ_k exp(x_nk − m_n)`, `m_n` the row
//! maximum, so no exponent is ever positive and logits of ±1e4 stay finite) and the target
//! distribution `q_n`:
//!
//! `L = (1/N) Σ_n −Σ_k q_nk log p_nk`, with `q_nk = (1 − ε)·t_nk + ε/K`,
//!
//! where `t_n` is the one-hot vector of label `y_n` ([`Target::Hard`], an i64 `[N]` tensor) or a
//! given distribution ([`Target::Soft`], `[N, K]`, e.g. mixup's `λ·onehot(a) + (1 − λ)·onehot(b)`).
//! This is PyTorch's `F.cross_entropy(.., label_smoothing=ε)`: for hard targets it equals
//! `(1 − ε)·CE(y) + ε·mean_k(−log p_k)`, and soft targets are smoothed the same way.
//!
//! **Gradient.** `∂L/∂x_nk = (s_n·p_nk − q_nk)·g/N` with `s_n = Σ_k q_nk` — that is
//! `(softmax − q)·g/N` whenever the target rows sum to 1 (always for hard targets); the general
//! form keeps soft targets that do not sum to 1 exact, as PyTorch does. A soft target that
//! requires grad also gets `∂L/∂t_nk = −(1 − ε)·log p_nk·g/N`. The forward saves each row's
//! `lse` (one f64 per row), so backward is a single pass over the logits.
//!
//! Rows are independent and the batch mean adds the per-row losses in row order in f64, so the
//! result does not depend on the thread count. Row arithmetic is done in f64 for both f32 and f64
//! logits (the loss is one number; the cost is the exponentials).
//!
//! Dtypes: f32/f64 logits (a soft target must have the logits' dtype). f16/bf16 logits are upcast
//! to f32 and the loss is returned in f32, as PyTorch's autocast does for this op.

pub(crate) mod cpu;
mod gpu;
#[cfg(test)]
mod gpu_tests;
#[cfg(test)]
mod tests;

use bitgrad_engine::{BackwardOp, DType, Error, FloatElem, GpuStorage, Result, Storage, Tensor};

/// What each row of logits is compared with.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// Class indices, an i64 tensor of shape `[N]` with values in `0..K`.
    Hard(&'a Tensor),
    /// Target probabilities of shape `[N, K]` (for mixup / cutmix), in the logits' dtype.
    Soft(&'a Tensor),
}

/// The target of one row, as the kernels see it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rows<'a, T> {
    Hard(&'a [usize]),
    Soft(&'a [T]),
}

/// Softmax cross-entropy, mean over the batch; see the module docs. Returns a 0-d tensor.
///
/// ```
/// use bitgrad_engine::{Device, Tensor};
/// use bitgrad_ops::softmax_xent::{cross_entropy, Target};
/// # fn main() -> bitgrad_engine::Result<()> {
/// let logits = Tensor::from_vec(vec![0.0f64, 0.0, 0.0, 0.0], [1, 4], Device::Cpu)?;
/// let labels = Tensor::from_vec(vec![2i64], [1], Device::Cpu)?;
/// let loss = cross_entropy(&logits, Target::Hard(&labels), 0.0)?;
/// assert!((loss.to_scalar()? - 4f64.ln()).abs() < 1e-12);  // uniform over 4 classes
/// # Ok(()) }
/// ```
pub fn cross_entropy(logits: &Tensor, target: Target, label_smoothing: f64) -> Result<Tensor> {
    const OP: &str = "cross_entropy";
    if logits.rank() != 2 || logits.dims()[0] == 0 || logits.dims()[1] == 0 {
        return Err(Error::invalid(OP, format!("expected logits [N, K] with N, K ≥ 1, got shape {}", logits.shape())));
    }
    if !(0.0..=1.0).contains(&label_smoothing) {
        return Err(Error::invalid(OP, format!("label_smoothing must be in [0, 1], got {label_smoothing}")));
    }
    let (n, k) = (logits.dims()[0], logits.dims()[1]);
    match logits.dtype() {
        DType::F32 | DType::F64 => {}
        DType::F16 | DType::BF16 => {
            let up = logits.to_dtype(DType::F32)?;
            return match target {
                Target::Soft(t) if t.dtype() == logits.dtype() => {
                    cross_entropy(&up, Target::Soft(&t.to_dtype(DType::F32)?), label_smoothing)
                }
                _ => cross_entropy(&up, target, label_smoothing),
            };
        }
        d => return Err(Error::UnsupportedDType { op: OP, dtype: d }),
    }
    let eps = label_smoothing;
    let logits_c = logits.contiguous()?.detach();
    let gpu = logits.device().is_gpu();
    match target {
        Target::Hard(labels) if gpu => {
            // Validated on the host (as on the CPU: the same errors), then uploaded as i64.
            let labels = check_labels(labels, n, k)?;
            let dev = Tensor::from_vec(labels.iter().map(|&y| y as i64).collect(), [n], logits.device())?;
            let (loss, lse) = gpu::forward(&logits_c, Some(&dev), None, eps)?;
            let op =
                XentBackward { logits: logits_c, target: None, labels, lse: Lse::Gpu { lse, labels: Some(dev) }, eps };
            Ok(loss.record(&[logits], op))
        }
        Target::Hard(labels) => {
            let labels = check_labels(labels, n, k)?;
            let (loss, lse) = forward(&logits_c, None, &labels, eps)?;
            let op = XentBackward { logits: logits_c, target: None, labels, lse: Lse::Cpu(lse), eps };
            Ok(scalar(loss, logits.dtype())?.record(&[logits], op))
        }
        Target::Soft(t) => {
            if t.dims() != [n, k] {
                return Err(Error::ShapeMismatch { op: OP, lhs: logits.shape().clone(), rhs: t.shape().clone() });
            }
            if t.dtype() != logits.dtype() {
                return Err(Error::DTypeMismatch { op: OP, lhs: logits.dtype(), rhs: t.dtype() });
            }
            if t.device() != logits.device() {
                return Err(Error::DeviceMismatch { op: OP, lhs: logits.device(), rhs: t.device() });
            }
            let t_c = t.contiguous()?.detach();
            let (loss, lse) = if gpu {
                let (loss, lse) = gpu::forward(&logits_c, None, Some(&t_c), eps)?;
                (loss, Lse::Gpu { lse, labels: None })
            } else {
                let (loss, lse) = forward(&logits_c, Some(&t_c), &[], eps)?;
                (scalar(loss, logits.dtype())?, Lse::Cpu(lse))
            };
            let op = XentBackward { logits: logits_c, target: Some(t_c), labels: Vec::new(), lse, eps };
            Ok(loss.record(&[logits, t], op))
        }
    }
}

/// The labels as indices, or an error naming the first bad one.
fn check_labels(labels: &Tensor, n: usize, k: usize) -> Result<Vec<usize>> {
    if labels.dtype() != DType::I64 {
        return Err(Error::invalid("cross_entropy", format!("hard labels must be i64, got {}", labels.dtype())));
    }
    if labels.dims() != [n] {
        return Err(Error::invalid(
            "cross_entropy",
            format!("expected labels of shape [{n}] for logits [{n}, {k}], got shape {}", labels.shape()),
        ));
    }
    labels
        .to_vec::<i64>()?
        .iter()
        .enumerate()
        .map(|(i, &y)| {
            if (0..k as i64).contains(&y) {
                Ok(y as usize)
            } else {
                Err(Error::invalid(
                    "cross_entropy",
                    format!("label {y} (row {i}) is out of range for K = {k} classes (expected 0..{k})"),
                ))
            }
        })
        .collect()
}

fn scalar(v: f64, dtype: DType) -> Result<Tensor> {
    Tensor::from_f64_vec(vec![v], (), dtype, bitgrad_engine::Device::Cpu)
}

/// The mean loss and the per-row log-sum-exp, for contiguous f32/f64 `logits` and either `labels`
/// or a contiguous soft target of the same dtype.
fn forward(logits: &Tensor, soft: Option<&Tensor>, labels: &[usize], eps: f64) -> Result<(f64, Vec<f64>)> {
    fn typed<T: FloatElem>(x: &Tensor, soft: Option<&Tensor>, labels: &[usize], eps: f64) -> Result<(f64, Vec<f64>)> {
        let k = x.dims()[1];
        x.with_cpu_slice(|x: &[T]| match soft {
            None => Ok(cpu::forward(x, k, Rows::Hard(labels), eps)),
            Some(t) => t.with_cpu_slice(|t: &[T]| cpu::forward(x, k, Rows::Soft(t), eps)),
        })?
    }
    match logits.dtype() {
        DType::F32 => typed::<f32>(logits, soft, labels, eps),
        _ => typed::<f64>(logits, soft, labels, eps),
    }
}

/// The per-row log-sum-exp saved by the forward: host values, or an f64 device array together
/// with the device copy of the hard labels (`None` for soft targets).
enum Lse {
    Cpu(Vec<f64>),
    Gpu { lse: GpuStorage, labels: Option<Tensor> },
}

struct XentBackward {
    /// The logits (contiguous) and, for soft targets, the target (contiguous).
    logits: Tensor,
    target: Option<Tensor>,
    /// Hard labels (empty for soft targets).
    labels: Vec<usize>,
    /// Per-row log-sum-exp from the forward, where the forward ran.
    lse: Lse,
    eps: f64,
}

impl XentBackward {
    fn grads<T: FloatElem>(&self, lse: &[f64], scale: f64, want_target: bool) -> Result<(Tensor, Option<Tensor>)> {
        let k = self.logits.dims()[1];
        let shape = self.logits.shape();
        let wrap = |v: Vec<T>| Tensor::from_storage(Storage::Cpu(T::into_storage(v)), shape);
        self.logits.with_cpu_slice(|x: &[T]| -> Result<(Tensor, Option<Tensor>)> {
            match &self.target {
                None => Ok((wrap(cpu::backward(x, k, lse, Rows::Hard(&self.labels), self.eps, scale)), None)),
                Some(t) => t.with_cpu_slice(|t: &[T]| {
                    let gx = wrap(cpu::backward(x, k, lse, Rows::Soft(t), self.eps, scale));
                    let gt = want_target.then(|| wrap(cpu::target_grad(x, k, lse, self.eps, scale)));
                    (gx, gt)
                }),
            }
        })?
    }
}

impl BackwardOp for XentBackward {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }

    fn backward(&self, inputs: &[Tensor], _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let want_target = inputs.get(1).is_some_and(|t| t.requires_grad());
        let (gx, gt) = match &self.lse {
            Lse::Gpu { lse, labels } => {
                gpu::backward(g, &self.logits, labels.as_ref(), self.target.as_ref(), lse, self.eps, want_target)?
            }
            Lse::Cpu(lse) => {
                let scale = g.to_scalar()? / lse.len() as f64;
                match self.logits.dtype() {
                    DType::F32 => self.grads::<f32>(lse, scale, want_target)?,
                    _ => self.grads::<f64>(lse, scale, want_target)?,
                }
            }
        };
        Ok(if inputs.len() == 2 { vec![Some(gx), gt] } else { vec![Some(gx)] })
    }
}
