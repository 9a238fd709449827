//! Names and layouts between the original BiT `.npz` and timm (bit-spec §3.3, Appendix A):
//! `resnet/root_block/standardized_conv2d/kernel` ↔ `stem.conv.weight`,
//! `resnet/block{i+1}/unit{j+1:02}/{a,b,c}/…` ↔ `stages.{i}.blocks.{j}.…`,
//! `resnet/group_norm/*` ↔ `norm.*`, `resnet/head/conv2d/*` ↔ `head.fc.*`.
//! Convolution kernels go HWIO → OIHW by transposing (3, 2, 0, 1) (the head's (1, 1, C, n) to
//! (n, C, 1, 1) included) and back with (2, 3, 1, 0); the result is materialised contiguous so
//! later ops and files see a plain row-major tensor. GroupNorm γ/β and the head bias are 1-D in
//! both and pass unchanged.
//!
//! Both directions are strict (a name outside the grammar is an error listing all such names)
//! and emit timm's state_dict order — stem; per stage and block: downsample, norm1, conv1, norm2,
//! conv2, norm3, conv3; norm; head — whatever order the input had.

use bitgrad_engine::Tensor;

use super::StateDict;
use crate::{Error, Result};

/// One BiT parameter, independent of naming scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Param {
    Stem,
    /// `slot` orders a block's tensors as timm does (see [`BLOCK_SLOTS`]).
    Block {
        stage: usize,
        block: usize,
        slot: usize,
    },
    Norm {
        bias: bool,
    },
    Head {
        bias: bool,
    },
}

/// A block's parameters in timm's order: (timm suffix, npz suffix, is a conv kernel).
const BLOCK_SLOTS: [(&str, &str, bool); 10] = [
    ("downsample.conv.weight", "a/proj/standardized_conv2d/kernel", true),
    ("norm1.weight", "a/group_norm/gamma", false),
    ("norm1.bias", "a/group_norm/beta", false),
    ("conv1.weight", "a/standardized_conv2d/kernel", true),
    ("norm2.weight", "b/group_norm/gamma", false),
    ("norm2.bias", "b/group_norm/beta", false),
    ("conv2.weight", "b/standardized_conv2d/kernel", true),
    ("norm3.weight", "c/group_norm/gamma", false),
    ("norm3.bias", "c/group_norm/beta", false),
    ("conv3.weight", "c/standardized_conv2d/kernel", true),
];

const NPZ_STEM: &str = "resnet/root_block/standardized_conv2d/kernel";

impl Param {
    fn is_kernel(self) -> bool {
        match self {
            Param::Stem => true,
            Param::Block { slot, .. } => BLOCK_SLOTS[slot].2,
            Param::Norm { .. } => false,
            Param::Head { bias } => !bias,
        }
    }

    fn timm_name(self) -> String {
        match self {
            Param::Stem => "stem.conv.weight".into(),
            Param::Block { stage, block, slot } => format!("stages.{stage}.blocks.{block}.{}", BLOCK_SLOTS[slot].0),
            Param::Norm { bias } => if bias { "norm.bias" } else { "norm.weight" }.into(),
            Param::Head { bias } => if bias { "head.fc.bias" } else { "head.fc.weight" }.into(),
        }
    }

    fn npz_name(self) -> String {
        match self {
            Param::Stem => NPZ_STEM.into(),
            Param::Block { stage, block, slot } => {
                format!("resnet/block{}/unit{:02}/{}", stage + 1, block + 1, BLOCK_SLOTS[slot].1)
            }
            Param::Norm { bias } => if bias { "resnet/group_norm/beta" } else { "resnet/group_norm/gamma" }.into(),
            Param::Head { bias } => if bias { "resnet/head/conv2d/bias" } else { "resnet/head/conv2d/kernel" }.into(),
        }
    }

    fn from_timm(name: &str) -> Option<Param> {
        Some(match name {
            "stem.conv.weight" => Param::Stem,
            "norm.weight" => Param::Norm { bias: false },
            "norm.bias" => Param::Norm { bias: true },
            "head.fc.weight" => Param::Head { bias: false },
            "head.fc.bias" => Param::Head { bias: true },
            _ => {
                let rest = name.strip_prefix("stages.")?;
                let (stage, rest) = rest.split_once('.')?;
                let (block, rest) = rest.strip_prefix("blocks.")?.split_once('.')?;
                let slot = BLOCK_SLOTS.iter().position(|s| s.0 == rest)?;
                Param::Block { stage: index(stage)?, block: index(block)?, slot }
            }
        })
    }

    fn from_npz(name: &str) -> Option<Param> {
        Some(match name {
            NPZ_STEM => Param::Stem,
            "resnet/group_norm/gamma" => Param::Norm { bias: false },
            "resnet/group_norm/beta" => Param::Norm { bias: true },
            "resnet/head/conv2d/kernel" => Param::Head { bias: false },
            "resnet/head/conv2d/bias" => Param::Head { bias: true },
            _ => {
                let rest = name.strip_prefix("resnet/block")?;
                let (b, rest) = rest.split_once('/')?;
                let (u, rest) = rest.strip_prefix("unit")?.split_once('/')?;
                let slot = BLOCK_SLOTS.iter().position(|s| s.1 == rest)?;
                // 1-based in the npz; unit numbers are zero-padded to two digits.
                let (b, u) = (index(b)?.checked_sub(1)?, index(u)?.checked_sub(1)?);
                Param::Block { stage: b, block: u, slot }
            }
        })
    }
}

