//! Softmax cross-entropy on a GPU device (`kernels/cuda/softmax_xent.cu`), shared by Cuda and Emu.
//!
//! Forward: one block per row computes the row's loss and log-sum-exp (saved on the device for
//! backward), then a one-thread kernel adds the row losses in row order into the 0-d loss, so
//! nothing is downloaded. Backward: one block per row writes `∂L/∂x` (and `∂L/∂t` for a soft
//! target that wants it); the output gradient `g` is read on the device.

use bitgrad_engine::gpu::prims::{dtype_suffix, out_like};
use bitgrad_engine::gpu::{DevicePtr, KernelArg, LaunchConfig, MAX_GRID_BLOCKS};
use bitgrad_engine::{DType, GpuStorage, Result, Storage, Tensor};

/// The launch geometry: one block per row (grid-stride beyond the grid limit), up to 256 threads.
fn rows_config(n: usize, k: usize) -> LaunchConfig {
    let threads = k.next_power_of_two().clamp(32, 256) as u32;
    LaunchConfig { grid: [n.min(MAX_GRID_BLOCKS as usize) as u32, 1, 1], block: [threads, 1, 1], shared_bytes: 0 }
}

/// The address of the first element of a contiguous device tensor (null for `None`).
fn addr(t: Option<&Tensor>) -> Result<DevicePtr> {
    match t {
        None => Ok(DevicePtr(0)),
        Some(t) => Ok(t.storage().gpu("cross_entropy")?.ptr_at(t.layout().offset())),
    }
}

/// The mean loss (a 0-d tensor on the device, in the logits' dtype) and each row's log-sum-exp.
/// `logits` and `soft` are contiguous; `labels` is a contiguous i64 `[N]` tensor on the device.
pub(super) fn forward(
    logits: &Tensor,
    labels: Option<&Tensor>,
    soft: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, GpuStorage)> {
    let (n, k) = (logits.dims()[0], logits.dims()[1]);
    let st = logits.storage();
    let s = st.gpu("cross_entropy")?;
    let rt = s.runtime();
    let suf = dtype_suffix(s.dtype());
    let rows = out_like(s, DType::F64, n)?;
    let lse = out_like(s, DType::F64, n)?;
    let args: [KernelArg; 8] = [
        (n as i64).into(),
        (k as i64).into(),
        eps.into(),
        s.ptr_at(logits.layout().offset()).into(),
        addr(labels)?.into(),
        addr(soft)?.into(),
        rows.ptr().into(),
        lse.ptr().into(),
    ];
    rt.launch(&format!("xent_fwd_{suf}"), &rows_config(n, k), &args)?;
    let loss = out_like(s, s.dtype(), 1)?;
    rt.launch(
        &format!("xent_mean_{suf}"),
        &LaunchConfig::linear(1, 32),
        &[(n as i64).into(), rows.ptr().into(), loss.ptr().into()],
    )?;
    Ok((Tensor::from_storage(Storage::Gpu(loss), ()), lse))
}

/// `(∂L/∂x, ∂L/∂t if want_target)` for the output gradient `g` (a 0-d device tensor).
pub(super) fn backward(
    g: &Tensor,
    logits: &Tensor,
    labels: Option<&Tensor>,
    soft: Option<&Tensor>,
    lse: &GpuStorage,
    eps: f64,
    want_target: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let (n, k) = (logits.dims()[0], logits.dims()[1]);
    let g = g.to_dtype(logits.dtype())?.contiguous()?;
    let st = logits.storage();
    let s = st.gpu("cross_entropy backward")?;
    let gx = out_like(s, s.dtype(), n * k)?;
    let gt = if want_target { Some(out_like(s, s.dtype(), n * k)?) } else { None };
    let args: [KernelArg; 10] = [
        (n as i64).into(),
        (k as i64).into(),
        eps.into(),
        addr(Some(&g))?.into(),
        s.ptr_at(logits.layout().offset()).into(),
        addr(labels)?.into(),
        addr(soft)?.into(),
        lse.ptr().into(),
        gx.ptr().into(),
        gt.as_ref().map_or(DevicePtr(0), |t| t.ptr()).into(),
    ];
    s.runtime().launch(&format!("xent_bwd_{}", dtype_suffix(s.dtype())), &rows_config(n, k), &args)?;
    let wrap = |s: GpuStorage| Tensor::from_storage(Storage::Gpu(s), logits.shape());
    Ok((wrap(gx), gt.map(wrap)))
}
