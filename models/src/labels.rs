//! The class names of the released BiT heads, shipped in the binary (gzip, 0.3 MB): ImageNet-1k
//! (1000 classes: BiT-S, the `-ILSVRC2012` fine-tunes) and Google's ImageNet-21k head (21843
//! classes: BiT-M). Built from timm's Apache-2.0 `data/_info` files; see assets/labels/README.md.

use std::io::Read;

use flate2::read::GzDecoder;

use crate::{Error, Result};

const IMAGENET_1K: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/labels/imagenet-1k.tsv.gz"));
const IMAGENET_21K: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/labels/imagenet-21k.tsv.gz"));

/// One class: its WordNet synset id and its lemmas (`"tench, Tinca tinca"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassName {
    pub synset: String,
    pub lemmas: String,
}

/// The shipped list for a head of `classes` outputs (1000 or 21843), `None` for other sizes.
pub fn for_head(classes: usize) -> Option<Result<Vec<ClassName>>> {
    let (bytes, what) = match classes {
        1000 => (IMAGENET_1K, "imagenet-1k"),
        21843 => (IMAGENET_21K, "imagenet-21k"),
        _ => return None,
    };
    Some(decode(bytes, what, classes))
}

fn decode(bytes: &[u8], what: &str, classes: usize) -> Result<Vec<ClassName>> {
    let mut text = String::new();
    GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .map_err(|e| Error::Msg(format!("the shipped {what} class names are corrupt: {e}")))?;
    let names: Vec<ClassName> = text
        .lines()
        .map(|l| {
            let (synset, lemmas) = l.split_once('\t').unwrap_or((l, l));
            ClassName { synset: synset.to_string(), lemmas: lemmas.to_string() }
        })
        .collect();
    if names.len() != classes {
        return Err(Error::Msg(format!("the shipped {what} list has {} names, not {classes}", names.len())));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_lists_have_the_head_sizes_and_known_entries() {
        let in1k = for_head(1000).unwrap().unwrap();
        assert_eq!(in1k[0], ClassName { synset: "n01440764".into(), lemmas: "tench, Tinca tinca".into() });
        assert!(in1k[281].lemmas.starts_with("tabby"), "{:?}", in1k[281]);
        let in21k = for_head(21843).unwrap().unwrap();
        assert_eq!(in21k.len(), 21843);
        assert!(in21k.iter().all(|c| c.synset.starts_with('n') && c.synset.len() == 9 && !c.lemmas.is_empty()));
        assert!(for_head(10).is_none());
    }
}
