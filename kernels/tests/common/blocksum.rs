//! The CPU mirror of the kernels' f64 reductions (`bg_warp_sum`, `bg_block_sum` in
//! `kernels/cuda/common.cuh`): per-thread strided sums, then the butterfly trees, in the same
//! order, so a twin built from them equals the emulator (and a GPU) bit for bit.

/// `bg_warp_sum` of 32 lane values: lane l adds lane l ^ o for o = 16, 8, 4, 2, 1 (every lane
/// ends with the same bits, IEEE addition being commutative).
pub fn warp_sum(lanes: &[f64]) -> f64 {
    assert_eq!(lanes.len(), 32);
    let mut v: Vec<f64> = lanes.to_vec();
    for o in [16, 8, 4, 2, 1] {
        let old = v.clone();
        for (l, x) in v.iter_mut().enumerate() {
            *x = old[l] + old[l ^ o];
        }
    }
    v[0]
}

/// `bg_block_sum` of one value per thread (a multiple of 32 threads): each warp's tree, then
/// the tree of the warp sums, zero-padded to 32 lanes.
pub fn block_sum(threads: &[f64]) -> f64 {
    assert!(threads.len().is_multiple_of(32) && threads.len() <= 1024);
    let mut partial = vec![0.0; 32];
    for (w, lanes) in threads.chunks_exact(32).enumerate() {
        partial[w] = warp_sum(lanes);
    }
    warp_sum(&partial)
}

/// The per-thread sums of `f(j)` over j = t, t + threads, … < n (from +0, in order), then
/// [`block_sum`]: the kernels' `for (j = threadIdx.x; j < n; j += blockDim.x) s += f(j)` loop.
pub fn strided_block_sum(n: usize, threads: usize, f: impl Fn(usize) -> f64) -> f64 {
    let per: Vec<f64> = (0..threads).map(|t| (t..n).step_by(threads).fold(0.0, |s, j| s + f(j))).collect();
    block_sum(&per)
}
