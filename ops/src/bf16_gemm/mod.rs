//! bf16 matrix products on the CPU's bf16 dot-product instructions, and exact emulations of
//! those instructions so that the blocking and packing run — and are tested — on every machine.
//!
//! `C[M×N] (f32) += A[M×K] · B[K×N]` with bf16 `A` and `B` (stored as `u16` bit patterns). Two
//! instruction families compute it, each with its own rounding, both specified in Intel's SDM:
//!
//! * **AVX512-BF16 `vdpbf16ps`** (Zen 4, Cooper Lake, Sapphire Rapids): per f32 lane,
//!   `acc += a₁·b₁` then `acc += a₀·b₀` (the odd element of the pair first), each one fused
//!   multiply-add rounded to nearest even; denormal inputs read as zero, denormal results
//!   flushed to zero; MXCSR is ignored. A row of `C` is 16 lanes; `B` is packed in pairs of `k`
//!   ("VNNI" layout `[k/2][n][2]`) and `A`'s pair is broadcast.
//! * **AMX-BF16 `tdpbf16ps`** (Sapphire Rapids and later): per call on 16×32 `A` and 16×16-pair
//!   `B` tiles, two f32 chains per element (even and odd elements of the pairs, each a fused
//!   multiply-add per `k`, starting from zero), then `c += even + odd`; the same
//!   denormal and rounding rules. (The SDM's pseudo-code; the Intrinsics Guide's shorter one
//!   adds into `c` directly. The hardware test below settles which the hardware follows
//!   wherever AMX exists: on the first AMX machine it ran on (an Intel Xeon with AMX-BF16,
//!   2026-12-07) the instruction matched this emulation of the SDM's version bit for bit,
//!   adversarial inputs included.)
//!
//! [`dot`] and [`amx`] hold one backend per family: the instruction itself where the CPU has it,
//! and a scalar emulation of its exact semantics. [`gemm`] is the blocking (tiles of 16 rows ×
//! 16 columns, `k` in steps of 32) written once over a [`Backend`]; the tests run it through
//! every backend and require the emulations and the instructions to agree bit for bit where
//! the instructions exist (vdpbf16ps runs on AVX512-BF16 machines, tdpbf16ps on AMX machines;
//! each skips with its reason elsewhere).
//!
//! The bf16 convolutions (`crate::conv2d::bf16_tiles`) run on a 32 × 32 register block over
//! packed operands in AMX's tile layouts, built from either instruction and its emulation
//! ([`amx::block_hardware`] / [`amx::block_emulated`], [`dot::block_hardware`] /
//! [`dot::block_emulated`]); [`gemm`] here is the plain blocking the instruction tests use.

pub mod amx;
pub mod dot;
#[cfg(test)]
mod tests;

/// Rows and columns of one `C` tile, and `k` per step (one AMX tile: 16 rows of 64 bytes).
pub const TILE_M: usize = 16;
pub const TILE_N: usize = 16;
pub const TILE_K: usize = 32;

/// Which instructions compute the tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// vdpbf16ps semantics, emulated (any CPU).
    DotEmulated,
    /// vdpbf16ps (AVX512-BF16).
    DotHardware,
    /// tdpbf16ps semantics, emulated (any CPU).
    AmxEmulated,
    /// tdpbf16ps (AMX-BF16).
    AmxHardware,
}

impl Backend {
    /// Whether this CPU can run the backend (the emulations run everywhere).
    pub fn available(self) -> bool {
        match self {
            Backend::DotEmulated | Backend::AmxEmulated => true,
            Backend::DotHardware => dot::hardware_available(),
            Backend::AmxHardware => amx::hardware_available(),
        }
    }
}

/// f32 → bf16 bits, rounded to nearest even (NaN stays a quiet NaN): the engine's
/// [`bitgrad_engine::bf16_bits`].
pub fn to_bf16(x: f32) -> u16 {
    bitgrad_engine::bf16_bits(x)
}

/// bf16 bits → f32 (exact).
pub fn from_bf16(x: u16) -> f32 {
    f32::from_bits((x as u32) << 16)
}

/// `B` (`[k][n]` row-major) packed for one tile column block: `[k/2][16][2]`, zero-padded to
/// `kp` rows (a multiple of 32) and 16 columns.
fn pack_b(b: &[u16], k: usize, n: usize, n0: usize, kp: usize) -> Vec<u16> {
    let mut out = vec![0u16; kp * TILE_N];
    for kk in 0..k {
        for j in 0..TILE_N.min(n - n0) {
            out[(kk / 2) * TILE_N * 2 + j * 2 + kk % 2] = b[kk * n + n0 + j];
        }
    }
    out
}

/// `A`'s rows `m0..m0+16` packed as 16 rows of `kp` values (zero-padded).
fn pack_a(a: &[u16], m: usize, k: usize, m0: usize, kp: usize) -> Vec<u16> {
    let mut out = vec![0u16; TILE_M * kp];
    for i in 0..TILE_M.min(m - m0) {
        out[i * kp..i * kp + k].copy_from_slice(&a[(m0 + i) * k..][..k]);
    }
    out
}

/// `c += a · b` for `a` `[m][k]`, `b` `[k][n]` (bf16 bits, row-major) and `c` `[m][n]` f32, with
/// `backend` (which must be [`available`](Backend::available)). Tiles of 16 × 16, `k` in
/// steps of 32; the order of the sums is fixed by the backend's semantics and the shape.
pub fn gemm(backend: Backend, a: &[u16], b: &[u16], c: &mut [f32], m: usize, n: usize, k: usize) {
    assert!(a.len() == m * k && b.len() == k * n && c.len() == m * n, "gemm_bf16: operand sizes");
    assert!(backend.available(), "gemm_bf16: {backend:?} is not available on this CPU");
    let kp = k.div_ceil(TILE_K) * TILE_K;
    for n0 in (0..n).step_by(TILE_N) {
        let bp = pack_b(b, k, n, n0, kp);
        for m0 in (0..m).step_by(TILE_M) {
            let ap = pack_a(a, m, k, m0, kp);
            let mut tile = [0.0f32; TILE_M * TILE_N];
            for i in 0..TILE_M.min(m - m0) {
                for j in 0..TILE_N.min(n - n0) {
                    tile[i * TILE_N + j] = c[(m0 + i) * n + n0 + j];
                }
            }
            match backend {
                Backend::DotEmulated => dot::tile(&mut tile, &ap, &bp, kp, dot::dpbf16_emulated),
                Backend::DotHardware => dot::tile_hardware(&mut tile, &ap, &bp, kp),
                Backend::AmxEmulated => amx::tiles_emulated(&mut tile, &ap, &bp, kp),
                Backend::AmxHardware => amx::tiles_hardware(&mut tile, &ap, &bp, kp),
            }
            for i in 0..TILE_M.min(m - m0) {
                for j in 0..TILE_N.min(n - n0) {
                    c[(m0 + i) * n + n0 + j] = tile[i * TILE_N + j];
                }
            }
        }
    }
}
