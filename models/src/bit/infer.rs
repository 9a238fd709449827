//! The architecture of a state dict, from its names and shapes alone: block counts from the
//! `stages.{i}.blocks.{j}` names, widths from the conv shapes, classes from the head. What shapes
//! cannot tell (GN groups, ε, WS on/off) comes from the `bitgrad.*` metadata when present, else
//! BiT/timm's values (32 groups, ε 1e-5, WS with ε 1e-8).

use bitgrad_ops::group_norm::{BIT_GROUPS, GN_EPS};
use bitgrad_ops::weight_std::WS_EPS_TIMM;

use super::config::{make_divisible, ResNetV2Config};
use super::metadata::{field, norm_from, PREFIX};
use crate::error::{Error, Result};
use crate::io::StateDict;
use crate::nn::NormKind;

fn dims<'a>(sd: &'a StateDict, name: &str, rank: usize) -> Result<&'a [usize]> {
    let t = sd.get(name).ok_or_else(|| Error::Config(format!("not a ResNetV2 state dict: no tensor {name:?}")))?;
    if t.rank() != rank {
        return Err(Error::Config(format!("{name} has shape {:?}, expected rank {rank}", t.dims())));
    }
    Ok(t.dims())
}

impl ResNetV2Config {
    /// The config that has exactly `sd`'s tensors (see the module docs for the defaults).
    /// A full config in the metadata must agree with the shapes.
    pub fn infer(sd: &StateDict) -> Result<Self> {
        let stem = dims(sd, "stem.conv.weight", 4)?;
        if stem[2] != 7 || stem[3] != 7 {
            return Err(Error::Config(format!("stem.conv.weight is {stem:?}, expected a 7×7 kernel")));
        }
        let (stem_chs, in_chans) = (stem[0], stem[1]);
        let (mut layers, mut channels, mut mids) = ([0; 4], [0; 4], [0; 4]);
        for i in 0..4 {
            while sd.contains(&format!("stages.{i}.blocks.{}.conv1.weight", layers[i])) {
                layers[i] += 1;
            }
            if layers[i] == 0 {
                return Err(Error::Config(format!("not a 4-stage ResNetV2: no stages.{i}.blocks.0.conv1.weight")));
            }
            mids[i] = dims(sd, &format!("stages.{i}.blocks.0.conv1.weight"), 4)?[0];
            channels[i] = dims(sd, &format!("stages.{i}.blocks.0.conv3.weight"), 4)?[0];
        }
        let bottle_ratio = mids[0] as f64 / channels[0] as f64;
        for i in 0..4 {
            if make_divisible(channels[i] as f64 * bottle_ratio) != mids[i] {
                return Err(Error::Config(format!(
                    "bottleneck widths {mids:?} for stage widths {channels:?} follow no single bottle ratio"
                )));
            }
        }
        let head = dims(sd, "head.fc.weight", 4)?;
        let meta = sd.metadata();
        let ws: bool = if meta.contains_key(&format!("{PREFIX}ws")) { field(meta, "ws")? } else { true };
        let ws_eps: f64 =
            if meta.contains_key(&format!("{PREFIX}ws_eps")) { field(meta, "ws_eps")? } else { WS_EPS_TIMM };
        let mut cfg = ResNetV2Config {
            layers,
            channels,
            stem_chs,
            bottle_ratio,
            num_classes: head[0],
            in_chans,
            norm: infer_norm(sd, &channels, stem_chs)?,
            ws,
            ws_eps,
        };
        cfg.validate()?;
        if let Some(stored) = ResNetV2Config::from_metadata(meta)? {
            // The stored ratio wins when it gives the same widths (0.3 and 0.3125 can both fit).
            if (0..4).all(|i| stored.mid_chs(i) == mids[i]) {
                cfg.bottle_ratio = stored.bottle_ratio;
            }
            if stored != cfg {
                return Err(Error::Config(format!(
                    "the metadata's config {stored:?} disagrees with the tensors' shapes ({cfg:?})"
                )));
            }
        }
        Ok(cfg)
    }
}

fn infer_norm(sd: &StateDict, channels: &[usize; 4], stem_chs: usize) -> Result<NormKind> {
    let meta = sd.metadata();
    // Either the first unit's norm1 or the final norm tells the kind, so one missing tensor
    // gives a "missing" error from strict loading rather than a wrong architecture.
    let has =
        |leaf: &str| sd.contains(&format!("stages.0.blocks.0.norm1.{leaf}")) || sd.contains(&format!("norm.{leaf}"));
    if has("running_mean") {
        return Ok(if meta.contains_key(&format!("{PREFIX}norm")) { norm_from(meta)? } else { NormKind::batch() });
    }
    if !has("weight") && !has("bias") {
        return Ok(NormKind::None);
    }
    if meta.contains_key(&format!("{PREFIX}norm")) {
        return norm_from(meta);
    }
    // GroupNorm without metadata: BiT's 32 groups, the only choice a file without a config
    // implies. Smaller widths need the metadata.
    let widths = channels.iter().chain(std::iter::once(&stem_chs));
    if let Some(w) = widths.into_iter().find(|&&w| w % BIT_GROUPS != 0) {
        return Err(Error::Config(format!(
            "GroupNorm weights of width {w} (not divisible by BiT's {BIT_GROUPS} groups) and no \
             {PREFIX}norm_groups metadata: the number of groups cannot be inferred"
        )));
    }
    Ok(NormKind::Group { groups: BIT_GROUPS, eps: GN_EPS })
}