/// A decimal index: digits only (no sign, no spaces), small enough to be a real layer number.
fn index(s: &str) -> Option<usize> {
    if s.is_empty() || s.len() > 6 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Maps a raw BiT `.npz` state dict (as [`super::npz::load`] returns it) to timm's names, OIHW
/// layout and order. Consumes `raw` so each source tensor is freed once transposed.
pub fn npz_to_timm(mut raw: StateDict) -> Result<StateDict> {
    let plan = plan(&raw, Param::from_npz, "BiT .npz", Param::npz_name)?;
    let mut out = StateDict::new();
    *out.metadata_mut() = raw.metadata().clone();
    for (p, name) in plan {
        let t = raw.remove(&name).expect("planned names come from raw");
        let t = if p.is_kernel() { permute(&name, &t, [3, 2, 0, 1], "HWIO")? } else { t };
        out.insert(p.timm_name(), t);
    }
    Ok(out)
}

/// Maps a timm-named state dict to the original BiT `.npz` names and HWIO layout.
pub fn timm_to_npz(sd: &StateDict) -> Result<StateDict> {
    let plan = plan(sd, Param::from_timm, "timm ResNet-v2", Param::timm_name)?;
    let mut out = StateDict::new();
    *out.metadata_mut() = sd.metadata().clone();
    for (p, name) in plan {
        let t = sd.get(&name).expect("planned names come from sd");
        let t = if p.is_kernel() { permute(&name, t, [2, 3, 1, 0], "OIHW")? } else { t.clone() };
        out.insert(p.npz_name(), t);
    }
    Ok(out)
}

/// Parses every name; returns (param, source name) in timm order, or an error listing every
/// name outside the grammar, or naming two source names that map to the same parameter.
fn plan(
    sd: &StateDict,
    parse: fn(&str) -> Option<Param>,
    scheme: &str,
    canonical: fn(Param) -> String,
) -> Result<Vec<(Param, String)>> {
    let mut plan = Vec::with_capacity(sd.len());
    let mut unknown = Vec::new();
    for name in sd.names() {
        match parse(name) {
            Some(p) => plan.push((p, name.to_string())),
            None => unknown.push(name.to_string()),
        }
    }
    if !unknown.is_empty() {
        const SHOW: usize = 12;
        let mut msg = format!("{} names are not {scheme} parameter names:", unknown.len());
        for n in unknown.iter().take(SHOW) {
            msg.push_str(&format!("\n    {n}"));
        }
        if unknown.len() > SHOW {
            msg.push_str(&format!("\n    … and {} more", unknown.len() - SHOW));
        }
        return Err(Error::Msg(msg));
    }
    plan.sort_by_key(|(p, _)| *p);
    if let Some(w) = plan.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(Error::Msg(format!(
            "`{}` and `{}` are the same parameter ({})",
            w[0].1,
            w[1].1,
            canonical(w[0].0)
        )));
    }
    Ok(plan)
}

fn permute(name: &str, t: &Tensor, perm: [usize; 4], layout: &str) -> Result<Tensor> {
    if t.rank() != 4 {
        return Err(Error::Msg(format!(
            "`{name}` is a convolution kernel and must be 4-D ({layout}), but has shape {:?}",
            t.dims()
        )));
    }
    Ok(t.permute(&perm)?.contiguous()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_both_ways() {
        for p in [
            Param::Stem,
            Param::Block { stage: 3, block: 35, slot: 0 },
            Param::Block { stage: 0, block: 0, slot: 9 },
            Param::Norm { bias: true },
            Param::Head { bias: false },
        ] {
            assert_eq!(Param::from_timm(&p.timm_name()), Some(p));
            assert_eq!(Param::from_npz(&p.npz_name()), Some(p));
        }
        assert_eq!(
            Param::from_npz("resnet/block2/unit10/b/group_norm/beta"),
            Some(Param::Block { stage: 1, block: 9, slot: 5 })
        );
        for bad in [
            "resnet/block0/unit01/a/group_norm/gamma",
            "resnet/block1/unit00/a/group_norm/gamma",
            "resnet/block1/unit+1/a/group_norm/gamma",
            "resnet/block1/unit01/d/group_norm/gamma",
            "resnet/head/dense/kernel",
        ] {
            assert_eq!(Param::from_npz(bad), None, "{bad}");
        }
        for bad in ["stages.0.blocks.0.norm4.weight", "stages.x.blocks.0.conv1.weight", "stem.conv.bias"] {
            assert_eq!(Param::from_timm(bad), None, "{bad}");
        }
    }
}
