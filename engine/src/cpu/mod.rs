//! The CPU backend: the numerical reference for every op and the twin of every GPU kernel.
//!
//! Functions here take storages with their layouts and return fresh contiguous storages; they
//! know nothing of autograd. Arithmetic on f16/bf16 is done in f32 (upcast, compute, round once).

pub mod copy;
pub mod elementwise;
pub mod index;
pub mod isa;
pub(crate) mod lanes;
pub mod malloc;
pub mod matmul;
pub mod pool;
pub mod reduce;
pub mod softmax;
pub mod strided;

use crate::{CpuStorage, DType, Error, Layout, Result};

/// Runs `f` on an f32 copy of a half-precision storage and rounds the result back; other dtypes
/// go straight through.
pub(crate) fn via_f32(
    s: &CpuStorage,
    l: &Layout,
    f: impl FnOnce(&CpuStorage, &Layout) -> Result<CpuStorage>,
) -> Result<CpuStorage> {
    match s.dtype() {
        DType::F16 | DType::BF16 => {
            let up = copy::cast(s, l, DType::F32)?;
            let out = f(&up, &Layout::contiguous(l.shape().clone()))?;
            let n = out.len();
            copy::cast(&out, &Layout::contiguous([n]), s.dtype())
        }
        _ => f(s, l),
    }
}

pub(crate) fn unsupported(op: &'static str, dtype: DType) -> Error {
    Error::UnsupportedDType { op, dtype }
}

/// Applies a dtype-generic expression to whichever vector a storage holds, wrapping the result
/// back into the same variant: `map_storage!(s, v => some_generic_fn(v))`.
macro_rules! map_storage {
    ($s:expr, $v:ident => $body:expr) => {
        match $s {
            $crate::CpuStorage::F32($v) => $crate::CpuStorage::F32($body),
            $crate::CpuStorage::F64($v) => $crate::CpuStorage::F64($body),
            $crate::CpuStorage::F16($v) => $crate::CpuStorage::F16($body),
            $crate::CpuStorage::BF16($v) => $crate::CpuStorage::BF16($body),
            $crate::CpuStorage::I64($v) => $crate::CpuStorage::I64($body),
            $crate::CpuStorage::U8($v) => $crate::CpuStorage::U8($body),
        }
    };
}
pub(crate) use map_storage;
