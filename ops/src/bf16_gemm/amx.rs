//! `tdpbf16ps` (AMX-BF16): the instruction on tile registers, and an exact scalar emulation of
//! the SDM's specification of it.

use super::dot::daz;
use super::{from_bf16, TILE_K, TILE_M, TILE_N};

/// One `tdpbf16ps` on a 16 × 16 f32 tile `c`, a 16 × 32 bf16 tile of `A` (row stride `lda`)
/// and a 16-row tile of `B` pairs (`[16][16][2]`): per element, an even and an odd chain of
/// fused multiply-adds over the 16 pairs, from zero, then `c += even + odd` (SDM pseudo-code;
/// round to nearest even, denormals in as zero and out flushed).
fn tdpbf16ps_emulated(c: &mut [f32; TILE_M * TILE_N], a: &[u16], lda: usize, b: &[u16]) {
    for m in 0..TILE_M {
        for n in 0..TILE_N {
            let (mut even, mut odd) = (0.0f32, 0.0f32);
            for k in 0..TILE_K / 2 {
                let a0 = daz(from_bf16(a[m * lda + 2 * k]));
                let a1 = daz(from_bf16(a[m * lda + 2 * k + 1]));
                let b0 = daz(from_bf16(b[(k * TILE_N + n) * 2]));
                let b1 = daz(from_bf16(b[(k * TILE_N + n) * 2 + 1]));
                even = daz(a0.mul_add(b0, even));
                odd = daz(a1.mul_add(b1, odd));
            }
            let e = &mut c[m * TILE_N + n];
            *e = daz(daz(*e) + daz(even + odd));
        }
    }
}

/// `c += A · B` over `kp / 32` tile pairs, emulated.
pub(crate) fn tiles_emulated(c: &mut [f32; TILE_M * TILE_N], a: &[u16], b: &[u16], kp: usize) {
    for k0 in (0..kp).step_by(TILE_K) {
        tdpbf16ps_emulated(c, &a[k0..], kp, &b[k0 * TILE_N..][..TILE_K * TILE_N]);
    }
}

/// Whether AMX-BF16 runs here: the CPU has it, Linux granted the tile state, and the active
/// ISA level is `amx`.
pub fn hardware_available() -> bool {
    use bitgrad_engine::cpu::isa::{active, Isa};
    active() >= Isa::Amx
}

