//! Inverted dropout: `dropout(x, p, training, rng)`.
//!
//! In training, each element is kept with probability `1 − p` and scaled by `1 / (1 − p)`, so the
//! expected value of every output equals its input and evaluation needs no rescaling:
//! `y = x · m / (1 − p)` with `m ~ Bernoulli(1 − p)`. In evaluation (`training == false`), or when
//! `p == 0`, dropout is the identity and returns `x` itself without drawing random numbers (as
//! PyTorch). `p` must be in `[0, 1)`.
//!
//! **The mask.** Element `i` (row-major in the logical shape, whatever the input's strides) is
//! kept when `uniform(seed, offset + i) ≥ p`, with the engine's counter-based generator
//! ([`bitgrad_engine::rng`]); a call then advances the generator's offset by `numel`, like any
//! engine draw. So the mask depends only on `(seed, offset, shape, p)`: never on the thread count,
//! and a GPU kernel can reproduce it. [`dropout_mask`] returns it for inspection.
//!
//! **Backward** uses the same mask, `gx = g · m / (1 − p)`. The mask is not stored: backward
//! regenerates it from the saved `(seed, offset, p)`, which costs a few integer mixes per element
//! and no memory between forward and backward.
//!
//! Dtypes: f32/f64 kernels; f16/bf16 run in f32 and are rounded back; integers are an error.

pub(crate) mod cpu;
mod gpu;
#[cfg(test)]
mod gpu_tests;
#[cfg(test)]
mod tests;

use bitgrad_engine::{BackwardOp, DType, Error, FloatElem, Result, Rng, Storage, Tensor};

/// Where the mask of one dropout call comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct MaskSource {
    pub seed: u64,
    /// The generator's offset when the call was made: element `i` uses counter `offset + i`.
    pub offset: u64,
    pub p: f64,
}

impl MaskSource {
    /// `1 / (1 − p)`, the factor kept elements are multiplied by.
    pub fn scale(&self) -> f64 {
        1.0 / (1.0 - self.p)
    }
}

/// Inverted dropout; see the module docs. Advances `rng` by `x.numel()` when it draws a mask.
///
/// ```
/// use bitgrad_engine::{DType, Device, Rng, Tensor};
/// # fn main() -> bitgrad_engine::Result<()> {
/// let x = Tensor::ones([1000], DType::F32, Device::Cpu)?;
/// let y = bitgrad_ops::dropout::dropout(&x, 0.25, true, &mut Rng::new(0))?;
/// let kept = y.to_vec::<f32>()?.iter().filter(|&&v| v != 0.0).count();
/// assert!((700..800).contains(&kept));                     // about 1 − p of them
/// assert!(y.to_vec::<f32>()?.iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
/// # Ok(()) }
/// ```
pub fn dropout(x: &Tensor, p: f64, training: bool, rng: &mut Rng) -> Result<Tensor> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::invalid("dropout", format!("p must be in [0, 1), got {p} (input shape {})", x.shape())));
    }
    if !x.dtype().is_float() {
        return Err(Error::UnsupportedDType { op: "dropout", dtype: x.dtype() });
    }
    if !training || p == 0.0 || x.numel() == 0 {
        return Ok(x.clone());
    }
    // The mask is drawn in NCHW order (element i of the logical tensor), so a channels-last
    // input is converted once here and the output converted back (crate::format).
    if crate::format::is_channels_last_input(x) {
        return crate::format::nchw_boundary(x, |x| dropout(x, p, training, rng));
    }
    let src = MaskSource { seed: rng.seed(), offset: rng.offset(), p };
    rng.set_offset(rng.offset() + x.numel() as u64);
    apply(x, src)
}

/// `x` with the mask of `src` applied and scaled, recorded for backward.
fn apply(x: &Tensor, src: MaskSource) -> Result<Tensor> {
    let y = match x.dtype() {
        DType::F32 => masked::<f32>(x, src)?,
        DType::F64 => masked::<f64>(x, src)?,
        _ => return apply(&x.to_dtype(DType::F32)?, src)?.to_dtype(x.dtype()),
    };
    Ok(y.record(&[x], DropoutBackward { src }))
}

/// `t · m / (1 − p)` as a fresh contiguous tensor, not recorded.
fn masked<T: FloatElem>(t: &Tensor, src: MaskSource) -> Result<Tensor> {
    if t.device().is_gpu() {
        return gpu::masked(t, src);
    }
    let v = t.contiguous()?.with_cpu_slice(|s: &[T]| cpu::apply_mask(s, src))?;
    Ok(Tensor::from_storage(Storage::Cpu(T::into_storage(v)), t.shape()))
}

/// The keep-mask (1 = kept) that `dropout(x, p, true, rng)` would draw for an `x` of `numel`
/// elements with `rng` in its current state. Does not advance `rng`.
pub fn dropout_mask(numel: usize, p: f64, rng: &Rng) -> Vec<u8> {
    cpu::mask(numel, MaskSource { seed: rng.seed(), offset: rng.offset(), p })
}

struct DropoutBackward {
    src: MaskSource,
}

impl BackwardOp for DropoutBackward {
    fn name(&self) -> &'static str {
        "dropout"
    }

    /// `gx = g · m / (1 − p)`, with `m` regenerated from the saved seed and offset.
    fn backward(&self, _inputs: &[Tensor], _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let gx = match g.dtype() {
            DType::F32 => masked::<f32>(g, self.src)?,
            DType::F64 => masked::<f64>(g, self.src)?,
            d => return Err(Error::UnsupportedDType { op: "dropout backward", dtype: d }),
        };
        Ok(vec![Some(gx)])
    }
}
