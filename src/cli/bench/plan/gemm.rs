//! The implicit GEMMs of a convolution's three passes (CUTLASS's mapping, NHWC activations, KRSC
//! weights, bf16 operands, f32 accumulation) and the tile model that prices them.
//!
//! | pass | M | N | K |
//! | --- | --- | --- | --- |
//! | fprop | N·P·Q | K | R·S·C |
//! | dgrad, stride 1 | N·H·W | C | R·S·K |
//! | dgrad, stride > 1 | one GEMM per phase (h mod sh, w mod sw): N·⌈(H−ph)/sh⌉·⌈(W−pw)/sw⌉ | C | (filter taps of that phase)·K |
//! | wgrad | K | R·S·C | N·P·Q, split over `split` CTAs (split-K) |
//!
//! A strided dgrad phase whose rows meet no filter tap (the 1×1 stride-2 projection: three of
//! four phases) is a zero fill, priced as memory traffic. C is padded to a multiple of 8 (16-byte
//! cp.async), or to 4 when C ≤ 4 (the RGB stem; NVIDIA's conv guide: 4 suffices with stride 2).
//!
//! Time of one GEMM on a tile: its CTAs run ⌈CTAs / SMs⌉ deep on the busiest SM, each doing
//! 2·BM·BN·K_cta FLOP (padded) at the SM's share of the mma.sync rate; the operands' minimum
//! HBM traffic at the HBM roof is the other bound, and the estimate is the larger of the two.
//! This is a best case: latency, L2 and shared-memory limits and the epilogue are not modelled.

use super::net::Conv;
use super::spec::GpuSpec;

/// Which pass of a convolution (or of the head's linear layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pass {
    Fprop,
    Dgrad,
    Wgrad,
}

impl Pass {
    pub fn name(self) -> &'static str {
        match self {
            Pass::Fprop => "fprop",
            Pass::Dgrad => "dgrad",
            Pass::Wgrad => "wgrad",
        }
    }
}

/// One GEMM: the problem and the minimum HBM bytes of its operands and result.
#[derive(Clone, Debug, PartialEq)]
pub struct Gemm {
    pub pass: Pass,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// The strided-dgrad phase `(ph, pw)`, if this GEMM is one.
    pub phase: Option<(usize, usize)>,
    /// Bytes read and written at least once (bf16 activations and weights; wgrad's dW in f32).
    pub bytes: f64,
}

/// A CTA tile (CUTLASS sm80 16816 bf16 set; 4 warps of 2×2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    pub bm: usize,
    pub bn: usize,
    pub bk: usize,
    pub stages: usize,
}

impl Tile {
    pub fn label(&self) -> String {
        format!("{}×{}×{}/{}", self.bm, self.bn, self.bk, self.stages)
    }
    /// Shared memory of the operand stages: (BM + BN)·BK bf16 per stage.
    pub fn smem_bytes(&self) -> usize {
        (self.bm + self.bn) * self.bk * 2 * self.stages
    }
}

/// The tiles the planner chooses from, largest first: 128×128×32 (4 stages, 64 KiB) is the v1
/// kernel; the smaller ones serve small or badly quantized layers (CUTLASS generates all of these
/// for sm_80 bf16).
pub const TILES: [Tile; 4] = [
    Tile { bm: 128, bn: 128, bk: 32, stages: 4 },
    Tile { bm: 128, bn: 64, bk: 32, stages: 4 },
    Tile { bm: 64, bn: 128, bk: 32, stages: 4 },
    Tile { bm: 64, bn: 64, bk: 32, stages: 4 },
];

