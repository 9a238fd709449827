//! Host side of the bf16 training path's non-GEMM kernels: group norm on channels-last bf16
//! activations (`kernels/cuda/gn_nhwc.cu`) and the bf16 weight standardization
//! (`kernels/cuda/ws_bf16.cu`): the checks a shape must pass and each launch (kernel, grid,
//! block, dynamic shared memory). The runtimes allocate and pass the pointers; nothing here
//! touches a device. The block sizes are fixed constants because the kernels' summation order
//! (and so their bits) depends on them: the CPU twins in the emulator tests take them from here.

use crate::tc_conv::Launch;

/// Threads per block of every group-norm kernel of `gn_nhwc.cu`.
pub const GN_THREADS: u32 = 256;
/// Threads per block of `ws_forward_f32_bf16` and of the `ws_backward_f32` it pairs with.
pub const WS_THREADS: u32 = 256;
/// Dynamic shared memory the kernels may ask for without an opt-in (48 KiB).
const SMEM_LIMIT: usize = 48 * 1024;
/// Grid x limit.
const MAX_GRID_X: usize = i32::MAX as usize;

/// A checked group-norm problem: x `[n][hw][c]` bf16 with `groups` groups of `c / groups`
/// contiguous channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GnShape {
    pub n: usize,
    pub hw: usize,
    pub c: usize,
    pub groups: usize,
}

impl GnShape {
    /// Checks `[n, h·w, c]` with `groups` groups: every size positive, C a multiple of G, a
    /// group's m = hw·(C/G) elements below 2³² (the kernels' 32-bit in-group division), the
    /// backward's shared memory (20 bytes per channel of a group) within 48 KiB, and N·G blocks.
    pub fn new(n: usize, hw: usize, c: usize, groups: usize) -> Result<Self, String> {
        let what = format!("group norm (NHWC bf16) x[{n}, {hw}, {c}] in {groups} groups");
        if [n, hw, c, groups].contains(&0) {
            return Err(format!("{what}: sizes and the group count must be positive"));
        }
        if !c.is_multiple_of(groups) {
            return Err(format!("{what}: C ({c}) is not a multiple of the group count"));
        }
        let cg = c / groups;
        if hw.checked_mul(cg).is_none_or(|m| m > u32::MAX as usize) {
            return Err(format!("{what}: a group holds more than 2^32 - 1 elements"));
        }
        if 20 * cg > SMEM_LIMIT {
            return Err(format!(
                "{what}: {cg} channels per group exceed the kernels' shared memory (at most {})",
                SMEM_LIMIT / 20
            ));
        }
        if c > i32::MAX as usize || n.checked_mul(groups).is_none_or(|b| b > MAX_GRID_X) {
            return Err(format!("{what}: too large for one launch"));
        }
        Ok(GnShape { n, hw, c, groups })
    }

    /// Channels per group.
    pub fn cg(&self) -> usize {
        self.c / self.groups
    }

    /// Elements of x (and y, dy, dx).
    pub fn len(&self) -> usize {
        self.n * self.hw * self.c
    }

    /// Whether the tensor is empty (never, for a checked shape).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn per_group(&self, kernel: &'static str, smem_per_channel: usize) -> Launch {
        Launch {
            kernel,
            grid: [(self.n * self.groups) as u32, 1, 1],
            block: [GN_THREADS, 1, 1],
            smem_bytes: (smem_per_channel * self.cg()) as u32,
        }
    }

    /// `gnh_forward_bf16`: arguments (hw i64, c i32, groups i32, eps f64, relu i32, x, gamma or
    /// null, beta or null, y, mean, rstd); mean/rstd f32 `[n][groups]`.
    pub fn forward(&self) -> Launch {
        self.per_group("gnh_forward_bf16", 8)
    }

    /// `gnh_backward_bf16`: arguments (hw i64, c i32, groups i32, relu i32, x, dy, y or null,
    /// gamma or null, mean, rstd, dx, part_g, part_gx); the partials f64 `[n][c]`
    /// ([`GnShape::partials`] elements each).
    pub fn backward(&self) -> Launch {
        self.per_group("gnh_backward_bf16", 20)
    }

    /// Elements of each f64 partials buffer of the backward.
    pub fn partials(&self) -> usize {
        self.n * self.c
    }

    /// `gnh_param_grads_f32`: arguments (n i64, c i64, part_g, part_gx, dgamma, dbeta).
    pub fn param_grads(&self) -> Launch {
        Launch {
            kernel: "gnh_param_grads_f32",
            grid: [self.c.div_ceil(GN_THREADS as usize).min(1024) as u32, 1, 1],
            block: [GN_THREADS, 1, 1],
            smem_bytes: 0,
        }
    }
}

/// The weight standardization of `k` output channels of `per_row` = R·S·C weights each (the
/// KRSC master weight): `ws_forward_f32_bf16` with arguments (per_row i64, eps f64, w f32, ŵ
/// bf16, mean f32 [k], rstd f32 [k]); the backward is `ws_backward_f32` on the same grid with
/// arguments (per_row i64, dŵ f32, w f32, mean, rstd, dw f32).
pub fn ws_launch(k: usize, per_row: usize, backward: bool) -> Result<Launch, String> {
    if k == 0 || per_row == 0 {
        return Err(format!("weight standardization of [{k}, {per_row}]: sizes must be positive"));
    }
    if k > MAX_GRID_X || k.checked_mul(per_row).is_none_or(|l| l > isize::MAX as usize / 4) {
        return Err(format!("weight standardization of [{k}, {per_row}]: too large for one launch"));
    }
    let kernel = if backward { "ws_backward_f32" } else { "ws_forward_f32_bf16" };
    Ok(Launch { kernel, grid: [k as u32, 1, 1], block: [WS_THREADS, 1, 1], smem_bytes: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_checked() {
        let s = GnShape::new(3, 7 * 5, 40, 8).unwrap();
        assert_eq!((s.cg(), s.len(), s.partials()), (5, 3 * 35 * 40, 120));
        let f = s.forward();
        assert_eq!((f.kernel, f.grid, f.block, f.smem_bytes), ("gnh_forward_bf16", [24, 1, 1], [256, 1, 1], 40));
        assert_eq!(s.backward().smem_bytes, 100);
        assert_eq!(s.param_grads().grid, [1, 1, 1]);
        assert!(GnShape::new(3, 35, 40, 6).unwrap_err().contains("multiple"));
        assert!(GnShape::new(0, 35, 40, 8).is_err());
        assert!(GnShape::new(1, 1, 4096, 1).unwrap_err().contains("shared memory"));
        assert!(GnShape::new(1, 1 << 22, 2048, 1).is_err());
        assert_eq!(ws_launch(24, 27, false).unwrap().kernel, "ws_forward_f32_bf16");
        assert_eq!(ws_launch(24, 27, true).unwrap().grid, [24, 1, 1]);
        assert!(ws_launch(0, 27, false).is_err());
    }
}
