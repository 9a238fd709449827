//! Elementwise unary, binary (with broadcasting done by the caller) and comparison kernels.

use num_traits::Float;

use super::strided::{map1, map2, map3};
use super::{unsupported, via_f32};
use crate::ops::{BinaryOp, CmpOp, UnaryOp};
use crate::{CpuStorage, Error, Layout, Result};

fn unary_float<T: Float + Default + Send + Sync>(v: &[T], l: &Layout, op: UnaryOp) -> Vec<T> {
    let c = |x: f64| T::from(x).unwrap();
    let (zero, one) = (T::zero(), T::one());
    match op {
        UnaryOp::Neg => map1(v, l, |x| -x),
        UnaryOp::Exp => map1(v, l, |x| x.exp()),
        UnaryOp::Log => map1(v, l, |x| x.ln()),
        UnaryOp::Sqrt => map1(v, l, |x| x.sqrt()),
        UnaryOp::Rsqrt => map1(v, l, |x| one / x.sqrt()),
        UnaryOp::Recip => map1(v, l, |x| one / x),
        UnaryOp::Sqr => map1(v, l, |x| x * x),
        UnaryOp::Relu => map1(v, l, |x| if x > zero { x } else { zero }),
        UnaryOp::Sigmoid => map1(v, l, |x| one / (one + (-x).exp())),
        UnaryOp::Tanh => map1(v, l, |x| x.tanh()),
        UnaryOp::Abs => map1(v, l, |x| x.abs()),
        UnaryOp::Sign => map1(v, l, |x| {
            if x > zero {
                one
            } else if x < zero {
                -one
            } else {
                zero
            }
        }),
        UnaryOp::Step => map1(v, l, |x| if x > zero { one } else { zero }),
        UnaryOp::Powf(p) => {
            let p = c(p);
            map1(v, l, |x| x.powf(p))
        }
        UnaryOp::Affine { mul, add } => {
            let (m, a) = (c(mul), c(add));
            map1(v, l, |x| x * m + a)
        }
    }
}

fn unary_int(v: &[i64], l: &Layout, op: UnaryOp) -> Result<Vec<i64>> {
    Ok(match op {
        UnaryOp::Neg => map1(v, l, |x| -x),
        UnaryOp::Abs => map1(v, l, |x| x.abs()),
        UnaryOp::Sqr => map1(v, l, |x| x * x),
        UnaryOp::Relu => map1(v, l, |x| x.max(0)),
        UnaryOp::Sign => map1(v, l, |x| x.signum()),
        UnaryOp::Step => map1(v, l, |x| (x > 0) as i64),
        UnaryOp::Affine { mul, add } if mul.fract() == 0.0 && add.fract() == 0.0 => {
            let (m, a) = (mul as i64, add as i64);
            map1(v, l, |x| x * m + a)
        }
        _ => return Err(unsupported(op.name(), crate::DType::I64)),
    })
}

/// `op(x)` for every element, in a fresh contiguous storage of the same dtype.
pub fn unary(s: &CpuStorage, l: &Layout, op: UnaryOp) -> Result<CpuStorage> {
    via_f32(s, l, |s, l| {
        Ok(match s {
            CpuStorage::F32(v) => CpuStorage::F32(unary_float(v, l, op)),
            CpuStorage::F64(v) => CpuStorage::F64(unary_float(v, l, op)),
            CpuStorage::I64(v) => CpuStorage::I64(unary_int(v, l, op)?),
            s => return Err(unsupported(op.name(), s.dtype())),
        })
    })
}

fn binary_float<T: Float + Default + Send + Sync>(a: &[T], la: &Layout, b: &[T], lb: &Layout, op: BinaryOp) -> Vec<T> {
    match op {
        BinaryOp::Add => map2(a, la, b, lb, |x, y| x + y),
        BinaryOp::Sub => map2(a, la, b, lb, |x, y| x - y),
        BinaryOp::Mul => map2(a, la, b, lb, |x, y| x * y),
        BinaryOp::Div => map2(a, la, b, lb, |x, y| x / y),
        // NaN propagates, as in PyTorch's maximum/minimum.
        BinaryOp::Max => map2(a, la, b, lb, |x, y| if x.is_nan() || x > y { x } else { y }),
        BinaryOp::Min => map2(a, la, b, lb, |x, y| if x.is_nan() || x < y { x } else { y }),
    }
}

fn binary_int(a: &[i64], la: &Layout, b: &[i64], lb: &Layout, op: BinaryOp) -> Result<Vec<i64>> {
    Ok(match op {
        BinaryOp::Add => map2(a, la, b, lb, |x, y| x.wrapping_add(y)),
        BinaryOp::Sub => map2(a, la, b, lb, |x, y| x.wrapping_sub(y)),
        BinaryOp::Mul => map2(a, la, b, lb, |x, y| x.wrapping_mul(y)),
        BinaryOp::Max => map2(a, la, b, lb, |x, y| x.max(y)),
        BinaryOp::Min => map2(a, la, b, lb, |x, y| x.min(y)),
        BinaryOp::Div => return Err(unsupported("div", crate::DType::I64)),
    })
}