/// The tile configuration `ldtilecfg` reads (palette 1): tmm0 = C (16 rows × 64 bytes), tmm1 =
/// A (16 × 64), tmm2 = B (16 × 64).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// [`tiles_emulated`] on the tile registers: C stays in tmm0 across all of `k`.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] // the instruction is x86-only
pub(crate) fn tiles_hardware(c: &mut [f32; TILE_M * TILE_N], a: &[u16], b: &[u16], kp: usize) {
    assert!(hardware_available(), "tdpbf16ps needs AMX-BF16");
    let mut cfg = TileConfig { palette: 1, start_row: 0, reserved: [0; 14], colsb: [0; 16], rows: [0; 16] };
    for t in 0..3 {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has AMX-BF16 and the kernel granted its state (hardware_available); every
    // tile load reads 16 rows of 64 bytes inside `a` (row stride kp·2 bytes), `b` (rows of 64
    // bytes) or `c`, and the store writes `c`'s 1 KiB; tilerelease returns the state.
    unsafe {
        use std::arch::asm;
        asm!("ldtilecfg [{0}]", in(reg) &cfg as *const TileConfig);
        asm!("tileloadd tmm0, [{c} + {s}*1]", c = in(reg) c.as_ptr(), s = in(reg) 64usize);
        for k0 in (0..kp).step_by(TILE_K) {
            asm!(
                "tileloadd tmm1, [{a} + {sa}*1]",
                "tileloadd tmm2, [{b} + {sb}*1]",
                "tdpbf16ps tmm0, tmm1, tmm2",
                a = in(reg) a[k0..].as_ptr(),
                sa = in(reg) kp * 2,
                b = in(reg) b[k0 * TILE_N..].as_ptr(),
                sb = in(reg) 64usize,
            );
        }
        asm!("tilestored [{c} + {s}*1], tmm0", c = in(reg) c.as_mut_ptr(), s = in(reg) 64usize);
        asm!("tilerelease");
    }
    // The release cleared the configuration block_hardware may have loaded on this thread.
    CONFIGURED.set(false);
}

/// Bytes of one packed tile (16 rows of 64 bytes) and its length in bf16 values.
pub const TILE_BYTES: usize = 1024;
pub const TILE_LEN: usize = TILE_BYTES / 2;

/// The register block of the convolutions: a 32 × 32 f32 block of `C` held in four tiles while
/// `k` runs, fed by two `A` tiles (rows 0–15, 16–31) and two `B` tiles (columns 0–15, 16–31)
/// per step of 32 — the 2 × 2 arrangement that uses all eight tile registers.
///
/// * `c`: the block's top-left element, rows `ldc` apart (32 rows of 32 written; read first
///   when `accumulate`, else the sums start from zero);
/// * `a`: `ksteps` pairs of packed `A` tiles, `[ks][ti][16 rows][32 k]`;
/// * `b`: `ksteps` pairs of packed `B` tiles, `[ks][tj][16 k-pairs][16 columns][2]`.
///
/// Each `C` tile sees the same `tdpbf16ps` sequence as [`tiles_emulated`] would give it, so
/// the emulation and the instruction agree bit for bit.
pub fn block_emulated(c: &mut [f32], ldc: usize, accumulate: bool, a: &[u16], b: &[u16], ksteps: usize) {
    check_block(c, ldc, a, b, ksteps);
    for t in 0..4 {
        let (ti, tj) = (t / 2, t % 2);
        let mut tile = [0f32; TILE_M * TILE_N];
        for i in (0..16).filter(|_| accumulate) {
            tile[i * 16..][..16].copy_from_slice(&c[(ti * 16 + i) * ldc + tj * 16..][..16]);
        }
        for ks in 0..ksteps {
            let (ap, bp) = (&a[(ks * 2 + ti) * TILE_LEN..], &b[(ks * 2 + tj) * TILE_LEN..]);
            tdpbf16ps_emulated(&mut tile, &ap[..TILE_LEN], TILE_K, &bp[..TILE_LEN]);
        }
        for i in 0..16 {
            c[(ti * 16 + i) * ldc + tj * 16..][..16].copy_from_slice(&tile[i * 16..][..16]);
        }
    }
}

pub(crate) fn check_block(c: &[f32], ldc: usize, a: &[u16], b: &[u16], ksteps: usize) {
    assert!(ldc >= 32 && c.len() >= 31 * ldc + 32, "bf16 block: C is 32 rows of 32, {ldc} apart");
    assert!(a.len() >= ksteps * 2 * TILE_LEN && b.len() >= ksteps * 2 * TILE_LEN, "bf16 block: short panels");
}

std::thread_local! {
    /// Whether this thread has loaded [`block_hardware`]'s tile configuration. The configuration
    /// is loaded once per thread and kept (nothing else in the process configures tiles), which
    /// saves an `ldtilecfg` per block.
    static CONFIGURED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// [`block_emulated`] on the tile registers: tmm0–3 hold `C` (loaded from and stored to `c`
/// with its row stride), tmm4–5 `A`, tmm6–7 `B`.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] // the instruction is x86-only
pub fn block_hardware(c: &mut [f32], ldc: usize, accumulate: bool, a: &[u16], b: &[u16], ksteps: usize) {
    assert!(hardware_available(), "tdpbf16ps needs AMX-BF16");
    check_block(c, ldc, a, b, ksteps);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has AMX-BF16 and the kernel granted its state (hardware_available); the
    // tiles are configured on this thread before the first tile instruction; each C load and
    // store covers 16 rows of 16 f32 at row stride ldc·4 inside `c` (checked: 32 rows of 32
    // from its start), and every A/B load reads one 1 KiB tile inside `a` or `b`.
    unsafe {
        use std::arch::asm;
        if !CONFIGURED.get() {
            let mut cfg = TileConfig { palette: 1, start_row: 0, reserved: [0; 14], colsb: [0; 16], rows: [0; 16] };
            for t in 0..8 {
                cfg.colsb[t] = 64;
                cfg.rows[t] = 16;
            }
            asm!("ldtilecfg [{0}]", in(reg) &cfg as *const TileConfig);
            CONFIGURED.set(true);
        }
        let c0 = c.as_mut_ptr();
        let c1 = c0.add(16);
        let c2 = c0.add(16 * ldc);
        let c3 = c2.add(16);
        let s = ldc * 4;
        if accumulate {
            asm!(
                "tileloadd tmm0, [{c0} + {s}*1]",
                "tileloadd tmm1, [{c1} + {s}*1]",
                "tileloadd tmm2, [{c2} + {s}*1]",
                "tileloadd tmm3, [{c3} + {s}*1]",
                c0 = in(reg) c0, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3, s = in(reg) s,
            );
        } else {
            asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3");
        }
        let (mut ap, mut bp) = (a.as_ptr() as *const u8, b.as_ptr() as *const u8);
        for _ in 0..ksteps {
            asm!(
                "tileloadd tmm4, [{a} + {s}*1]",
                "tileloadd tmm6, [{b} + {s}*1]",
                "tileloadd tmm5, [{a} + {s}*1 + 1024]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b} + {s}*1 + 1024]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a = in(reg) ap,
                b = in(reg) bp,
                s = in(reg) 64usize,
            );
            ap = ap.add(2 * TILE_BYTES);
            bp = bp.add(2 * TILE_BYTES);
        }
        asm!(
            "tilestored [{c0} + {s}*1], tmm0",
            "tilestored [{c1} + {s}*1], tmm1",
            "tilestored [{c2} + {s}*1], tmm2",
            "tilestored [{c3} + {s}*1], tmm3",
            c0 = in(reg) c0, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3, s = in(reg) s,
        );
    }
}

/// GFLOP/s of one thread running only `tdpbf16ps` on the tile registers — the AMX-BF16 roof the
/// benchmarks report "% of peak" against (each instruction: 16 × 16 × 32 multiply-adds);
/// `None` without AMX. The best of 5 runs of about 10 ms.
pub fn peak_gflops() -> Option<f64> {
    if !hardware_available() {
        return None;
    }
    let iters = 50_000usize;
    let mut c = [0f32; 32 * 32];
    let ab = vec![0u16; 2 * 2 * TILE_LEN];
    // Loads the configuration on this thread (and checks the operands once).
    block_hardware(&mut c, 32, false, &ab, &ab, 1);
    let best = (0..5)
        .map(|_| {
            let t = std::time::Instant::now();
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AMX is available and this thread's tiles are configured (the call above).
            unsafe {
                std::arch::asm!("tilezero tmm4", "tilezero tmm5", "tilezero tmm6", "tilezero tmm7");
                for _ in 0..std::hint::black_box(iters) {
                    std::arch::asm!(
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                    );
                }
            }
            (iters * 4 * TILE_M * TILE_N * TILE_K * 2) as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max);
    Some(best)
}
