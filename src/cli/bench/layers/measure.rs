//! Device timings of single layers: a conv's three passes, GroupNorm + ReLU forward and
//! backward, weight standardization forward and backward, one SGD step over every parameter.
//!
//! GPU work is asynchronous: each timing prepares `reps` runs' inputs (for a backward, the
//! forward graphs it consumes) untimed, synchronizes, launches the runs back to back and
//! synchronizes again; the median over `rounds` such batches, per run, is the time. One untimed
//! batch first compiles and caches the kernels.

use std::time::Instant;

use bitgrad::engine::autograd;
use bitgrad::engine::gpu::GpuRuntime;
use bitgrad::ops::conv2d::{conv2d, Conv2dParams, Padding};
use bitgrad::ops::group_norm::{group_norm, Activation};
use bitgrad::ops::sgd::Sgd;
use bitgrad::ops::weight_std::weight_std;
use bitgrad::{no_grad, DType, Device, Result, Rng, Tensor};

use crate::cli::bench::plan::net::{Conv, Norm};

/// How to time.
pub struct Timer<'a> {
    pub rt: &'a dyn GpuRuntime,
    pub reps: usize,
    pub rounds: usize,
}

impl Timer<'_> {
    /// Seconds per run of `run` on inputs made by `prepare` (untimed).
    pub fn time<T>(&self, mut prepare: impl FnMut() -> Result<T>, mut run: impl FnMut(T) -> Result<()>) -> Result<f64> {
        let mut batch = |timed: bool| -> Result<f64> {
            let inputs = (0..self.reps).map(|_| prepare()).collect::<Result<Vec<T>>>()?;
            self.rt.synchronize()?;
            let t = Instant::now();
            for i in inputs {
                run(i)?;
            }
            self.rt.synchronize()?;
            Ok(if timed { t.elapsed().as_secs_f64() / self.reps as f64 } else { 0.0 })
        };
        batch(false)?;
        let means = (0..self.rounds).map(|_| batch(true)).collect::<Result<Vec<f64>>>()?;
        Ok(crate::cli::bench::timing::median(&means))
    }
}

/// Seconds of fprop, dgrad and wgrad of `c` in `dtype` on `device`.
pub fn conv(t: &Timer, c: &Conv, dtype: DType, device: Device, rng: &mut Rng) -> Result<[f64; 3]> {
    let x = Tensor::randn([c.n, c.c, c.h, c.w], 0.0, 1.0, dtype, device, rng)?;
    let w = Tensor::randn([c.k, c.c, c.r, c.s], 0.0, 0.05, dtype, device, rng)?;
    let dy = Tensor::randn([c.n, c.k, c.p, c.q], 0.0, 1.0, dtype, device, rng)?;
    let p = Conv2dParams { stride: c.stride, padding: Padding::Symmetric(c.pad), ..Default::default() };
    let fwd = t.time(|| Ok(()), |_| no_grad_run(|| conv2d(&x, &w, None, &p)))?;
    // Backward with only the differentiated operand requiring a gradient: conv2d's backward then
    // runs that pass alone.
    let (xg, wg) = (x.requires_grad_(true), w.requires_grad_(true));
    let dgrad = t.time(|| conv2d(&xg, &w, None, &p), |y| autograd::grad(&y, &dy).map(drop))?;
    let wgrad = t.time(|| conv2d(&x, &wg, None, &p), |y| autograd::grad(&y, &dy).map(drop))?;
    Ok([fwd, dgrad, wgrad])
}

fn no_grad_run(f: impl FnOnce() -> Result<Tensor>) -> Result<()> {
    let _g = no_grad();
    f().map(drop)
}

/// Seconds of GroupNorm + ReLU forward and backward (x, γ, β gradients) on `norm`'s map.
pub fn group_norm_relu(
    t: &Timer,
    norm: &Norm,
    batch: usize,
    groups: usize,
    dtype: DType,
    device: Device,
    rng: &mut Rng,
) -> Result<[f64; 2]> {
    let shape = [batch, norm.c, norm.hw, 1];
    let x = Tensor::randn(shape, 0.0, 1.0, dtype, device, rng)?;
    let dy = Tensor::randn(shape, 0.0, 1.0, dtype, device, rng)?;
    let gamma = Tensor::ones([norm.c], dtype, device)?.requires_grad_(true);
    let beta = Tensor::zeros([norm.c], dtype, device)?.requires_grad_(true);
    let gn = |x: &Tensor| group_norm(x, groups, Some(&gamma), Some(&beta), 1e-5, Activation::Relu);
    let fwd = t.time(|| Ok(()), |_| no_grad_run(|| gn(&x)))?;
    let xg = x.requires_grad_(true);
    let bwd = t.time(|| gn(&xg), |y| autograd::grad(&y, &dy).map(drop))?;
    Ok([fwd, bwd])
}

/// Seconds of weight standardization forward and backward of a `dims` weight.
pub fn weight_std_pass(t: &Timer, dims: &[usize], dtype: DType, device: Device, rng: &mut Rng) -> Result<[f64; 2]> {
    let w = Tensor::randn(dims.to_vec(), 0.0, 0.05, dtype, device, rng)?;
    let dy = Tensor::randn(dims.to_vec(), 0.0, 1.0, dtype, device, rng)?;
    let fwd = t.time(|| Ok(()), |_| no_grad_run(|| weight_std(&w, 1e-8)))?;
    let wg = w.requires_grad_(true);
    let bwd = t.time(|| weight_std(&wg, 1e-8), |y| autograd::grad(&y, &dy).map(drop))?;
    Ok([fwd, bwd])
}

/// Seconds of one SGD step (momentum 0.9, its buffers already made) over f32 parameters of
/// `shapes`, each with a gradient.
pub fn sgd(t: &Timer, shapes: &[Vec<usize>], device: Device, rng: &mut Rng) -> Result<f64> {
    let mut params = Vec::with_capacity(shapes.len());
    for s in shapes {
        let p = Tensor::randn(s.clone(), 0.0, 0.05, DType::F32, device, rng)?.requires_grad_(true);
        p.set_grad(Some(Tensor::randn(s.clone(), 0.0, 1e-3, DType::F32, device, rng)?))?;
        params.push(p);
    }
    let mut opt = Sgd::new(0.003, 0.9, 0.0, false)?;
    opt.step(&params)?;
    let opt = std::cell::RefCell::new(opt);
    t.time(|| Ok(()), |_| opt.borrow_mut().step(&params))
}
