//! One file over HTTP(S) into the cache: resumed from a partial file, checked, then renamed into
//! place. The final path only ever holds a complete, verified file:
//!
//! 1. Bytes go to a partial file beside the destination (`<blob>.incomplete` in the hub cache,
//!    `<name>.npz.part` in bitgrad's). A partial file from an earlier, interrupted run is resumed
//!    with `Range: bytes=N-` (a server that answers 200 instead of 206 starts it over).
//! 2. A connection that drops or a body that ends early is retried a few times, each time
//!    resuming where the file ends.
//! 3. The size is checked against what the server announced (the hub's `X-Linked-Size`, else
//!    `Content-Length`/`Content-Range`), and the SHA-256 against the published one (the hub's
//!    LFS ETag). A file that is complete but wrong is deleted: resuming it could never help.
//! 4. fsync, rename over the destination, fsync the directory.
//!
//! Two processes fetching the same file take turns: each holds an advisory lock (`flock`) on a
//! lock file under the cache's `.locks/` (as huggingface_hub does) while it writes the partial
//! file, and the one that waited finds the finished file and returns.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Attempts per download (each resumes the previous one's bytes).
const ATTEMPTS: u32 = 3;

/// What the finished file must be.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub size: Option<u64>,
    /// Lower-case hex.
    pub sha256: Option<String>,
}

/// An HTTP agent for `url` with bounded waits; the proxy of `HTTPS_PROXY`/`HTTP_PROXY`/
/// `ALL_PROXY` unless `url`'s host is local or listed in `NO_PROXY` (ureq alone ignores it).
pub fn agent(url: &str, follow_redirects: bool) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(20))
        .timeout_read(Duration::from_secs(60))
        .redirects(if follow_redirects { 8 } else { 0 })
        .try_proxy_from_env(proxy_applies(url, std::env::var("NO_PROXY").or_else(|_| std::env::var("no_proxy")).ok()))
        .build()
}

/// Whether a proxy may carry `url`: not for loopback hosts, nor for hosts that `no_proxy`
/// (comma-separated names or domain suffixes, `*` for all) lists.
fn proxy_applies(url: &str, no_proxy: Option<String>) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    }
    .to_ascii_lowercase();
    if host == "localhost" || host == "::1" || host.starts_with("127.") {
        return false;
    }
    !no_proxy
        .unwrap_or_default()
        .split(',')
        .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
        .any(|e| !e.is_empty() && (e == "*" || host == e || host.ends_with(&format!(".{e}"))))
}

/// A failed request in words: the status code, or the transport problem.
pub fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Status(code, r) => format!("HTTP {code} {}", r.status_text()),
        ureq::Error::Transport(t) => t.to_string(),
    }
}

