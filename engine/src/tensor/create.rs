//! Creating tensors: from data, constants, ranges and seeded random numbers.

use crate::cpu::copy;
use crate::gpu::{self, prims, prims::random::Distribution};
use crate::rng::{normal, uniform, Rng};
use crate::storage::CpuElement;
use crate::{CpuStorage, DType, Device, Error, Layout, Result, Shape, Storage, Tensor};

impl Tensor {
    /// A tensor of `shape` holding `data` (row-major).
    pub fn from_vec<T: CpuElement>(data: Vec<T>, shape: impl Into<Shape>, device: Device) -> Result<Tensor> {
        let shape = shape.into();
        if data.len() != shape.numel() {
            return Err(Error::ElementCount {
                op: "from_vec",
                len: data.len(),
                shape: shape.clone(),
                expected: shape.numel(),
            });
        }
        Tensor::from_storage(Storage::Cpu(T::into_storage(data)), shape).to_device(device)
    }

    /// Like [`Tensor::from_vec`], copying from a slice.
    pub fn from_slice<T: CpuElement>(data: &[T], shape: impl Into<Shape>, device: Device) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape, device)
    }

    /// A 0-d tensor holding one value.
    pub fn scalar(v: f64, dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::full(v, (), dtype, device)
    }

    /// Every element equal to `v` (converted to `dtype`).
    pub fn full(v: f64, shape: impl Into<Shape>, dtype: DType, device: Device) -> Result<Tensor> {
        let shape = shape.into();
        let s = match device {
            Device::Cpu => Storage::Cpu(CpuStorage::full(dtype, shape.numel(), v)),
            d => Storage::Gpu(prims::copy::full(&gpu::runtime(d)?, dtype, shape.numel(), v)?),
        };
        Ok(Tensor::from_storage(s, shape))
    }
    pub fn zeros(shape: impl Into<Shape>, dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::full(0.0, shape, dtype, device)
    }
    pub fn ones(shape: impl Into<Shape>, dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::full(1.0, shape, dtype, device)
    }
    pub fn zeros_like(t: &Tensor) -> Result<Tensor> {
        Tensor::zeros(t.shape(), t.dtype(), t.device())
    }
    pub fn ones_like(t: &Tensor) -> Result<Tensor> {
        Tensor::ones(t.shape(), t.dtype(), t.device())
    }

    /// `start, start + step, …` up to (not including) `end`, as a 1-d tensor.
    pub fn arange(start: f64, end: f64, step: f64, dtype: DType, device: Device) -> Result<Tensor> {
        if step == 0.0 || !step.is_finite() || !start.is_finite() || !end.is_finite() {
            return Err(Error::invalid("arange", format!("bad range {start}..{end} step {step}")));
        }
        let n = ((end - start) / step).ceil().max(0.0) as usize;
        if device.is_gpu() {
            let s = prims::copy::arange(&gpu::runtime(device)?, start, step, n, dtype)?;
            return Ok(Tensor::from_storage(Storage::Gpu(s), n));
        }
        let v: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
        Tensor::from_f64_vec(v, n, dtype, device)
    }

    /// Builds a tensor of any dtype from f64 values (exact for f64, rounded otherwise).
    pub fn from_f64_vec(v: Vec<f64>, shape: impl Into<Shape>, dtype: DType, device: Device) -> Result<Tensor> {
        let shape = shape.into();
        let n = v.len();
        let t = Tensor::from_vec(v, shape.clone(), device)?;
        if dtype == DType::F64 {
            return Ok(t);
        }
        let s = match &*t.storage() {
            Storage::Cpu(s) => Storage::Cpu(copy::cast(s, &Layout::contiguous([n]), dtype)?),
            Storage::Gpu(s) => Storage::Gpu(prims::copy::cast(s, &Layout::contiguous([n]), dtype)?),
        };
        Ok(Tensor::from_storage(s, shape))
    }

    /// Normal samples with the given mean and standard deviation. The numbers depend only on the
    /// generator's seed and offset, never on the thread count.
    pub fn randn(
        shape: impl Into<Shape>,
        mean: f64,
        std: f64,
        dtype: DType,
        device: Device,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        let shape = shape.into();
        if device.is_gpu() {
            return Tensor::draw_on(device, Distribution::Normal { mean, std }, shape, dtype, rng);
        }
        let v = rng.draw(shape.numel(), |s, i| mean + std * normal(s, i));
        Tensor::from_f64_vec(v, shape, dtype, device)
    }

    /// Uniform samples in `[lo, hi)`.
    pub fn rand(
        shape: impl Into<Shape>,
        lo: f64,
        hi: f64,
        dtype: DType,
        device: Device,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        let shape = shape.into();
        if device.is_gpu() {
            return Tensor::draw_on(device, Distribution::Uniform { lo, hi }, shape, dtype, rng);
        }
        let v = rng.draw(shape.numel(), |s, i| lo + (hi - lo) * uniform(s, i));
        Tensor::from_f64_vec(v, shape, dtype, device)
    }

    /// Random numbers drawn by the device itself: the CPU's numbers, without a host round trip.
    fn draw_on(device: Device, dist: Distribution, shape: Shape, dtype: DType, rng: &mut Rng) -> Result<Tensor> {
        let n = shape.numel();
        let offset = rng.offset();
        let s = prims::random::draw(&gpu::runtime(device)?, dist, rng.seed(), offset, n, dtype)?;
        rng.set_offset(offset + n as u64);
        Ok(Tensor::from_storage(Storage::Gpu(s), shape))
    }
}
