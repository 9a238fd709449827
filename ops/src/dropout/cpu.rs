//! CPU kernels of dropout. Element `i`'s fate is a pure function of `(seed, offset + i)`, so the
//! work can be split anywhere without changing the result.

use bitgrad_engine::cpu::strided::{fill_chunks, PAR_THRESHOLD};
use bitgrad_engine::rng::uniform;
use bitgrad_engine::{FloatElem, WithDType};
use rayon::prelude::*;

use super::MaskSource;

/// True when element `i` is kept.
#[inline]
fn keep(src: &MaskSource, i: usize) -> bool {
    uniform(src.seed, src.offset.wrapping_add(i as u64)) >= src.p
}

/// `x[i] · m[i] / (1 − p)` for the mask of `src`.
pub fn apply_mask<T: FloatElem>(x: &[T], src: MaskSource) -> Vec<T> {
    let scale = <T as WithDType>::from_f64(src.scale());
    let mut out = vec![T::zero(); x.len()];
    fill_chunks(&mut out, |chunk, start| {
        for (k, (o, &v)) in chunk.iter_mut().zip(&x[start..]).enumerate() {
            // A multiply by 0 rather than a skip, so NaN/inf inputs give NaN as in PyTorch.
            *o = v * if keep(&src, start + k) { scale } else { T::zero() };
        }
    });
    out
}

/// The mask itself, 1 for kept elements.
pub fn mask(n: usize, src: MaskSource) -> Vec<u8> {
    if n >= PAR_THRESHOLD {
        (0..n).into_par_iter().map(|i| keep(&src, i) as u8).collect()
    } else {
        (0..n).map(|i| keep(&src, i) as u8).collect()
    }
}