/// f32 → bf16 with [`crate::bf16_bits`] (nearest even, branch-free).
#[inline(always)]
fn round_bf16(v: f32) -> half::bf16 {
    half::bf16::from_bits(crate::bf16_bits(v))
}

/// `op(a, b)` elementwise; both layouts already broadcast to the output shape.
pub fn binary(a: &CpuStorage, la: &Layout, b: &CpuStorage, lb: &Layout, op: BinaryOp) -> Result<CpuStorage> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op: op.name(), lhs: a.dtype(), rhs: b.dtype() });
    }
    // bf16 arithmetic (the residual adds and gradient sums of a model trained in bf16): one
    // pass, each value computed in f32 and rounded once — the same bits as the f32 copies below.
    // Each op gets its own closure (not a function pointer chosen at run time), so that the
    // loop inlines and vectorises: through a pointer, R50x1's bf16 residual adds cost a call
    // per element.
    if let (CpuStorage::BF16(x), CpuStorage::BF16(y)) = (a, b) {
        let f32_of = |v: half::bf16| v.to_f32();
        let out = match op {
            BinaryOp::Add => Some(map2(x, la, y, lb, |x, y| round_bf16(f32_of(x) + f32_of(y)))),
            BinaryOp::Sub => Some(map2(x, la, y, lb, |x, y| round_bf16(f32_of(x) - f32_of(y)))),
            BinaryOp::Mul => Some(map2(x, la, y, lb, |x, y| round_bf16(f32_of(x) * f32_of(y)))),
            BinaryOp::Div => Some(map2(x, la, y, lb, |x, y| round_bf16(f32_of(x) / f32_of(y)))),
            BinaryOp::Max | BinaryOp::Min => None,
        };
        if let Some(out) = out {
            return Ok(CpuStorage::BF16(out));
        }
    }
    // Half precision: compute on f32 copies (the common case on CPU is f32 anyway).
    if matches!(a, CpuStorage::F16(_) | CpuStorage::BF16(_)) {
        let (a32, b32) = (super::copy::cast(a, la, crate::DType::F32)?, super::copy::cast(b, lb, crate::DType::F32)?);
        let shape = la.shape().clone();
        let c = Layout::contiguous(shape.clone());
        let out = binary(&a32, &c, &b32, &c, op)?;
        return super::copy::cast(&out, &c, a.dtype());
    }
    Ok(match (a, b) {
        (CpuStorage::F32(x), CpuStorage::F32(y)) => CpuStorage::F32(binary_float(x, la, y, lb, op)),
        (CpuStorage::F64(x), CpuStorage::F64(y)) => CpuStorage::F64(binary_float(x, la, y, lb, op)),
        (CpuStorage::I64(x), CpuStorage::I64(y)) => CpuStorage::I64(binary_int(x, la, y, lb, op)?),
        (s, _) => return Err(unsupported(op.name(), s.dtype())),
    })
}

fn cmp_typed<T: PartialOrd + Copy + Sync>(a: &[T], la: &Layout, b: &[T], lb: &Layout, op: CmpOp) -> Vec<u8> {
    match op {
        CmpOp::Eq => map2(a, la, b, lb, |x, y| (x == y) as u8),
        CmpOp::Ne => map2(a, la, b, lb, |x, y| (x != y) as u8),
        CmpOp::Lt => map2(a, la, b, lb, |x, y| (x < y) as u8),
        CmpOp::Le => map2(a, la, b, lb, |x, y| (x <= y) as u8),
        CmpOp::Gt => map2(a, la, b, lb, |x, y| (x > y) as u8),
        CmpOp::Ge => map2(a, la, b, lb, |x, y| (x >= y) as u8),
    }
}

/// Elementwise comparison giving a u8 mask (1 = true).
pub fn compare(a: &CpuStorage, la: &Layout, b: &CpuStorage, lb: &Layout, op: CmpOp) -> Result<CpuStorage> {
    Ok(CpuStorage::U8(match (a, b) {
        (CpuStorage::F32(x), CpuStorage::F32(y)) => cmp_typed(x, la, y, lb, op),
        (CpuStorage::F64(x), CpuStorage::F64(y)) => cmp_typed(x, la, y, lb, op),
        (CpuStorage::F16(x), CpuStorage::F16(y)) => cmp_typed(x, la, y, lb, op),
        (CpuStorage::BF16(x), CpuStorage::BF16(y)) => cmp_typed(x, la, y, lb, op),
        (CpuStorage::I64(x), CpuStorage::I64(y)) => cmp_typed(x, la, y, lb, op),
        (CpuStorage::U8(x), CpuStorage::U8(y)) => cmp_typed(x, la, y, lb, op),
        (x, y) => return Err(Error::DTypeMismatch { op: "compare", lhs: x.dtype(), rhs: y.dtype() }),
    }))
}

