//! The layers of a training step, read from the real model: the architecture is built with
//! [`ResNetV2::skeleton`] (every module and parameter shape, no memory) and walked in forward
//! order, each convolution's geometry taken from its weight and `Conv2dParams`, the spatial sizes
//! propagated through the same formulas the ops use. So every BiT variant, and any config the
//! models crate can build, is planned from its definition, not from a table.

use bitgrad::models::bit::Stem;
use bitgrad::models::nn::StdConv2d;
use bitgrad::models::{Module, NormKind, ResNetV2, ResNetV2Config};

/// One convolution at one batch and input size (NCHW names; the GPU path is NHWC).
#[derive(Clone, Debug, PartialEq)]
pub struct Conv {
    /// timm's module name, e.g. `stages.1.blocks.0.conv2`.
    pub name: String,
    pub n: usize,
    /// Input channels, height, width.
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// Output channels (the GEMM literature's K).
    pub k: usize,
    /// Filter height and width.
    pub r: usize,
    pub s: usize,
    pub stride: [usize; 2],
    /// Padding before (top, left); the output size also uses the after-padding.
    pub pad: [usize; 2],
    /// Output height and width.
    pub p: usize,
    pub q: usize,
    /// Whether backward needs the input gradient (false for the stem: the image needs none).
    pub dgrad: bool,
}

/// A normalization (+ ReLU) layer: channels and the map it normalizes.
#[derive(Clone, Debug, PartialEq)]
pub struct Norm {
    pub name: String,
    pub c: usize,
    /// Height × width.
    pub hw: usize,
    /// Batch × channels × height × width.
    pub elems: usize,
}

impl Norm {
    fn new(name: String, n: usize, c: usize, h: usize, w: usize) -> Norm {
        Norm { name, c, hw: h * w, elems: n * c * h * w }
    }
}

/// Everything of a step the plan needs.
#[derive(Debug)]
pub struct Net {
    pub batch: usize,
    pub convs: Vec<Conv>,
    pub norms: Vec<Norm>,
    /// The norm's name ("group_norm", "batch_norm", …) for labels.
    pub norm_kind: String,
    /// Elements of each unit's residual sum (forward), and of each unit's input (where backward
    /// sums the gradients of the shortcut and the residual branch).
    pub residual_out: Vec<usize>,
    pub residual_in: Vec<usize>,
    /// Stem: elements of the conv output and of the pooled map.
    pub stem_pool: (usize, usize),
    /// Elements of the final feature map and the pooled features.
    pub gap: (usize, usize),
    /// Head: features and classes.
    pub head: (usize, usize),
    /// Trainable scalars, and those of the standardized conv weights.
    pub params: usize,
    pub ws_params: usize,
    /// Every trainable tensor's shape (what SGD updates).
    pub param_shapes: Vec<Vec<usize>>,
    /// GroupNorm's groups, when the norm is GroupNorm.
    pub gn_groups: Option<usize>,
}

/// Output size of a convolution along one axis, or `None` when the kernel is larger than the
/// padded input (the formula of `bitgrad::ops::conv2d`).
fn out_len(n: usize, before: usize, after: usize, k: usize, dil: usize, stride: usize) -> Option<usize> {
    (n + before + after).checked_sub(dil * (k - 1) + 1).map(|d| d / stride + 1)
}

fn conv(name: &str, m: &StdConv2d, n: usize, h: usize, w: usize, dgrad: bool) -> Result<Conv, String> {
    let d = m.weight.dims();
    let [k, c, r, s] = [d[0], d[1], d[2], d[3]];
    let p = &m.params;
    if p.groups != 1 {
        return Err(format!("{name}: grouped convolutions are not planned (groups {})", p.groups));
    }
    if p.dilation != [1, 1] {
        return Err(format!("{name}: dilated convolutions are not planned"));
    }
    let [pt, pb, pl, pr] = p.padding.sides();
    let too_small = || format!("{name}: a {r}×{s} kernel does not fit its {h}×{w} input; use a larger --size");
    let oh = out_len(h, pt, pb, r, p.dilation[0], p.stride[0]).ok_or_else(too_small)?;
    let ow = out_len(w, pl, pr, s, p.dilation[1], p.stride[1]).ok_or_else(too_small)?;
    Ok(Conv { name: name.into(), n, c, h, w, k, r, s, stride: p.stride, pad: [pt, pl], p: oh, q: ow, dgrad })
}

