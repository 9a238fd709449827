//! Gradient checking: autograd's gradients against central finite differences in f64.
//!
//! `check_gradients(f, inputs, opts)` weights the output of `f` with fixed random numbers (so
//! every output element contributes differently, which catches transposed or mis-broadcast
//! gradients that a plain sum would hide), backpropagates, and compares each input element's
//! gradient with `(L(x + ε) − L(x − ε)) / 2ε`. Used by the engine's tests and by the ops crate.

use crate::autograd::{self, no_grad};
use crate::{DType, Error, Result, Rng, Tensor};

/// Tolerances of a gradient check: an element passes when `|analytic − numeric| ≤ atol + rtol·|numeric|`.
#[derive(Debug, Clone, Copy)]
pub struct GradCheck {
    pub eps: f64,
    pub atol: f64,
    pub rtol: f64,
    /// Seed of the random output weights.
    pub seed: u64,
}

impl Default for GradCheck {
    fn default() -> Self {
        GradCheck { eps: 1e-6, atol: 1e-7, rtol: 1e-5, seed: 0 }
    }
}

/// What a passing check measured.
#[derive(Debug, Clone, Copy)]
pub struct GradCheckReport {
    /// Largest |analytic − numeric| over all checked elements.
    pub max_abs_err: f64,
    /// Number of input elements checked.
    pub checked: usize,
}

/// Weighted sum `Σ f(x) ⊙ w` for the fixed weights `w`.
fn weighted(y: &Tensor, w: &Tensor) -> Result<Tensor> {
    y.mul(w)?.sum_all()
}

/// Checks the gradients of `f` at `inputs` (f64 tensors; each becomes a leaf requiring grad).
/// `f` may build views (permute, narrow, …) of its inputs, so non-contiguous paths are covered.
pub fn check_gradients(
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    opts: GradCheck,
) -> Result<GradCheckReport> {
    if let Some(t) = inputs.iter().find(|t| t.dtype() != DType::F64) {
        return Err(Error::invalid("check_gradients", format!("inputs must be f64, got {}", t.dtype())));
    }
    let values: Vec<Vec<f64>> = inputs.iter().map(|t| t.to_vec::<f64>()).collect::<Result<_>>()?;
    let make = |vals: &[Vec<f64>], grad: bool| -> Result<Vec<Tensor>> {
        vals.iter()
            .zip(inputs)
            .map(|(v, t)| Ok(Tensor::from_vec(v.clone(), t.shape(), t.device())?.requires_grad_(grad)))
            .collect()
    };

    // Analytic gradients.
    let leaves = make(&values, true)?;
    let y = f(&leaves)?;
    let w = Tensor::randn(y.shape(), 0.0, 1.0, DType::F64, y.device(), &mut Rng::new(opts.seed))?;
    let loss = weighted(&y, &w)?;
    let store = autograd::grad(&loss, &Tensor::ones_like(&loss)?)?;

    // Numeric gradients, one element at a time.
    let _g = no_grad();
    let mut report = GradCheckReport { max_abs_err: 0.0, checked: 0 };
    for (i, leaf) in leaves.iter().enumerate() {
        let analytic = match store.get(leaf) {
            Some(g) => g.to_vec::<f64>()?,
            None => vec![0.0; leaf.numel()], // no path from this input: the gradient is zero
        };
        for j in 0..values[i].len() {
            let eval = |delta: f64| -> Result<f64> {
                let mut vals = values.clone();
                vals[i][j] += delta;
                weighted(&f(&make(&vals, false)?)?, &w)?.to_scalar()
            };
            let numeric = (eval(opts.eps)? - eval(-opts.eps)?) / (2.0 * opts.eps);
            let err = (analytic[j] - numeric).abs();
            // A NaN anywhere (err or numeric) must fail, not slip through a false comparison.
            let tol = opts.atol + opts.rtol * numeric.abs();
            if err.is_nan() || tol.is_nan() || err > tol {
                return Err(Error::Msg(format!(
                    "gradient check failed for input {i} (shape {}) at element {j}: analytic {} vs numeric {} (|diff| {err:e})",
                    leaf.shape(),
                    analytic[j],
                    numeric
                )));
            }
            report.max_abs_err = report.max_abs_err.max(err);
            report.checked += 1;
        }
    }
    Ok(report)
}
