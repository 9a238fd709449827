//! Softmax and log-softmax along one axis on a GPU device (`softmax.cu`), one block per row.

use super::{dtype_suffix, expect_float, out_like, LayoutArg};
use crate::gpu::LaunchConfig;
use crate::{GpuStorage, Layout, Result};

/// Softmax (or log-softmax) along `axis`; the result is contiguous in the input's shape.
pub fn softmax(s: &GpuStorage, l: &Layout, axis: usize, log: bool) -> Result<GpuStorage> {
    expect_float("softmax", s.dtype())?;
    let n = l.numel();
    let out = out_like(s, s.dtype(), n)?;
    let len = l.dims()[axis];
    if n == 0 || len == 0 {
        return Ok(out);
    }
    let rows = n / len;
    let others: Vec<usize> = (0..l.dims().len()).filter(|&a| a != axis).collect();
    let dims: Vec<usize> = others.iter().map(|&a| l.dims()[a]).collect();
    let ystrides = l.shape().contiguous_strides();
    let lx =
        LayoutArg::of(&Layout::new(dims.clone().into(), others.iter().map(|&a| l.strides()[a]).collect(), l.offset()))?;
    let ly = LayoutArg::of(&Layout::new(dims.into(), others.iter().map(|&a| ystrides[a]).collect(), 0))?;
    let threads = len.next_power_of_two().clamp(32, 256) as u32;
    let cfg = LaunchConfig { grid: [rows as u32, 1, 1], block: [threads, 1, 1], shared_bytes: 0 };
    let args = [
        (len as i64).into(),
        (log as i32).into(),
        s.ptr().into(),
        lx.arg(),
        (l.strides()[axis] as i64).into(),
        out.ptr().into(),
        ly.arg(),
        (ystrides[axis] as i64).into(),
    ];
    s.runtime().launch(&format!("softmax_{}", dtype_suffix(s.dtype())), &cfg, &args)?;
    Ok(out)
}
