//! Group norm (+ optional fused ReLU) of the bf16 training path on a GPU device
//! (`kernels/cuda/gn_nhwc.cu`; shape checks and launches from `bitgrad_kernels::gn_nhwc`), and on
//! the CPU through its twin (`nhwc_cpu.rs`):
//! channels-last bf16 activations x, y `[N, H, W, C]`, f32 γ/β `[C]`, f32 statistics μ, r
//! `[N, G]`. Plain functions on tensors, no autograd node: `mixed.rs` wraps them in one for
//! `group_norm` with bf16 activations and f32 γ/β. The backward's ReLU mask reads the forward's
//! bf16 output y, and it reads x to rebuild x̂ from μ and r. Errors (never panics) on other
//! dtypes, devices, ranks and shapes the kernels cannot take.

use bitgrad_engine::gpu::{DevicePtr, KernelArg, LaunchConfig};
use bitgrad_engine::{DType, Device, Error, Result, Tensor};
use bitgrad_kernels::gn_nhwc::GnShape;
use bitgrad_kernels::tc_conv::Launch;
use half::bf16;

use super::gpu::{dev_ptr, new_tensor, runtime};

const OP: &str = "group_norm_nhwc_bf16";

/// `t` contiguous, of `dtype` (on a GPU device, or on the CPU for the CPU twin).
fn operand(t: &Tensor, what: &str, dtype: DType) -> Result<Tensor> {
    if t.dtype() != dtype {
        return Err(Error::invalid(OP, format!("{what} is {}, the kernels take {dtype}", t.dtype())));
    }
    t.contiguous()
}

/// `t` (optional) checked to have `dims` and to live on x's device.
fn checked(t: Option<&Tensor>, what: &str, dtype: DType, dims: &[usize], x: &Tensor) -> Result<Option<Tensor>> {
    t.map(|t| required(t, what, dtype, dims, x)).transpose()
}

/// `t` checked to have `dims` and to live on x's device.
fn required(t: &Tensor, what: &str, dtype: DType, dims: &[usize], x: &Tensor) -> Result<Tensor> {
    let t = operand(t, what, dtype)?;
    if t.dims() != dims {
        return Err(Error::invalid(OP, format!("{what} has shape {}, expected {dims:?}", t.shape())));
    }
    if t.device() != x.device() {
        return Err(Error::invalid(OP, format!("{what} is on {}, x on {}", t.device(), x.device())));
    }
    Ok(t)
}

fn shape(x: &Tensor, groups: usize) -> Result<GnShape> {
    let [n, h, w, c]: [usize; 4] =
        x.dims().try_into().map_err(|_| Error::invalid(OP, format!("x has shape {}, not [N, H, W, C]", x.shape())))?;
    if x.device() == Device::Cpu {
        // The CPU twin takes any grouping of the channels (the GPU launch plans have limits).
        if groups == 0 || c % groups != 0 {
            return Err(Error::invalid(OP, format!("{c} channels are not a multiple of {groups} groups")));
        }
        return Ok(GnShape { n, hw: h * w, c, groups });
    }
    GnShape::new(n, h * w, c, groups).map_err(|e| Error::invalid(OP, e))
}

/// `f` on the bf16 bits of a CPU tensor (no copy).
fn with_bits<R>(t: &Tensor, f: impl FnOnce(&[u16]) -> R) -> Result<R> {
    t.with_cpu_slice::<bf16, _>(|v| f(bytemuck::cast_slice::<bf16, u16>(v)))
}

fn f32s(t: &Option<Tensor>) -> Result<Option<Vec<f32>>> {
    t.as_ref().map(|t| t.with_cpu_slice::<f32, _>(|v| v.to_vec())).transpose()
}

fn bf16_tensor(v: Vec<u16>, dims: &[usize]) -> Result<Tensor> {
    Tensor::from_vec(v.into_iter().map(bf16::from_bits).collect::<Vec<_>>(), dims, Device::Cpu)
}

fn launch(x: &Tensor, l: &Launch, args: &[KernelArg]) -> Result<()> {
    let cfg = LaunchConfig { grid: l.grid, block: l.block, shared_bytes: l.smem_bytes };
    runtime(x)?.launch(l.kernel, &cfg, args)
}

fn opt(t: &Option<Tensor>) -> Result<KernelArg> {
    Ok(t.as_ref().map_or(Ok(DevicePtr(0)), dev_ptr)?.into())
}

/// The forward's results.
#[derive(Debug, Clone)]
pub struct GnNhwcForward {
    /// bf16 `[N, H, W, C]`.
    pub y: Tensor,
    /// f32 `[N, G]`: μ and r = 1/sqrt(σ² + ε) per (n, g), for the backward.
    pub mean: Tensor,
    pub rstd: Tensor,
}