fn where_typed<T: Copy + Default + Send + Sync>(m: (&[u8], &Layout), a: (&[T], &Layout), b: (&[T], &Layout)) -> Vec<T> {
    map3(m, a, b, |c, x, y| if c != 0 { x } else { y })
}

/// `mask ? a : b` elementwise; all three layouts broadcast to the output shape.
pub fn where_cond(
    m: &CpuStorage,
    lm: &Layout,
    a: &CpuStorage,
    la: &Layout,
    b: &CpuStorage,
    lb: &Layout,
) -> Result<CpuStorage> {
    let CpuStorage::U8(mv) = m else {
        return Err(Error::invalid("where_cond", format!("the mask must be u8, got {}", m.dtype())));
    };
    let m = (mv.as_slice(), lm);
    Ok(match (a, b) {
        (CpuStorage::F32(x), CpuStorage::F32(y)) => CpuStorage::F32(where_typed(m, (x, la), (y, lb))),
        (CpuStorage::F64(x), CpuStorage::F64(y)) => CpuStorage::F64(where_typed(m, (x, la), (y, lb))),
        (CpuStorage::F16(x), CpuStorage::F16(y)) => CpuStorage::F16(where_typed(m, (x, la), (y, lb))),
        (CpuStorage::BF16(x), CpuStorage::BF16(y)) => CpuStorage::BF16(where_typed(m, (x, la), (y, lb))),
        (CpuStorage::I64(x), CpuStorage::I64(y)) => CpuStorage::I64(where_typed(m, (x, la), (y, lb))),
        (CpuStorage::U8(x), CpuStorage::U8(y)) => CpuStorage::U8(where_typed(m, (x, la), (y, lb))),
        (x, y) => return Err(Error::DTypeMismatch { op: "where_cond", lhs: x.dtype(), rhs: y.dtype() }),
    })
}

#[cfg(test)]
mod bf16_tests {
    use super::*;

    /// The branchless rounding is `half`'s `from_f32` (what the f32-copy path ends with), on
    /// NaNs, infinities, halfway cases, overflow and a spread of random bit patterns.
    #[test]
    fn round_bf16_is_halfs_from_f32() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let specials = [
            0x7fc0_0001u32,
            0xffc0_0000,
            0x7f80_0000,
            0xff80_0000,
            0x3f80_8000,
            0x3f81_8000,
            0x7f7f_ffff,
            0x0000_8000,
            0x8000_0001,
        ];
        let randoms = (0..1_000_000).map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 32) as u32
        });
        for bits in specials.into_iter().chain(randoms) {
            let v = f32::from_bits(bits);
            assert_eq!(round_bf16(v).to_bits(), half::bf16::from_f32(v).to_bits(), "{bits:#x}");
        }
    }

    /// bf16 add/sub/mul/div in one pass give the bits of the f32-copy path.
    #[test]
    fn bf16_arithmetic_matches_the_f32_copies() {
        let vals: Vec<half::bf16> =
            [1.0f32, -2.5, 3.0e38, 1.0e-38, 0.0, -0.0, f32::INFINITY, f32::NAN, 1.0 + 1.0 / 256.0, 7.0]
                .iter()
                .map(|&v| half::bf16::from_f32(v))
                .collect();
        let n = vals.len();
        let a: Vec<half::bf16> = (0..n * n).map(|i| vals[i / n]).collect();
        let b: Vec<half::bf16> = (0..n * n).map(|i| vals[i % n]).collect();
        let l = Layout::contiguous(crate::Shape::from(vec![n * n]));
        for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
            let fast = binary(&CpuStorage::BF16(a.clone()), &l, &CpuStorage::BF16(b.clone()), &l, op).unwrap();
            let (a32, b32) = (
                super::super::copy::cast(&CpuStorage::BF16(a.clone()), &l, crate::DType::F32).unwrap(),
                super::super::copy::cast(&CpuStorage::BF16(b.clone()), &l, crate::DType::F32).unwrap(),
            );
            let slow =
                super::super::copy::cast(&binary(&a32, &l, &b32, &l, op).unwrap(), &l, crate::DType::BF16).unwrap();
            let bits = |s: &CpuStorage| match s {
                CpuStorage::BF16(v) => v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                _ => unreachable!(),
            };
            assert_eq!(bits(&fast), bits(&slow), "{}", op.name());
        }
    }
}