/// Split-K factors tried for wgrad.
pub const SPLITS: [usize; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

/// Candidates this close to the fastest count as equally fast (see [`choose`]): the model does
/// not charge small tiles for their lower operand reuse (64×64 loads twice the shared-memory
/// bytes per FLOP of 128×128) nor a split for its reduction launch.
pub const NEAR_FASTEST: f64 = 1.10;

/// Channels as the kernels see them (aligned for 16-byte or, for C ≤ 4, 8-byte copies).
pub fn padded_channels(c: usize) -> usize {
    if c <= 4 {
        4
    } else {
        c.div_ceil(8) * 8
    }
}

const BF16: f64 = 2.0;
const F32: f64 = 4.0;

/// fprop: y[NPQ, K] = x̂[NPQ, RSC] · w[RSC, K].
pub fn fprop(c: &Conv) -> Gemm {
    let cp = padded_channels(c.c);
    let bytes = BF16 * (c.n * c.h * c.w * cp + c.k * c.r * c.s * cp + c.n * c.p * c.q * c.k) as f64;
    Gemm { pass: Pass::Fprop, m: c.n * c.p * c.q, n: c.k, k: c.r * c.s * cp, phase: None, bytes }
}

/// Filter taps along one axis that reach input rows `≡ phase (mod stride)`: tap `r` maps input
/// row `h` to output row `(h + pad − r) / stride`, which exists only when the division is exact.
pub fn taps(phase: usize, pad: usize, filter: usize, stride: usize) -> usize {
    (0..filter).filter(|&r| (phase + pad + stride * filter - r).is_multiple_of(stride)).count()
}

/// Rows `< len` that are `≡ phase (mod stride)`.
fn phase_rows(len: usize, phase: usize, stride: usize) -> usize {
    len.saturating_sub(phase).div_ceil(stride)
}

/// dgrad: dx[NHW, C] = dŷ[NHW, RSK] · w[RSK, C], one GEMM per stride phase; the second value is
/// the elements of dx that no tap reaches (zero-filled).
pub fn dgrad(c: &Conv) -> (Vec<Gemm>, usize) {
    let [sh, sw] = c.stride;
    // (phase, rows, taps) of every phase with rows.
    let phases: Vec<((usize, usize), usize, usize)> = (0..sh)
        .flat_map(|ph| (0..sw).map(move |pw| (ph, pw)))
        .map(|(ph, pw)| {
            let rows = c.n * phase_rows(c.h, ph, sh) * phase_rows(c.w, pw, sw);
            ((ph, pw), rows, taps(ph, c.pad[0], c.r, sh) * taps(pw, c.pad[1], c.s, sw))
        })
        .filter(|&(_, rows, _)| rows > 0)
        .collect();
    // Every phase with taps needs all of dy; together they read it once at best (CUTLASS runs
    // them in one launch), so each is charged an equal share, plus its taps of w and its dx rows.
    let computed = phases.iter().filter(|p| p.2 > 0).count().max(1);
    let dy = (c.n * c.p * c.q * c.k) as f64 / computed as f64;
    let mut gemms = Vec::new();
    let mut zero = 0;
    for (phase, rows, t) in phases {
        if t == 0 {
            zero += rows * c.c;
            continue;
        }
        let bytes = BF16 * (dy + (t * c.k * c.c) as f64 + (rows * c.c) as f64);
        let phase = (sh * sw > 1).then_some(phase);
        gemms.push(Gemm { pass: Pass::Dgrad, m: rows, n: c.c, k: t * c.k, phase, bytes });
    }
    (gemms, zero)
}

/// wgrad: dw[K, RSC] = dyᵀ[K, NPQ] · x̂[NPQ, RSC]; dW is written in f32 (the split-K partials
/// are priced with the split).
pub fn wgrad(c: &Conv) -> Gemm {
    let cp = padded_channels(c.c);
    let bytes = BF16 * (c.n * c.p * c.q * c.k + c.n * c.h * c.w * cp) as f64 + F32 * (c.k * c.r * c.s * cp) as f64;
    Gemm { pass: Pass::Wgrad, m: c.k, n: c.r * c.s * cp, k: c.n * c.p * c.q, phase: None, bytes }
}

/// The head's linear layer `[batch, feat] · [feat, classes]` as three GEMMs (f32 logits).
pub fn head(batch: usize, feat: usize, classes: usize) -> [Gemm; 3] {
    let io = |a: usize, b: usize, out: usize| BF16 * (a + b) as f64 + F32 * out as f64;
    [
        Gemm {
            pass: Pass::Fprop,
            m: batch,
            n: classes,
            k: feat,
            phase: None,
            bytes: io(batch * feat, feat * classes, batch * classes),
        },
        Gemm {
            pass: Pass::Dgrad,
            m: batch,
            n: feat,
            k: classes,
            phase: None,
            bytes: io(batch * classes, feat * classes, batch * feat),
        },
        Gemm {
            pass: Pass::Wgrad,
            m: classes,
            n: feat,
            k: batch,
            phase: None,
            bytes: io(batch * classes, batch * feat, feat * classes),
        },
    ]
}

/// A GEMM priced on one tile and split.
#[derive(Clone, Debug, PartialEq)]
pub struct Priced {
    pub tile: Tile,
    pub split: usize,
    /// CTAs along M, N and the split.
    pub grid: [usize; 3],
    /// CTAs ÷ SMs.
    pub waves: f64,
    /// CTAs ÷ (⌈waves⌉ · SMs): the share of the last wave's SM slots that are busy, over all waves.
    pub wave_eff: f64,
    /// Useful FLOP ÷ the FLOP the padded tiles compute.
    pub useful: f64,
    /// 2·M·N·K.
    pub flop: f64,
    pub t_compute: f64,
    pub t_memory: f64,
}

impl Priced {
    /// The estimate: the larger of the compute and the memory bound.
    pub fn time(&self) -> f64 {
        self.t_compute.max(self.t_memory)
    }
    #[cfg(test)]
    pub fn ctas(&self) -> usize {
        self.grid.iter().product()
    }
}

/// `g` on `tile` with K split `split` ways on `gpu`.
pub fn price(g: &Gemm, tile: Tile, split: usize, gpu: &GpuSpec) -> Priced {
    let grid = [g.m.div_ceil(tile.bm), g.n.div_ceil(tile.bn), split];
    let ctas = grid.iter().product::<usize>();
    let k_cta = g.k.div_ceil(split).div_ceil(tile.bk) * tile.bk;
    let deep = ctas.div_ceil(gpu.sms);
    let cta_flop = 2.0 * (tile.bm * tile.bn * k_cta) as f64;
    let flop = 2.0 * g.m as f64 * g.n as f64 * g.k as f64;
    // Split-K partials: each split writes an f32 M×N slice that a second pass reads and sums.
    let partials = if split > 1 { 2.0 * F32 * (split * g.m * g.n) as f64 } else { 0.0 };
    Priced {
        tile,
        split,
        grid,
        waves: ctas as f64 / gpu.sms as f64,
        wave_eff: ctas as f64 / (deep * gpu.sms) as f64,
        useful: flop / (cta_flop * ctas as f64),
        flop,
        t_compute: deep as f64 * cta_flop / gpu.sm_flops(),
        t_memory: (g.bytes + partials) / gpu.hbm_bytes_per_s(),
    }
}

/// The tile (and, for wgrad, split) chosen for `g`. Rule: among the candidates whose estimated
/// time is within [`NEAR_FASTEST`] of the least, the one with the least padded work, then
/// the largest tile, then the smallest split (the model's blind spots — operand reuse, extra
/// launches — all favour small tiles and large splits). Splits keep at least one BK-deep step
/// per CTA. fprop and dgrad are not split.
pub fn choose(g: &Gemm, gpu: &GpuSpec) -> Priced {
    let splits = if g.pass == Pass::Wgrad { &SPLITS[..] } else { &SPLITS[..1] };
    let mut all = Vec::new();
    for &tile in &TILES {
        for &s in splits.iter().filter(|&&s| s == 1 || g.k.div_ceil(s) >= tile.bk) {
            all.push(price(g, tile, s, gpu));
        }
    }
    let fastest = all.iter().map(Priced::time).fold(f64::INFINITY, f64::min);
    all.retain(|p| p.time() <= fastest * NEAR_FASTEST);
    let most_useful = all.iter().map(|p| p.useful).fold(0.0, f64::max);
    // Padding within 1 % counts as equal.
    all.retain(|p| p.useful >= most_useful * 0.99);
    let key = |p: &Priced| (p.tile.bm * p.tile.bn, usize::MAX - p.split);
    // TILES is largest first and `max_by_key` keeps the last of equals: search in reverse so
    // the first listed of two equal-area tiles wins.
    all.into_iter().rev().max_by_key(key).expect("TILES is not empty and split 1 is always tried")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// R50x1's stage-3 unit-1 3×3: 256 → 256, 28×28 → 14×14, stride 2, batch 64.
    fn s3_conv2() -> Conv {
        Conv {
            name: "stages.2.blocks.0.conv2".into(),
            n: 64,
            c: 256,
            h: 28,
            w: 28,
            k: 256,
            r: 3,
            s: 3,
            stride: [2, 2],
            pad: [1, 1],
            p: 14,
            q: 14,
            dgrad: true,
        }
    }

    #[test]
    fn gemm_shapes_of_the_three_passes() {
        let c = s3_conv2();
        let f = fprop(&c);
        assert_eq!((f.m, f.n, f.k), (64 * 14 * 14, 256, 9 * 256));
        let w = wgrad(&c);
        assert_eq!((w.m, w.n, w.k), (256, 9 * 256, 64 * 14 * 14));
        // Stride 2, pad 1, 3 taps: even rows meet tap 1 only, odd rows taps 0 and 2.
        let (d, zero) = dgrad(&c);
        let shapes: Vec<_> = d.iter().map(|g| (g.phase, g.m, g.n, g.k)).collect();
        let m = 64 * 14 * 14;
        assert_eq!(
            shapes,
            [
                (Some((0, 0)), m, 256, 256),
                (Some((0, 1)), m, 256, 2 * 256),
                (Some((1, 0)), m, 256, 2 * 256),
                (Some((1, 1)), m, 256, 4 * 256)
            ]
        );
        assert_eq!(zero, 0);
        // dy is read once over the four phases.
        let dy: f64 = d.iter().map(|g| g.bytes - 2.0 * (g.k * 256 + g.m * 256) as f64).sum();
        assert!((dy - 2.0 * (m * 256) as f64).abs() < 1e-6, "{dy}");
        // The phases together do exactly the dense dgrad's useful work: Σ taps = R·S.
        let total: usize = d.iter().map(|g| g.m * g.k).sum();
        assert_eq!(total, 64 * 14 * 14 * 9 * 256);
    }

    #[test]
    fn strided_1x1_dgrad_has_three_zero_phases() {
        let c = Conv { c: 1024, k: 2048, r: 1, s: 1, h: 14, w: 14, p: 7, q: 7, pad: [0, 0], ..s3_conv2() };
        let (d, zero) = dgrad(&c);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].phase, d[0].m, d[0].n, d[0].k), (Some((0, 0)), 64 * 7 * 7, 1024, 2048));
        assert_eq!(zero, 64 * 1024 * (14 * 14 - 7 * 7));
        // Its one phase reads all of dy, 2048 × 1024 weights and writes a quarter of dx.
        let bytes = 2.0 * (64.0 * 49.0 * 2048.0 + 2048.0 * 1024.0 + 64.0 * 49.0 * 1024.0);
        assert_eq!(d[0].bytes, bytes);
        // Stride 1: one GEMM over every pixel, no phase.
        let c = Conv { stride: [1, 1], p: 14, q: 14, ..c };
        let (d, zero) = dgrad(&c);
        assert_eq!((d.len(), d[0].phase, d[0].m, zero), (1, None, 64 * 14 * 14, 0));
    }

    #[test]
    fn taps_per_phase() {
        assert_eq!([taps(0, 1, 3, 2), taps(1, 1, 3, 2)], [1, 2]);
        assert_eq!([taps(0, 0, 1, 2), taps(1, 0, 1, 2)], [1, 0]);
        assert_eq!(taps(0, 3, 7, 1), 7);
        // 7×7 stride 2 pad 3: even rows meet the odd taps (1, 3, 5), odd rows the even ones.
        assert_eq!([taps(0, 3, 7, 2), taps(1, 3, 7, 2)], [3, 4]);
        assert_eq!(phase_rows(7, 0, 2), 4);
        assert_eq!(phase_rows(7, 1, 2), 3);
        assert_eq!(phase_rows(1, 1, 2), 0);
    }

    #[test]
    fn waves_and_efficiency_on_132_sms() {
        let gpu = GpuSpec::h100();
        // fprop of the stride-2 3×3 above: M = 12544 → 98 × 2 = 196 CTAs of 128×128.
        let p = price(&fprop(&s3_conv2()), TILES[0], 1, &gpu);
        assert_eq!(p.grid, [98, 2, 1]);
        assert!((p.waves - 196.0 / 132.0).abs() < 1e-12);
        assert!((p.wave_eff - 196.0 / 264.0).abs() < 1e-12);
        // K = 2304 is a multiple of 32 and M, N of 128: no padding.
        assert_eq!(p.useful, 1.0);
        // Two CTAs deep on the busiest SM, each 2·128·128·2304 FLOP at 989.4·0.64/132 TFLOP/s.
        let t = 2.0 * 2.0 * 128.0 * 128.0 * 2304.0 / (989.4e12 * 0.64 / 132.0);
        assert!((p.t_compute - t).abs() < 1e-12, "{} vs {t}", p.t_compute);
        // 64×64 tiles: 784 CTAs, 6 deep (wave_eff 784/792), each a quarter of the work: 6/4
        // against 2 CTA-times of 128×128.
        let q = price(&fprop(&s3_conv2()), TILES[3], 1, &gpu);
        assert_eq!(q.ctas(), 784);
        assert!((q.wave_eff - 784.0 / 792.0).abs() < 1e-12);
        assert!((q.t_compute / p.t_compute - 0.75).abs() < 1e-12);
    }

    #[test]
    fn tile_and_split_choice() {
        let gpu = GpuSpec::h100();
        // 196 CTAs of 128×128 leave 68 of the second wave's SMs idle (2 CTA-times); 128×64,
        // 64×128 and 64×64 all take 1.5 and pad nothing: the larger area wins, and of the two
        // equal ones the first listed.
        let p = choose(&fprop(&s3_conv2()), &gpu);
        assert_eq!(p.tile, TILES[1]);
        // A big, well-quantized GEMM keeps the largest tile: 64·56·56 × 256 × 576.
        let big = Gemm { pass: Pass::Fprop, m: 64 * 56 * 56, n: 256, k: 576, phase: None, bytes: 0.0 };
        let p = choose(&big, &gpu);
        assert_eq!(p.tile, TILES[0]);
        assert_eq!(p.split, 1);
        // wgrad of that layer: K×RSC = 256 × 2304 has 2·18 = 36 tiles of 128×128; split-K fills the SMs.
        let w = choose(&wgrad(&s3_conv2()), &gpu);
        assert!(w.split > 1, "{w:?}");
        assert!(w.ctas() >= gpu.sms, "{w:?}");
        // fprop is never split.
        assert_eq!(choose(&fprop(&s3_conv2()), &gpu).split, 1);
    }

    #[test]
    fn padded_channels_and_head() {
        assert_eq!([padded_channels(3), padded_channels(5), padded_channels(64)], [4, 8, 64]);
        let [f, d, w] = head(64, 2048, 1000);
        assert_eq!((f.m, f.n, f.k), (64, 1000, 2048));
        assert_eq!((d.m, d.n, d.k), (64, 2048, 1000));
        assert_eq!((w.m, w.n, w.k), (1000, 2048, 64));
    }
}
