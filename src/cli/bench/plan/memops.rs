//! The memory-bound ops of a training step and the bytes each must move through HBM at least,
//! for the layout the tensor-core path plans: bf16 activations and gradients (2 B), f32 master
//! weights, gradients and momentum (4 B). Their time is bytes ÷ the HBM bandwidth: a floor.
//!
//! | op | bytes per element (E: activation elements, W: weights) |
//! | --- | --- |
//! | norm + ReLU fwd | 6·E: statistics pass reads x; second pass reads x, writes y |
//! | norm + ReLU bwd | 10·E: reduction pass reads x, dy; second pass reads x, dy, writes dx (ReLU mask recomputed) |
//! | WS fwd | 10·W: reads w (f32) for the statistics and again to write ŵ (bf16) |
//! | WS bwd | 20·W: reads w and dŵ (f32) for the reductions, again for dw, writes dw (f32) |
//! | SGD, momentum | 20·P: reads w, g, m, writes w, m (f32), every trainable P |
//! | residual read by conv3 | 2·E: the shortcut read once as the fprop's initial accumulator (the fused residual, `std_conv2d_add`; a separate sum would be 6·E) |
//! | gradient sum bwd | 6·E at each unit's input (shortcut + residual branch) |
//! | stem pad + max-pool | fwd 2·(E_in + E_out); bwd 2·(2·E_in + E_out) (reads x to find the max) |
//! | global average pool | fwd 2·(E + N·C); bwd the same |
//! | strided-dgrad zero fill | 2·E of the phases no filter tap reaches |
//! | softmax cross-entropy | 16·N·classes (f32 logits read, gradient written, fwd + bwd) |
//!
//! Two-pass norms (statistics, then normalization) are the honest floor for GN on maps larger
//! than L2 (R50x1's stage-1 activations at batch 64 are 103 MB; H100's L2 is 50 MB).

use super::net::Net;

/// One kind of memory-bound op: how many instances in a step and their bytes in total.
#[derive(Clone, Debug, PartialEq)]
pub struct MemOp {
    pub name: String,
    pub count: usize,
    pub bytes: f64,
}

/// The memory-bound ops of one training step of `net`; `zero_fill` is the strided dgrads' zero
/// elements (from the GEMM plan).
pub fn ops(net: &Net, zero_fill: usize) -> Vec<MemOp> {
    let sum = |v: &[usize]| v.iter().sum::<usize>() as f64;
    let norm_elems: f64 = net.norms.iter().map(|n| n.elems as f64).sum();
    let nk = &net.norm_kind;
    let (stem_in, stem_out) = (net.stem_pool.0 as f64, net.stem_pool.1 as f64);
    let (gap_in, gap_out) = (net.gap.0 as f64, net.gap.1 as f64);
    let mut v = vec![
        MemOp { name: format!("{nk} + ReLU fwd"), count: net.norms.len(), bytes: 6.0 * norm_elems },
        MemOp { name: format!("{nk} + ReLU bwd"), count: net.norms.len(), bytes: 10.0 * norm_elems },
    ];
    if net.ws_params > 0 {
        let w = net.ws_params as f64;
        v.push(MemOp { name: "weight_std fwd".into(), count: net.convs.len(), bytes: 10.0 * w });
        v.push(MemOp { name: "weight_std bwd".into(), count: net.convs.len(), bytes: 20.0 * w });
    }
    v.extend([
        MemOp { name: "SGD (momentum)".into(), count: 1, bytes: 20.0 * net.params as f64 },
        MemOp {
            name: "residual read by conv3".into(),
            count: net.residual_out.len(),
            bytes: 2.0 * sum(&net.residual_out),
        },
        MemOp { name: "gradient sum bwd".into(), count: net.residual_in.len(), bytes: 6.0 * sum(&net.residual_in) },
        MemOp { name: "stem pad + max-pool fwd".into(), count: 1, bytes: 2.0 * (stem_in + stem_out) },
        MemOp { name: "stem pad + max-pool bwd".into(), count: 1, bytes: 2.0 * (2.0 * stem_in + stem_out) },
        MemOp { name: "global avg pool fwd + bwd".into(), count: 2, bytes: 4.0 * (gap_in + gap_out) },
        MemOp { name: "softmax xent fwd + bwd".into(), count: 2, bytes: 16.0 * (net.batch * net.head.1) as f64 },
    ]);
    if zero_fill > 0 {
        v.push(MemOp { name: "strided dgrad zero fill".into(), count: 1, bytes: 2.0 * zero_fill as f64 });
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::bench::plan::net::walk;
    use bitgrad::models::ResNetV2Config;

    #[test]
    fn bytes_of_r50x1_at_batch_64() {
        let cfg = ResNetV2Config::named("resnetv2_50x1_bit", 1000).unwrap();
        let net = walk(&cfg, 64, 224).unwrap();
        let ops = ops(&net, 0);
        let get = |n: &str| ops.iter().find(|o| o.name == n).unwrap_or_else(|| panic!("{n} missing"));
        // SGD: 25,549,352 parameters × 20 B.
        assert_eq!(get("SGD (momentum)").bytes, 20.0 * 25_549_352.0);
        // Stem: 64·64·112² in, 64·64·56² out.
        let (i, o) = (64.0 * 64.0 * 112.0 * 112.0, 64.0 * 64.0 * 56.0 * 56.0);
        assert_eq!(get("stem pad + max-pool fwd").bytes, 2.0 * (i + o));
        let gn = get("group_norm + ReLU fwd");
        assert_eq!(gn.count, 49);
        // The first norm1 sees the pooled stem output.
        assert_eq!(net.norms[0].elems as f64, o);
        assert_eq!(get("group_norm + ReLU bwd").bytes / gn.bytes, 10.0 / 6.0);
        assert_eq!(get("weight_std fwd").count, 53);
        // The fused residual: each unit's shortcut read once (2 B per bf16 element), 16 units.
        let res = get("residual read by conv3");
        assert_eq!((res.count, res.bytes), (16, 2.0 * net.residual_out.iter().sum::<usize>() as f64));
        assert!(ops.iter().all(|o| o.name != "strided dgrad zero fill"));
        assert_eq!(super::ops(&net, 10).last().unwrap().bytes, 20.0);
    }
}
