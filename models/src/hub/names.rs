//! The weight names `--weights` understands besides file paths: Google's BiT releases
//! (`BiT-M-R50x1`, fetched as `<name>.npz` from the `bit_models` bucket) and timm's hub syntax
//! (`hf-hub:timm/resnetv2_50x1_bit.goog_in21k`, the repository's `model.safetensors`).

use std::path::PathBuf;

use crate::{Error, Result};

/// One published BiT file: its name in the bucket (without `.npz`), the head size, and the
/// timm hub repository holding the same weights, when timm converted them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitRelease {
    pub name: &'static str,
    pub classes: usize,
    pub timm: Option<&'static str>,
}

const fn rel(name: &'static str, classes: usize, timm: Option<&'static str>) -> BitRelease {
    BitRelease { name, classes, timm }
}

/// big_transfer's list (its README and colabs): BiT-S (ILSVRC-2012, 1000 classes) and BiT-M
/// (ImageNet-21k, 21843 classes) upstream models, BiT-M fine-tuned on ILSVRC-2012, the CIFAR-10
/// fine-tune of the colabs, and the distilled R50x1 students with their R152x2 teachers.
pub const BIT_RELEASES: &[BitRelease] = &[
    rel("BiT-S-R50x1", 1000, None),
    rel("BiT-S-R50x3", 1000, None),
    rel("BiT-S-R101x1", 1000, None),
    rel("BiT-S-R101x3", 1000, None),
    rel("BiT-S-R152x4", 1000, None),
    rel("BiT-M-R50x1", 21843, Some("timm/resnetv2_50x1_bit.goog_in21k")),
    rel("BiT-M-R50x3", 21843, Some("timm/resnetv2_50x3_bit.goog_in21k")),
    rel("BiT-M-R101x1", 21843, Some("timm/resnetv2_101x1_bit.goog_in21k")),
    rel("BiT-M-R101x3", 21843, Some("timm/resnetv2_101x3_bit.goog_in21k")),
    rel("BiT-M-R152x2", 21843, Some("timm/resnetv2_152x2_bit.goog_in21k")),
    rel("BiT-M-R152x4", 21843, Some("timm/resnetv2_152x4_bit.goog_in21k")),
    rel("BiT-M-R50x1-ILSVRC2012", 1000, Some("timm/resnetv2_50x1_bit.goog_in21k_ft_in1k")),
    rel("BiT-M-R50x3-ILSVRC2012", 1000, Some("timm/resnetv2_50x3_bit.goog_in21k_ft_in1k")),
    rel("BiT-M-R101x1-ILSVRC2012", 1000, Some("timm/resnetv2_101x1_bit.goog_in21k_ft_in1k")),
    rel("BiT-M-R101x3-ILSVRC2012", 1000, Some("timm/resnetv2_101x3_bit.goog_in21k_ft_in1k")),
    rel("BiT-M-R152x2-ILSVRC2012", 1000, Some("timm/resnetv2_152x2_bit.goog_in21k_ft_in1k")),
    rel("BiT-M-R152x4-ILSVRC2012", 1000, Some("timm/resnetv2_152x4_bit.goog_in21k_ft_in1k")),
    rel("BiT-M-R50x1-CIFAR10", 10, None),
    rel("distill/R50x1_224", 1000, Some("timm/resnetv2_50x1_bit.goog_distilled_in1k")),
    rel("distill/R152x2_T_224", 1000, Some("timm/resnetv2_152x2_bit.goog_teacher_in21k_ft_in1k")),
    rel("distill/R152x2_T_384", 1000, Some("timm/resnetv2_152x2_bit.goog_teacher_in21k_ft_in1k_384")),
];

/// The file of a hub repository that timm loads.
pub const HUB_FILE: &str = "model.safetensors";
const HUB_PREFIX: &str = "hf-hub:";

/// What a `--weights` value names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightSpec {
    /// A file on disk.
    File(PathBuf),
    /// A BiT release, fetched from the `bit_models` bucket.
    Bit(BitRelease),
    /// A Hugging Face hub repository (`org/name`) at a revision (default `main`).
    Hub { repo: String, revision: String },
}

impl WeightSpec {
    /// An existing file wins (a file may be called `BiT-M-R50x1`); then `hf-hub:org/name[@rev]`;
    /// then a BiT release name (case-insensitive, `.npz` allowed). Anything else is an error that
    /// says what exists.
    pub fn parse(s: &str) -> Result<WeightSpec> {
        if std::path::Path::new(s).exists() {
            return Ok(WeightSpec::File(PathBuf::from(s)));
        }
        if let Some(rest) = s.strip_prefix(HUB_PREFIX) {
            let (repo, revision) = rest.split_once('@').unwrap_or((rest, "main"));
            let ok_part = |p: &str| {
                !p.is_empty()
                    && p != "."
                    && p != ".."
                    && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            };
            let parts: Vec<&str> = repo.split('/').collect();
            if parts.len() != 2 || !parts.iter().all(|p| ok_part(p)) || !ok_part(revision) {
                return Err(Error::Msg(format!(
                    "{s:?} is not a hub name: write hf-hub:ORG/NAME[@REVISION], e.g. hf-hub:timm/resnetv2_50x1_bit.goog_in21k"
                )));
            }
            return Ok(WeightSpec::Hub { repo: repo.to_string(), revision: revision.to_string() });
        }
        let bare = s.strip_suffix(".npz").unwrap_or(s);
        if let Some(r) = BIT_RELEASES.iter().find(|r| r.name.eq_ignore_ascii_case(bare)) {
            return Ok(WeightSpec::Bit(*r));
        }
        Err(Error::Msg(format!(
            "{s}: no such file, and not a known weight name — a BiT release such as BiT-M-R50x1 or \
             BiT-S-R101x3-ILSVRC2012, or hf-hub:timm/resnetv2_50x1_bit.goog_in21k (`bitgrad weights list` shows them all)"
        )))
    }
}

/// timm's architecture and pretrained tag of a hub repository name: `timm/resnetv2_50x1_bit.
/// goog_in21k` → (`resnetv2_50x1_bit`, `goog_in21k`). `None` for repositories outside `timm/`
/// or without a tag.
pub fn timm_arch(repo: &str) -> Option<(&str, &str)> {
    repo.strip_prefix("timm/")?.split_once('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!(WeightSpec::parse("BiT-M-R50x1").unwrap(), WeightSpec::Bit(BIT_RELEASES[5]));
        assert!(
            matches!(WeightSpec::parse("bit-s-r101x3.npz").unwrap(), WeightSpec::Bit(r) if r.name == "BiT-S-R101x3")
        );
        assert_eq!(
            WeightSpec::parse("hf-hub:timm/resnetv2_50x1_bit.goog_in21k").unwrap(),
            WeightSpec::Hub { repo: "timm/resnetv2_50x1_bit.goog_in21k".into(), revision: "main".into() }
        );
        assert!(
            matches!(WeightSpec::parse("hf-hub:a/b@v1.0").unwrap(), WeightSpec::Hub { revision, .. } if revision == "v1.0")
        );
        for bad in ["hf-hub:timm", "hf-hub:a/b/c", "hf-hub:../x", "hf-hub:a/b@", "BiT-X-R50x1", "/no/such/file"] {
            assert!(WeightSpec::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(timm_arch("timm/resnetv2_50x1_bit.goog_in21k"), Some(("resnetv2_50x1_bit", "goog_in21k")));
        assert_eq!(timm_arch("google/bit-50"), None);
    }
}
