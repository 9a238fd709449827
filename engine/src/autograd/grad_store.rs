//! `GradStore`: gradients keyed by tensor, as returned by [`grad`](super::grad).

use std::collections::HashMap;

use crate::{Result, Tensor, TensorId};

/// The gradients of the leaves reached by one backward pass.
#[derive(Default)]
pub struct GradStore {
    grads: HashMap<TensorId, (Tensor, Tensor)>,
}

impl GradStore {
    /// The gradient for `t`, if the pass reached it.
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.grads.get(&t.id()).map(|(_, g)| g)
    }

    /// Adds `g` to the gradient stored for `t`.
    pub(crate) fn accumulate(&mut self, t: &Tensor, g: Tensor) -> Result<()> {
        match self.grads.remove(&t.id()) {
            Some((leaf, old)) => {
                let sum = if add_in_place(&old, &g)? { old } else { old.add(&g)? };
                self.grads.insert(t.id(), (leaf, sum));
            }
            None => {
                self.grads.insert(t.id(), (t.clone(), g));
            }
        }
        Ok(())
    }

    pub(crate) fn remove(&mut self, t: &Tensor) -> Option<Tensor> {
        self.grads.remove(&t.id()).map(|(_, g)| g)
    }

    /// Consumes the store, yielding owned (leaf, gradient) pairs.
    pub(crate) fn into_pairs(self) -> impl Iterator<Item = (Tensor, Tensor)> {
        self.grads.into_values()
    }

    /// (leaf, gradient) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&Tensor, &Tensor)> {
        self.grads.values().map(|(t, g)| (t, g))
    }

    pub fn len(&self) -> usize {
        self.grads.len()
    }
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }
}

/// `old += g` in place when nothing else can see `old`'s buffer (a gradient this store made),
/// both on the CPU, f32 or bf16 (the sum in f32, rounded to nearest even, as the general `add`
/// does) and both dense in the same format — row-major, or channels-last as the bf16 path's
/// activations are (other layouts take the general `add`): a residual network's fan-outs then
/// cost one pass over the gradient and no allocation, instead of a fresh tensor per sum. The sum
/// is the same elementwise `a + b`, so the bits do not change. Returns false when it does not
/// apply.
fn add_in_place(old: &Tensor, g: &Tensor) -> Result<bool> {
    use crate::DType;
    if old.device().is_gpu() || g.device().is_gpu() || old.dtype() != g.dtype() || !old.owns_its_storage() {
        return Ok(false);
    }
    // Both row-major, or both channels-last: then the NHWC views are row-major and line up.
    let (old, g) = if old.is_contiguous() && g.is_contiguous() {
        (old.clone(), g.clone())
    } else if old.rank() == 4 && old.is_channels_last() && g.is_channels_last() {
        let nhwc = [0, 2, 3, 1];
        (old.permute(&nhwc)?, g.permute(&nhwc)?)
    } else {
        return Ok(false);
    };
    match old.dtype() {
        DType::F32 => sum_into::<f32>(&old, &g, |a, b| a + b)?,
        // The f32 sum, rounded once.
        DType::BF16 => {
            sum_into::<half::bf16>(&old, &g, |a, b| half::bf16::from_bits(crate::bf16_bits(a.to_f32() + b.to_f32())))?
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// `dst[i] = f(dst[i], src[i])` over two row-major CPU tensors, in parallel chunks.
fn sum_into<T: crate::CpuElement + Copy + Send + Sync>(
    dst: &Tensor,
    src: &Tensor,
    f: impl Fn(T, T) -> T + Sync,
) -> Result<()> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 15;
    src.with_cpu_slice::<T, _>(|s| {
        dst.with_cpu_slice_mut::<T, _>(|d| {
            d.par_chunks_mut(CHUNK).zip(s.par_chunks(CHUNK)).for_each(|(d, s)| {
                d.iter_mut().zip(s).for_each(|(a, b)| *a = f(*a, *b));
            })
        })
    })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, Device, MemoryFormat, Rng};

    fn randn(dims: &[usize], dtype: DType, fmt: MemoryFormat, seed: u64) -> Tensor {
        let t = Tensor::randn(dims.to_vec(), 0.0, 1.0, DType::F32, Device::Cpu, &mut Rng::new(seed)).unwrap();
        t.to_dtype(dtype).unwrap().to_memory_format(fmt).unwrap()
    }

    /// The in-place sum gives the general `add`'s bits for f32 and bf16, row-major and
    /// channels-last, and declines mixed formats.
    #[test]
    fn in_place_sums_match_add() {
        for dtype in [DType::F32, DType::BF16] {
            for fmt in [MemoryFormat::Contiguous, MemoryFormat::ChannelsLast] {
                let (a, b) = (randn(&[2, 3, 4, 5], dtype, fmt, 1), randn(&[2, 3, 4, 5], dtype, fmt, 2));
                let want = a.add(&b).unwrap().to_vec_f64().unwrap();
                assert!(add_in_place(&a, &b).unwrap(), "{dtype} {fmt}");
                assert_eq!(a.to_vec_f64().unwrap(), want, "{dtype} {fmt}");
            }
            let a = randn(&[2, 3, 4, 5], dtype, MemoryFormat::Contiguous, 3);
            let b = randn(&[2, 3, 4, 5], dtype, MemoryFormat::ChannelsLast, 4);
            assert!(!add_in_place(&a, &b).unwrap(), "mixed formats take the general add");
        }
    }
}
