//! Scalar references for the tensor-core tests, written from the PTX ISA's fragment tables
//! (register by register, as a kernel author reads them) independently of the emulator's code.

use half::{bf16, f16};

/// xorshift64*: reproducible test data without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        (self.next() >> 11) % n
    }
    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// A 16-bit float format of the tensor cores.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Half {
    Bf16,
    F16,
}

impl Half {
    pub fn to_f32(self, bits: u16) -> f32 {
        match self {
            Half::Bf16 => bf16::from_bits(bits).to_f32(),
            Half::F16 => f16::from_bits(bits).to_f32(),
        }
    }
    /// The bits of the value nearest to `x` (round to nearest even).
    pub fn round(self, x: f32) -> u16 {
        match self {
            Half::Bf16 => bf16::from_f32(x).to_bits(),
            Half::F16 => f16::from_f32(x).to_bits(),
        }
    }
    /// ±0, ±∞, NaN, the largest finite, the smallest normal, subnormals, ±1.
    pub fn edges(self) -> Vec<u16> {
        match self {
            Half::Bf16 => {
                vec![0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0x7F7F, 0xFF7F, 0x0080, 0x0001, 0x807F, 0x3F80, 0xBF80]
            }
            Half::F16 => {
                vec![0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0x7BFF, 0xFBFF, 0x0400, 0x0001, 0x83FF, 0x3C00, 0xBC00]
            }
        }
    }
    /// A random value: mostly finite of moderate size (exponents −8..8), with `edge_rate` in 256
    /// an edge value.
    pub fn random(self, rng: &mut Rng, edge_rate: u64) -> u16 {
        if rng.below(256) < edge_rate {
            let e = self.edges();
            return e[rng.below(e.len() as u64) as usize];
        }
        let scale = 2f32.powi(rng.below(17) as i32 - 8);
        self.round(rng.unit() * scale)
    }
}

/// Two 16-bit values in one register: `lo` in bits 0..16.
pub fn pack(lo: u16, hi: u16) -> u32 {
    lo as u32 | (hi as u32) << 16
}

/// m16n8k16 for one warp from its lanes' registers (`a[lane*4 + r]`, `b[lane*2 + r]`,
/// `c[lane*4 + r]`), returning each lane's d[4]. Products in f32, summed from c in k order.
pub fn mma_reference(h: Half, a: &[u32], b: &[u32], c: &[f32]) -> Vec<f32> {
    let mut am = [[0f32; 16]; 16];
    let mut bm = [[0f32; 8]; 16];
    let mut cm = [[0f32; 8]; 16];
    for lane in 0..32 {
        let (g, t) = (lane / 4, lane % 4);
        // A: a[r] holds row g + 8·(r % 2), columns 2t + 8·(r / 2) (low) and the next (high).
        for r in 0..4 {
            let (row, col) = (g + 8 * (r % 2), 2 * t + 8 * (r / 2));
            let reg = a[lane * 4 + r];
            am[row][col] = h.to_f32(reg as u16);
            am[row][col + 1] = h.to_f32((reg >> 16) as u16);
        }
        // B: b[r] holds k = 2t + 8r (low) and 2t + 8r + 1 (high) of column g.
        for r in 0..2 {
            let reg = b[lane * 2 + r];
            bm[2 * t + 8 * r][g] = h.to_f32(reg as u16);
            bm[2 * t + 8 * r + 1][g] = h.to_f32((reg >> 16) as u16);
        }
        for i in 0..4 {
            cm[g + 8 * (i / 2)][2 * t + i % 2] = c[lane * 4 + i];
        }
    }
    let mut d = vec![0f32; 128];
    for lane in 0..32 {
        let (g, t) = (lane / 4, lane % 4);
        for i in 0..4 {
            let (row, col) = (g + 8 * (i / 2), 2 * t + i % 2);
            let mut acc = cm[row][col];
            for (k, brow) in bm.iter().enumerate() {
                acc += am[row][k] * brow[col];
            }
            d[lane * 4 + i] = acc;
        }
    }
    d
}

/// Equal bit for bit, or both NaN (NaN payloads are not part of the contract).
pub fn same_f32(x: f32, y: f32) -> bool {
    (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits()
}
