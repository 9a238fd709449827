//! 2-d convolution (cross-correlation, as in every deep-learning framework), with gradients for
//! the input, the weight and the bias.
//!
//! # The math
//!
//! Input `x[B, C, H, W]`, weight `w[O, C/G, kh, kw]` (G groups: output channel `o` sees only the
//! input channels of its group `g = o / (O/G)`), optional bias `b[O]`:
//!
//! ```text
//! y[n, o, oh, ow] = b[o] + Σ_{c, i, j} w[o, c, i, j] · x[n, g·C/G + c, oh·sh + i·dh − pt, ow·sw + j·dw − pl]
//! ```
//!
//! with `x = 0` outside the image (zero padding, possibly different on each side), and output
//! size `OH = ⌊(H + pt + pb − dh·(kh − 1) − 1) / sh⌋ + 1` (likewise `OW`).
//!
//! Written with the column matrix `cols[(c, i, j), (n, oh, ow)]` = the input value that weight
//! `(c, i, j)` meets at output pixel `(n, oh, ow)` (im2col), each group's convolution is one
//! matrix product `Y_g = W_g · cols_g`, and the gradients are the two other products of the same
//! three matrices:
//!
//! * `dW_g = dY_g · cols_gᵀ` (summed over the batch),
//! * `dcols_g = W_gᵀ · dY_g`, and `dx = col2im(dcols)`: im2col copies each pixel into several
//!   columns, so its adjoint adds every column entry back onto the pixel it came from (entries
//!   that came from the padding are dropped),
//! * `db[o] = Σ_{n, oh, ow} dY[n, o, oh, ow]`.
//!
//! One [`BackwardOp`] computes all three (the weight gradient in one pass over the batch, the
//! input gradient in another), and skips whichever input does not require a gradient (the
//! network's input image, typically).
//!
//! # Implementation (CPU)
//!
//! See `cpu.rs`: batch chunks, one GEMM per group through the `gemm` crate, no im2col for 1×1
//! stride-1 unpadded convolutions (the image is the column matrix), a column workspace of at
//! most 32 MiB per chunk (or one image's columns, if larger), chunks side by side on the threads
//! when there are enough of them and gemm's own threads otherwise, parallel im2col/col2im, and
//! results that do not depend on the number of threads. The weight gradient accumulates over the
//! batch in a single `[O, C/G·kh·kw]` buffer. Benchmarks against PyTorch: `examples/bench_conv.rs`
//! and the conv2d section of `docs/benchmarks.md`.
//!
//! # Implementation (GPU: Cuda and Emu)
//!
//! See `gpu.rs` and `kernels/cuda/conv2d.cu`: implicit-GEMM kernels (64×64 tiles, the column
//! matrix gathered into shared memory slice by slice, never stored) for the forward, the input
//! gradient and the weight gradient (its reduction over the batch split over blocks and summed
//! in a fixed order when the result has few tiles); 1×1 stride-1 unpadded convolutions through
//! the runtime's GEMM (f32/f64; the half dtypes run those through the tiled kernels too). Only
//! `groups = 1` on GPU devices (an error otherwise).
//!
//! # Memory formats
//!
//! `x` may be NCHW or channels-last (NHWC strides, `bitgrad_engine::MemoryFormat`); the output
//! is in `x`'s format. Both kernels read NCHW/OIHW, so a channels-last input (or weight) is
//! converted once at this boundary and the output converted back (`crate::format`); each
//! gradient comes back in its tensor's format.
//!
//! # Dtypes
//!
//! f32 and f64 run natively. On the CPU, f16 and bf16 are converted to f32 at the boundary
//! (recorded casts, so gradients flow back in the input dtype) and the output is rounded once to
//! the input dtype. On GPU devices they run natively: the kernels load half operands, accumulate
//! in f32 and round each output (y, dx, dW) once, so the two devices agree to within one rounding
//! of the half dtype (the f32 sums differ only in their order). Integer dtypes are an error.

pub(crate) mod bf16_tiles;
mod columns;
pub(crate) mod cpu;
pub(crate) mod direct;
mod gpu;
mod matmul;
pub(crate) mod params;
pub(crate) mod tc;
mod workspace;

#[cfg(test)]
mod add_tests;
#[cfg(test)]
mod gpu_tests;
#[cfg(test)]
mod tc_gpu_tests;
#[cfg(test)]
mod tests;

pub use direct::fma_peak_gflops;
pub use params::{Conv2dParams, Padding};
pub use tc::{tc_conv2d_dgrad, tc_conv2d_fprop, tc_conv2d_wgrad};

use crate::format;
use bitgrad_engine::{BackwardOp, DType, Error, FloatElem, MemoryFormat, Result, Storage, Tensor};
use params::Geom;

