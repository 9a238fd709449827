//! The convolution of a BiT layer: `conv2d(x, WS(w))` — the raw weight `w` weight-standardized
//! (or used as it is, without WS) and convolved with `x` — as one call, so that the
//! mixed-precision path can keep the master weight f32 while the activations are bf16.
//!
//! * Same dtypes (f32, f64, …): exactly `conv2d(x, weight_std(w, ε))`, the two recorded ops.
//! * **bf16 `x`, f32 `w`** (`--precision bf16`): the weight stays the f32 master; the bf16
//!   weight the convolution reads is made from it on every forward (once per step), and its
//!   gradient comes back to `w` in f32.
//!   - On a GPU device, when the tensor-core kernels take the shape (one group, output channels
//!     a multiple of 8, input channels a multiple of 8 or fewer than 8 — the 3-channel stem is
//!     zero-padded to 8), one autograd node ([`tc`]) runs WS on the f32 weight straight into the
//!     bf16 KRSC copy (`weight_std_bf16`), the implicit-GEMM fprop on the channels-last input,
//!     and in the backward the dgrad (bf16 dx) and the split-K wgrad (f32 dŵ) followed by WS's
//!     backward in f32. x is made channels-last once (a recorded conversion, nothing when it
//!     already is) and viewed as NHWC without a copy; the output is channels-last.
//!   - On the CPU, when it has AMX-BF16 or AVX512-BF16 and the kernels take the shape (one
//!     group, input and output channels multiples of 32), one autograd node ([`cpu_bf16`]) does
//!     the same on AMX tiles or with `vdpbf16ps`: WS in f32, ŵ rounded to bf16 as it is packed,
//!     channels-last implicit-GEMM fprop, dgrad and wgrad with f32 accumulation
//!     (`crate::conv2d::bf16_tiles`), WS's backward in f32.
//!   - Anything else (a CPU with neither, shapes the kernels refuse): f32 arithmetic — `conv2d(x as f32,
//!     weight_std(w))` rounded to bf16, all recorded — so both routes keep the f32 master and
//!     differ only in where bf16 rounding happens.
//!
//! The standardization is BiT's (bit-spec §2.1): per output filter over C·kh·kw, biased
//! variance, ε inside the square root.

#[cfg(test)]
mod add_tests;
mod cpu_bf16;
#[cfg(test)]
mod cpu_bf16_tests;
#[cfg(test)]
mod gpu_tests;
mod tc;

use bitgrad_engine::{DType, Error, Result, Tensor};

use crate::conv2d::params::Geom;
use crate::conv2d::{conv2d, conv2d_add, Conv2dParams};
use crate::weight_std::weight_std;

/// `conv2d(x, WS(w))` (`ws_eps: Some(ε)`) or `conv2d(x, w)` (`None`), without bias; see the
/// module docs for the bf16-activation / f32-weight path.
pub fn std_conv2d(x: &Tensor, w: &Tensor, ws_eps: Option<f64>, p: &Conv2dParams) -> Result<Tensor> {
    run(x, w, ws_eps, p, None)
}

/// `std_conv2d(x, w, ws_eps, p) + residual` with the residual as the convolution's initial
/// accumulator (a fusion: the sum is written once; see `crate::fusion`):
/// * same dtypes: `conv2d_add(x, WS(w))` (fused on the CPU; see `conv2d_add`);
/// * bf16 activations: on the tensor cores (the fprop's residual epilogue), on the CPU's bf16
///   tiles (accumulators started from the residual) and on the f32 fallback (the residual,
///   widened, starts the f32 convolution) — in each, the sum is rounded to bf16 once instead of
///   twice.
///
/// A bf16 residual whose shape or device is not the output's is `std_conv2d(..)?.add(residual)`.
pub fn std_conv2d_add(
    x: &Tensor,
    w: &Tensor,
    ws_eps: Option<f64>,
    p: &Conv2dParams,
    residual: &Tensor,
) -> Result<Tensor> {
    run(x, w, ws_eps, p, Some(residual))
}

fn run(x: &Tensor, w: &Tensor, ws_eps: Option<f64>, p: &Conv2dParams, residual: Option<&Tensor>) -> Result<Tensor> {
    let effective = |w: &Tensor| match ws_eps {
        Some(eps) => weight_std(w, eps),
        None => Ok(w.clone()),
    };
    let unfused = |y: Tensor| match residual {
        Some(r) => y.add(r),
        None => Ok(y),
    };
    if x.dtype() == w.dtype() {
        let w = effective(w)?;
        return match residual {
            Some(r) => conv2d_add(x, &w, None, p, r),
            None => conv2d(x, &w, None, p),
        };
    }
    if x.dtype() != DType::BF16 || w.dtype() != DType::F32 {
        return Err(Error::invalid(
            "std_conv2d",
            format!(
                "input {} with weight {}: the dtypes must match, or be bf16 activations with an f32 master weight",
                x.dtype(),
                w.dtype()
            ),
        ));
    }
    if x.device() != w.device() {
        return Err(Error::DeviceMismatch { op: "std_conv2d", lhs: x.device(), rhs: w.device() });
    }
    // The bf16 nodes take a residual that is exactly one more bf16 term of each output.
    let output_dims =
        |r: &Tensor| Geom::new(x.dims(), w.dims(), p).is_ok_and(|g| r.dims() == [g.batch, g.o, g.oh, g.ow]);
    let fused = residual.filter(|r| r.dtype() == DType::BF16 && r.device() == x.device() && output_dims(r));
    // A residual the node took is in its output already.
    let rest = |y: Tensor| if fused.is_some() { Ok(y) } else { unfused(y) };
    if let Some(plan) = tc::plan(x, w, p) {
        return rest(plan.forward(x, w, ws_eps, fused)?);
    }
    if let Some(plan) = cpu_bf16::plan(x, w, p) {
        return rest(plan.forward(x, w, ws_eps, fused)?);
    }
    // f32 arithmetic, rounded to bf16 once: with the residual as the f32 convolution's
    // initial accumulator when it fits.
    let x32 = x.to_dtype(DType::F32)?;
    match fused {
        Some(r) => conv2d_add(&x32, &effective(w)?, None, p, &r.to_dtype(DType::F32)?)?.to_dtype(DType::BF16),
        None => unfused(conv2d(&x32, &effective(w)?, None, p)?.to_dtype(DType::BF16)?),
    }
}
