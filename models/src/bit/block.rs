//! The two building blocks of ResNetV2: the BiT stem and the pre-activation bottleneck unit.

use bitgrad_engine::Tensor;
use bitgrad_ops::fusion::{self, Fusion};
use bitgrad_ops::pad::pad2d;
use bitgrad_ops::pool::max_pool2d;

use super::config::ResNetV2Config;
use crate::error::Result;
use crate::nn::{join, Init, Module, NormLayer, ParamKind, StdConv2d};

/// BiT's "root block" (timm `stem_type='fixed'`, bit-spec §1.3): WS conv 7×7/2 with padding 3,
/// a constant **zero** pad of 1, then a VALID 3×3/2 max-pool. Not `max_pool(3, 2, padding=1)`:
/// that pads with −∞, and the un-activated conv output can be negative. No norm, no ReLU.
pub struct Stem {
    pub conv: StdConv2d,
}

/// The stem's zero pad (each side) and its VALID max-pool (window, stride) after the conv.
pub const STEM_POOL_PAD: usize = 1;
pub const STEM_POOL: (usize, usize) = (3, 2);

impl Stem {
    pub fn new(init: &mut Init, cfg: &ResNetV2Config) -> Result<Self> {
        Ok(Stem { conv: StdConv2d::new(init, "stem.conv", cfg.in_chans, cfg.stem_chs, 7, 2, cfg.ws_eps_opt())? })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let p = STEM_POOL_PAD;
        let (k, s) = STEM_POOL;
        let y = pad2d(&self.conv.forward(x)?, [p, p, p, p], 0.0)?;
        Ok(max_pool2d(&y, [k, k], [s, s], [0, 0])?)
    }

    /// The spatial size of the stem's output (after the pad and max-pool) for an `h×w` conv
    /// output, or `None` when the padded map is smaller than the pooling window.
    pub fn pool_output_hw(h: usize, w: usize) -> Option<(usize, usize)> {
        let (k, s) = STEM_POOL;
        let out = |n: usize| (n + 2 * STEM_POOL_PAD).checked_sub(k).map(|d| d / s + 1);
        Some((out(h)?, out(w)?))
    }
}

impl Module for Stem {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, ParamKind)) {
        self.conv.visit(&join(prefix, "conv"), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, ParamKind)) {
        self.conv.visit_mut(&join(prefix, "conv"), f);
    }
    fn set_training(&mut self, _training: bool) {}
}

/// A pre-activation bottleneck unit (bit-spec §1.4, timm `PreActBottleneck`):
///
/// ```text
/// p   = relu(norm1(x))
/// s   = downsample(p)  (1×1/stride projection, first unit of a stage)  or  x
/// out = conv3(relu(norm3(conv2(relu(norm2(conv1(p))))))) + s      (stride on the 3×3 conv2)
/// ```
///
/// The projection takes the pre-activated `p`; the identity shortcut the raw `x`. No activation
/// after the sum.
pub struct PreActBottleneck {
    pub downsample: Option<StdConv2d>,
    pub norm1: Box<dyn NormLayer>,
    pub conv1: StdConv2d,
    pub norm2: Box<dyn NormLayer>,
    pub conv2: StdConv2d,
    pub norm3: Box<dyn NormLayer>,
    pub conv3: StdConv2d,
}

impl PreActBottleneck {
    /// Unit `prefix` (`stages.{i}.blocks.{j}`): `cin → cout` through `mid`, `stride` on the
    /// 3×3; `project` adds the `downsample.conv` projection (timm: the first unit of a stage).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        init: &mut Init,
        prefix: &str,
        cfg: &ResNetV2Config,
        cin: usize,
        mid: usize,
        cout: usize,
        stride: usize,
        project: bool,
    ) -> Result<Self> {
        let ws = cfg.ws_eps_opt();
        let p = |n: &str| join(prefix, n);
        // Built in state-dict order, so a random init draws the same streams as the names run.
        let downsample =
            if project { Some(StdConv2d::new(init, &p("downsample.conv"), cin, cout, 1, stride, ws)?) } else { None };
        Ok(PreActBottleneck {
            downsample,
            norm1: cfg.norm.build(init, &p("norm1"), cin)?,
            conv1: StdConv2d::new(init, &p("conv1"), cin, mid, 1, 1, ws)?,
            norm2: cfg.norm.build(init, &p("norm2"), mid)?,
            conv2: StdConv2d::new(init, &p("conv2"), mid, mid, 3, stride, ws)?,
            norm3: cfg.norm.build(init, &p("norm3"), mid)?,
            conv3: StdConv2d::new(init, &p("conv3"), mid, cout, 1, 1, ws)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let p = self.norm1.forward(x)?;
        let shortcut = match &self.downsample {
            Some(d) => d.forward(&p)?,
            None => x.clone(),
        };
        let h = self.conv1.forward(&p)?;
        // norm2 applied as conv2 reads its input (bitgrad_ops::fusion), or on its own.
        let h = match self.norm2.as_group_norm().filter(|_| fusion::enabled(Fusion::GnConv)) {
            Some(gn) => self.conv2.forward_after(&h, gn)?,
            None => self.conv2.forward(&self.norm2.forward(&h)?)?,
        };
        let h = self.norm3.forward(&h)?;
        // The shortcut as conv3's initial accumulator (bitgrad_ops::fusion), or a separate add.
        if fusion::enabled(Fusion::Residual) {
            self.conv3.forward_add(&h, &shortcut)
        } else {
            Ok(self.conv3.forward(&h)?.add(&shortcut)?)
        }
    }
}

impl Module for PreActBottleneck {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, ParamKind)) {
        let p = |n: &str| join(prefix, n);
        if let Some(d) = &self.downsample {
            d.visit(&p("downsample.conv"), f);
        }
        self.norm1.visit(&p("norm1"), f);
        self.conv1.visit(&p("conv1"), f);
        self.norm2.visit(&p("norm2"), f);
        self.conv2.visit(&p("conv2"), f);
        self.norm3.visit(&p("norm3"), f);
        self.conv3.visit(&p("conv3"), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, ParamKind)) {
        let p = |n: &str| join(prefix, n);
        if let Some(d) = &mut self.downsample {
            d.visit_mut(&p("downsample.conv"), f);
        }
        self.norm1.visit_mut(&p("norm1"), f);
        self.conv1.visit_mut(&p("conv1"), f);
        self.norm2.visit_mut(&p("norm2"), f);
        self.conv2.visit_mut(&p("conv2"), f);
        self.norm3.visit_mut(&p("norm3"), f);
        self.conv3.visit_mut(&p("conv3"), f);
    }
    fn set_training(&mut self, training: bool) {
        for n in [&mut self.norm1, &mut self.norm2, &mut self.norm3] {
            n.set_training(training);
        }
    }
}
