//! BiT's train and eval transforms, producing CHW f32 in [−1, 1].
//!
//! Train (BiT PyTorch `train.py`): resize to `precrop × precrop` (bilinear, aspect not kept),
//! random `crop × crop` crop, horizontal flip with probability ½, `x / 127.5 − 1`. Eval: resize
//! straight to `crop × crop` (or timm's shorter-side + centre crop, see [`Resize`]).
//!
//! Randomness is a pure function of `(seed, epoch, index)`, drawn from the engine's
//! counter-based generator: the same example in the same epoch gets the same crop and flip on
//! whichever worker thread transforms it.

use ::image::imageops::{self, FilterType};
use ::image::RgbImage;
use bitgrad_engine::rng::{bits, uniform};

use super::image::{eval_transform, Resize};
use crate::schedule::Resolution;
use crate::{Error, Result};

/// How an example becomes a model input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transform {
    /// Resize to `precrop²`, random crop `crop²`, random flip (if `flip`).
    Train { precrop: u32, crop: u32, flip: bool },
    /// Resize to `size²` as `resize` says.
    Eval { size: u32, resize: Resize },
}

impl Transform {
    /// BiT's training transform at the HyperRule resolution.
    pub fn train(res: Resolution) -> Self {
        Transform::Train { precrop: res.precrop, crop: res.crop, flip: true }
    }
    /// BiT's evaluation transform: resize directly to the crop size.
    pub fn eval(res: Resolution) -> Self {
        Transform::Eval { size: res.crop, resize: Resize::Direct }
    }

    /// The side of the square output.
    pub fn output_size(&self) -> u32 {
        match *self {
            Transform::Train { crop, .. } => crop,
            Transform::Eval { size, .. } => size,
        }
    }

    /// Transforms `img` (example `index` in epoch `epoch`) into `out`, CHW f32 in [−1, 1] of
    /// length `3 · size²`.
    pub fn apply_into(&self, img: &RgbImage, seed: u64, epoch: u64, index: u64, out: &mut [f32]) -> Result<()> {
        let s = self.output_size() as usize;
        if out.len() != 3 * s * s {
            return Err(Error::Msg(format!("output buffer of {} floats for a 3×{s}×{s} image", out.len())));
        }
        match *self {
            Transform::Train { precrop, crop, flip } => {
                if crop == 0 || precrop < crop {
                    return Err(Error::Config(format!(
                        "the pre-crop size ({precrop}) must be at least the crop size ({crop}) > 0"
                    )));
                }
                let resized;
                let img = if img.dimensions() == (precrop, precrop) {
                    img
                } else {
                    resized = imageops::resize(img, precrop, precrop, FilterType::Triangle);
                    &resized
                };
                // Three draws per example: top, left, flip.
                let stream = bits(bits(seed, epoch), index);
                let span = (precrop - crop + 1) as f64;
                let top = ((uniform(stream, 0) * span) as u32).min(precrop - crop);
                let left = ((uniform(stream, 1) * span) as u32).min(precrop - crop);
                let mirror = flip && uniform(stream, 2) < 0.5;
                write_chw(img, top, left, crop, mirror, out);
            }
            Transform::Eval { size, resize } => {
                let img = eval_transform(img, size, resize)?;
                write_chw(&img, 0, 0, size, false, out);
            }
        }
        Ok(())
    }

    /// [`apply_into`](Self::apply_into) into a new buffer.
    pub fn apply(&self, img: &RgbImage, seed: u64, epoch: u64, index: u64) -> Result<Vec<f32>> {
        let s = self.output_size() as usize;
        let mut out = vec![0.0; 3 * s * s];
        self.apply_into(img, seed, epoch, index, &mut out)?;
        Ok(out)
    }
}

/// Writes the `size²` window at (top, left) of `img`, mirrored if asked, as CHW in [−1, 1].
/// (Row slices of the raw buffer rather than `get_pixel`: this loop is a third of the loader's
/// time at 128².)
fn write_chw(img: &RgbImage, top: u32, left: u32, size: u32, mirror: bool, out: &mut [f32]) {
    let s = size as usize;
    let plane = s * s;
    let stride = 3 * img.width() as usize;
    let raw = img.as_raw();
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for y in 0..s {
        let start = (top as usize + y) * stride + 3 * left as usize;
        let row = &raw[start..start + 3 * s];
        for x in 0..s {
            let sx = if mirror { s - 1 - x } else { x };
            let o = y * s + x;
            r[o] = row[3 * sx] as f32 / 127.5 - 1.0;
            g[o] = row[3 * sx + 1] as f32 / 127.5 - 1.0;
            b[o] = row[3 * sx + 2] as f32 / 127.5 - 1.0;
        }
    }
}
