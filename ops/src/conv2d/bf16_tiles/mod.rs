//! bf16 convolutions on the CPU's bf16 dot-product instructions — AMX tiles (`tdpbf16ps`) or
//! AVX512-BF16 (`vdpbf16ps`): channels-last (NHWC) implicit GEMM with f32 accumulation, the CPU
//! twin of the GPU's tensor-core passes (`super::tc`).
//!
//! Every pass is one GEMM whose operands are gathered straight from the tensors into the tile
//! layouts `tdpbf16ps` reads (no im2col matrix is ever made), multiplied 32 × 32 at a time by a
//! register block of [`crate::bf16_gemm`]: four AMX `C` tiles held across the whole sum, or
//! for `vdpbf16ps` sixteen zmm rows per 16 × 16 quarter, reading the same packed tiles.
//!
//! * **fprop**: `y[NPQ × K] = X̃[NPQ × RSC] · W[RSC × K]` — `X̃`'s row of an output pixel is, tap
//!   by tap, the 32-channel runs of the input pixel under that tap (zeros in the padding);
//! * **dgrad**: `dx[NHW × C] = dỸ[NHW × RSK] · Wᵀ[RSK × C]` — row of an input pixel `(h, w)`:
//!   for tap `(r, s)`, the output pixel `((h + pad − r·d) / stride, …)` when that division is
//!   exact and inside the map, else zeros. With a stride, the input pixels split into residue
//!   classes (`h mod stride`, …) that each only some taps reach ([`Phase`]): one GEMM per
//!   class over its own taps, so no zero-inserted copy and no products with structural zeros;
//! * **wgrad**: `dW[K × RSC] = dYᵀ[K × NPQ] · X̃[NPQ × RSC]` — `k` runs over the pixels, in chunks
//!   whose packed operands stay in L2 (see [`wgrad`]); `dW` is f32 and the `C` tiles start from
//!   the previous chunk's sums. Expanding 1×1 filters compute `dWᵀ = X̃ᵀ · dY` instead.
//!
//! The packed layouts: `A` as `[32-row block][k-step][2 tiles][16 rows][32]`, `B` as
//! `[32-column block][k-step][2 tiles][16 k-pairs][16 columns][2]` (AMX's pair-interleaved
//! "VNNI" form). Channels (`C`, `K`) must be multiples of 32, so that a k-step never straddles
//! two taps; one group. Anything else (BiT's 3-channel stem) stays on the f32 kernels.
//!
//! [`Tiles`] chooses the instruction or its exact scalar emulation, so the same gathers,
//! packing and blocking run on every machine: the tests compare both emulations with an f64
//! reference everywhere and each with its instruction bit for bit where the CPU has it.
//!
//! Work split: 32-row blocks of the output over rayon's threads (fprop, dgrad), 32-column blocks
//! of `dW` (wgrad); the sum for each output element runs in one fixed order, so results do not
//! depend on the thread count.

mod direct;
mod direct_kernel;
#[cfg(test)]
mod direct_tests;
mod gather;
#[cfg(test)]
mod tests;
mod wgrad_direct;

use bitgrad_engine::cpu::isa::{self, Family, Isa};
use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::params::Geom;
use crate::bf16_gemm::amx::TILE_LEN;
#[cfg(doc)]
use crate::bf16_gemm::to_bf16;
use crate::group_norm::lanes::filled_vec;

/// Rows and columns of the register block, and `k` per step.
const BLOCK: usize = 32;
/// Values in one k-step of a packed 32-row (or 32-column) panel: two tiles.
const STEP_LEN: usize = 2 * TILE_LEN;
/// The bounds on one weight-gradient chunk's packed `A` (`dyᵀ`, or `X̃ᵀ` in the transposed
/// form) and on one `B` panel (see [`wgrad_chunk`]).
const WGRAD_A_BYTES: usize = 1 << 20;
const WGRAD_PANEL_BYTES: usize = 256 << 10;

