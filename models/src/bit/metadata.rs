//! The config as safetensors `__metadata__`: plain `bitgrad.<field> = value` strings (no JSON,
//! so any safetensors reader shows them and no serde is needed). Keys:
//!
//! | key | example |
//! |---|---|
//! | `bitgrad.arch` | `resnetv2` (marks the presence of a config) |
//! | `bitgrad.name` | `resnetv2_50x1_bit` (informative; absent for unnamed configs) |
//! | `bitgrad.layers`, `bitgrad.channels` | `3,4,6,3`, `256,512,1024,2048` |
//! | `bitgrad.stem_chs`, `bitgrad.bottle_ratio` | `64`, `0.25` |
//! | `bitgrad.num_classes`, `bitgrad.in_chans` | `1000`, `3` |
//! | `bitgrad.norm` | `group_norm`, `batch_norm`, `layer_norm`, `instance_norm`, `none` |
//! | `bitgrad.norm_groups` | `32` (group_norm only) |
//! | `bitgrad.norm_eps`, `bitgrad.bn_momentum` | `1e-5`, `0.1` (batch_norm only) |
//! | `bitgrad.ws`, `bitgrad.ws_eps` | `true`, `1e-8` |

use std::collections::BTreeMap;
use std::str::FromStr;

use super::config::ResNetV2Config;
use crate::error::{Error, Result};
use crate::nn::NormKind;

pub(crate) const PREFIX: &str = "bitgrad.";

impl ResNetV2Config {
    /// The config as metadata strings (see the module docs). A custom norm is stored by name
    /// only and cannot be read back.
    pub fn to_metadata(&self) -> BTreeMap<String, String> {
        let join = |v: &[usize]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            m.insert(format!("{PREFIX}{k}"), v);
        };
        put("arch", "resnetv2".into());
        if let Some(n) = self.name() {
            put("name", n.into());
        }
        put("layers", join(&self.layers));
        put("channels", join(&self.channels));
        put("stem_chs", self.stem_chs.to_string());
        put("bottle_ratio", self.bottle_ratio.to_string());
        put("num_classes", self.num_classes.to_string());
        put("in_chans", self.in_chans.to_string());
        put("norm", self.norm.name());
        match &self.norm {
            NormKind::Group { groups, eps } => {
                put("norm_groups", groups.to_string());
                put("norm_eps", format!("{eps:e}"));
            }
            NormKind::Layer { eps } | NormKind::Instance { eps } => put("norm_eps", format!("{eps:e}")),
            NormKind::Batch { momentum, eps } => {
                put("norm_eps", format!("{eps:e}"));
                put("bn_momentum", momentum.to_string());
            }
            NormKind::None | NormKind::Custom(_) => {}
        }
        put("ws", self.ws.to_string());
        put("ws_eps", format!("{:e}", self.ws_eps));
        m
    }

    /// The config stored by [`ResNetV2Config::to_metadata`]; `Ok(None)` when `meta` holds none
    /// (no `bitgrad.arch`), an error when it holds a broken or unknown one.
    pub fn from_metadata(meta: &BTreeMap<String, String>) -> Result<Option<Self>> {
        let Some(arch) = meta.get(&format!("{PREFIX}arch")) else { return Ok(None) };
        if arch != "resnetv2" {
            return Err(Error::Config(format!("metadata {PREFIX}arch = {arch:?}, expected \"resnetv2\"")));
        }
        let cfg = ResNetV2Config {
            layers: four(meta, "layers")?,
            channels: four(meta, "channels")?,
            stem_chs: field(meta, "stem_chs")?,
            bottle_ratio: field(meta, "bottle_ratio")?,
            num_classes: field(meta, "num_classes")?,
            in_chans: field(meta, "in_chans")?,
            norm: norm_from(meta)?,
            ws: field(meta, "ws")?,
            ws_eps: field(meta, "ws_eps")?,
        };
        cfg.validate()?;
        Ok(Some(cfg))
    }
}

/// The norm described by the metadata (also used by `infer` for what shapes cannot tell).
pub(crate) fn norm_from(meta: &BTreeMap<String, String>) -> Result<NormKind> {
    let name: String = field(meta, "norm")?;
    Ok(match name.as_str() {
        "group_norm" => NormKind::Group { groups: field(meta, "norm_groups")?, eps: field(meta, "norm_eps")? },
        "layer_norm" => NormKind::Layer { eps: field(meta, "norm_eps")? },
        "instance_norm" => NormKind::Instance { eps: field(meta, "norm_eps")? },
        "batch_norm" => NormKind::Batch { momentum: field(meta, "bn_momentum")?, eps: field(meta, "norm_eps")? },
        "none" => NormKind::None,
        other => {
            return Err(Error::Config(format!(
                "metadata {PREFIX}norm = {other:?}: not a built-in norm (group_norm, batch_norm, layer_norm, instance_norm, none)"
            )))
        }
    })
}

pub(crate) fn field<T: FromStr>(meta: &BTreeMap<String, String>, key: &str) -> Result<T> {
    let v =
        meta.get(&format!("{PREFIX}{key}")).ok_or_else(|| Error::Config(format!("metadata lacks {PREFIX}{key}")))?;
    v.trim().parse().map_err(|_| Error::Config(format!("metadata {PREFIX}{key} = {v:?} is not a valid value")))
}

fn four(meta: &BTreeMap<String, String>, key: &str) -> Result<[usize; 4]> {
    let s: String = field(meta, key)?;
    let v: Vec<usize> = s.split(',').map(|x| x.trim().parse()).collect::<Result<_, _>>().map_err(|_| {
        Error::Config(format!("metadata {PREFIX}{key} = {s:?}: expected four comma-separated integers"))
    })?;
    v.try_into().map_err(|_| Error::Config(format!("metadata {PREFIX}{key} = {s:?}: expected four values")))
}
