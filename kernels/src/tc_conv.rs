//! Host side of the tensor-core implicit-GEMM convolutions (`kernels/cuda/tc_conv_*.cu`): the
//! problem shape as the kernels take it ([`ConvShape`], the `#[repr(C)]` mirror of
//! `tc_conv_shape`), the checks a shape must pass, and each pass's launch (kernel, grid, block,
//! dynamic shared memory, workspace). Layouts: x NHWC, weights KRSC, y NPQK, bf16 operands.
//!
//! The runtimes (the emulator tests, the CUDA backend) pass `ConvShape::bytes` as the kernels'
//! shape argument and allocate what [`Launch`] says; nothing here touches a device.

use crate::tc::TcGemm;

/// A checked (non-negative) `i32` field as a size.
fn u(v: i32) -> usize {
    v as usize
}

/// `tc_conv_shape` in `kernels/cuda/tc_conv.cuh`: field order and types must match.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    pub n: i32,
    pub h: i32,
    pub w: i32,
    pub c: i32,
    pub k: i32,
    pub r: i32,
    pub s: i32,
    pub p: i32,
    pub q: i32,
    pub stride_h: i32,
    pub stride_w: i32,
    pub pad_h: i32,
    pub pad_w: i32,
    pub dil_h: i32,
    pub dil_w: i32,
}

/// A convolution's hyper-parameters: stride and dilation as (rows, columns), zero padding per
/// side as [top, bottom, left, right] (the kernels offset by top and left; bottom and right only
/// set the output size, as BiT's fixed padding needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvParams {
    pub stride: (usize, usize),
    pub pad: [usize; 4],
    pub dil: (usize, usize),
}

impl ConvParams {
    /// Square stride, the same padding on every side, no dilation.
    pub fn new(stride: usize, pad: usize) -> Self {
        ConvParams { stride: (stride, stride), pad: [pad; 4], dil: (1, 1) }
    }
}

fn out_extent(input: usize, pad: [usize; 2], dil: usize, filter: usize, stride: usize) -> Option<usize> {
    let span = dil * (filter - 1) + 1;
    (input + pad[0] + pad[1]).checked_sub(span).map(|d| d / stride + 1)
}

impl ConvShape {
    /// The shape of a convolution of an `[n, h, w, c]` input with `[k, r, s, c]` filters,
    /// checked for what the kernels support: every size positive, C and K multiples of 8 (16-byte
    /// channel chunks; pad a 3-channel stem with [`pad_channels`]), a non-empty output, and every
    /// GEMM extent and tensor length within `i32` (the kernels index pixels with `int`).
    pub fn new(nhwc: [usize; 4], krs: [usize; 3], cp: ConvParams) -> Result<Self, String> {
        let [n, h, w, c] = nhwc;
        let [k, r, s] = krs;
        let what = format!("tensor-core convolution x[{n},{h},{w},{c}] * w[{k},{r},{s},{c}] {cp:?}");
        if [n, h, w, c, k, r, s, cp.stride.0, cp.stride.1, cp.dil.0, cp.dil.1].contains(&0) {
            return Err(format!("{what}: sizes, strides and dilations must be positive"));
        }
        if !c.is_multiple_of(8) || !k.is_multiple_of(8) {
            return Err(format!("{what}: C ({c}) and K ({k}) must be multiples of 8 (pad the channels with zeros)"));
        }
        let (Some(p), Some(q)) = (
            out_extent(h, [cp.pad[0], cp.pad[1]], cp.dil.0, r, cp.stride.0),
            out_extent(w, [cp.pad[2], cp.pad[3]], cp.dil.1, s, cp.stride.1),
        ) else {
            return Err(format!("{what}: the dilated filter is larger than the padded input"));
        };
        if cp.pad.iter().any(|&v| v > i32::MAX as usize / 4) {
            return Err(format!("{what}: padding too large"));
        }
        let lens = [n * h * w * c, k * r * s * c, n * p * q * k, n * p * q, r * s * c, r * s * k];
        if lens.iter().any(|&l| l > i32::MAX as usize) {
            return Err(format!("{what}: too large for the kernels' 32-bit indexing"));
        }
        let i = |v: usize| v as i32;
        Ok(ConvShape {
            n: i(n),
            h: i(h),
            w: i(w),
            c: i(c),
            k: i(k),
            r: i(r),
            s: i(s),
            p: i(p),
            q: i(q),
            stride_h: i(cp.stride.0),
            stride_w: i(cp.stride.1),
            pad_h: i(cp.pad[0]),
            pad_w: i(cp.pad[2]),
            dil_h: i(cp.dil.0),
            dil_w: i(cp.dil.1),
        })
    }

