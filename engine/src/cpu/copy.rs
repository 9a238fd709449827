//! Copies: strided → contiguous, dtype casts, and writing one tensor into a region of another
//! (what `cat` is made of).

use half::{bf16, f16};

use super::strided::{map1, Runs};
use crate::{CpuStorage, DType, Layout, Result, WithDType};

/// A contiguous copy of the elements `l` describes.
pub fn contiguous(s: &CpuStorage, l: &Layout) -> CpuStorage {
    super::map_storage!(s, v => map1(v, l, |x| x))
}

fn cast_from<T: WithDType + Sync>(v: &[T], l: &Layout, to: DType) -> CpuStorage {
    match to {
        DType::F32 => CpuStorage::F32(map1(v, l, |x| x.to_f64() as f32)),
        DType::F64 => CpuStorage::F64(map1(v, l, |x| x.to_f64())),
        DType::F16 => CpuStorage::F16(map1(v, l, |x| f16::from_f64(x.to_f64()))),
        DType::BF16 => CpuStorage::BF16(map1(v, l, |x| bf16::from_f64(x.to_f64()))),
        DType::I64 => CpuStorage::I64(map1(v, l, |x| x.to_f64() as i64)),
        DType::U8 => CpuStorage::U8(map1(v, l, |x| x.to_f64() as u8)),
    }
}

/// A contiguous copy converted to `to` (round to nearest even for floats, truncation for ints).
pub fn cast(s: &CpuStorage, l: &Layout, to: DType) -> Result<CpuStorage> {
    if s.dtype() == to {
        return Ok(contiguous(s, l));
    }
    // The hot conversions get direct paths; everything else goes through f64 exactly.
    Ok(match (s, to) {
        (CpuStorage::F32(v), DType::F16) => CpuStorage::F16(map1(v, l, f16::from_f32)),
        (CpuStorage::F32(v), DType::BF16) => CpuStorage::BF16(map1(v, l, bf16::from_f32)),
        (CpuStorage::F16(v), DType::F32) => CpuStorage::F32(map1(v, l, f16::to_f32)),
        (CpuStorage::BF16(v), DType::F32) => CpuStorage::F32(map1(v, l, bf16::to_f32)),
        (CpuStorage::F32(v), _) => cast_from(v, l, to),
        (CpuStorage::F64(v), _) => cast_from(v, l, to),
        (CpuStorage::F16(v), _) => cast_from(v, l, to),
        (CpuStorage::BF16(v), _) => cast_from(v, l, to),
        (CpuStorage::I64(v), _) => cast_from(v, l, to),
        (CpuStorage::U8(v), _) => cast_from(v, l, to),
    })
}

fn write_into<T: Copy>(dst: &mut [T], dl: &Layout, src: &[T], sl: &Layout) {
    let runs = Runs::new([dl, sl]);
    let [ds, ss] = runs.inner_strides();
    runs.for_each(0..runs.numel(), |[d, s], len| {
        for i in 0..len {
            dst[d + i * ds] = src[s + i * ss];
        }
    });
}

/// Copies the elements of `src` (layout `sl`) into the region `dl` of `dst`; shapes must match.
pub fn copy_into(dst: &mut CpuStorage, dl: &Layout, src: &CpuStorage, sl: &Layout) -> Result<()> {
    match (dst, src) {
        (CpuStorage::F32(d), CpuStorage::F32(s)) => write_into(d, dl, s, sl),
        (CpuStorage::F64(d), CpuStorage::F64(s)) => write_into(d, dl, s, sl),
        (CpuStorage::F16(d), CpuStorage::F16(s)) => write_into(d, dl, s, sl),
        (CpuStorage::BF16(d), CpuStorage::BF16(s)) => write_into(d, dl, s, sl),
        (CpuStorage::I64(d), CpuStorage::I64(s)) => write_into(d, dl, s, sl),
        (CpuStorage::U8(d), CpuStorage::U8(s)) => write_into(d, dl, s, sl),
        (d, s) => return Err(crate::Error::DTypeMismatch { op: "copy_into", lhs: d.dtype(), rhs: s.dtype() }),
    }
    Ok(())
}
