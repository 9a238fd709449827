//! 2-d pooling over the last two axes: `max_pool2d`, `avg_pool2d`, `global_avg_pool`.
//!
//! Shapes: `x` is `[.., H, W]` (NCHW activations, or any rank ≥ 2; every leading axis is a batch of
//! independent planes). With kernel `k`, stride `s` and padding `p` per axis, the output has
//! `⌊(H + 2p − k) / s⌋ + 1` rows (floor mode, as PyTorch's default `ceil_mode=False`), and likewise
//! columns. As in PyTorch, `p ≤ k / 2` is required (so that every window holds at least one real
//! element), and an output size below 1 is an error.
//!
//! **Max pool.** Padding is −∞: padded positions never win, so `max_pool2d(x, 3, 2, 1)` is *not*
//! `max_pool2d(pad2d(x, 1, 0.0), 3, 2, 0)` when `x` has negative values at the border — BiT's stem
//! uses the second form (bit-spec §1.3; the test `bit_stem_zero_pad_differs_from_pool_padding`
//! shows the difference). The forward scans each window row by row and keeps the *first* maximum
//! (a later element must be strictly greater; a NaN always wins, as PyTorch's CPU kernel does), and
//! saves that argmax position. Backward routes each output gradient to its argmax:
//! `gx[argmax(o)] += g[o]` (windows overlap when `s < k`, so one input can collect several).
//!
//! **Average pool.** `y[o] = Σ_window x / d` where the window is clipped to the input and the
//! divisor `d` is, as in PyTorch, the size of the window clipped to the *padded* input when
//! `count_include_pad` (in floor mode that is always `kh·kw`), or the number of real elements
//! otherwise. Backward spreads `g[o] / d` over the same real elements.
//!
//! **Global average pool.** `[.., H, W] → [..]` (NCHW → `[N, C]`), the mean of each plane (summed
//! in f64). Backward: `gx[.., i, j] = g[..] / (H·W)`.
//!
//! Dtypes: f32 and f64 kernels; f16/bf16 are pooled in f32 and rounded back once (differentiably,
//! through the engine's cast); integer dtypes are an `UnsupportedDType` error.

pub(crate) mod cpu;
mod gpu;
#[cfg(test)]
mod gpu_tests;
mod max_avx2;
#[cfg(test)]
mod tests;

use crate::format;
use gpu::Argmax;

use bitgrad_engine::{BackwardOp, CpuElement, CpuStorage, DType, Error, FloatElem, Result, Storage, Tensor};

/// The geometry of one 2-d pooling: input plane, window, stride, padding and output plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolGeom {
    /// Product of the leading axes (N·C for NCHW).
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub out_h: usize,
    pub out_w: usize,
}

impl PoolGeom {
    /// Checks the arguments as PyTorch does and computes the output size (floor mode).
    fn new(op: &'static str, x: &Tensor, kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2]) -> Result<Self> {
        let r = x.rank();
        if r < 2 {
            return Err(Error::invalid(op, format!("needs at least 2 axes [.., H, W], got shape {}", x.shape())));
        }
        if kernel.contains(&0) || stride.contains(&0) {
            return Err(Error::invalid(
                op,
                format!("kernel {kernel:?} and stride {stride:?} must be positive (input shape {})", x.shape()),
            ));
        }
        for a in 0..2 {
            if padding[a] > kernel[a] / 2 {
                return Err(Error::invalid(
                    op,
                    format!(
                        "pad should be at most half of kernel size, but got padding {padding:?} for kernel {kernel:?}"
                    ),
                ));
            }
        }
        let (h, w) = (x.dims()[r - 2], x.dims()[r - 1]);
        let out = |n: usize, a: usize| {
            n.checked_add(2 * padding[a]).and_then(|n| n.checked_sub(kernel[a])).map(|span| span / stride[a] + 1)
        };
        let (Some(out_h), Some(out_w)) = (out(h, 0), out(w, 1)) else {
            return Err(Error::invalid(
                op,
                format!(
                    "input of shape {} is smaller than kernel {kernel:?} with padding {padding:?}: output size is too small",
                    x.shape()
                ),
            ));
        };
        Ok(PoolGeom { planes: x.dims()[..r - 2].iter().product(), h, w, kernel, stride, padding, out_h, out_w })
    }

