//! conv2d on a GPU device (Cuda or Emu): launch code for `kernels/cuda/conv2d.cu`.
//!
//! * 1×1 stride-1 unpadded convolutions in f32/f64 are plain matrix products of each image, run
//!   by the runtime's GEMM (cuBLAS semantics): `y[n] = W·x[n]` and `dx[n] = Wᵀ·dy[n]` as one
//!   strided-batched call each (the weight's batch stride is 0), `dW = Σ_n dy[n]·x[n]ᵀ` as one
//!   call per image accumulating with `beta = 1` (in image order: deterministic).
//! * Everything else runs the implicit-GEMM kernels (`conv2d_fwd_*`, `conv2d_bwd_data_*`,
//!   `conv2d_bwd_weight_*`): 64×64 output tiles per 256-thread block, the column matrix gathered
//!   slice by slice into shared memory, never stored. The weight gradient's long reduction
//!   (batch·OH·OW) is split over `blockIdx.z` when there are too few tiles to fill the GPU; the
//!   partial sums are added in split order by `conv2d_sum_splits_*` (no atomics).
//! * The bias gradient is the engine's sum over (batch, h, w) on the device.
//!
//! Only `groups = 1`; f32, f64, f16 and bf16. The half dtypes run natively (operands converted to
//! f32 as they are gathered, f32 accumulation, one rounding per output, split-K partials in f32),
//! 1×1 stride-1 convolutions included: the runtime's GEMM has only f32/f64, and running them
//! through the tiled kernel beats converting x, W (and dy) to f32 buffers around a GEMM — that
//! would add three to four extra passes over the activations and f32 copies twice their size,
//! for a result that rounds the same way. (A tensor-core half GEMM is the later fast path.)
//! Inputs are the contiguous tensors the autograd node keeps (possibly at an offset into their
//! storage).

use std::sync::Arc;

use bitgrad_engine::gpu::prims::launch_n;
use bitgrad_engine::gpu::{DevicePtr, GemmArgs, GemmDType, GpuRuntime, KernelArg, LaunchConfig, Op};
use bitgrad_engine::{DType, Error, GpuStorage, Result, Storage, Tensor};

use super::params::Geom;

/// Output tile edge and K slice of the kernels (`CONV_BM` = `CONV_BN`, `CONV_BK`).
const TILE: usize = 64;
const SLICE: usize = 16;
/// Threads per block of the tiled kernels (`CONV_THREADS`).
const THREADS: u32 = 256;
/// Blocks the weight gradient aims for before it splits its reduction (about two waves of an
/// H100/H200's 132 SMs).
const TARGET_BLOCKS: usize = 264;
/// Fewest K slices one split of the weight gradient handles (so partial sums stay few).
const MIN_SLICES_PER_SPLIT: usize = 16;

/// Fails for what the GPU path does not implement (grouped convolutions) or cannot index with
/// the kernels' 32-bit row/column numbers.
fn check(g: &Geom) -> Result<()> {
    if g.groups != 1 {
        return Err(Error::invalid(
            "conv2d",
            format!("groups = {} is not supported on GPU devices yet (only groups = 1); run it on the CPU", g.groups),
        ));
    }
    let dims = [g.batch * g.p(), g.batch * g.hw(), g.k_all(), g.o * g.kh * g.kw, g.c * g.hw(), g.o * g.p()];
    if dims.iter().any(|&d| d > i32::MAX as usize) {
        return Err(Error::invalid("conv2d", format!("{g:?} is too large for the GPU kernels' 32-bit indexing")));
    }
    Ok(())
}

/// The runtime and dtype of a tensor on a GPU device.
fn runtime(t: &Tensor) -> Result<(Arc<dyn GpuRuntime>, DType)> {
    let st = t.storage();
    let s = st.gpu("conv2d")?;
    Ok((s.runtime().clone(), s.dtype()))
}

/// The device pointer of a contiguous tensor's first element.
fn ptr(t: &Tensor) -> Result<DevicePtr> {
    Ok(t.storage().gpu("conv2d")?.ptr_at(t.layout().offset()))
}

fn suffix(d: DType) -> Result<&'static str> {
    match d {
        DType::F32 => Ok("f32"),
        DType::F64 => Ok("f64"),
        DType::F16 => Ok("f16"),
        DType::BF16 => Ok("bf16"),
        dtype => Err(Error::UnsupportedDType { op: "conv2d (gpu)", dtype }),
    }
}

/// The runtime GEMM's dtype for a convolution that can run as plain matrix products (1×1
/// stride 1, unpadded, in f32 or f64); `None` sends it to the tiled kernels.
fn gemm_dtype(g: &Geom, d: DType) -> Option<GemmDType> {
    match d {
        _ if !g.is_pointwise() => None,
        DType::F32 => Some(GemmDType::F32),
        DType::F64 => Some(GemmDType::F64),
        _ => None,
    }
}

