//! The affine layer: `linear(x, w, b) = x · Wᵀ + b`, with `W` of shape `[out, in]` (PyTorch's
//! `nn.Linear` layout) and `x` of shape `[.., in]`.
//!
//! There is no kernel of its own: leading axes of `x` are folded into one (a view when `x` is
//! contiguous), the product is one GEMM through the engine's `matmul` with `w.t()` — a transposed
//! *view*, which gemm reads through its strides, so `W` is never copied — and the bias is a
//! broadcast add. Autograd composes the engine's rules: `∂x = g·W`, `∂W = gᵀ·x` (summed over the
//! folded batch by the GEMM itself), `∂b = Σ_batch g`.
//!
//! Dtypes: whatever the engine's matmul accepts; `x`, `w` and `b` must share it.

#[cfg(test)]
mod tests;

use bitgrad_engine::{Error, Result, Tensor};

/// `x · Wᵀ + b` for `x` `[.., in]`, `w` `[out, in]` and an optional `b` `[out]`; the result is
/// `[.., out]`.
///
/// ```
/// use bitgrad_engine::{Device, Tensor};
/// # fn main() -> bitgrad_engine::Result<()> {
/// let x = Tensor::from_vec(vec![1.0f32, 2.0], [1, 2], Device::Cpu)?;
/// let w = Tensor::from_vec(vec![1.0f32, 0.0, 1.0, 1.0, 0.0, -1.0], [3, 2], Device::Cpu)?;
/// let b = Tensor::from_vec(vec![0.5f32, 0.5, 0.5], [3], Device::Cpu)?;
/// let y = bitgrad_ops::linear::linear(&x, &w, Some(&b))?;
/// assert_eq!(y.to_vec::<f32>()?, vec![1.5, 3.5, -1.5]);
/// # Ok(()) }
/// ```
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    check(x, w, b)?;
    let (inp, out) = (w.dims()[1], w.dims()[0]);
    let lead = &x.dims()[..x.rank() - 1];
    let rows: usize = lead.iter().product();
    let y = x.reshape([rows, inp])?.matmul(&w.t()?)?;
    let y = match b {
        Some(b) => y.add(b)?,
        None => y,
    };
    y.reshape([lead, &[out]].concat())
}

fn check(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<()> {
    let shapes = || {
        let b = b.map_or("none".to_string(), |b| b.shape().to_string());
        format!("x {}, weight {}, bias {b}", x.shape(), w.shape())
    };
    if w.rank() != 2 || x.rank() == 0 || x.dims()[x.rank() - 1] != w.dims()[1] {
        return Err(Error::invalid(
            "linear",
            format!("expected x [.., in] and weight [out, in] with the same `in`, got {}", shapes()),
        ));
    }
    if let Some(b) = b {
        if b.dims() != [w.dims()[0]] {
            return Err(Error::invalid("linear", format!("expected bias [out] = [{}], got {}", w.dims()[0], shapes())));
        }
    }
    for t in [Some(w), b].into_iter().flatten() {
        if t.dtype() != x.dtype() {
            return Err(Error::DTypeMismatch { op: "linear", lhs: x.dtype(), rhs: t.dtype() });
        }
        if t.device() != x.device() {
            return Err(Error::DeviceMismatch { op: "linear", lhs: x.device(), rhs: t.device() });
        }
    }
    Ok(())
}