/// y = γ·(x − μ)·r + β per group (then ReLU'd with `relu`): x bf16 `[N, H, W, C]`, γ/β f32
/// `[C]` (None: 1 and 0), `groups` groups of C/G contiguous channels.
pub fn group_norm_nhwc_bf16(
    x: &Tensor,
    groups: usize,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    eps: f64,
    relu: bool,
) -> Result<GnNhwcForward> {
    let x = operand(x, "x", DType::BF16)?;
    let s = shape(&x, groups)?;
    if !(eps >= 0.0 && eps.is_finite()) {
        return Err(Error::invalid(OP, format!("eps must be finite and >= 0, got {eps}")));
    }
    let gamma = checked(gamma, "gamma", DType::F32, &[s.c], &x)?;
    let beta = checked(beta, "beta", DType::F32, &[s.c], &x)?;
    if x.device() == Device::Cpu {
        let (g, b) = (f32s(&gamma)?, f32s(&beta)?);
        let (y, mean, rstd) =
            with_bits(&x, |x| super::nhwc_cpu::forward(x, s.n, s.c, s.groups, g.as_deref(), b.as_deref(), eps, relu))?;
        let stats = |v: Vec<f32>| Tensor::from_vec(v, [s.n, s.groups], Device::Cpu);
        return Ok(GnNhwcForward { y: bf16_tensor(y, x.dims())?, mean: stats(mean)?, rstd: stats(rstd)? });
    }
    let (y, yp) = new_tensor(&x, DType::BF16, x.dims())?;
    let (mean, mp) = new_tensor(&x, DType::F32, &[s.n, s.groups])?;
    let (rstd, rp) = new_tensor(&x, DType::F32, &[s.n, s.groups])?;
    let args = [
        KernelArg::I64(s.hw as i64),
        KernelArg::I32(s.c as i32),
        KernelArg::I32(s.groups as i32),
        KernelArg::F64(eps),
        KernelArg::I32(relu as i32),
        dev_ptr(&x)?.into(),
        opt(&gamma)?,
        opt(&beta)?,
        yp.into(),
        mp.into(),
        rp.into(),
    ];
    launch(&x, &s.forward(), &args)?;
    Ok(GnNhwcForward { y, mean, rstd })
}

/// The gradients: dx bf16 `[N, H, W, C]`, dγ and dβ f32 `[C]` (deterministic: the per-(n, c)
/// partials are summed over n in order, no atomics).
#[derive(Debug, Clone)]
pub struct GnNhwcBackward {
    pub dx: Tensor,
    pub dgamma: Tensor,
    pub dbeta: Tensor,
}

/// The backward of [`group_norm_nhwc_bf16`] from dy (bf16, x's shape), the forward's x, y (only
/// read with `relu`: the mask is y > 0), γ and saved μ, r.
pub fn group_norm_nhwc_bf16_backward(
    dy: &Tensor,
    x: &Tensor,
    y: Option<&Tensor>,
    gamma: Option<&Tensor>,
    saved: (&Tensor, &Tensor),
    groups: usize,
    relu: bool,
) -> Result<GnNhwcBackward> {
    let x = operand(x, "x", DType::BF16)?;
    let s = shape(&x, groups)?;
    let dy = required(dy, "dy", DType::BF16, x.dims(), &x)?;
    if relu && y.is_none() {
        return Err(Error::invalid(OP, "the fused ReLU's backward needs the forward output y for its mask"));
    }
    let y = if relu { checked(y, "y", DType::BF16, x.dims(), &x)? } else { None };
    let gamma = checked(gamma, "gamma", DType::F32, &[s.c], &x)?;
    let mean = required(saved.0, "mean", DType::F32, &[s.n, s.groups], &x)?;
    let rstd = required(saved.1, "rstd", DType::F32, &[s.n, s.groups], &x)?;
    if x.device() == Device::Cpu {
        let (mean, rstd) = (f32s(&Some(mean))?.unwrap_or_default(), f32s(&Some(rstd))?.unwrap_or_default());
        let gamma = f32s(&gamma)?;
        let run = |y: Option<&[u16]>| {
            with_bits(&dy, |dy| {
                with_bits(&x, |x| super::nhwc_cpu::backward(dy, x, y, s.n, s.c, gamma.as_deref(), &mean, &rstd))
            })
        };
        let (dx, dgamma, dbeta) = match &y {
            Some(y) => with_bits(y, |y| run(Some(y)))???,
            None => run(None)??,
        };
        let param = |v: Vec<f32>| Tensor::from_vec(v, [s.c], Device::Cpu);
        return Ok(GnNhwcBackward { dx: bf16_tensor(dx, x.dims())?, dgamma: param(dgamma)?, dbeta: param(dbeta)? });
    }
    let (dx, dxp) = new_tensor(&x, DType::BF16, x.dims())?;
    let (part_g, pg) = new_tensor(&x, DType::F64, &[s.partials()])?;
    let (part_gx, pgx) = new_tensor(&x, DType::F64, &[s.partials()])?;
    let args = [
        KernelArg::I64(s.hw as i64),
        KernelArg::I32(s.c as i32),
        KernelArg::I32(s.groups as i32),
        KernelArg::I32(relu as i32),
        dev_ptr(&x)?.into(),
        dev_ptr(&dy)?.into(),
        opt(&y)?,
        opt(&gamma)?,
        dev_ptr(&mean)?.into(),
        dev_ptr(&rstd)?.into(),
        dxp.into(),
        pg.into(),
        pgx.into(),
    ];
    launch(&x, &s.backward(), &args)?;
    let (dgamma, dgp) = new_tensor(&x, DType::F32, &[s.c])?;
    let (dbeta, dbp) = new_tensor(&x, DType::F32, &[s.c])?;
    let args = [KernelArg::I64(s.n as i64), KernelArg::I64(s.c as i64), pg.into(), pgx.into(), dgp.into(), dbp.into()];
    launch(&x, &s.param_grads(), &args)?;
    drop((part_g, part_gx)); // after the launches are queued (stream-ordered reuse)
    Ok(GnNhwcBackward { dx, dgamma, dbeta })
}
