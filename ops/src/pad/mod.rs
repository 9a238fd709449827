//! Constant padding of the last two axes: `pad2d(x, [top, bottom, left, right], value)`.
//!
//! For `x` of shape `[.., H, W]` (NCHW activations, or any rank ≥ 2) the result has shape
//! `[.., top + H + bottom, left + W + right]`: the input sits in the interior, every other element
//! is `value`. BiT needs it for the stem, where the conv output is zero-padded by 1 *before* a
//! VALID 3×3/2 max-pool (bit-spec §1.3) — which is not the same as pool padding (see
//! [`crate::pool`]).
//!
//! Backward: the padded border does not depend on `x`, and the interior is a copy of `x`, so
//! `∂L/∂x` is the interior slice of the output gradient:
//! `gx[.., i, j] = g[.., top + i, left + j]`.
//!
//! Dtypes: padding moves data and does no arithmetic, so every dtype is supported: f32, f64, i64
//! and u8 directly (the constant converted with the dtype's `from_f64`, truncated for integers),
//! f16/bf16 through an exact f32 round trip.

pub(crate) mod cpu;
mod gpu;
#[cfg(test)]
mod gpu_tests;
#[cfg(test)]
mod tests;

use bitgrad_engine::{BackwardOp, CpuElement, CpuStorage, DType, Error, Result, Storage, Tensor};

/// `[top, bottom, left, right]`, in elements.
pub type Pads = [usize; 4];

/// The geometry shared by the forward and backward kernels.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PadGeom {
    /// Product of the leading axes (N·C for NCHW).
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub pads: Pads,
}

impl PadGeom {
    pub fn out_h(&self) -> usize {
        self.pads[0] + self.h + self.pads[1]
    }
    pub fn out_w(&self) -> usize {
        self.pads[2] + self.w + self.pads[3]
    }
}

/// Pads the last two axes of `x` with the constant `value`: `pads = [top, bottom, left, right]`.
///
/// ```
/// use bitgrad_engine::{Device, Tensor};
/// # fn main() -> bitgrad_engine::Result<()> {
/// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [1, 1, 2, 2], Device::Cpu)?;
/// let y = bitgrad_ops::pad::pad2d(&x, [1, 0, 0, 1], 0.0)?;
/// assert_eq!(y.dims(), &[1, 1, 3, 3]);
/// assert_eq!(y.to_vec::<f32>()?, vec![0.0, 0.0, 0.0, 1.0, 2.0, 0.0, 3.0, 4.0, 0.0]);
/// # Ok(()) }
/// ```
pub fn pad2d(x: &Tensor, pads: Pads, value: f64) -> Result<Tensor> {
    // A channels-last input runs through the NCHW kernels, converted once here (crate::format).
    if crate::format::is_channels_last_input(x) {
        return crate::format::nchw_boundary(x, |x| pad2d(x, pads, value));
    }
    if x.rank() < 2 {
        return Err(Error::invalid("pad2d", format!("needs at least 2 axes [.., H, W], got shape {}", x.shape())));
    }
    let r = x.rank();
    let (h, w) = (x.dims()[r - 2], x.dims()[r - 1]);
    let fits = [pads[0], pads[1], h].iter().try_fold(0usize, |a, &b| a.checked_add(b)).is_some()
        && [pads[2], pads[3], w].iter().try_fold(0usize, |a, &b| a.checked_add(b)).is_some();
    if !fits {
        return Err(Error::invalid("pad2d", format!("pads {pads:?} overflow for an input of shape {}", x.shape())));
    }
    let geom = PadGeom { planes: x.dims()[..r - 2].iter().product(), h, w, pads };
    let mut out_dims = x.dims().to_vec();
    out_dims[r - 2] = geom.out_h();
    out_dims[r - 1] = geom.out_w();
    let out = match x.dtype() {
        // Exact: every f16/bf16 value is an f32, and the round trip back restores it.
        DType::F16 | DType::BF16 => return pad2d(&x.to_dtype(DType::F32)?, pads, value)?.to_dtype(x.dtype()),
        _ if x.device().is_gpu() => Storage::Gpu(gpu::pad(x, geom, value)?),
        DType::F32 => Storage::Cpu(pad_typed::<f32>(x, geom, value)?),
        DType::F64 => Storage::Cpu(pad_typed::<f64>(x, geom, value)?),
        DType::I64 => Storage::Cpu(pad_typed::<i64>(x, geom, value)?),
        DType::U8 => Storage::Cpu(pad_typed::<u8>(x, geom, value)?),
    };
    Ok(Tensor::from_storage(out, out_dims).record(&[x], Pad2dBackward { geom }))
}

fn pad_typed<T: CpuElement>(x: &Tensor, geom: PadGeom, value: f64) -> Result<CpuStorage> {
    let v = x.contiguous()?.with_cpu_slice::<T, _>(|s| cpu::pad(s, geom, T::from_f64(value)))?;
    Ok(T::into_storage(v))
}

fn crop_typed<T: CpuElement + Default>(g: &Tensor, geom: PadGeom) -> Result<CpuStorage> {
    let v = g.contiguous()?.with_cpu_slice::<T, _>(|s| cpu::crop(s, geom))?;
    Ok(T::into_storage(v))
}

struct Pad2dBackward {
    geom: PadGeom,
}

impl BackwardOp for Pad2dBackward {
    fn name(&self) -> &'static str {
        "pad2d"
    }

    /// `gx` = the interior `[top..top + H, left..left + W]` of `g`, copied in one pass.
    fn backward(&self, inputs: &[Tensor], _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        // Gradients are f32 or f64 here: f16/bf16 inputs were padded in f32 (see `pad2d`).
        let out = match g.dtype() {
            DType::F32 | DType::F64 if g.device().is_gpu() => Storage::Gpu(gpu::crop(g, self.geom)?),
            DType::F32 => Storage::Cpu(crop_typed::<f32>(g, self.geom)?),
            DType::F64 => Storage::Cpu(crop_typed::<f64>(g, self.geom)?),
            d => return Err(Error::UnsupportedDType { op: "pad2d backward", dtype: d }),
        };
        Ok(vec![Some(Tensor::from_storage(out, inputs[0].shape()))])
    }
}