/// Which instructions multiply the blocks: AMX's tiles or AVX512-BF16's `vdpbf16ps` on zmm
/// registers, each with its exact scalar emulation. All four read the same packed operands;
/// they differ in the order their f32 sums round (see `crate::bf16_gemm`), so an emulation
/// matches its own instruction bit for bit and the other family within bf16's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tiles {
    /// `tdpbf16ps` on the tile registers (AMX-BF16, granted by the kernel, active ISA `amx`).
    Amx,
    /// `vdpbf16ps` (AVX512-BF16, active ISA `avx512bf16` or above).
    Dot,
    /// The exact scalar emulation of `tdpbf16ps` (any CPU; slow — the tests run it).
    #[cfg_attr(not(test), allow(dead_code))]
    AmxEmulated,
    /// The exact scalar emulation of `vdpbf16ps`.
    #[cfg_attr(not(test), allow(dead_code))]
    DotEmulated,
}

impl Tiles {
    /// The fastest instruction this CPU runs at the active ISA level: AMX, else AVX512-BF16.
    pub fn hardware() -> Option<Tiles> {
        Tiles::all_hardware().into_iter().next()
    }

    /// Every instruction this CPU runs at the active ISA level, fastest first (an AMX machine
    /// runs both).
    pub fn all_hardware() -> Vec<Tiles> {
        let amx = crate::bf16_gemm::amx::hardware_available().then_some(Tiles::Amx);
        let dot = crate::bf16_gemm::dot::hardware_available().then_some(Tiles::Dot);
        amx.into_iter().chain(dot).collect()
    }

    /// The emulation of this family's instruction.
    #[cfg(test)]
    pub fn emulation(self) -> Tiles {
        match self {
            Tiles::Amx | Tiles::AmxEmulated => Tiles::AmxEmulated,
            Tiles::Dot | Tiles::DotEmulated => Tiles::DotEmulated,
        }
    }

    /// Whether this is an instruction (every CPU that runs one has AVX-512 F/BW/VL).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn is_hardware(self) -> bool {
        matches!(self, Tiles::Amx | Tiles::Dot)
    }

    /// `C = A·B` (`C += A·B` when `accumulate`) on the 32 × 32 block at `c` (rows `ldc` apart).
    fn block(self, c: &mut [f32], ldc: usize, accumulate: bool, a: &[u16], b: &[u16], ksteps: usize) {
        use crate::bf16_gemm::{amx, dot};
        match self {
            Tiles::Amx => amx::block_hardware(c, ldc, accumulate, a, b, ksteps),
            Tiles::Dot => dot::block_hardware(c, ldc, accumulate, a, b, ksteps),
            Tiles::AmxEmulated => amx::block_emulated(c, ldc, accumulate, a, b, ksteps),
            Tiles::DotEmulated => dot::block_emulated(c, ldc, accumulate, a, b, ksteps),
        }
    }

    /// `dst = bf16(src)`, rounded to nearest even: with AVX-512 where an instruction runs, the
    /// same bits either way.
    fn round_row(self, src: &[f32], dst: &mut [u16]) {
        // SAFETY: u16 and MaybeUninit<u16> have the same layout, and round_row only writes
        // initialized values into the slice.
        let dst = unsafe { &mut *(dst as *mut [u16] as *mut [MaybeUninit<u16>]) };
        self.round_row_into(src, dst)
    }

    /// [`Tiles::round_row`] into memory not yet initialized.
    fn round_row_into(self, src: &[f32], dst: &mut [MaybeUninit<u16>]) {
        #[cfg(target_arch = "x86_64")]
        if self.is_hardware() {
            // SAFETY: the instructions run only on CPUs with AVX-512 F/BW/VL (is_hardware).
            return unsafe { round_row_avx512(src, dst) };
        }
        round_row(src, dst)
    }

    /// A weight-gradient `A` panel (`gather::transposed_panel`), with AVX-512 where an
    /// instruction runs.
    fn transposed_panel(self, rows: gather::Rows, g: &Geom, p0: usize, len: usize, panel: &mut [u16]) {
        #[cfg(target_arch = "x86_64")]
        if self.is_hardware() {
            // SAFETY: as in round_row_into.
            return unsafe { gather::avx512::transposed_panel(rows, g, p0, len, panel) };
        }
        gather::transposed_panel(rows, g, p0, len, panel)
    }

    /// A weight-gradient `B` panel (`gather::pair_panel`), with AVX-512 where an instruction
    /// runs.
    fn pair_panel(self, rows: gather::Rows, g: &Geom, p0: usize, len: usize, panel: &mut [u16]) {
        #[cfg(target_arch = "x86_64")]
        if self.is_hardware() {
            // SAFETY: as in round_row_into.
            return unsafe { gather::avx512::pair_panel(rows, g, p0, len, panel) };
        }
        gather::pair_panel(rows, g, p0, len, panel)
    }

    fn record(self) {
        match self {
            Tiles::Amx => isa::record(Family::ConvBf16, Isa::Amx),
            Tiles::Dot => isa::record(Family::ConvBf16, Isa::Avx512Bf16),
            _ => {}
        }
    }
}