/// The kernels' arithmetic type for storage dtype `d` (the dtype of split-K partial sums).
fn acc_dtype(d: DType) -> DType {
    if d == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// `bg_conv` of conv2d.cu: sixteen i64 fields, in order.
fn conv_arg(g: &Geom, k_chunk: usize) -> KernelArg {
    let v = [
        g.batch,
        g.c,
        g.h,
        g.w,
        g.o,
        g.kh,
        g.kw,
        g.oh,
        g.ow,
        g.stride[0],
        g.stride[1],
        g.pad[0],
        g.pad[2],
        g.dilation[0],
        g.dilation[1],
        k_chunk,
    ];
    KernelArg::Struct(v.iter().flat_map(|&d| (d as i64).to_ne_bytes()).collect())
}

/// A tiled launch over an `m × n` result with `splits` K ranges.
fn tiles(m: usize, n: usize, splits: usize) -> LaunchConfig {
    let grid = [n.div_ceil(TILE) as u32, m.div_ceil(TILE) as u32, splits as u32];
    LaunchConfig { grid, block: [THREADS, 1, 1], shared_bytes: 0 }
}

/// `y = conv2d(x, w) + bias` as a fresh `[batch, o, oh, ow]` storage.
pub(super) fn forward(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, g: &Geom) -> Result<Storage> {
    check(g)?;
    let (rt, dtype) = runtime(x)?;
    let sfx = suffix(dtype)?;
    let y = GpuStorage::alloc(&rt, dtype, g.batch * g.o * g.p())?;
    if y.is_empty() {
        return Ok(Storage::Gpu(y));
    }
    let bias_ptr = bias.map(ptr).transpose()?;
    if let Some(gemm_dtype) = gemm_dtype(g, dtype) {
        // Row-major y[n] = W·x[n] is column-major y[n]ᵀ[HW, O] = x[n]ᵀ[HW, C] · Wᵀ[C, O].
        let hw = g.hw();
        rt.gemm(&GemmArgs {
            dtype: gemm_dtype,
            op_a: Op::N,
            op_b: Op::N,
            m: hw,
            n: g.o,
            k: g.c,
            alpha: 1.0,
            a: ptr(x)?,
            lda: hw,
            stride_a: g.c * hw,
            b: ptr(w)?,
            ldb: g.c,
            stride_b: 0,
            beta: 0.0,
            c: y.ptr(),
            ldc: hw,
            stride_c: g.o * hw,
            batch: g.batch,
        })?;
        if let Some(b) = bias_ptr {
            let n = y.len();
            let args = [y.ptr().into(), b.into(), (n as i64).into(), (g.o as i64).into(), (hw as i64).into()];
            launch_n(&rt, &format!("conv2d_add_bias_{sfx}"), n, &args)?;
        }
        return Ok(Storage::Gpu(y));
    }
    let null = DevicePtr(0);
    let args =
        [ptr(x)?.into(), ptr(w)?.into(), bias_ptr.unwrap_or(null).into(), y.ptr().into(), conv_arg(g, g.k_all())];
    rt.launch(&format!("conv2d_fwd_{sfx}"), &tiles(g.o, g.batch * g.p(), 1), &args)?;
    Ok(Storage::Gpu(y))
}

/// The gradients of [`forward`] for `gy` (contiguous `[batch, o, oh, ow]`): `[dx, dw]` or
/// `[dx, dw, db]` as the inputs are, each `None` unless `need` asks for it.
pub(super) fn backward(inputs: &[Tensor], gy: &Tensor, g: &Geom, need: [bool; 3]) -> Result<Vec<Option<Tensor>>> {
    check(g)?;
    let (x, w) = (&inputs[0], &inputs[1]);
    let dx = if need[0] { Some(input_grad(gy, w, g)?) } else { None };
    let dw = if need[1] { Some(weight_grad(gy, x, g)?) } else { None };
    let wrap = |s: GpuStorage, shape: Vec<usize>| Tensor::from_storage(Storage::Gpu(s), shape);
    let mut out =
        vec![dx.map(|s| wrap(s, vec![g.batch, g.c, g.h, g.w])), dw.map(|s| wrap(s, vec![g.o, g.c, g.kh, g.kw]))];
    if inputs.len() == 3 {
        out.push(if need[2] { Some(gy.sum(&[0, 2, 3], false)?) } else { None });
    }
    Ok(out)
}

/// `dx = col2im(Wᵀ·dY)`: `[batch, c, h, w]`.
fn input_grad(gy: &Tensor, w: &Tensor, g: &Geom) -> Result<GpuStorage> {
    let (rt, dtype) = runtime(gy)?;
    let dx = GpuStorage::alloc(&rt, dtype, g.batch * g.c * g.hw())?;
    if dx.is_empty() {
        return Ok(dx);
    }
    if g.o == 0 {
        return GpuStorage::zeros(&rt, dtype, dx.len());
    }
    if let Some(gemm_dtype) = gemm_dtype(g, dtype) {
        // dx[n] = Wᵀ·dy[n] is column-major dx[n]ᵀ[HW, C] = dy[n]ᵀ[HW, O] · W[O, C] (W stored
        // column-major as Wᵀ with ld C, hence Op::T).
        let hw = g.hw();
        rt.gemm(&GemmArgs {
            dtype: gemm_dtype,
            op_a: Op::N,
            op_b: Op::T,
            m: hw,
            n: g.c,
            k: g.o,
            alpha: 1.0,
            a: ptr(gy)?,
            lda: hw,
            stride_a: g.o * hw,
            b: ptr(w)?,
            ldb: g.c,
            stride_b: 0,
            beta: 0.0,
            c: dx.ptr(),
            ldc: hw,
            stride_c: g.c * hw,
            batch: g.batch,
        })?;
        return Ok(dx);
    }
    let args = [ptr(gy)?.into(), ptr(w)?.into(), dx.ptr().into(), conv_arg(g, g.o * g.kh * g.kw)];
    rt.launch(&format!("conv2d_bwd_data_{}", suffix(dtype)?), &tiles(g.c, g.batch * g.hw(), 1), &args)?;
    Ok(dx)
}

/// How many K ranges the weight gradient's reduction of length `k` is split into over an
/// `m × n` result, and the length of each (a multiple of the slice).
fn weight_grad_splits(m: usize, n: usize, k: usize) -> (usize, usize) {
    let blocks = m.div_ceil(TILE) * n.div_ceil(TILE);
    let slices = k.div_ceil(SLICE);
    let splits = TARGET_BLOCKS.div_ceil(blocks).clamp(1, (slices / MIN_SLICES_PER_SPLIT).max(1));
    let chunk = slices.div_ceil(splits) * SLICE;
    (k.div_ceil(chunk), chunk)
}

/// `dW = Σ_n dY·colsᵀ`: `[o, c, kh, kw]`.
fn weight_grad(gy: &Tensor, x: &Tensor, g: &Geom) -> Result<GpuStorage> {
    let (rt, dtype) = runtime(gy)?;
    let (m, n, k) = (g.o, g.k_all(), g.batch * g.p());
    if m * n == 0 || k == 0 {
        return GpuStorage::zeros(&rt, dtype, m * n);
    }
    let dw = GpuStorage::alloc(&rt, dtype, m * n)?;
    if let Some(gemm_dtype) = gemm_dtype(g, dtype) {
        // dWᵀ[C, O] = Σ_n x[n][C, HW] · dy[n]ᵀ[HW, O] (column-major), image after image.
        let (hw, es) = (g.hw(), dtype.size_in_bytes());
        let (x0, y0) = (ptr(x)?, ptr(gy)?);
        for b in 0..g.batch {
            rt.gemm(&GemmArgs {
                dtype: gemm_dtype,
                op_a: Op::T,
                op_b: Op::N,
                m: g.c,
                n: g.o,
                k: hw,
                alpha: 1.0,
                a: x0.byte_add(b * g.c * hw * es),
                lda: hw,
                stride_a: 0,
                b: y0.byte_add(b * g.o * hw * es),
                ldb: hw,
                stride_b: 0,
                beta: if b == 0 { 0.0 } else { 1.0 },
                c: dw.ptr(),
                ldc: g.c,
                stride_c: 0,
                batch: 1,
            })?;
        }
        return Ok(dw);
    }
    let (splits, chunk) = weight_grad_splits(m, n, k);
    let sfx = suffix(dtype)?;
    // Split partial sums stay in the arithmetic type (f32 for f16/bf16: rounded once, at the end).
    let partial = if splits > 1 { Some(GpuStorage::alloc(&rt, acc_dtype(dtype), splits * m * n)?) } else { None };
    let part = partial.as_ref().map_or(DevicePtr(0), |p| p.ptr());
    let args = [ptr(x)?.into(), ptr(gy)?.into(), dw.ptr().into(), part.into(), conv_arg(g, chunk)];
    rt.launch(&format!("conv2d_bwd_weight_{sfx}"), &tiles(m, n, splits), &args)?;
    if splits > 1 {
        let args = [part.into(), dw.ptr().into(), (splits as i64).into(), ((m * n) as i64).into()];
        launch_n(&rt, &format!("conv2d_sum_splits_{sfx}"), m * n, &args)?;
    }
    Ok(dw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_grad_splits_cover_k_in_whole_slices() {
        // Few tiles and a long reduction: split, every range a multiple of the slice.
        let (s, c) = weight_grad_splits(64, 64, 100_000);
        assert!(s > 1 && c % SLICE == 0 && s * c >= 100_000 && (s - 1) * c < 100_000);
        // Enough tiles, or a short reduction: one range.
        assert_eq!(weight_grad_splits(2048, 4608, 1 << 20).0, 1);
        assert_eq!(weight_grad_splits(16, 16, 100), (1, 112));
    }
}
