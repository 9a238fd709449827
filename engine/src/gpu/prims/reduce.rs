//! Reductions over any set of axes on a GPU device (`reduce.cu`).

use super::{copy, dtype_suffix, expect_float, out_like, LayoutArg};
use crate::gpu::{DevicePtr, KernelArg, LaunchConfig};
use crate::ops::ReduceOp;
use crate::{DType, Error, GpuStorage, Layout, Result};

/// Reductions at least this long get a block each; shorter ones a thread each.
const ROWS_MIN_LEN: usize = 128;

/// Reduces `axes` of the view `l`; the result is contiguous over the kept axes, in order.
pub fn reduce(s: &GpuStorage, l: &Layout, axes: &[usize], op: ReduceOp) -> Result<GpuStorage> {
    let int_sum = s.dtype() == DType::I64 && op == ReduceOp::Sum;
    if s.dtype() != DType::I64 {
        expect_float(op.name(), s.dtype())?;
    }
    let rank = l.dims().len();
    let kept: Vec<usize> = (0..rank).filter(|a| !axes.contains(a)).collect();
    let pick = |ax: &[usize]| -> (Vec<usize>, Vec<usize>) {
        (ax.iter().map(|&a| l.dims()[a]).collect(), ax.iter().map(|&a| l.strides()[a]).collect())
    };
    let (kd, ks) = pick(&kept);
    let (rd, rs) = pick(axes);
    let n_out: usize = kd.iter().product();
    let r: usize = rd.iter().product();
    let lo = LayoutArg::of(&Layout::new(kd.into(), ks, l.offset()))?;
    let lr = LayoutArg::of(&Layout::new(rd.into(), rs, 0))?;
    let sum = matches!(op, ReduceOp::Sum);
    let out_dtype = match op {
        ReduceOp::Sum if int_sum => DType::I64,
        ReduceOp::Sum => DType::F64,
        ReduceOp::Max | ReduceOp::Min => s.dtype(),
        ReduceOp::ArgMax | ReduceOp::ArgMin => DType::I64,
    };
    if r == 0 && !sum {
        return Err(Error::invalid(op.name(), format!("cannot reduce over an empty axis (shape {})", l.shape())));
    }
    let out =
        if sum && r == 0 { GpuStorage::zeros(s.runtime(), out_dtype, n_out)? } else { out_like(s, out_dtype, n_out)? };
    if n_out > 0 && r > 0 {
        let rows = r >= ROWS_MIN_LEN && n_out <= i32::MAX as usize;
        let sfx = dtype_suffix(s.dtype());
        let (val, idx) = match op {
            ReduceOp::ArgMax | ReduceOp::ArgMin => (DevicePtr(0), out.ptr()),
            _ => (out.ptr(), DevicePtr(0)),
        };
        let is_max = matches!(op, ReduceOp::Max | ReduceOp::ArgMax) as i32;
        let mut args: Vec<KernelArg> = Vec::with_capacity(8);
        let cfg = if rows {
            // A power-of-two block no larger than the reduction needs (the tree reduction of the
            // extreme kernels halves it).
            let threads = r.next_power_of_two().clamp(32, 256) as u32;
            LaunchConfig { grid: [n_out as u32, 1, 1], block: [threads, 1, 1], shared_bytes: 0 }
        } else {
            args.push((n_out as i64).into());
            LaunchConfig::for_elements(n_out, super::THREADS)
        };
        args.push((r as i64).into());
        if !sum {
            args.push(is_max.into());
        }
        args.extend([s.ptr().into(), lo.arg(), lr.arg()]);
        if sum {
            args.push(out.ptr().into());
        } else {
            args.extend([val.into(), idx.into()]);
        }
        let kind = if int_sum {
            "isum"
        } else if sum {
            "sum"
        } else {
            "ext"
        };
        let shape = if rows { "rows" } else { "cols" };
        s.runtime().launch(&format!("reduce_{kind}_{shape}_{sfx}"), &cfg, &args)?;
    }
    if sum && !int_sum && s.dtype() != DType::F64 {
        return copy::cast(&out, &Layout::contiguous([n_out]), s.dtype());
    }
    Ok(out)
}