/// `y = conv2d(x, w) + bias`: `x` is `[B, C, H, W]`, `w` is `[O, C / groups, kh, kw]`, `bias` is
/// `[O]`; the result is `[B, O, OH, OW]` (see the module docs for the formula and output size).
///
/// Errors (never panics) on: ranks other than 4, channel counts that do not match the weight or
/// are not divisible by `groups`, a bias that is not `[O]`, zero stride, dilation or groups, a
/// (dilated) kernel larger than the padded input, mixed dtypes or devices, integer dtypes.
pub fn conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, p: &Conv2dParams) -> Result<Tensor> {
    conv2d_start(x, w, bias, None, p)
}

/// `conv2d(x, w, bias) + residual` as one op, the residual `[B, O, OH, OW]` being the
/// convolution's initial accumulator (a fusion: the sum is written once, and no separate
/// output is made for the convolution; `crate::fusion`). Its gradient is the output gradient
/// itself, shared without a copy.
///
/// Fused for f32 and f64 on the CPU, in any memory format (a channels-last input is converted
/// at the boundary as in `conv2d`; a residual in another layout than NCHW is read through one
/// contiguous copy). On GPU devices, for f16/bf16 on the CPU, and for a residual of another
/// shape, dtype or device (which the add broadcasts or refuses), it is
/// `conv2d(..)?.add(residual)`, two recorded ops. Fused and unfused sums differ only in
/// rounding: the fused one adds the products onto the residual, the unfused one adds the
/// residual to the rounded convolution.
pub fn conv2d_add(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    p: &Conv2dParams,
    residual: &Tensor,
) -> Result<Tensor> {
    let fusable = matches!(x.dtype(), DType::F32 | DType::F64)
        && !x.device().is_gpu()
        && residual.dtype() == x.dtype()
        && residual.device() == x.device()
        && x.rank() == 4
        && w.rank() == 4
        && Geom::new(x.dims(), w.dims(), p).is_ok_and(|g| residual.dims() == [g.batch, g.o, g.oh, g.ow]);
    if !fusable {
        return conv2d(x, w, bias, p)?.add(residual);
    }
    conv2d_start(x, w, bias, Some(residual), p)
}

/// [`conv2d`], on top of `residual` when given ([`conv2d_add`] checked that it fits).
fn conv2d_start(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    p: &Conv2dParams,
) -> Result<Tensor> {
    // The kernels (CPU and GPU) read an NCHW input and an OIHW weight. A channels-last input or
    // weight is converted once here, at the boundary (crate::format), the output is returned in
    // the input's format, and the gradients come back in each tensor's own format. A model
    // that runs channels-last keeps its weights OIHW, so only the activations are converted.
    if format::is_channels_last_input(x) || format::is_channels_last_input(w) {
        let y = conv2d_start(&format::to_nchw(x)?, &format::to_nchw(w)?, bias, residual, p)?;
        return if format::is_channels_last_input(x) { y.to_memory_format(MemoryFormat::ChannelsLast) } else { Ok(y) };
    }
    let geom = check(x, w, bias, p)?;
    match x.dtype() {
        DType::F32 | DType::F64 => {}
        // GPU devices have native half kernels (f32 accumulation, one rounding, as below).
        DType::F16 | DType::BF16 if x.device().is_gpu() => {}
        // (Never with a residual: `conv2d_add` fuses f32 and f64 only.)
        DType::F16 | DType::BF16 => {
            let up = |t: &Tensor| t.to_dtype(DType::F32);
            let b32 = bias.map(up).transpose()?;
            return conv2d(&up(x)?, &up(w)?, b32.as_ref(), p)?.to_dtype(x.dtype());
        }
        dtype => return Err(Error::UnsupportedDType { op: "conv2d", dtype }),
    }
    // The node keeps the contiguous tensors (recorded copies when the caller passed views), so
    // backward reads them without copying again.
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    let bias = bias.map(|b| b.contiguous()).transpose()?;
    // The kernels read the residual row-major (a copy only when it is not).
    let residual_c = residual.map(|r| r.contiguous()).transpose()?;
    let out = match x.dtype() {
        _ if x.device().is_gpu() => gpu::forward(&x, &w, bias.as_ref(), &geom)?,
        DType::F32 => forward::<f32>(&x, &w, bias.as_ref(), residual_c.as_ref(), &geom)?,
        _ => forward::<f64>(&x, &w, bias.as_ref(), residual_c.as_ref(), &geom)?,
    };
    let out = Tensor::from_storage(out, [geom.batch, geom.o, geom.oh, geom.ow]);
    let op = Conv2dBackward { geom, residual: residual.is_some() };
    // The residual is recorded as given (its gradient is the output gradient, whatever its
    // strides), after x, w and the bias.
    let mut inputs = vec![&x, &w];
    inputs.extend(bias.as_ref());
    inputs.extend(residual);
    Ok(out.record(&inputs, op))
}

fn forward<T: FloatElem>(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    geom: &Geom,
) -> Result<Storage> {
    let out = with_slice::<T, _>(bias, |bias| {
        with_slice::<T, _>(residual, |residual| {
            let start = cpu::Start { bias, residual };
            x.with_cpu_slice::<T, _>(|xs| {
                w.with_cpu_slice::<T, _>(|ws| cpu::forward(xs, ws, start, geom, cpu::MAX_COL_BYTES))
            })
        })
    })????;
    Ok(Storage::Cpu(T::into_storage(out)))
}