    /// The kernel argument: the struct's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let fields = [
            self.n,
            self.h,
            self.w,
            self.c,
            self.k,
            self.r,
            self.s,
            self.p,
            self.q,
            self.stride_h,
            self.stride_w,
            self.pad_h,
            self.pad_w,
            self.dil_h,
            self.dil_w,
        ];
        fields.iter().flat_map(|f| f.to_ne_bytes()).collect()
    }

    /// Elements of x (NHWC), the filters (KRSC) and y (NPQK).
    pub fn x_len(&self) -> usize {
        u(self.n * self.h * self.w * self.c)
    }
    pub fn w_len(&self) -> usize {
        u(self.k * self.r * self.s * self.c)
    }
    pub fn y_len(&self) -> usize {
        u(self.n) * u(self.p * self.q * self.k)
    }
}

/// One kernel launch: everything a runtime needs besides the pointers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub kernel: &'static str,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub smem_bytes: u32,
}

const fn conv(kernel: &'static str, file: &'static str, tile_n: u32) -> TcGemm {
    TcGemm {
        kernel,
        file,
        tile_m: 128,
        tile_n,
        tile_k: 32,
        warp_m: 64,
        warp_n: tile_n / 2,
        stages: 3,
        threads: 128,
        smem_bytes: 3 * (128 * 32 + 32 * tile_n) * 2,
    }
}

/// The forward kernels (bf16 or f32 output) on the 128×128 tile.
pub const FPROP_BF16: TcGemm = conv("tc_conv_fprop_bf16", "tc_conv_fprop.cu", 128);
pub const FPROP_F32: TcGemm = conv("tc_conv_fprop_f32", "tc_conv_fprop.cu", 128);
/// The forward kernels with a 64-wide N tile, for at most 64 output channels.
pub const FPROP_BF16_N64: TcGemm = conv("tc_conv_fprop_bf16_n64", "tc_conv_fprop_n64.cu", 64);
pub const FPROP_F32_N64: TcGemm = conv("tc_conv_fprop_f32_n64", "tc_conv_fprop_n64.cu", 64);
/// The input-gradient kernels (bf16 or f32 output).
pub const DGRAD_BF16: TcGemm = conv("tc_conv_dgrad_bf16", "tc_conv_dgrad.cu", 128);
pub const DGRAD_F32: TcGemm = conv("tc_conv_dgrad_f32", "tc_conv_dgrad.cu", 128);
/// The weight-gradient kernel (f32 output or split-K partials).
pub const WGRAD_F32: TcGemm = conv("tc_conv_wgrad_f32", "tc_conv_wgrad.cu", 128);
/// The split-K reduction of the weight gradient (no tensor cores).
pub const WGRAD_REDUCE: &str = "tc_conv_wgrad_reduce";

fn tiled(g: &TcGemm, m: usize, n: usize, z: usize) -> Result<Launch, String> {
    let grid = [n.div_ceil(g.tile_n as usize), m.div_ceil(g.tile_m as usize), z];
    if grid[1] > 65535 || grid[2] > 65535 {
        return Err(format!("{}: grid {grid:?} exceeds the 65535 limit of y and z", g.kernel));
    }
    Ok(Launch { kernel: g.kernel, grid: grid.map(|d| d as u32), block: [g.threads, 1, 1], smem_bytes: g.smem_bytes })
}