    fn out_dims(&self, x: &Tensor) -> Vec<usize> {
        let r = x.rank();
        let mut d = x.dims().to_vec();
        d[r - 2] = self.out_h;
        d[r - 1] = self.out_w;
        d
    }
}

/// Which float kernel a tensor runs: f32/f64 run directly, f16/bf16 in f32, others are errors.
enum Route {
    Direct,
    ViaF32,
}

fn route(x: &Tensor, op: &'static str) -> Result<Route> {
    match x.dtype() {
        DType::F32 | DType::F64 => Ok(Route::Direct),
        DType::F16 | DType::BF16 => Ok(Route::ViaF32),
        d => Err(Error::UnsupportedDType { op, dtype: d }),
    }
}

/// Runs `f::<T>` on the contiguous f32 or f64 data of `x`.
macro_rules! dispatch {
    ($x:expr, $op:expr, |$s:ident: $T:ident| $body:expr) => {{
        let xc = $x.contiguous()?;
        match xc.dtype() {
            DType::F32 => xc.with_cpu_slice(|$s: &[f32]| {
                type $T = f32;
                $body
            })?,
            DType::F64 => xc.with_cpu_slice(|$s: &[f64]| {
                type $T = f64;
                $body
            })?,
            d => return Err(Error::UnsupportedDType { op: $op, dtype: d }),
        }
    }};
}

fn wrap<T: FloatElem>(v: Vec<T>, dims: impl Into<bitgrad_engine::Shape>) -> Tensor {
    Tensor::from_storage(Storage::Cpu(T::into_storage(v)), dims)
}

/// Max pooling with −∞ padding (padded positions never win). See the module docs.
///
/// ```
/// use bitgrad_engine::{Device, Tensor};
/// # fn main() -> bitgrad_engine::Result<()> {
/// let x = Tensor::from_vec(vec![1.0f32, -2.0, 3.0, -4.0], [1, 1, 2, 2], Device::Cpu)?;
/// let y = bitgrad_ops::pool::max_pool2d(&x, [2, 2], [1, 1], [1, 1])?;
/// assert_eq!(y.to_vec::<f32>()?, vec![1.0, 1.0, -2.0, 3.0, 3.0, -2.0, 3.0, 3.0, -4.0]);
/// # Ok(()) }
/// ```
pub fn max_pool2d(x: &Tensor, kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2]) -> Result<Tensor> {
    // A channels-last input runs through the NCHW kernels, converted once here (crate::format).
    if format::is_channels_last_input(x) {
        return format::nchw_boundary(x, |x| max_pool2d(x, kernel, stride, padding));
    }
    const OP: &str = "max_pool2d";
    let geom = PoolGeom::new(OP, x, kernel, stride, padding)?;
    if let Route::ViaF32 = route(x, OP)? {
        return max_pool2d(&x.to_dtype(DType::F32)?, kernel, stride, padding)?.to_dtype(x.dtype());
    }
    if geom.h * geom.w > u32::MAX as usize {
        return Err(Error::invalid(OP, format!("planes of {}×{} elements are too large", geom.h, geom.w)));
    }
    let (out, argmax) = if x.device().is_gpu() {
        let (y, idx) = gpu::max_forward(x, &geom)?;
        (Storage::Gpu(y), Argmax::Gpu(idx))
    } else {
        dispatch!(x, OP, |s: T| {
            let (y, idx) = cpu::max_forward::<T>(s, &geom);
            (Storage::Cpu(T::into_storage(y)), Argmax::Cpu(idx))
        })
    };
    Ok(Tensor::from_storage(out, geom.out_dims(x)).record(&[x], MaxPoolBackward { geom, argmax }))
}

