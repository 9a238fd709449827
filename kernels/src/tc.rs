//! Launch geometry of the tensor-core kernels: the numbers of `kernels/cuda/tc_tile.cuh`'s and
//! each kernel file's `#define`s (a unit test keeps the two equal), for launch code, the emulator tests and the
//! static SASS check (`engine/tests/sass_tc.rs`, which needs the shared memory a launch asks
//! for to compute occupancy, and the mma count per main-loop iteration to check it).

/// A tiled tensor-core GEMM kernel's geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcGemm {
    /// The `extern "C"` entry point.
    pub kernel: &'static str,
    /// Its source file under `kernels/cuda/`.
    pub file: &'static str,
    /// CTA tile (M × N × K per main-loop iteration).
    pub tile_m: u32,
    pub tile_n: u32,
    pub tile_k: u32,
    /// Warp tile (M × N); the block has (tile_m / warp_m) · (tile_n / warp_n) warps.
    pub warp_m: u32,
    pub warp_n: u32,
    /// cp.async pipeline depth.
    pub stages: u32,
    /// Threads per block.
    pub threads: u32,
    /// Dynamic shared memory per block, bytes.
    pub smem_bytes: u32,
}

/// `tc_gemm_bf16`: C (f32) = A (bf16, row-major M×K) · B (bf16, row-major K×N).
pub const TC_GEMM_BF16: TcGemm = TcGemm {
    kernel: "tc_gemm_bf16",
    file: "tc_gemm.cu",
    tile_m: 128,
    tile_n: 128,
    tile_k: 32,
    warp_m: 64,
    warp_n: 64,
    stages: 3,
    threads: 128,
    smem_bytes: 3 * (128 * 32 + 32 * 128) * 2,
};

/// Every tensor-core kernel the SASS check inspects.
pub const TC_KERNELS: &[TcGemm] = &[
    TC_GEMM_BF16,
    crate::tc_conv::FPROP_BF16,
    crate::tc_conv::FPROP_F32,
    crate::tc_conv::FPROP_BF16_N64,
    crate::tc_conv::FPROP_F32_N64,
    crate::tc_conv::DGRAD_BF16,
    crate::tc_conv::DGRAD_F32,
    crate::tc_conv::WGRAD_F32,
];

impl TcGemm {
    /// mma.sync m16n8k16 per warp and main-loop iteration (one k tile).
    pub fn mma_per_k_tile(&self) -> u32 {
        (self.warp_m / 16) * (self.warp_n / 8) * (self.tile_k / 16)
    }

    /// The launch grid for an M×N output.
    pub fn grid(&self, m: usize, n: usize) -> [u32; 3] {
        [n.div_ceil(self.tile_n as usize) as u32, m.div_ceil(self.tile_m as usize) as u32, 1]
    }

    /// Whether the kernel supports this shape: K and N multiples of 8 (16-byte rows for
    /// cp.async), every size positive and each operand's element count within `i32` indexing of
    /// rows (the kernel computes offsets in 64 bits, sizes are passed as `int`).
    pub fn check_shape(&self, m: usize, n: usize, k: usize) -> Result<(), String> {
        if m == 0 || n == 0 || k == 0 {
            return Err(format!("{}: empty shape M={m} N={n} K={k}", self.kernel));
        }
        if !k.is_multiple_of(8) || !n.is_multiple_of(8) {
            return Err(format!("{}: K ({k}) and N ({n}) must be multiples of 8", self.kernel));
        }
        if [m, n, k].iter().any(|&d| d > i32::MAX as usize) || m.div_ceil(self.tile_m as usize) > 65535 {
            return Err(format!("{}: M={m} N={n} K={k} is too large for one launch", self.kernel));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `#define NAME <integer>` in `source`, evaluating the kernel's simple
    /// products of earlier defines.
    fn define(source: &str, name: &str) -> u32 {
        let line = source
            .lines()
            .find_map(|l| l.strip_prefix("#define ").and_then(|r| r.strip_prefix(name)).filter(|r| r.starts_with(' ')))
            .unwrap_or_else(|| panic!("#define {name} not found"));
        let expr = line.split("//").next().unwrap().trim();
        expr.parse().unwrap_or_else(|_| panic!("#define {name} {expr} is not a number"))
    }

    #[test]
    fn geometry_matches_the_source() {
        let tile = crate::HEADERS.iter().find(|(n, _)| *n == "tc_tile.cuh").expect("tc_tile.cuh shipped").1;
        let d = |n| define(tile, n);
        for g in TC_KERNELS {
            let src = crate::find_source(g.kernel).expect("kernel compiled in");
            assert_eq!(src.name, g.file, "{}", g.kernel);
            let shared = ["#include \"tc_tile.cuh\"", "#include \"tc_conv.cuh\"", "#include \"tc_conv_fprop.cuh\""];
            assert!(shared.iter().any(|i| src.source.contains(i)), "{} uses the shared tile", g.file);
            assert_eq!(
                (g.tile_m, g.tile_n, g.tile_k, g.warp_m, g.warp_n, g.stages, g.threads),
                (
                    d("TC_BM"),
                    define(src.source, "TC_BN"),
                    d("TC_BK"),
                    d("TC_WM"),
                    g.tile_n / 2,
                    d("TC_STAGES"),
                    d("TC_THREADS")
                ),
                "{}",
                g.kernel
            );
            // TC_SMEM_BYTES(BN) = STAGES · (BM·BK + BK·BN) · sizeof(bf16)
            assert_eq!(g.smem_bytes, g.stages * (g.tile_m * g.tile_k + g.tile_k * g.tile_n) * 2);
            assert_eq!(g.threads, 32 * (g.tile_m / g.warp_m) * (g.tile_n / g.warp_n));
        }
    }

    #[test]
    fn shapes_and_counts() {
        let g = TC_GEMM_BF16;
        assert_eq!(g.mma_per_k_tile(), 64);
        assert_eq!(g.grid(200, 136), [2, 2, 1]);
        assert!(g.check_shape(1, 8, 8).is_ok());
        assert!(g.check_shape(5, 12, 8).is_err());
        assert!(g.check_shape(5, 8, 12).is_err());
        assert!(g.check_shape(0, 8, 8).is_err());
    }
}
