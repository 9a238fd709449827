//! Google's BiT releases: `<name>.npz` from the `bit_models` bucket into
//! `$XDG_CACHE_HOME/bitgrad/bit_models/<name>.npz`. The bucket publishes no SHA-256, so the
//! check is the size the server announces; the `.npz` loader then checks every zip entry's CRC.

use std::path::PathBuf;

use super::config::HubConfig;
use super::download::{self, Expect};
use super::names::BitRelease;
use crate::{Error, Result};

/// The cache path of a release (a `distill/…` name keeps its folder).
pub fn cache_path(cfg: &HubConfig, r: &BitRelease) -> PathBuf {
    cfg.cache_dir.join("bit_models").join(format!("{}.npz", r.name))
}

pub fn url(cfg: &HubConfig, r: &BitRelease) -> String {
    format!("{}/{}.npz", cfg.bit_base_url, r.name)
}

/// The cached file, downloading it first when the cache lacks it (never online when offline).
pub fn get(cfg: &HubConfig, r: &BitRelease) -> Result<PathBuf> {
    let dest = cache_path(cfg, r);
    if dest.is_file() {
        return Ok(dest);
    }
    let url = url(cfg, r);
    let fail = |why: String| {
        Error::Msg(format!("cannot get {url}: {why}. Download it by hand and put it at {}", dest.display()))
    };
    if cfg.offline {
        return Err(fail("HF_HUB_OFFLINE is set and the cache lacks it".into()));
    }
    let part = dest.with_extension("npz.part");
    let lock = cfg.cache_dir.join(".locks").join("bit_models").join(format!("{}.npz.lock", r.name));
    download::fetch(&url, &dest, &part, &lock, &Expect::default(), None).map_err(|e| fail(e.to_string()))?;
    Ok(dest)
}