/// Average pooling; see the module docs for the divisor (`count_include_pad`).
pub fn avg_pool2d(
    x: &Tensor,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    count_include_pad: bool,
) -> Result<Tensor> {
    // A channels-last input runs through the NCHW kernels, converted once here (crate::format).
    if format::is_channels_last_input(x) {
        return format::nchw_boundary(x, |x| avg_pool2d(x, kernel, stride, padding, count_include_pad));
    }
    const OP: &str = "avg_pool2d";
    let geom = PoolGeom::new(OP, x, kernel, stride, padding)?;
    if let Route::ViaF32 = route(x, OP)? {
        return avg_pool2d(&x.to_dtype(DType::F32)?, kernel, stride, padding, count_include_pad)?.to_dtype(x.dtype());
    }
    let out = if x.device().is_gpu() {
        Storage::Gpu(gpu::avg_forward(x, &geom, count_include_pad)?)
    } else {
        let out: CpuStorage =
            dispatch!(x, OP, |s: T| T::into_storage(cpu::avg_forward::<T>(s, &geom, count_include_pad)));
        Storage::Cpu(out)
    };
    Ok(Tensor::from_storage(out, geom.out_dims(x)).record(&[x], AvgPoolBackward { geom, count_include_pad }))
}

/// The mean over the last two axes: `[N, C, H, W] → [N, C]` (any rank ≥ 2; `H·W` must be > 0).
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    // A channels-last input runs through the NCHW kernels, converted once here (crate::format).
    if format::is_channels_last_input(x) {
        return format::nchw_boundary(x, global_avg_pool);
    }
    const OP: &str = "global_avg_pool";
    let r = x.rank();
    if r < 2 || x.dims()[r - 2] * x.dims()[r - 1] == 0 {
        return Err(Error::invalid(OP, format!("needs [.., H, W] with H·W > 0, got shape {}", x.shape())));
    }
    if let Route::ViaF32 = route(x, OP)? {
        return global_avg_pool(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype());
    }
    let plane = x.dims()[r - 2] * x.dims()[r - 1];
    let out = if x.device().is_gpu() {
        Storage::Gpu(gpu::plane_means(x, plane)?)
    } else {
        let out: CpuStorage = dispatch!(x, OP, |s: T| T::into_storage(cpu::plane_means::<T>(s, plane)));
        Storage::Cpu(out)
    };
    Ok(Tensor::from_storage(out, &x.dims()[..r - 2]).record(&[x], GlobalAvgPoolBackward { plane }))
}

struct MaxPoolBackward {
    geom: PoolGeom,
    /// Per output element, the position `i·W + j` of its maximum within its input plane (on the
    /// device the forward ran on).
    argmax: Argmax,
}

impl BackwardOp for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "max_pool2d"
    }
    fn backward(&self, inputs: &[Tensor], _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        if g.device().is_gpu() {
            let gx = gpu::max_backward(g, &self.geom, self.argmax.gpu()?)?;
            return Ok(vec![Some(Tensor::from_storage(Storage::Gpu(gx), inputs[0].shape()))]);
        }
        let argmax = self.argmax.cpu()?;
        let gx = dispatch!(g, "max_pool2d backward", |s: T| wrap(
            cpu::max_backward::<T>(s, &self.geom, argmax),
            inputs[0].shape()
        ));
        Ok(vec![Some(gx)])
    }
}

struct AvgPoolBackward {
    geom: PoolGeom,
    count_include_pad: bool,
}

impl BackwardOp for AvgPoolBackward {
    fn name(&self) -> &'static str {
        "avg_pool2d"
    }
    fn backward(&self, inputs: &[Tensor], _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        if g.device().is_gpu() {
            let gx = gpu::avg_backward(g, &self.geom, self.count_include_pad)?;
            return Ok(vec![Some(Tensor::from_storage(Storage::Gpu(gx), inputs[0].shape()))]);
        }
        let gx = dispatch!(g, "avg_pool2d backward", |s: T| wrap(
            cpu::avg_backward::<T>(s, &self.geom, self.count_include_pad),
            inputs[0].shape()
        ));
        Ok(vec![Some(gx)])
    }
}

struct GlobalAvgPoolBackward {
    plane: usize,
}

impl BackwardOp for GlobalAvgPoolBackward {
    fn name(&self) -> &'static str {
        "global_avg_pool"
    }
    fn backward(&self, inputs: &[Tensor], _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        if g.device().is_gpu() {
            let gx = gpu::spread_means(g, self.plane)?;
            return Ok(vec![Some(Tensor::from_storage(Storage::Gpu(gx), inputs[0].shape()))]);
        }
        let gx = dispatch!(g, "global_avg_pool backward", |s: T| wrap(
            cpu::spread_means::<T>(s, self.plane),
            inputs[0].shape()
        ));
        Ok(vec![Some(gx)])
    }
}