/// The forward pass: y = x ⊛ w (+ residual), bf16 or f32 output, on the 64-wide N tile when K ≤
/// 64 (half the 128-wide tile would be zero fill); arguments (x, w, residual or null, y, shape).
pub fn fprop(sh: &ConvShape, f32_out: bool) -> Result<Launch, String> {
    fprop_tile(sh, f32_out, if sh.k <= 64 { 64 } else { 128 })
}

/// [`fprop`] on a chosen N tile (64 or 128): the variants compute the same bits.
pub fn fprop_tile(sh: &ConvShape, f32_out: bool, tile_n: u32) -> Result<Launch, String> {
    let g = match (tile_n, f32_out) {
        (64, false) => FPROP_BF16_N64,
        (64, true) => FPROP_F32_N64,
        (128, false) => FPROP_BF16,
        (128, true) => FPROP_F32,
        _ => return Err(format!("tc_conv_fprop: no kernel with an N tile of {tile_n} (64 or 128)")),
    };
    tiled(&g, u(sh.n) * u(sh.p * sh.q), u(sh.k), 1)
}

/// The input gradient dx = dy ⊛ flipped w, one grid z per stride phase; arguments (dy, w, dx,
/// shape).
pub fn dgrad(sh: &ConvShape, f32_out: bool) -> Result<Launch, String> {
    let g = if f32_out { DGRAD_F32 } else { DGRAD_BF16 };
    let phase_pixels = u(sh.n) * u(sh.h).div_ceil(u(sh.stride_h)) * u(sh.w).div_ceil(u(sh.stride_w));
    tiled(&g, phase_pixels, u(sh.c), u(sh.stride_h * sh.stride_w))
}

/// The weight gradient's plan: the tiled launch (arguments dy, x, partials, shape,
/// `tiles_per_split`), its split count and workspace, and the reduction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wgrad {
    pub launch: Launch,
    pub splits: usize,
    /// 32-pixel k tiles per split: the kernel's last argument.
    pub tiles_per_split: i32,
    /// f32 elements of the partials workspace (0 with one split: the kernel writes dW).
    pub workspace: usize,
    /// The reduction over the splits (arguments partials, dw, count as i64, splits as i32):
    /// `None` with one split.
    pub reduce: Option<Launch>,
}

/// CTAs the split-K heuristic aims for: two waves of two blocks on a 132-SM GPU. A constant, not
/// the device's SM count, so that the split (and so the rounding) is the same on every GPU.
const WGRAD_TARGET_CTAS: usize = 528;
/// Fewest k tiles (of 32 pixels) a split sums: below this the reduction outweighs the gain.
const WGRAD_MIN_TILES: usize = 8;

/// The weight gradient dW = dyᵀ · im2col(x) with `splits` (None: chosen from the shape alone).
pub fn wgrad(sh: &ConvShape, splits: Option<usize>) -> Result<Wgrad, String> {
    let g = WGRAD_F32;
    let (m, n) = (u(sh.k), u(sh.r * sh.s * sh.c));
    let ktiles = (u(sh.n) * u(sh.p * sh.q)).div_ceil(g.tile_k as usize);
    let ctas = m.div_ceil(g.tile_m as usize) * n.div_ceil(g.tile_n as usize);
    let wanted = splits.unwrap_or_else(|| WGRAD_TARGET_CTAS.div_ceil(ctas).min(ktiles / WGRAD_MIN_TILES).max(1));
    if wanted == 0 {
        return Err(format!("{}: the split count must be positive", g.kernel));
    }
    // No empty split: the last one gets the remainder.
    let per = ktiles.div_ceil(wanted.min(ktiles));
    let splits = ktiles.div_ceil(per);
    let launch = tiled(&g, m, n, splits)?;
    let count = m * n;
    let reduce = (splits > 1).then(|| Launch {
        kernel: WGRAD_REDUCE,
        grid: [count.div_ceil(256).min(4096) as u32, 1, 1],
        block: [256, 1, 1],
        smem_bytes: 0,
    });
    Ok(Wgrad {
        launch,
        splits,
        tiles_per_split: per as i32,
        workspace: if splits > 1 { splits * count } else { 0 },
        reduce,
    })
}

