//! Element types. f32 is the working type everywhere; f64 exists for references and gradient
//! checks; f16/bf16 are storage types whose arithmetic runs in f32; i64 holds indices and labels;
//! u8 holds masks (the result of comparisons).

use half::{bf16, f16};

/// The element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    F16,
    BF16,
    I64,
    U8,
}

impl DType {
    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::U8 => 1,
        }
    }

    /// True for the floating-point types (the ones autograd can differentiate).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }

    /// The type arithmetic on this dtype is carried out in: f16/bf16 compute in f32.
    pub fn compute_type(self) -> DType {
        match self {
            DType::F16 | DType::BF16 => DType::F32,
            d => d,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I64 => "i64",
            DType::U8 => "u8",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Rust type that can be an element of a tensor.
pub trait WithDType: Copy + Send + Sync + PartialOrd + std::fmt::Debug + 'static {
    const DTYPE: DType;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}

macro_rules! with_dtype {
    ($t:ty, $d:ident, $to:expr, $from:expr) => {
        impl WithDType for $t {
            const DTYPE: DType = DType::$d;
            #[inline]
            fn to_f64(self) -> f64 {
                $to(self)
            }
            #[inline]
            fn from_f64(v: f64) -> Self {
                $from(v)
            }
        }
    };
}
with_dtype!(f32, F32, |x: f32| x as f64, |v: f64| v as f32);
with_dtype!(f64, F64, |x: f64| x, |v: f64| v);
with_dtype!(f16, F16, |x: f16| x.to_f64(), f16::from_f64);
with_dtype!(bf16, BF16, |x: bf16| x.to_f64(), bf16::from_f64);
with_dtype!(i64, I64, |x: i64| x as f64, |v: f64| v as i64);
with_dtype!(u8, U8, |x: u8| x as f64, |v: f64| v as u8);

/// The floating-point element types kernels are written for (f32, and f64 for references and
/// gradient checks). f16/bf16 are converted to f32 before a kernel runs.
pub trait FloatElem:
    crate::CpuElement + num_traits::Float + num_traits::FromPrimitive + Default + std::iter::Sum
{
}
impl FloatElem for f32 {}
impl FloatElem for f64 {}

/// f32 → bf16 bits, rounded to nearest even; a NaN stays a quiet NaN of the same sign
/// (`half::bf16::from_f32`'s rule). Written without branches so that loops over it vectorize:
/// the one definition every bf16 kernel on the CPU rounds with.
#[inline(always)]
pub fn bf16_bits(v: f32) -> u16 {
    let x = v.to_bits();
    let rounded = (x.wrapping_add(0x7fff + ((x >> 16) & 1)) >> 16) as u16;
    let nan = (x & 0x7fff_ffff) > 0x7f80_0000;
    if nan {
        ((x >> 16) | 0x40) as u16
    } else {
        rounded
    }
}
