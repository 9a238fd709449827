//! `ResNetV2Config`: everything that decides a ResNetV2's tensors and numbers — block counts,
//! widths, head size, normalization, weight standardization — with the named BiT variants
//! (bit-spec §1.1), small configs for CPU work, validation and the analytic parameter count.

use bitgrad_ops::weight_std::{WS_EPS_BIT, WS_EPS_TIMM};

use crate::error::{Error, Result};
use crate::nn::{parse_norm, NormKind};

/// The six BiT variants timm registers, in bit-spec's order.
pub const BIT_NAMES: [&str; 6] = [
    "resnetv2_50x1_bit",
    "resnetv2_50x3_bit",
    "resnetv2_101x1_bit",
    "resnetv2_101x3_bit",
    "resnetv2_152x2_bit",
    "resnetv2_152x4_bit",
];

/// A small named config: name, layers, stem width, stage widths, GN groups.
type Small = (&'static str, [usize; 4], usize, [usize; 4], usize);

/// Small configs for CPU work (not BiT releases).
const SMALL: [Small; 2] = [
    ("resnetv2_tiny_bit", [1, 1, 1, 1], 16, [32, 64, 128, 256], 4),
    ("resnetv2_small_bit", [2, 2, 2, 2], 32, [64, 128, 256, 512], 8),
];

#[derive(Debug, Clone, PartialEq)]
pub struct ResNetV2Config {
    /// Units per stage (block1..block4).
    pub layers: [usize; 4],
    /// Output width of each stage (absolute: BiT's (256, 512, 1024, 2048)·wf).
    pub channels: [usize; 4],
    /// Stem conv output width (BiT: 64·wf).
    pub stem_chs: usize,
    /// Bottleneck width = `make_divisible(out · bottle_ratio)` (BiT: 0.25).
    pub bottle_ratio: f64,
    pub num_classes: usize,
    pub in_chans: usize,
    pub norm: NormKind,
    /// Weight standardization of every conv but the head.
    pub ws: bool,
    /// WS ε: 1e-8 matches timm/HF outputs, 1e-10 the original BiT code.
    pub ws_eps: f64,
}

/// timm's `make_divisible(v, 8)`: the nearest multiple of 8 (at least 8), bumped up by 8 when
/// rounding lost more than 10%.
pub fn make_divisible(v: f64) -> usize {
    const D: f64 = 8.0;
    let mut n = (((v + D / 2.0) / D).floor() * D).max(D);
    if n < 0.9 * v {
        n += D;
    }
    n as usize
}

impl ResNetV2Config {
    /// A BiT variant: depth 50, 101 or 152 and width factor `wf`, with timm's WS ε (1e-8).
    pub fn bit(depth: usize, wf: usize, num_classes: usize) -> Result<Self> {
        let layers = match depth {
            50 => [3, 4, 6, 3],
            101 => [3, 4, 23, 3],
            152 => [3, 8, 36, 3],
            _ => return Err(Error::Config(format!("no BiT ResNet of depth {depth} (50, 101 or 152)"))),
        };
        if wf == 0 {
            return Err(Error::Config("width factor must be ≥ 1".into()));
        }
        Ok(ResNetV2Config {
            layers,
            channels: [256 * wf, 512 * wf, 1024 * wf, 2048 * wf],
            stem_chs: 64 * wf,
            bottle_ratio: 0.25,
            num_classes,
            in_chans: 3,
            norm: NormKind::bit_group_norm(),
            ws: true,
            ws_eps: WS_EPS_TIMM,
        })
    }

    /// A config by name: one of [`BIT_NAMES`], or `resnetv2_tiny_bit` (layers [1,1,1,1], widths
    /// 16 / 32…256, GN with 4 groups) or `resnetv2_small_bit` ([2,2,2,2], 32 / 64…512, GN 8).
    pub fn named(name: &str, num_classes: usize) -> Result<Self> {
        if let Some(&(_, layers, stem_chs, channels, groups)) = SMALL.iter().find(|s| s.0 == name) {
            return Ok(ResNetV2Config {
                layers,
                channels,
                stem_chs,
                norm: NormKind::group(groups),
                ..ResNetV2Config::bit(50, 1, num_classes)?
            });
        }
        let spec = name.strip_prefix("resnetv2_").and_then(|s| s.strip_suffix("_bit")).and_then(|s| s.split_once('x'));
        match spec {
            Some((d, w)) if BIT_NAMES.contains(&name) => {
                ResNetV2Config::bit(d.parse().unwrap_or(0), w.parse().unwrap_or(0), num_classes)
            }
            _ => Err(Error::Config(format!(
                "unknown architecture {name:?}; known: {}, resnetv2_tiny_bit, resnetv2_small_bit",
                BIT_NAMES.join(", ")
            ))),
        }
    }

    /// The original BiT code's WS ε (1e-10) instead of timm's.
    pub fn with_bit_ws_eps(self) -> Self {
        ResNetV2Config { ws_eps: WS_EPS_BIT, ..self }
    }

    /// This architecture with the normalization (and WS on/off) of a [`parse_norm`] spec:
    /// `gn_ws`, `gn8`, `bn`, `ln_ws`, `in`, `ws`, `none`, …, checked against the widths.
    ///
    /// A bare `gn`/`gn_ws` means BiT's 32 groups where every normalized width allows it; on
    /// narrower models (the small configs have 8- and 16-wide layers) it takes the largest
    /// group count dividing 32 and every width, so one spec fits every architecture (the
    /// groups are recorded in the metadata). An explicit `gnK` is kept as given and errors when
    /// a width is not divisible by K.
    pub fn with_norm(self, spec: &str) -> Result<Self> {
        let (mut norm, ws) = parse_norm(spec)?;
        let bare_gn = matches!(spec.trim().to_ascii_lowercase().as_str(), "gn" | "gn_ws");
        if let (true, NormKind::Group { groups, .. }) = (bare_gn, &mut norm) {
            *groups = self.normalized_widths().fold(*groups, gcd);
        }
        let cfg = ResNetV2Config { norm, ws, ..self };
        cfg.validate().map_err(|e| match e {
            Error::Config(msg) => Error::Config(format!("normalization {spec:?}: {msg}")),
            e => e,
        })?;
        Ok(cfg)
    }

    /// Every width a norm layer normalizes: each stage's input, bottleneck and output width.
    fn normalized_widths(&self) -> impl Iterator<Item = usize> + '_ {
        (0..4).flat_map(move |i| [self.stage_in(i), self.mid_chs(i), self.channels[i]])
    }

    /// The name of the architecture when it is one of the named configs (any head size, any ε).
    pub fn name(&self) -> Option<&'static str> {
        let names = BIT_NAMES.iter().chain(SMALL.iter().map(|s| &s.0));
        names.copied().find(|n| {
            ResNetV2Config::named(n, self.num_classes)
                .map(|c| {
                    ResNetV2Config { ws_eps: self.ws_eps, norm: norm_without_eps(&c.norm, &self.norm), ..c } == *self
                })
                .unwrap_or(false)
        })
    }

    /// Bottleneck width of stage `i`.
    pub fn mid_chs(&self, i: usize) -> usize {
        make_divisible(self.channels[i] as f64 * self.bottle_ratio)
    }

    /// Input width of stage `i`.
    pub fn stage_in(&self, i: usize) -> usize {
        if i == 0 {
            self.stem_chs
        } else {
            self.channels[i - 1]
        }
    }

    /// Errors on a config that cannot be built: zero sizes, a bad ratio or ε, a width the norm
    /// cannot normalize.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.layers.contains(&0) || self.channels.contains(&0) || self.stem_chs == 0 {
            return bad(format!(
                "layers {:?}, widths {:?} and stem width {} must all be ≥ 1",
                self.layers, self.channels, self.stem_chs
            ));
        }
        if self.num_classes == 0 || self.in_chans == 0 {
            return bad("num_classes and in_chans must be ≥ 1".into());
        }
        if !(self.bottle_ratio > 0.0 && self.bottle_ratio.is_finite()) {
            return bad(format!("bottle_ratio must be > 0, got {}", self.bottle_ratio));
        }
        if !(self.ws_eps >= 0.0 && self.ws_eps.is_finite()) {
            return bad(format!("ws_eps must be finite and ≥ 0, got {}", self.ws_eps));
        }
        for w in self.normalized_widths() {
            self.norm.check(w)?;
        }
        Ok(())
    }

    /// Trainable scalars, from the config alone (nothing is allocated).
    pub fn param_count(&self) -> usize {
        let norm = |c| self.norm.param_count(c);
        let mut n = self.in_chans * self.stem_chs * 49;
        for i in 0..4 {
            let (cout, mid) = (self.channels[i], self.mid_chs(i));
            for j in 0..self.layers[i] {
                let cin = if j == 0 { self.stage_in(i) } else { cout };
                if j == 0 {
                    n += cin * cout;
                }
                n += norm(cin) + cin * mid + norm(mid) + mid * mid * 9 + norm(mid) + mid * cout;
            }
        }
        let feat = self.channels[3];
        n + norm(feat) + self.num_classes * feat + self.num_classes
    }

    /// The WS ε the convs use, `None` when WS is off.
    pub fn ws_eps_opt(&self) -> Option<f64> {
        self.ws.then_some(self.ws_eps)
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// `named`'s norm with `actual`'s ε, so that [`ResNetV2Config::name`] ignores GN ε.
fn norm_without_eps(named: &NormKind, actual: &NormKind) -> NormKind {
    match (named, actual) {
        (NormKind::Group { groups, .. }, NormKind::Group { eps, .. }) => NormKind::Group { groups: *groups, eps: *eps },
        _ => named.clone(),
    }
}