/// `x` ([pixels][c] of any element type) with its channels zero-padded to `c_to` (≥ c): how the
/// 3-channel stem input, and its filters ([k·r·s][3]), meet the kernels' C % 8 == 0. Zero
/// channels add exact zeros to every sum, so the result equals the unpadded convolution's.
pub fn pad_channels<T: Copy + Default>(x: &[T], c: usize, c_to: usize) -> Vec<T> {
    assert!(
        c > 0 && c_to >= c && x.len().is_multiple_of(c),
        "pad_channels: {} values of {c} channels to {c_to}",
        x.len()
    );
    let mut out = vec![T::default(); x.len() / c * c_to];
    for (dst, src) in out.chunks_exact_mut(c_to).zip(x.chunks_exact(c)) {
        dst[..c].copy_from_slice(src);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_checked() {
        let sh = ConvShape::new([2, 13, 11, 8], [24, 7, 7], ConvParams::new(2, 3)).unwrap();
        assert_eq!((sh.p, sh.q), (7, 6));
        // Per-side padding: the bottom and right only add output rows and columns.
        let asym = ConvParams { pad: [0, 1, 0, 1], ..ConvParams::new(2, 0) };
        let sh = ConvShape::new([1, 8, 8, 8], [8, 3, 3], asym).unwrap();
        assert_eq!((sh.p, sh.q, sh.pad_h, sh.pad_w), (4, 4, 0, 0));
        assert_eq!(sh.bytes().len(), std::mem::size_of::<ConvShape>());
        assert!(ConvShape::new([2, 13, 11, 3], [24, 7, 7], ConvParams::new(2, 3))
            .unwrap_err()
            .contains("multiples of 8"));
        assert!(ConvShape::new([2, 13, 11, 8], [12, 3, 3], ConvParams::new(1, 1)).is_err());
        assert!(ConvShape::new([2, 2, 2, 8], [8, 5, 5], ConvParams::new(1, 0)).is_err());
        assert!(ConvShape::new([0, 2, 2, 8], [8, 1, 1], ConvParams::new(1, 0)).is_err());
    }

    #[test]
    fn launches() {
        let sh = ConvShape::new([2, 9, 9, 64], [24, 3, 3], ConvParams::new(2, 1)).unwrap();
        // 2·5·5 = 50 pixels, K = 24 on the 64-wide tile.
        let f = fprop(&sh, false).unwrap();
        assert_eq!((f.kernel, f.grid, f.smem_bytes), ("tc_conv_fprop_bf16_n64", [1, 1, 1], 36864));
        assert_eq!(fprop_tile(&sh, true, 128).unwrap().kernel, "tc_conv_fprop_f32");
        assert!(fprop_tile(&sh, true, 32).is_err());
        // dgrad: 4 phases of at most 2·5·5 pixels, C = 64 in one tile.
        assert_eq!(dgrad(&sh, true).unwrap().grid, [1, 1, 4]);
        let w = wgrad(&sh, Some(3)).unwrap(); // 2 k tiles: at most 2 splits
        assert_eq!((w.splits, w.tiles_per_split, w.workspace), (2, 1, 2 * 24 * 576));
        assert_eq!(w.launch.grid, [5, 1, 2]);
        assert!(wgrad(&sh, Some(1)).unwrap().reduce.is_none());
        assert!(wgrad(&sh, Some(0)).is_err());
    }

    #[test]
    fn channel_padding() {
        assert_eq!(pad_channels(&[1, 2, 3, 4, 5, 6], 3, 8), [1, 2, 3, 0, 0, 0, 0, 0, 4, 5, 6, 0, 0, 0, 0, 0]);
    }
}