/// `f` on the CPU slice of `t`, or on `None` without a tensor.
fn with_slice<T: FloatElem, R>(t: Option<&Tensor>, f: impl FnOnce(Option<&[T]>) -> R) -> Result<R> {
    match t {
        Some(t) => t.with_cpu_slice::<T, _>(|v| f(Some(v))),
        None => Ok(f(None)),
    }
}

/// Shapes, dtypes and devices of a call, checked before any work.
pub(crate) fn check(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, p: &Conv2dParams) -> Result<Geom> {
    if x.rank() != 4 {
        return Err(Error::invalid("conv2d", format!("input must be 4-d [B, C, H, W], got shape {}", x.shape())));
    }
    if w.rank() != 4 {
        return Err(Error::invalid(
            "conv2d",
            format!("weight must be 4-d [O, C/groups, kh, kw], got shape {}", w.shape()),
        ));
    }
    if w.dtype() != x.dtype() {
        return Err(Error::DTypeMismatch { op: "conv2d", lhs: x.dtype(), rhs: w.dtype() });
    }
    if w.device() != x.device() {
        return Err(Error::DeviceMismatch { op: "conv2d", lhs: x.device(), rhs: w.device() });
    }
    if !x.dtype().is_float() {
        return Err(Error::UnsupportedDType { op: "conv2d", dtype: x.dtype() });
    }
    let geom = Geom::new(x.dims(), w.dims(), p)?;
    if let Some(b) = bias {
        if b.dims() != [geom.o] {
            return Err(Error::invalid(
                "conv2d",
                format!(
                    "bias must be [{}] (one per output channel of weight {}), got shape {}",
                    geom.o,
                    w.shape(),
                    b.shape()
                ),
            ));
        }
        if b.dtype() != x.dtype() {
            return Err(Error::DTypeMismatch { op: "conv2d", lhs: x.dtype(), rhs: b.dtype() });
        }
        if b.device() != x.device() {
            return Err(Error::DeviceMismatch { op: "conv2d", lhs: x.device(), rhs: b.device() });
        }
    }
    Ok(geom)
}

/// The backward of [`conv2d`]: inputs `[x, w]` or `[x, w, bias]`, all contiguous, then the
/// residual of [`conv2d_add`] when `residual`.
struct Conv2dBackward {
    geom: Geom,
    residual: bool,
}

impl BackwardOp for Conv2dBackward {
    fn name(&self) -> &'static str {
        "conv2d"
    }

    /// `dx = col2im(Wᵀ·dY)`, `dW = Σ dY·colsᵀ`, `db = Σ dY` (see the module docs), each only when
    /// that input requires a gradient; the residual's is `dY` itself.
    fn backward(&self, inputs: &[Tensor], _y: &Tensor, gy_in: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (inputs, residual) = if self.residual { inputs.split_at(inputs.len() - 1) } else { (inputs, &[][..]) };
        let gy = gy_in.contiguous()?;
        let need =
            [inputs[0].requires_grad(), inputs[1].requires_grad(), inputs.get(2).is_some_and(|b| b.requires_grad())];
        if gy.device().is_gpu() {
            return gpu::backward(inputs, &gy, &self.geom, need);
        }
        let grads = match gy.dtype() {
            DType::F32 => backward::<f32>(inputs, &gy, &self.geom, need)?,
            DType::F64 => backward::<f64>(inputs, &gy, &self.geom, need)?,
            dtype => return Err(Error::UnsupportedDType { op: "conv2d backward", dtype }),
        };
        let g = &self.geom;
        let wrap = |v: Option<Storage>, shape: Vec<usize>| v.map(|v| Tensor::from_storage(v, shape));
        let mut out = vec![wrap(grads.dx, vec![g.batch, g.c, g.h, g.w]), wrap(grads.dw, vec![g.o, g.cg(), g.kh, g.kw])];
        if inputs.len() == 3 {
            out.push(wrap(grads.db, vec![g.o]));
        }
        if let [r] = residual {
            out.push(r.requires_grad().then(|| gy_in.clone()));
        }
        Ok(out)
    }
}

fn backward<T: FloatElem>(inputs: &[Tensor], gy: &Tensor, geom: &Geom, need: [bool; 3]) -> Result<cpu::Grads<Storage>> {
    let (x, w) = (&inputs[0], &inputs[1]);
    let grads = x.with_cpu_slice::<T, _>(|xs| {
        w.with_cpu_slice::<T, _>(|ws| {
            gy.with_cpu_slice::<T, _>(|gs| cpu::backward(xs, ws, gs, geom, need, cpu::MAX_COL_BYTES))
        })
    })???;
    let st = |v: Option<Vec<T>>| v.map(|v| Storage::Cpu(T::into_storage(v)));
    Ok(cpu::Grads { dx: st(grads.dx), dw: st(grads.dw), db: st(grads.db) })
}
