//! The one error type of the engine. Messages name the shapes, dtypes and devices involved so that
//! a user can tell which call was wrong without a debugger.

use crate::{DType, Device, Shape};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op}: shape mismatch between {lhs} and {rhs}")]
    ShapeMismatch { op: &'static str, lhs: Shape, rhs: Shape },

    #[error("{op}: shapes {lhs} and {rhs} cannot be broadcast together")]
    BroadcastIncompatible { op: &'static str, lhs: Shape, rhs: Shape },

    #[error("{op}: dtype mismatch, {lhs} vs {rhs}")]
    DTypeMismatch { op: &'static str, lhs: DType, rhs: DType },

    #[error("{op}: not supported for dtype {dtype}")]
    UnsupportedDType { op: &'static str, dtype: DType },

    #[error("{op}: device mismatch, {lhs} vs {rhs}")]
    DeviceMismatch { op: &'static str, lhs: Device, rhs: Device },

    #[error("device {device} is not available: {reason}")]
    DeviceUnavailable { device: Device, reason: String },

    #[error("{op}: axis {axis} is out of range for a tensor of rank {rank} (shape {shape})")]
    AxisOutOfRange { op: &'static str, axis: isize, rank: usize, shape: Shape },

    #[error("{op}: axis {axis} appears more than once")]
    DuplicateAxis { op: &'static str, axis: usize },

    #[error("{op}: {len} elements do not fit shape {shape} ({expected} elements)")]
    ElementCount { op: &'static str, len: usize, shape: Shape, expected: usize },

    #[error("{op}: range {start}..{end} is out of bounds for axis {axis} of size {size}")]
    RangeOutOfBounds { op: &'static str, axis: usize, start: usize, end: usize, size: usize },

    #[error("{op}: index {index} is out of bounds for axis {axis} of size {size}")]
    IndexOutOfBounds { op: &'static str, index: i64, axis: usize, size: usize },

    #[error("{op}: {msg}")]
    InvalidArgument { op: &'static str, msg: String },

    #[error("{device}: {msg}")]
    Gpu { device: Device, msg: String },

    #[error("{device}: kernel `{kernel}` failed: {msg}")]
    Kernel { device: Device, kernel: String, msg: String },

    #[error("backward: {0}")]
    Autograd(String),

    #[error("{0}")]
    Msg(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument { op, msg: msg.into() }
    }
}
