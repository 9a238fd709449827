//! `bitgrad weights list|get`, and [`WeightsSource`], the value of every `--weights`: a file, a
//! BiT release name (`BiT-M-R50x1`) or a hub name (`hf-hub:timm/resnetv2_50x1_bit.goog_in21k`),
//! resolved to a local file through the download cache (`models::hub`, docs/weights.md).

use std::path::PathBuf;
use std::str::FromStr;

use bitgrad::models::hub::{self, HubConfig, WeightSpec, BIT_RELEASES};
use bitgrad::models::Result;

/// A `--weights` value as typed; [`WeightsSource::resolve`] gives the file.
#[derive(Clone, Debug)]
pub struct WeightsSource(pub String);

impl FromStr for WeightsSource {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(WeightsSource(s.to_string()))
    }
}

impl WeightsSource {
    /// The local file: the path itself, or a name's cached download (fetched when missing).
    pub fn resolve(&self) -> Result<PathBuf> {
        hub::resolve(&self.0)
    }

    /// The architecture a `hf-hub:timm/<arch>.<tag>` name promises (checked against the file
    /// like `--arch`); `None` for files, BiT names and other repositories.
    pub fn implied_arch(&self) -> Option<String> {
        match WeightSpec::parse(&self.0).ok()? {
            WeightSpec::Hub { repo, .. } => hub::timm_arch(&repo).map(|(arch, _)| arch.to_string()),
            _ => None,
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// The known weight names, their timm twins, and which are cached (and where).
    List,
    /// Download a name into the cache (if not cached yet) and print its path.
    Get {
        /// A BiT release (BiT-M-R50x1) or hf-hub:ORG/NAME.
        name: String,
    },
}

pub fn run(args: Args) -> Result<()> {
    let cfg = HubConfig::from_env();
    match args.command {
        Sub::Get { name } => {
            println!("{}", hub::resolve_with(&cfg, &name)?.display());
        }
        Sub::List => list(&cfg),
    }
    Ok(())
}

fn list(cfg: &HubConfig) {
    let mark = |spec: &WeightSpec| hub::cached(cfg, spec).map_or_else(|| "-".to_string(), |p| p.display().to_string());
    println!("BiT releases ({}/<name>.npz):", cfg.bit_base_url);
    println!("  {:<26} {:>7}  {:<58} cached", "name", "classes", "same weights on the hub");
    for r in BIT_RELEASES {
        let twin = r.timm.map_or_else(|| "-".to_string(), |t| format!("hf-hub:{t}"));
        println!("  {:<26} {:>7}  {twin:<58} {}", r.name, r.classes, mark(&WeightSpec::Bit(*r)));
    }
    println!("\nhub repositories (hf-hub:ORG/NAME, {}; timm's BiT ones):", cfg.hub_endpoint);
    println!("  {:<58} {:<20} cached", "name", "timm architecture");
    for repo in BIT_RELEASES.iter().filter_map(|r| r.timm) {
        let spec = WeightSpec::Hub { repo: repo.to_string(), revision: "main".into() };
        let arch = hub::timm_arch(repo).map_or("-", |(a, _)| a);
        println!("  {:<58} {arch:<20} {}", format!("hf-hub:{repo}"), mark(&spec));
    }
    let others = other_cached(cfg);
    if !others.is_empty() {
        println!("\nother cached hub repositories:");
        for (name, path) in others {
            println!("  {name:<58} {}", path.display());
        }
    }
    println!(
        "\ncaches: {} (BiT .npz), {} (hub){}",
        cfg.cache_dir.join("bit_models").display(),
        cfg.hub_cache.display(),
        if cfg.offline { "; offline (HF_HUB_OFFLINE)" } else { "" }
    );
}

/// Cached hub repositories with a `model.safetensors` at `main` that the list above does not
/// name (fetched with `hf-hub:` by bitgrad, or by timm or huggingface_hub).
fn other_cached(cfg: &HubConfig) -> Vec<(String, PathBuf)> {
    let known: Vec<&str> = BIT_RELEASES.iter().filter_map(|r| r.timm).collect();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&cfg.hub_cache).into_iter().flatten().flatten() {
        let dir = entry.file_name().to_string_lossy().into_owned();
        let Some(repo) = dir.strip_prefix("models--").map(|r| r.replacen("--", "/", 1)) else { continue };
        if known.contains(&repo.as_str()) {
            continue;
        }
        let spec = WeightSpec::Hub { repo: repo.clone(), revision: "main".into() };
        if let Some(path) = hub::cached(cfg, &spec) {
            out.push((format!("hf-hub:{repo}"), path));
        }
    }
    out.sort();
    out
}