/// Downloads `url` to `dest` through the partial file `part` (see the module docs). `token`
/// goes out as a bearer token (ureq drops it on any redirect).
pub fn fetch(url: &str, dest: &Path, part: &Path, lock: &Path, expect: &Expect, token: Option<&str>) -> Result<()> {
    let io = |p: &Path, e: std::io::Error| Error::io(p, e);
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    let _turn = take_turn(lock, dest)?;
    if dest.is_file() {
        return Ok(()); // Another process finished it while we waited.
    }
    let agent = agent(url, true);
    let mut total = expect.size;
    let mut last_problem = String::new();
    eprintln!("downloading {url}\n         to {}", dest.display());
    for attempt in 0..ATTEMPTS {
        let mut have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if total.is_some_and(|t| have > t) {
            // Longer than the file: not a prefix of it (another file's bytes); start over.
            std::fs::remove_file(part).map_err(|e| io(part, e))?;
            have = 0;
        }
        if total.is_some_and(|t| have == t) {
            break;
        }
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(300 * attempt as u64));
        }
        let mut req = agent.get(url);
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        if have > 0 {
            req = req.set("Range", &format!("bytes={have}-"));
        }
        let resp = match req.call() {
            Ok(r) => r,
            // A range past the end: the partial file is not a prefix of this file; start over.
            Err(ureq::Error::Status(416, _)) => {
                std::fs::remove_file(part).map_err(|e| io(part, e))?;
                last_problem = "the partial file did not fit the server's file".into();
                continue;
            }
            Err(e) => return Err(Error::Msg(describe(&e))),
        };
        let resumed = resp.status() == 206;
        let start = if resumed { content_range_start(&resp).unwrap_or(u64::MAX) } else { 0 };
        if resumed && start != have {
            return Err(Error::Msg(format!("asked for bytes from {have}, the server sent them from {start}")));
        }
        let len: Option<u64> = resp.header("Content-Length").and_then(|v| v.trim().parse().ok());
        let announced = len.map(|l| start + l);
        match (total, announced) {
            (Some(t), Some(a)) if t != a => {
                std::fs::remove_file(part).ok();
                return Err(Error::Msg(format!("the server announces {a} bytes, the file has {t}")));
            }
            (None, a) => total = a,
            _ => {}
        }
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(part)
            .map_err(|e| io(part, e))?;
        let bar = progress(total, start, dest);
        let got = copy(resp.into_reader(), &mut file, &bar, part);
        bar.finish_and_clear();
        file.sync_all().map_err(|e| io(part, e))?;
        match got {
            Ok(n) if announced.is_none_or(|a| start + n >= a) => {
                if total.is_none() {
                    total = Some(start + n);
                }
            }
            Ok(n) => last_problem = format!("the body ended after {} of {} bytes", start + n, announced.unwrap_or(0)),
            Err(e) => last_problem = format!("the connection broke: {e}"),
        }
    }
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let Some(total) = total.filter(|&t| t == have) else {
        return Err(Error::Msg(format!(
            "incomplete after {ATTEMPTS} attempts ({have} bytes{}): {last_problem}; the partial file {} is resumed next time",
            total.map_or_else(String::new, |t| format!(" of {t}")),
            part.display()
        )));
    };
    if let Some(want) = &expect.sha256 {
        let got = sha256_file(part)?;
        if !got.eq_ignore_ascii_case(want) {
            std::fs::remove_file(part).ok();
            return Err(Error::Msg(format!("SHA-256 mismatch: published {want}, downloaded {got} ({total} bytes)")));
        }
    }
    std::fs::rename(part, dest).map_err(|e| io(dest, e))?;
    if let Some(dir) = dest.parent() {
        // The rename is durable only once the directory is synced (not possible everywhere).
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Holds the lock file `lock` exclusively until the returned file is dropped, waiting (with a
/// message) while another process holds it. Advisory, so only our own downloads take part.
fn take_turn(lock: &Path, dest: &Path) -> Result<File> {
    if let Some(dir) = lock.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let f = OpenOptions::new().create(true).truncate(false).write(true).open(lock).map_err(|e| Error::io(lock, e))?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        let try_lock = |how| unsafe { libc::flock(f.as_raw_fd(), how) } == 0;
        if !try_lock(libc::LOCK_EX | libc::LOCK_NB) {
            eprintln!("waiting for another download of {} to finish", dest.display());
            if !try_lock(libc::LOCK_EX) {
                return Err(Error::io(lock, std::io::Error::last_os_error()));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dest;
    Ok(f)
}

/// The first byte of a `Content-Range: bytes A-B/T` answer.
fn content_range_start(resp: &ureq::Response) -> Option<u64> {
    let v = resp.header("Content-Range")?.trim();
    v.strip_prefix("bytes")?.trim().split('-').next()?.trim().parse().ok()
}

fn copy(mut from: impl Read, to: &mut File, bar: &ProgressBar, path: &Path) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = match from.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..k]).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        n += k as u64;
        bar.inc(k as u64);
    }
}

/// A byte bar on a terminal's stderr; hidden elsewhere (logs, tests).
fn progress(total: Option<u64>, done: u64, dest: &Path) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::no_length(),
    };
    let style = ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    bar.set_position(done);
    bar
}

/// The SHA-256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::proxy_applies;

    #[test]
    fn no_proxy_for_local_and_listed_hosts() {
        assert!(proxy_applies("https://huggingface.co/timm/x", None));
        assert!(!proxy_applies("http://127.0.0.1:8080/a", None));
        assert!(!proxy_applies("http://localhost/a", None));
        assert!(!proxy_applies("http://[::1]:80/a", None));
        let np = || Some("example.org, .googleapis.com".to_string());
        assert!(!proxy_applies("https://storage.googleapis.com/bit_models/x.npz", np()));
        assert!(!proxy_applies("https://example.org:443/x", np()));
        assert!(proxy_applies("https://notexample.org/x", np()));
        assert!(!proxy_applies("https://huggingface.co/x", Some("*".into())));
    }
}
