//! Seeded random numbers on a GPU device (`random.cu`): the same counter-based generator as
//! `crate::rng`, so a seed gives the CPU's numbers (bit-identical on Emu; on a GPU the f64
//! log/sqrt/cos may differ from the host's libm in the last bit before rounding to the dtype).

use std::sync::Arc;

use super::{copy, launch_n};
use crate::gpu::GpuRuntime;
use crate::{DType, GpuStorage, Layout, Result};

/// Which distribution to draw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distribution {
    /// `lo + (hi − lo) · U[0, 1)`.
    Uniform { lo: f64, hi: f64 },
    /// `mean + std · N(0, 1)`.
    Normal { mean: f64, std: f64 },
}

/// `n` numbers of stream `seed` starting at counter `offset`, rounded once to `dtype`.
pub fn draw(
    rt: &Arc<dyn GpuRuntime>,
    dist: Distribution,
    seed: u64,
    offset: u64,
    n: usize,
    dtype: DType,
) -> Result<GpuStorage> {
    let out = GpuStorage::alloc(rt, DType::F64, n)?;
    let (kernel, a, b) = match dist {
        Distribution::Uniform { lo, hi } => ("rand_uniform_f64", lo, hi),
        Distribution::Normal { mean, std } => ("rand_normal_f64", mean, std),
    };
    launch_n(rt, kernel, n, &[(n as i64).into(), seed.into(), offset.into(), a.into(), b.into(), out.ptr().into()])?;
    copy::cast(&out, &Layout::contiguous([n]), dtype)
}
