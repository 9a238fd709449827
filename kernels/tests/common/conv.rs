//! Shared by the tensor-core convolution tests (`tc_conv_{fprop,dgrad,wgrad}.rs`): the shapes
//! (BiT's stem, 3×3 and 1×1 at stride 1 and 2, a dilated 3×3, a 3×3/2 padded only after —
//! bottom and right —, channel counts 8, 24, 64 and one above a tile, pixel counts that are not
//! multiples of the 128-row tile), bf16 data, the emulator modes, and the error bound against an
//! f64 reference.

use bitgrad_kernels::emu::Modes;
use bitgrad_kernels::tc_conv::{ConvParams, ConvShape};

use super::tc::{Half, Rng};

/// A named convolution.
pub struct Case {
    pub name: &'static str,
    pub shape: ConvShape,
}

fn case(name: &'static str, nhwc: [usize; 4], krs: [usize; 3], cp: ConvParams) -> Case {
    Case { name, shape: ConvShape::new(nhwc, krs, cp).unwrap_or_else(|e| panic!("{name}: {e}")) }
}

/// Every shape the three passes are tested on (the stem is tested separately, padded from 3
/// channels).
pub fn cases() -> Vec<Case> {
    let dilated = ConvParams { stride: (1, 1), pad: [2; 4], dil: (2, 2) };
    // TF-"SAME"-style: one more row and column after than before.
    let asym = ConvParams { stride: (2, 2), pad: [0, 1, 0, 1], dil: (1, 1) };
    vec![
        case("3x3/1 C24 K64", [2, 9, 7, 24], [64, 3, 3], ConvParams::new(1, 1)),
        case("3x3/2 C64 K8", [2, 9, 9, 64], [8, 3, 3], ConvParams::new(2, 1)),
        case("3x3/2 C8 K24 even", [1, 8, 10, 8], [24, 3, 3], ConvParams::new(2, 1)),
        case("1x1/1 C64 K24", [3, 7, 9, 64], [24, 1, 1], ConvParams::new(1, 0)),
        case("1x1/2 C8 K64", [2, 9, 9, 8], [64, 1, 1], ConvParams::new(2, 0)),
        case("3x3/1 dil2 C8 K16", [1, 10, 10, 8], [16, 3, 3], dilated),
        case("3x3/2 pad 0,1 C8 K8", [1, 8, 7, 8], [8, 3, 3], asym),
        case("3x3/1 C8 K136", [1, 5, 5, 8], [136, 3, 3], ConvParams::new(1, 1)),
    ]
}

/// BiT's stem: 7×7 stride 2 pad 3 on 3 channels, which the kernels take padded to 8.
pub const STEM: ([usize; 4], [usize; 3]) = ([1, 13, 11, 3], [24, 7, 7]);

/// The emulator modes the tensor-core tests run: plain, and fully checked under two seeds.
pub const MODES: [Modes; 3] = [Modes::FAST, Modes::CHECKED, Modes { seed: 42, ..Modes::CHECKED }];

/// `len` random bf16 values in [-1, 1).
pub fn bf16_data(rng: &mut Rng, len: usize) -> Vec<u16> {
    (0..len).map(|_| Half::Bf16.round(rng.unit())).collect()
}

pub fn bf(x: u16) -> f32 {
    Half::Bf16.to_f32(x)
}

/// Index helpers for the NHWC-like layouts: `[a][b][c][d]`.
pub fn at(dims: [i32; 4], i: [i32; 4]) -> usize {
    (((i[0] * dims[1] + i[1]) * dims[2] + i[2]) * dims[3] + i[3]) as usize
}

/// An f64 sum of products, with the magnitudes the error bound needs.
#[derive(Default, Clone, Copy)]
pub struct Exact {
    pub sum: f64,
    pub abs: f64,
    pub terms: usize,
}

impl Exact {
    pub fn add(&mut self, a: f32, b: f32) {
        let p = a as f64 * b as f64;
        self.sum += p;
        self.abs += p.abs();
        self.terms += 1;
    }
}

/// The tolerance a result is held to against the f64 sum of the products of its bf16 operands:
/// any order of f32 additions errs by at most γ_n·Σ|aᵢbᵢ| (n terms, γ_n = n·u/(1 − n·u),
/// u = 2⁻²⁴; the products of bf16 values are exact in f32), and a bf16 output adds its own
/// rounding, 2⁻⁸ relative.
pub fn assert_close(got: f32, e: &Exact, bf16_out: bool, what: &dyn Fn() -> String) {
    let n = e.terms as f64 + 1.0;
    let gamma = n * 2f64.powi(-24) / (1.0 - n * 2f64.powi(-24));
    let mut tol = gamma * e.abs;
    if bf16_out {
        tol += 2f64.powi(-8) * (e.sum.abs() + tol);
    }
    let err = (got as f64 - e.sum).abs();
    assert!(err <= tol, "{}: {got} vs exact {} (error {err:e} > bound {tol:e})", what(), e.sum);
}
