//! Hugging Face hub files in the hub's own cache layout (the one huggingface_hub, timm and the
//! `hf-hub` crate share, so a file any of them fetched is found here and the other way round):
//!
//! ```text
//! $HF_HUB_CACHE/models--timm--resnetv2_50x1_bit.goog_in21k/
//!   blobs/<etag>                      the file, named by the hub's ETag (the SHA-256 for LFS files)
//!   snapshots/<commit>/model.safetensors → ../../blobs/<etag>
//!   refs/main                         the commit `main` pointed at
//! $HF_HUB_CACHE/.locks/models--timm--…/<etag>.lock   held while a process downloads the blob
//! ```
//!
//! A `HEAD` on `{endpoint}/{repo}/resolve/{revision}/{file}` without following redirects gives the
//! commit (`X-Repo-Commit`), the ETag and size (`X-Linked-Etag`/`X-Linked-Size` for LFS files,
//! else `ETag`/`Content-Length`) and, for LFS, the CDN address (`Location`), as the hub's own
//! clients do it.

use std::path::{Path, PathBuf};

use super::config::HubConfig;
use super::download::{self, Expect};
use crate::{Error, Result};

/// `models--org--name`.
fn repo_folder(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

pub fn repo_dir(cfg: &HubConfig, repo: &str) -> PathBuf {
    cfg.hub_cache.join(repo_folder(repo))
}

/// The URL of a file.
pub fn file_url(cfg: &HubConfig, repo: &str, revision: &str, file: &str) -> String {
    format!("{}/{repo}/resolve/{revision}/{file}", cfg.hub_endpoint)
}

/// Where the cache holds `file` of `revision`, if it does: `refs/<revision>` names a commit
/// whose snapshot has the file, or (a file placed by hand) `snapshots/<revision>/<file>`.
pub fn cached(cfg: &HubConfig, repo: &str, revision: &str, file: &str) -> Option<PathBuf> {
    let dir = repo_dir(cfg, repo);
    let commit = std::fs::read_to_string(dir.join("refs").join(revision)).ok();
    let snapshot = commit.as_deref().map(str::trim).unwrap_or(revision);
    let path = dir.join("snapshots").join(snapshot).join(file);
    path.is_file().then_some(path)
}

/// Where to put a file downloaded by hand so that [`cached`] finds it.
pub fn manual_path(cfg: &HubConfig, repo: &str, revision: &str, file: &str) -> PathBuf {
    repo_dir(cfg, repo).join("snapshots").join(revision).join(file)
}

/// The cached file, downloading it first when the cache lacks it (never online when offline).
pub fn get(cfg: &HubConfig, repo: &str, revision: &str, file: &str) -> Result<PathBuf> {
    let url = file_url(cfg, repo, revision, file);
    let fail = |why: String| {
        Error::Msg(format!(
            "cannot get {url}: {why}. Download it by hand and put it at {}",
            manual_path(cfg, repo, revision, file).display()
        ))
    };
    if cfg.offline {
        return cached(cfg, repo, revision, file)
            .ok_or_else(|| fail("HF_HUB_OFFLINE is set and the cache lacks it".into()));
    }
    let meta = match head(cfg, &url) {
        Ok(m) => m,
        // The hub unreachable: a cached copy still serves (huggingface_hub does the same).
        Err(why) => return cached(cfg, repo, revision, file).ok_or_else(|| fail(why)),
    };
    let dir = repo_dir(cfg, repo);
    let blob = dir.join("blobs").join(&meta.etag);
    if !blob.is_file() || std::fs::metadata(&blob).map(|m| m.len()).ok() != meta.size {
        let part = dir.join("blobs").join(format!("{}.incomplete", meta.etag));
        // An LFS ETag is the file's SHA-256; a git ETag is a git blob hash (not checkable here).
        let sha256 = (meta.lfs && is_sha256(&meta.etag)).then(|| meta.etag.to_ascii_lowercase());
        let from = meta.location.clone().unwrap_or_else(|| url.clone());
        // The token is for the hub only, never for the CDN a redirect points to.
        let token = cfg.token.as_deref().filter(|_| from.starts_with(origin(&cfg.hub_endpoint)));
        let lock = cfg.hub_cache.join(".locks").join(repo_folder(repo)).join(format!("{}.lock", meta.etag));
        download::fetch(&from, &blob, &part, &lock, &Expect { size: meta.size, sha256 }, token)
            .map_err(|e| fail(e.to_string()))?;
    }
    let snapshot = dir.join("snapshots").join(&meta.commit);
    let link = snapshot.join(file);
    std::fs::create_dir_all(&snapshot).map_err(|e| Error::io(&snapshot, e))?;
    link_blob(&blob, &link, &meta.etag)?;
    if revision != meta.commit {
        write_ref(&dir, revision, &meta.commit)?;
    }
    Ok(link)
}

struct FileMeta {
    commit: String,
    etag: String,
    size: Option<u64>,
    lfs: bool,
    location: Option<String>,
}

fn head(cfg: &HubConfig, url: &str) -> std::result::Result<FileMeta, String> {
    let mut url = url.to_string();
    // A relative redirect without the hub's headers is the hub's own (a renamed repository):
    // followed here, as the hub's clients do; an absolute one is the file's CDN address.
    for _ in 0..5 {
        let mut req = download::agent(&url, false).head(&url);
        if let Some(t) = &cfg.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let resp = req.call().map_err(|e| download::describe(&e))?;
        let h = |k: &str| resp.header(k).map(|v| v.trim().to_string());
        let location = match resp.status() {
            300..=399 => Some(h("Location").ok_or("a redirect without a Location")?),
            _ => None,
        };
        let Some(commit) = h("X-Repo-Commit") else {
            match location {
                Some(loc) if loc.starts_with('/') => {
                    url = format!("{}{loc}", origin(&cfg.hub_endpoint));
                    continue;
                }
                _ => return Err("the answer has no X-Repo-Commit header (not a hub?)".into()),
            }
        };
        let linked = h("X-Linked-Etag");
        let lfs = linked.is_some();
        let etag = linked.or_else(|| h("ETag")).ok_or("the answer has no ETag")?;
        // Weak ETags (W/"…") and quotes are not part of the blob name.
        let etag = etag.trim_start_matches("W/").trim_matches('"').to_string();
        let safe = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !safe(&etag) || !safe(&commit) {
            return Err(format!("unusable ETag {etag:?} or commit {commit:?}"));
        }
        let size = h("X-Linked-Size").or_else(|| h("Content-Length")).and_then(|v| v.parse().ok());
        // A relative Location is relative to the endpoint's origin.
        let location =
            location.map(|loc| if loc.starts_with('/') { format!("{}{loc}", origin(&cfg.hub_endpoint)) } else { loc });
        return Ok(FileMeta { commit, etag, size, lfs, location });
    }
    Err("too many redirects".into())
}

fn origin(endpoint: &str) -> &str {
    let after_scheme = endpoint.find("://").map_or(0, |i| i + 3);
    match endpoint[after_scheme..].find('/') {
        Some(i) => &endpoint[..after_scheme + i],
        None => endpoint,
    }
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// `snapshots/<commit>/<file>` → `../../blobs/<etag>` (a relative link, as the hub's clients
/// make it, so the cache can move); a copy where links are not possible.
fn link_blob(blob: &Path, link: &Path, etag: &str) -> Result<()> {
    if std::fs::symlink_metadata(link).is_ok() {
        std::fs::remove_file(link).map_err(|e| Error::io(link, e))?;
    }
    #[cfg(unix)]
    let linked = std::os::unix::fs::symlink(Path::new("../../blobs").join(etag), link);
    #[cfg(not(unix))]
    let linked = std::fs::copy(blob, link).map(|_| ());
    #[cfg(unix)]
    let _ = blob;
    linked.map_err(|e| Error::io(link, e))
}

/// `refs/<revision>` = `commit`, written atomically.
fn write_ref(dir: &Path, revision: &str, commit: &str) -> Result<()> {
    let refs = dir.join("refs");
    std::fs::create_dir_all(&refs).map_err(|e| Error::io(&refs, e))?;
    let tmp = refs.join(format!(".{revision}.tmp{}", std::process::id()));
    std::fs::write(&tmp, commit).map_err(|e| Error::io(&tmp, e))?;
    let dest = refs.join(revision);
    std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))
}