/// The layers of `model` (any ResNetV2 config) for a batch of `n` square `size`-px images.
pub fn walk(config: &ResNetV2Config, n: usize, size: usize) -> Result<Net, String> {
    let model = ResNetV2::skeleton(config).map_err(|e| e.to_string())?;
    let mut convs = Vec::new();
    let mut norms = Vec::new();
    let (mut residual_out, mut residual_in) = (Vec::new(), Vec::new());

    let stem = conv("stem.conv", &model.stem.conv, n, size, size, false)?;
    let (mut h, mut w) = Stem::pool_output_hw(stem.p, stem.q)
        .ok_or_else(|| format!("{size} px is too small for the stem's max-pool; use a larger --size"))?;
    let stem_pool = (n * stem.k * stem.p * stem.q, n * stem.k * h * w);
    let mut ch = stem.k;
    convs.push(stem);

    for (i, stage) in model.stages.iter().enumerate() {
        for (j, unit) in stage.iter().enumerate() {
            let name = |m: &str| format!("stages.{i}.blocks.{j}.{m}");
            // Forward order of `PreActBottleneck::forward`: norm1, projection, conv1, norm2,
            // conv2 (the stride), norm3, conv3, residual sum.
            norms.push(Norm::new(name("norm1"), n, ch, h, w));
            residual_in.push(n * ch * h * w);
            if let Some(d) = &unit.downsample {
                convs.push(conv(&name("downsample.conv"), d, n, h, w, true)?);
            }
            let c1 = conv(&name("conv1"), &unit.conv1, n, h, w, true)?;
            norms.push(Norm::new(name("norm2"), n, c1.k, c1.p, c1.q));
            let c2 = conv(&name("conv2"), &unit.conv2, n, c1.p, c1.q, true)?;
            norms.push(Norm::new(name("norm3"), n, c2.k, c2.p, c2.q));
            let c3 = conv(&name("conv3"), &unit.conv3, n, c2.p, c2.q, true)?;
            (ch, h, w) = (c3.k, c3.p, c3.q);
            residual_out.push(n * ch * h * w);
            convs.extend([c1, c2, c3]);
        }
    }
    norms.push(Norm::new("norm".into(), n, ch, h, w));
    let classes = model.head.bias.numel();

    // Every 4-d weight but the head's (a 1×1 "conv" without WS) is standardized when WS is on.
    let mut ws_params = 0;
    model.visit("", &mut |name, t, _| {
        if config.ws && t.rank() == 4 && !name.starts_with("head.") {
            ws_params += t.numel();
        }
    });
    let param_shapes = model.parameters().iter().map(|t| t.dims().to_vec()).collect();
    let gn_groups = match config.norm {
        NormKind::Group { groups, .. } => Some(groups),
        _ => None,
    };
    Ok(Net {
        param_shapes,
        gn_groups,
        batch: n,
        convs,
        norms,
        norm_kind: config.norm.name(),
        residual_out,
        residual_in,
        stem_pool,
        gap: (n * ch * h * w, n * ch),
        head: (ch, classes),
        params: model.num_parameters(),
        ws_params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r50(n: usize, size: usize) -> Net {
        walk(&ResNetV2Config::named("resnetv2_50x1_bit", 1000).unwrap(), n, size).unwrap()
    }

    #[test]
    fn r50x1_at_224() {
        let net = r50(64, 224);
        // 1 stem + 16 units × 3 + 4 projections.
        assert_eq!(net.convs.len(), 53);
        let stem = &net.convs[0];
        assert_eq!((stem.c, stem.h, stem.k, stem.r, stem.p, stem.dgrad), (3, 224, 64, 7, 112, false));
        assert_eq!(net.stem_pool, (64 * 64 * 112 * 112, 64 * 64 * 56 * 56));
        let c2 = net.convs.iter().find(|c| c.name == "stages.2.blocks.0.conv2").unwrap();
        assert_eq!((c2.c, c2.h, c2.k, c2.r, c2.stride, c2.pad, c2.p), (256, 28, 256, 3, [2, 2], [1, 1], 14));
        let ds = net.convs.iter().find(|c| c.name == "stages.3.blocks.0.downsample.conv").unwrap();
        assert_eq!((ds.c, ds.h, ds.k, ds.r, ds.p), (1024, 14, 2048, 1, 7));
        // 3 norms per unit + the final one; the last at 7×7×2048.
        assert_eq!(net.norms.len(), 49);
        assert_eq!(net.norms[48].elems, 64 * 2048 * 7 * 7);
        assert_eq!(
            (net.norms[1].name.as_str(), net.norms[1].c, net.norms[1].hw),
            ("stages.0.blocks.0.norm2", 64, 56 * 56)
        );
        assert_eq!(net.gn_groups, Some(32));
        assert_eq!(net.param_shapes.iter().map(|s| s.iter().product::<usize>()).sum::<usize>(), net.params);
        assert_eq!(net.gap, (64 * 2048 * 49, 64 * 2048));
        assert_eq!(net.head, (2048, 1000));
        assert_eq!(net.params, 25_549_352);
        // Every conv weight is standardized; the norms' γ, β and the head are not.
        let convs: usize = net.convs.iter().map(|c| c.k * c.c * c.r * c.s).sum();
        assert_eq!(net.ws_params, convs);
        assert_eq!(net.norm_kind, "group_norm");
    }

    #[test]
    fn every_bit_variant_and_odd_sizes() {
        for name in bitgrad::models::bit::BIT_NAMES {
            let cfg = ResNetV2Config::named(name, 10).unwrap();
            let net = walk(&cfg, 2, 97).unwrap();
            let units: usize = cfg.layers.iter().sum();
            assert_eq!(net.convs.len(), 1 + 3 * units + 4, "{name}");
            assert_eq!(net.params, cfg.param_count(), "{name}");
        }
        // 97 px: stem 49, pool 25, stages 25, 13, 7, 4.
        let net = r50(1, 97);
        assert_eq!(net.convs.last().unwrap().p, 4);
        // 1 px still has a (1×1) map everywhere.
        assert_eq!(r50(1, 1).gap.0, 2048);
    }
}
