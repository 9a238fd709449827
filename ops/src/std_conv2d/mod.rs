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

mod cpu_bf16;
#[cfg(test)]
mod cpu_bf16_tests;
#[cfg(test)]
mod gpu_tests;
mod tc;

use bitgrad_engine::{DType, Error, Result, Tensor};

use crate::conv2d::{conv2d, Conv2dParams};
use crate::weight_std::weight_std;

/// `conv2d(x, WS(w))` (`ws_eps: Some(ε)`) or `conv2d(x, w)` (`None`), without bias; see the
/// module docs for the bf16-activation / f32-weight path.
pub fn std_conv2d(x: &Tensor, w: &Tensor, ws_eps: Option<f64>, p: &Conv2dParams) -> Result<Tensor> {
    let effective = |w: &Tensor| match ws_eps {
        Some(eps) => weight_std(w, eps),
        None => Ok(w.clone()),
    };
    if x.dtype() == w.dtype() {
        return conv2d(x, &effective(w)?, None, p);
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
    if let Some(run) = tc::plan(x, w, p) {
        return run.forward(x, w, ws_eps);
    }
    if let Some(run) = cpu_bf16::plan(x, w, p) {
        return run.forward(x, w, ws_eps);
    }
    conv2d(&x.to_dtype(DType::F32)?, &effective(w)?, None, p)?.to_dtype(DType::BF16)
}