/// `dst = bf16(src)` with the engine's branch-free rounding ([`to_bf16`]'s rule), so that the
/// compiler vectorizes it.
#[inline(always)]
fn round_row(src: &[f32], dst: &mut [MaybeUninit<u16>]) {
    for (d, s) in dst.iter_mut().zip(src) {
        d.write(bitgrad_engine::bf16_bits(*s));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn round_row_avx512(src: &[f32], dst: &mut [MaybeUninit<u16>]) {
    round_row(src, dst)
}

/// Whether these kernels take the convolution: one group, channel counts multiples of 32.
pub(crate) fn takes(g: &Geom) -> bool {
    g.groups == 1 && g.c.is_multiple_of(BLOCK) && g.o.is_multiple_of(BLOCK) && g.batch > 0 && g.p() > 0
}

/// ŵ (f32, OIHW — the master weight's layout) rounded to bf16 ([`to_bf16`]'s rule) and
/// reordered to KRSC, what the packings read: per output channel, `[C][taps]` becomes
/// `[taps][C]` (nothing to reorder for 1×1 filters).
///
/// With `ws = Some((μ, r))`, `w` is the raw weight and each row is standardized on the way
/// (weight standardization folded into the packing: `ŵ = (w − μ)·r` in a row-sized scratch,
/// the arithmetic of `weight_std::cpu::forward`, so the same bits as standardizing first).
pub(crate) fn round_weight(tiles: Tiles, w: &[f32], ws: Option<(&[f32], &[f32])>, g: &Geom) -> Vec<u16> {
    let (taps, c) = (g.kh * g.kw, g.c);
    let row = taps * c;
    assert_eq!(w.len(), g.o * row, "bf16 tiles: weight size");
    assert!(ws.is_none_or(|(m, r)| m.len() == g.o && r.len() == g.o), "bf16 tiles: one μ and r per filter");
    // Every element is written once (each output channel's row, whole).
    filled_vec(w.len(), |out| {
        out.par_chunks_mut(row).zip(w.par_chunks(row)).enumerate().for_each_init(
            || (vec![0u16; row], vec![0f32; if ws.is_some() { row } else { 0 }]),
            |(tmp, std), (k, (d, s))| {
                let s = match ws {
                    Some((mean, rstd)) => {
                        crate::weight_std::cpu::standardize_row(s, mean[k], rstd[k], std);
                        &std[..]
                    }
                    None => s,
                };
                if taps == 1 {
                    tiles.round_row_into(s, d);
                    return;
                }
                tiles.round_row(s, tmp);
                for (ci, run) in tmp.chunks_exact(taps).enumerate() {
                    for (t, v) in run.iter().enumerate() {
                        d[t * c + ci].write(*v);
                    }
                }
            },
        )
    })
}

/// The fprop `B` from the bf16 standardized weight ŵ in KRSC order (`[K][R·S·C]`, see
/// [`round_weight`]): `B[tap·C + c][k] = ŵ[k][tap][c]`, in 32-column panels (see the module
/// docs). A k-step's pair `(2p, 2p + 1)` of one column is two adjacent values of ŵ, so the
/// packing moves pairs: each tile is a 16 × 16 transpose of 32-bit pairs.
pub(crate) fn pack_weight_fprop(w: &[u16], g: &Geom) -> Vec<u16> {
    let kdim = g.kh * g.kw * g.c;
    let ksteps = kdim / BLOCK;
    assert_eq!(w.len(), g.o * kdim, "bf16 tiles: weight size");
    // Every element is written once: each tile's 16 columns × 16 pairs.
    filled_vec(kdim * g.o, |out| {
        out.par_chunks_mut(ksteps * STEP_LEN).enumerate().for_each(|(nb, panel)| {
            for (ks, step) in panel.chunks_mut(STEP_LEN).enumerate() {
                for (tj, tile) in step.chunks_mut(TILE_LEN).enumerate() {
                    for j in 0..16 {
                        let src = &w[(nb * BLOCK + tj * 16 + j) * kdim + ks * BLOCK..][..BLOCK];
                        for (pair, v) in src.chunks_exact(2).enumerate() {
                            tile[(pair * 16 + j) * 2].write(v[0]);
                            tile[(pair * 16 + j) * 2 + 1].write(v[1]);
                        }
                    }
                }
            }
        })
    })
}

/// The dgrad `B` from the bf16 ŵ in KRSC order, for the taps `taps` (indices `r·kw + s`, in
/// the order the gather uses): `Wᵀ[i·K + k][c] = ŵ[k][taps[i]][c]`; a tile row (one k-pair, 16
/// columns) is two runs of 16 channels of ŵ, interleaved.
fn pack_weight_dgrad(w: &[u16], g: &Geom, taps: &[usize]) -> Vec<u16> {
    let (all_taps, c, k_all) = (g.kh * g.kw, g.c, g.o);
    let kdim = taps.len() * k_all;
    let ksteps = kdim / BLOCK;
    assert_eq!(w.len(), k_all * all_taps * c, "bf16 tiles: weight size");
    // Every element is written once: each tile's 16 pair rows of 32.
    filled_vec(kdim * c, |out| {
        out.par_chunks_mut(ksteps * STEP_LEN).enumerate().for_each(|(nb, panel)| {
            for (ks, step) in panel.chunks_mut(STEP_LEN).enumerate() {
                let (tap, k0) = (taps[ks * BLOCK / k_all], ks * BLOCK % k_all);
                for (tj, tile) in step.chunks_mut(TILE_LEN).enumerate() {
                    let col = tap * c + nb * BLOCK + tj * 16;
                    for pair in 0..16 {
                        let a = &w[(k0 + 2 * pair) * all_taps * c + col..][..16];
                        let b = &w[(k0 + 2 * pair + 1) * all_taps * c + col..][..16];
                        for (j, d) in tile[pair * BLOCK..][..BLOCK].chunks_exact_mut(2).enumerate() {
                            d[0].write(a[j]);
                            d[1].write(b[j]);
                        }
                    }
                }
            }
        })
    })
}

/// The input pixels of one residue class of a strided convolution — `(ih mod sh, iw mod sw) =
/// (ph, pw)` — and the filter rows and columns that reach them. An output pixel reads input
/// row `oh·sh + r·dh − pad`, so only the taps with `r·dh ≡ ph + pad (mod sh)` ever reach rows of
/// this class: the input gradient of a stride-2 convolution is four smaller ones, with a
/// quarter of the taps each on average (a 1×1/2 filter reaches one class in four: the other
/// three get zeros), instead of one with every tap where three in four read zeros.
struct Phase {
    ph: usize,
    pw: usize,
    /// The class's extent: rows `ph, ph + sh, …` (`rows` of them) and `cols` columns likewise.
    rows: usize,
    cols: usize,
    taps_r: Vec<usize>,
    taps_s: Vec<usize>,
}

impl Phase {
    /// Every class of `g`'s input, row-major over `(ph, pw)`; stride 1 gives one, the whole map.
    fn all(g: &Geom) -> Vec<Phase> {
        let [sh, sw] = g.stride;
        let reach = |phase: usize, k: usize, s: usize, d: usize, pad: usize| -> Vec<usize> {
            (0..k).filter(|&t| ((phase + pad) as isize - (t * d) as isize).rem_euclid(s as isize) == 0).collect()
        };
        let mut out = Vec::new();
        for ph in 0..sh.min(g.h) {
            for pw in 0..sw.min(g.w) {
                out.push(Phase {
                    ph,
                    pw,
                    rows: (g.h - ph).div_ceil(sh),
                    cols: (g.w - pw).div_ceil(sw),
                    taps_r: reach(ph, g.kh, sh, g.dilation[0], g.pad[0]),
                    taps_s: reach(pw, g.kw, sw, g.dilation[1], g.pad[2]),
                });
            }
        }
        out
    }

    /// The taps `r·kw + s` of this class, in the gather's order (row-major over `r`, `s`).
    fn taps(&self, kw: usize) -> Vec<usize> {
        self.taps_r.iter().flat_map(|r| self.taps_s.iter().map(move |s| r * kw + s)).collect()
    }
}

/// `out[rows × ncols]` (bf16) `= A · B` where row `m` of `A` is gathered by `fill(m, panel,
/// local)` into a 32-row panel and `B` is packed (`pack_b`), `ksteps` steps deep; with `start`
/// (bf16 `[rows × ncols]`), `out = start + A · B`, rounded once.
fn gemm_gathered(
    tiles: Tiles,
    rows: usize,
    ncols: usize,
    ksteps: usize,
    b: &[u16],
    start: Option<&[u16]>,
    fill: impl Fn(usize, &mut [u16], usize) + Sync,
) -> Vec<u16> {
    tiles.record();
    // Every element is written once below (each 32-row block, every 32-column block of it).
    filled_vec(rows * ncols, |out| {
        out.par_chunks_mut(BLOCK * ncols).enumerate().for_each_init(
            || vec![0u16; ksteps * STEP_LEN],
            |panel, (mb, dst)| {
                let here = dst.len() / ncols;
                for local in 0..BLOCK {
                    if local < here {
                        fill(mb * BLOCK + local, panel, local);
                    } else {
                        gather::zero_row(panel, local, ksteps);
                    }
                }
                let mut c = [0f32; BLOCK * BLOCK];
                for nb in 0..ncols / BLOCK {
                    if let Some(start) = start {
                        // The residual (exact in f32) is the accumulators' initial value.
                        for (i, acc) in c.chunks_mut(BLOCK).enumerate() {
                            match start.get((mb * BLOCK + i) * ncols + nb * BLOCK..).filter(|_| i < here) {
                                Some(r) => acc.iter_mut().zip(r).for_each(|(a, &r)| *a = bf16_to_f32(r)),
                                None => acc.fill(0.0),
                            }
                        }
                    }
                    let (a, b) = (&panel[..], &b[nb * ksteps * STEP_LEN..][..ksteps * STEP_LEN]);
                    tiles.block(&mut c, BLOCK, start.is_some(), a, b, ksteps);
                    for (i, row) in dst.chunks_mut(ncols).enumerate() {
                        tiles.round_row_into(&c[i * BLOCK..][..BLOCK], &mut row[nb * BLOCK..][..BLOCK]);
                    }
                }
            },
        )
    })
}

/// A bf16 value's f32 (exact).
fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// `y` `[N, P, Q, K]` (bf16) from `x` `[N, H, W, C]` (bf16) and the packed weight
/// ([`pack_weight_fprop`]), on top of `residual` `[N, P, Q, K]` (bf16) when given: the
/// accumulators start from it, so `y = bf16(residual + Σ products)` is rounded once.
///
/// With `vdpbf16ps` it runs on the direct kernels (`direct.rs`), else as a gathered GEMM
/// ([`fprop_gathered`]); both give the same bits.
pub(crate) fn fprop(tiles: Tiles, x: &[u16], w_packed: &[u16], residual: Option<&[u16]>, g: &Geom) -> Vec<u16> {
    assert!(takes(g) && x.len() == g.batch * g.hw() * g.c, "bf16 tiles fprop: shapes");
    assert!(residual.is_none_or(|r| r.len() == g.batch * g.p() * g.o), "bf16 tiles fprop: the residual's shape");
    if direct::runs(tiles) {
        return direct::fprop(tiles, x, w_packed, residual, g);
    }
    fprop_gathered(tiles, x, w_packed, residual, g)
}

/// [`fprop`] as one GEMM whose `A` rows are gathered from `x`, 32 output pixels at a time.
fn fprop_gathered(tiles: Tiles, x: &[u16], w_packed: &[u16], residual: Option<&[u16]>, g: &Geom) -> Vec<u16> {
    let ksteps = g.kh * g.kw * g.c / BLOCK;
    gemm_gathered(tiles, g.batch * g.p(), g.o, ksteps, w_packed, residual, |m, panel, local| {
        gather::fprop_row(x, g, m, panel, local)
    })
}

/// `dx` `[N, H, W, C]` (bf16) from `dy` `[N, P, Q, K]` (bf16) and the bf16 ŵ in KRSC order
/// ([`round_weight`]): one GEMM per residue class of the input pixels ([`Phase`]; one for
/// stride 1), each with only the taps that reach its pixels and its own packed weight, then
/// the classes interleaved back into NHWC (pixels no tap reaches get zeros).
///
/// With `vdpbf16ps`, a stride-1 dgrad runs on the direct kernels (`direct.rs`), the same bits.
pub(crate) fn dgrad(tiles: Tiles, dy: &[u16], w: &[u16], g: &Geom) -> Vec<u16> {
    assert!(takes(g) && dy.len() == g.batch * g.p() * g.o, "bf16 tiles dgrad: shapes");
    if direct::runs(tiles) && direct::takes_dgrad(g) {
        return direct::dgrad(tiles, dy, w, g);
    }
    dgrad_gathered(tiles, dy, w, g)
}

/// [`dgrad`] as gathered GEMMs, one per residue class of the input pixels.
fn dgrad_gathered(tiles: Tiles, dy: &[u16], w: &[u16], g: &Geom) -> Vec<u16> {
    let phases = Phase::all(g);
    let per_phase: Vec<Option<Vec<u16>>> = phases
        .iter()
        .map(|ph| {
            let taps = ph.taps(g.kw);
            (!taps.is_empty()).then(|| {
                let packed = pack_weight_dgrad(w, g, &taps);
                let ksteps = taps.len() * g.o / BLOCK;
                gemm_gathered(tiles, g.batch * ph.rows * ph.cols, g.c, ksteps, &packed, None, |m, panel, local| {
                    gather::dgrad_row(dy, g, ph, m, panel, local)
                })
            })
        })
        .collect();
    if let [Some(_)] = &per_phase[..] {
        // Stride 1: the one class is the whole map, its rows already in NHWC order.
        return per_phase.into_iter().next().flatten().unwrap_or_default();
    }
    let [sh, sw] = g.stride;
    // Every element is written once: each input pixel's C values, from its class or zeros.
    filled_vec(g.batch * g.hw() * g.c, |dx| {
        dx.par_chunks_mut(g.w * g.c).enumerate().for_each(|(row, dst)| {
            let (n, ih) = (row / g.h, row % g.h);
            for (iw, px) in dst.chunks_mut(g.c).enumerate() {
                let k = (ih % sh) * sw.min(g.w) + iw % sw;
                let (ph, src) = (&phases[k], per_phase[k].as_deref());
                let m = (n * ph.rows + ih / sh) * ph.cols + iw / sw;
                match src {
                    Some(v) => px.iter_mut().zip(&v[m * g.c..][..g.c]).for_each(|(d, s)| {
                        d.write(*s);
                    }),
                    None => px.iter_mut().for_each(|d| {
                        d.write(0);
                    }),
                }
            }
        })
    })
}

/// Pixels per weight-gradient chunk: a multiple of 32 whose packed `A` (`a_rows` rows) stays
/// under `WGRAD_A_BYTES` and whose `B` panel (one 32-column block) under `WGRAD_PANEL_BYTES`,
/// so that both stay in a core's L2 while the panel is used.
fn wgrad_chunk(g: &Geom, a_rows: usize) -> usize {
    let by_a = WGRAD_A_BYTES / (a_rows * 2);
    let by_b = WGRAD_PANEL_BYTES / (BLOCK * 2);
    let steps = (by_a.min(by_b) / BLOCK).max(1);
    let all = (g.batch * g.p()).div_ceil(BLOCK);
    steps.min(all) * BLOCK
}

/// Whether the weight gradient is computed transposed, `dWᵀ = X̃ᵀ · dY`: for 1×1 filters with
/// fewer input than output channels. The `A` operand is the one transposed while it is packed
/// (rows of one pixel become a column), at a cost that grows with its row count and not with
/// the other side's; the transposed form transposes the `C` input channels instead of the `K`
/// output channels (64 against 256 for BiT's expanding 1×1 convolutions), and interleaves the
/// wider side in pairs, which vectorizes. On one Zen 4 core (`vdpbf16ps`, batch 8, 128 px):
/// 64 → 256 channels 2.87 → 2.54 ms, 128 → 512 2.31 → 2.06 ms, 256 → 1024 2.18 → 1.75 ms.
fn wgrad_transposed(g: &Geom) -> bool {
    g.kh * g.kw == 1 && g.c < g.o
}

/// `dW` (f32, see [`WeightGrad`]) from `dy` `[N, P, Q, K]` and `x` `[N, H, W, C]` (bf16).
///
/// Per chunk of pixels: the `A` operand — `dyᵀ` (every output channel), or `X̃ᵀ` in the
/// transposed form ([`wgrad_transposed`]) — is packed once (shared), then each 32-column block
/// of the result (one tap and 32 input channels; 32 output channels when transposed) packs its
/// `B` panel and runs it against every 32-row block of `A` while the panel is hot; the sums go
/// to a column-blocked result (`[column block][rows][32]`), accumulated chunk after chunk in
/// order.
///
/// With `vdpbf16ps`, a stride-1 wgrad runs on the direct kernel (`wgrad_direct.rs`) instead.
pub(crate) fn wgrad(tiles: Tiles, dy: &[u16], x: &[u16], g: &Geom) -> WeightGrad {
    assert!(
        takes(g) && dy.len() == g.batch * g.p() * g.o && x.len() == g.batch * g.hw() * g.c,
        "bf16 tiles wgrad: shapes"
    );
    if direct::runs(tiles) && wgrad_direct::takes(g) {
        return wgrad_direct::wgrad(tiles, dy, x, g);
    }
    wgrad_gathered(tiles, dy, x, g)
}

/// [`wgrad`] as gathered GEMMs over chunks of pixels.
fn wgrad_gathered(tiles: Tiles, dy: &[u16], x: &[u16], g: &Geom) -> WeightGrad {
    tiles.record();
    let transposed = wgrad_transposed(g);
    let runs = g.c / BLOCK;
    // (rows, columns) of the result: dW [K × R·S·C], or dWᵀ [C × K].
    let (rows, ncols) = if transposed { (g.c, g.o) } else { (g.o, g.kh * g.kw * g.c) };
    // The A rows of row block `mb` and the B rows of column block `nb`.
    let a_rows = |mb: usize| match transposed {
        true => gather::Rows::X { x, tap: 0, run: mb },
        false => gather::Rows::Dy { dy, block: mb },
    };
    let b_rows = |nb: usize| match transposed {
        true => gather::Rows::Dy { dy, block: nb },
        false => gather::Rows::X { x, tap: nb / runs, run: nb % runs },
    };
    let npix = g.batch * g.p();
    let chunk = wgrad_chunk(g, rows);
    let mut blocked = vec![0f32; rows * ncols];
    let mut a = vec![0u16; rows * chunk];
    for p0 in (0..npix).step_by(chunk) {
        let len = chunk.min(npix - p0);
        let ksteps = len.div_ceil(BLOCK);
        let panel = ksteps * STEP_LEN;
        let a = &mut a[..rows * ksteps * BLOCK];
        a.par_chunks_mut(panel).enumerate().for_each(|(mb, p)| tiles.transposed_panel(a_rows(mb), g, p0, len, p));
        let a = &*a;
        blocked.par_chunks_mut(rows * BLOCK).enumerate().for_each_init(
            || vec![0u16; chunk * BLOCK],
            |b, (nb, columns)| {
                let b = &mut b[..panel];
                tiles.pair_panel(b_rows(nb), g, p0, len, b);
                for (mb, c) in columns.chunks_mut(BLOCK * BLOCK).enumerate() {
                    tiles.block(c, BLOCK, p0 > 0, &a[mb * panel..][..panel], b, ksteps);
                }
            },
        );
    }
    WeightGrad { blocked, g: *g, transposed }
}

/// wgrad's result: `dW` in 32-column blocks, `[column block][K][32]` (column = tap·C + c), or
/// when `transposed` `dWᵀ` as `[block of 32 output channels][C][32]`.
pub(crate) struct WeightGrad {
    blocked: Vec<f32>,
    g: Geom,
    transposed: bool,
}

impl WeightGrad {
    /// `dW` `[K][R·S·C]` (KRSC).
    #[cfg(test)]
    pub(crate) fn krsc(&self) -> Vec<f32> {
        if self.transposed {
            // 1×1 filters: KRSC and OIHW are one order.
            return self.oihw();
        }
        let (k_all, ncols) = (self.g.o, self.g.kh * self.g.kw * self.g.c);
        let mut dw = vec![0f32; k_all * ncols];
        for (k, row) in dw.chunks_mut(ncols).enumerate() {
            for (nb, run) in row.chunks_mut(BLOCK).enumerate() {
                run.copy_from_slice(&self.blocked[(nb * k_all + k) * BLOCK..][..BLOCK]);
            }
        }
        dw
    }

    /// `dW` `[K][C][R·S]` (OIHW, the master weight's order), in one pass.
    pub(crate) fn oihw(&self) -> Vec<f32> {
        let g = &self.g;
        if self.transposed {
            // 1×1 filters: dW[k][c] = dWᵀ[c][k], from `[k / 32][C][k % 32]`.
            return filled_vec(g.o * g.c, |dw| {
                dw.par_chunks_mut(g.c).enumerate().for_each(|(k, row)| {
                    let (kb, j) = (k / BLOCK, k % BLOCK);
                    for (c, d) in row.iter_mut().enumerate() {
                        d.write(self.blocked[(kb * g.c + c) * BLOCK + j]);
                    }
                })
            });
        }
        let (k_all, taps, runs) = (g.o, g.kh * g.kw, g.c / BLOCK);
        // Every element is written once: each row's taps·C values, from its blocks.
        filled_vec(k_all * taps * g.c, |dw| {
            dw.par_chunks_mut(taps * g.c).enumerate().for_each(|(k, row)| {
                for nb in 0..taps * runs {
                    let (tap, run) = (nb / runs, nb % runs);
                    let src = &self.blocked[(nb * k_all + k) * BLOCK..][..BLOCK];
                    for (j, v) in src.iter().enumerate() {
                        row[(run * BLOCK + j) * taps + tap].write(*v);
                    }
                }
            })
        })
    }
}
