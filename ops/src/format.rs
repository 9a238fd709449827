//! The memory-format boundary of the NN ops.
//!
//! Every op here accepts NCHW-contiguous and channels-last inputs (NHWC strides under the
//! logical `[N, C, H, W]` shape, see `bitgrad_engine::MemoryFormat`) and returns its output in
//! the input's format. Their kernels (CPU and GPU) read NCHW today, so a channels-last input is
//! converted **once, at the op's boundary**: one recorded copy to NCHW on the way in, one copy
//! of the 4-d output back to channels-last on the way out. Both copies are
//! `to_memory_format` conversions, whose backward converts the gradient back, so the gradient
//! of a channels-last input is channels-last too. An NCHW input goes straight through (no copy,
//! no extra graph node). Kernels that read NHWC directly will replace the boundary op by op.

use bitgrad_engine::{MemoryFormat, Result, Tensor};

/// True when `x` should go through the boundary: its strides suggest channels-last and it is
/// not also row-major (a tensor with C = 1 or H = W = 1 is both, and needs no copy).
pub(crate) fn is_channels_last_input(x: &Tensor) -> bool {
    x.memory_format() == MemoryFormat::ChannelsLast && !x.is_contiguous()
}

/// `x` as the NCHW-contiguous tensor the kernels read (itself when it already is). A copy is
/// made only for a channels-last input or a non-contiguous view the kernel would copy anyway.
pub(crate) fn to_nchw(x: &Tensor) -> Result<Tensor> {
    x.to_memory_format(MemoryFormat::Contiguous)
}

/// Runs `f` (an op written for NCHW) on `x`; a channels-last `x` is converted once on the way
/// in and a 4-d output converted back on the way out (outputs of other ranks, such as a
/// globally pooled `[N, C]`, have no format to keep).
pub(crate) fn nchw_boundary(x: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    if !is_channels_last_input(x) {
        return f(x);
    }
    let y = f(&to_nchw(x)?)?;
    if y.rank() == 4 {
        y.to_memory_format(MemoryFormat::ChannelsLast)
    } else {
        Ok(y)
    }
}
