//! Weights by name against a local HTTP server on 127.0.0.1 that plays Google's `bit_models`
//! bucket and the Hugging Face hub (`/{repo}/resolve/{rev}/{file}` answered as the hub answers:
//! a redirect with `X-Repo-Commit`, `X-Linked-Etag` = the SHA-256 and `X-Linked-Size`), serving
//! the committed tiny checkpoints — and every failure: 404, a body cut short, a connection
//! dropped mid-file (resumed), a wrong checksum, offline mode. After a failure the final path
//! never exists: only a partial file that a later run resumes, or nothing.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bitgrad_models::hub::{resolve_with, sha256_file, HubConfig};

/// One request as the server saw it (header names lower-case).
#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

impl Req {
    fn range_start(&self) -> Option<u64> {
        self.headers.get("range")?.strip_prefix("bytes=")?.trim_end_matches('-').parse().ok()
    }
}

/// An answer: status, headers, body, and how many body bytes to send before closing the
/// connection (all by default).
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    content_length: Option<usize>,
    cut_after: Option<usize>,
}

impl Resp {
    fn new(status: u16, body: Vec<u8>) -> Self {
        Resp { status, headers: vec![], body, content_length: None, cut_after: None }
    }
    fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
}

type Handler = dyn Fn(&Req, usize) -> Resp + Send + Sync;

/// A server on an ephemeral port; `log` has every request, `handler` gets each with its index.
struct Server {
    base: String,
    log: Arc<Mutex<Vec<Req>>>,
}

fn serve(handler: Box<Handler>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let (log2, count) = (log.clone(), AtomicUsize::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let Some(req) = read_request(&mut s) else { continue };
            let i = count.fetch_add(1, Ordering::SeqCst);
            log2.lock().unwrap().push(req.clone());
            let r = handler(&req, i);
            let reason = match r.status {
                200 => "OK",
                206 => "Partial Content",
                302 => "Found",
                404 => "Not Found",
                _ => "Status",
            };
            let mut head = format!("HTTP/1.1 {} {reason}\r\nConnection: close\r\n", r.status);
            head += &format!("Content-Length: {}\r\n", r.content_length.unwrap_or(r.body.len()));
            for (k, v) in &r.headers {
                head += &format!("{k}: {v}\r\n");
            }
            head += "\r\n";
            let _ = s.write_all(head.as_bytes());
            if req.method != "HEAD" {
                let n = r.cut_after.unwrap_or(r.body.len()).min(r.body.len());
                let _ = s.write_all(&r.body[..n]);
            }
            let _ = s.flush();
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    });
    Server { base, log }
}

fn read_request(s: &mut TcpStream) -> Option<Req> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Req { method, path, headers })
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models").join(name)).unwrap()
}

fn tmpdir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("hub-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(server: &Server, dir: &Path) -> HubConfig {
    HubConfig {
        cache_dir: dir.join("bitgrad"),
        hub_cache: dir.join("hf/hub"),
        hub_endpoint: server.base.clone(),
        bit_base_url: format!("{}/bit_models", server.base),
        token: None,
        offline: false,
    }
}

/// Every file under `dir`, relative, sorted; the empty lock files under `.locks/` left out.
fn files(dir: &Path) -> Vec<String> {
    fn walk(d: &Path, root: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_name() == ".locks" {
                continue;
            }
            if p.is_dir() && !e.file_type().unwrap().is_symlink() {
                walk(&p, root, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A static file that honours `Range: bytes=N-` with 206 (as a bucket and a CDN do).
fn ranged(req: &Req, body: &[u8]) -> Resp {
    match req.range_start() {
        Some(n) => Resp::new(206, body[n as usize..].to_vec())
            .header("Content-Range", format!("bytes {n}-{}/{}", body.len() - 1, body.len())),
        None => Resp::new(200, body.to_vec()),
    }
}

const NPZ_PATH: &str = "/bit_models/BiT-M-R50x1.npz";
const REPO: &str = "timm/resnetv2_50x1_bit.goog_in21k";
const RESOLVE: &str = "/timm/resnetv2_50x1_bit.goog_in21k/resolve/main/model.safetensors";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The hub: HEAD and GET of the resolve URL redirect to `/cdn/<sha>` with the hub's headers;
/// the CDN serves `served` (normally the file itself) with ranges.
fn hub(file: Vec<u8>, etag: String, served: Vec<u8>) -> Box<Handler> {
    Box::new(move |req, _| {
        if req.path == RESOLVE {
            return Resp::new(302, vec![])
                .header("X-Repo-Commit", COMMIT)
                .header("X-Linked-Etag", format!("\"{etag}\""))
                .header("X-Linked-Size", file.len().to_string())
                .header("ETag", "\"abc\"")
                .header("Location", format!("/cdn/{etag}"));
        }
        if req.path.starts_with("/cdn/") {
            return ranged(req, &served);
        }
        Resp::new(404, b"Entry not found".to_vec())
    })
}

#[test]
fn bit_release_downloads_once_and_serves_offline() {
    let body = fixture("mini2.npz");
    let b2 = body.clone();
    let server = serve(Box::new(move |req, _| match req.path.as_str() {
        NPZ_PATH => ranged(req, &b2),
        _ => Resp::new(404, vec![]),
    }));
    let dir = tmpdir("bit");
    let cfg = config(&server, &dir);
    let path = resolve_with(&cfg, "BiT-M-R50x1").unwrap();
    assert_eq!(path, dir.join("bitgrad/bit_models/BiT-M-R50x1.npz"));
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert_eq!(files(&dir), ["bitgrad/bit_models/BiT-M-R50x1.npz"]);
    // Cached: no second request, online or offline.
    assert_eq!(resolve_with(&cfg, "bit-m-r50x1.npz").unwrap(), path);
    assert_eq!(resolve_with(&HubConfig { offline: true, ..cfg.clone() }, "BiT-M-R50x1").unwrap(), path);
    assert_eq!(server.log.lock().unwrap().len(), 1);
}

#[test]
fn hub_file_lands_in_the_hub_cache_layout() {
    let body = fixture("tiny.safetensors");
    let sha = sha256(&body);
    let server = serve(hub(body.clone(), sha.clone(), body.clone()));
    let dir = tmpdir("hub");
    let cfg = HubConfig { token: Some("hf_secret".into()), ..config(&server, &dir) };
    let path = resolve_with(&cfg, &format!("hf-hub:{REPO}")).unwrap();
    let repo = dir.join("hf/hub/models--timm--resnetv2_50x1_bit.goog_in21k");
    assert_eq!(path, repo.join(format!("snapshots/{COMMIT}/model.safetensors")));
    assert_eq!(std::fs::read_link(&path).unwrap(), Path::new("../../blobs").join(&sha));
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert_eq!(sha256_file(&path).unwrap(), sha);
    assert_eq!(std::fs::read_to_string(repo.join("refs/main")).unwrap(), COMMIT);
    let log = server.log.lock().unwrap().clone();
    assert_eq!((log[0].method.as_str(), log[0].path.as_str()), ("HEAD", RESOLVE));
    assert_eq!(log[0].headers.get("authorization").map(String::as_str), Some("Bearer hf_secret"));
    // The CDN is the same origin here, so the token goes there too; one GET in all.
    assert_eq!(log.iter().filter(|r| r.method == "GET").count(), 1);
    // Offline: found through refs/main without a request.
    let n = log.len();
    let offline = HubConfig { offline: true, ..cfg.clone() };
    assert_eq!(resolve_with(&offline, &format!("hf-hub:{REPO}")).unwrap(), path);
    assert_eq!(server.log.lock().unwrap().len(), n);
    // Online again: a HEAD, no new download (the blob is there).
    resolve_with(&cfg, &format!("hf-hub:{REPO}")).unwrap();
    assert_eq!(server.log.lock().unwrap().iter().filter(|r| r.method == "GET").count(), 1);
}

#[test]
fn not_found_names_the_url_and_where_to_put_the_file() {
    let server = serve(Box::new(|_, _| Resp::new(404, b"no".to_vec())));
    let dir = tmpdir("404");
    let cfg = config(&server, &dir);
    let e = resolve_with(&cfg, "BiT-S-R101x3").unwrap_err().to_string();
    let want = dir.join("bitgrad/bit_models/BiT-S-R101x3.npz");
    assert!(e.contains(&format!("{}/bit_models/BiT-S-R101x3.npz", server.base)), "{e}");
    assert!(e.contains("404") && e.contains(&want.display().to_string()), "{e}");
    let e = resolve_with(&cfg, &format!("hf-hub:{REPO}")).unwrap_err().to_string();
    assert!(e.contains(&format!("{}{RESOLVE}", server.base)) && e.contains("404"), "{e}");
    let manual = dir.join("hf/hub/models--timm--resnetv2_50x1_bit.goog_in21k/snapshots/main/model.safetensors");
    assert!(e.contains(&manual.display().to_string()), "{e}");
    assert!(files(&dir).iter().all(|f| !f.ends_with(".npz") && !f.ends_with("model.safetensors")), "{:?}", files(&dir));
    // A file put there by hand is then used, offline too.
    std::fs::create_dir_all(manual.parent().unwrap()).unwrap();
    std::fs::write(&manual, fixture("tiny.safetensors")).unwrap();
    let offline = HubConfig { offline: true, ..cfg };
    assert_eq!(resolve_with(&offline, &format!("hf-hub:{REPO}")).unwrap(), manual);
}

#[test]
fn offline_without_a_cached_copy_is_an_error_without_requests() {
    let server = serve(Box::new(|_, _| Resp::new(500, vec![])));
    let dir = tmpdir("offline");
    let cfg = HubConfig { offline: true, ..config(&server, &dir) };
    for name in ["BiT-M-R152x4".to_string(), format!("hf-hub:{REPO}")] {
        let e = resolve_with(&cfg, &name).unwrap_err().to_string();
        assert!(e.contains("HF_HUB_OFFLINE") && e.contains(&server.base) && e.contains("put it at"), "{e}");
    }
    assert!(server.log.lock().unwrap().is_empty());
    assert!(files(&dir).is_empty());
}

#[test]
fn a_dropped_connection_is_resumed_with_a_range_request() {
    let body = fixture("mini2.npz");
    let half = body.len() / 2;
    let b2 = body.clone();
    let server = serve(Box::new(move |req, i| {
        let mut r = ranged(req, &b2);
        if i == 0 {
            r.cut_after = Some(half); // Content-Length says the whole file; the link dies halfway.
        }
        r
    }));
    let dir = tmpdir("drop");
    let path = resolve_with(&config(&server, &dir), "BiT-M-R50x1").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    let log = server.log.lock().unwrap().clone();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[1].range_start(), Some(half as u64), "{log:?}");
    assert_eq!(files(&dir), ["bitgrad/bit_models/BiT-M-R50x1.npz"]);
}

#[test]
fn a_partial_file_from_an_earlier_run_is_resumed() {
    let body = fixture("tiny.safetensors");
    let sha = sha256(&body);
    let server = serve(hub(body.clone(), sha.clone(), body.clone()));
    let dir = tmpdir("resume");
    let blobs = dir.join("hf/hub/models--timm--resnetv2_50x1_bit.goog_in21k/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let k = 100_000;
    std::fs::write(blobs.join(format!("{sha}.incomplete")), &body[..k]).unwrap();
    let path = resolve_with(&config(&server, &dir), &format!("hf-hub:{REPO}")).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    let log = server.log.lock().unwrap().clone();
    let get = log.iter().find(|r| r.method == "GET").unwrap();
    assert_eq!(get.range_start(), Some(k as u64));
    assert!(!blobs.join(format!("{sha}.incomplete")).exists());
}

#[test]
fn a_body_cut_short_never_reaches_the_final_path() {
    let body = fixture("mini2.npz");
    let b2 = body.clone();
    // Announces the whole file, sends half, every time, ignoring ranges.
    let server = serve(Box::new(move |_, _| {
        let mut r = Resp::new(200, b2.clone());
        r.cut_after = Some(b2.len() / 2);
        r
    }));
    let dir = tmpdir("short");
    let e = resolve_with(&config(&server, &dir), "BiT-M-R50x1").unwrap_err().to_string();
    assert!(e.contains("incomplete") && e.contains(&format!("of {}", body.len())), "{e}");
    assert_eq!(files(&dir), ["bitgrad/bit_models/BiT-M-R50x1.npz.part"]);
    assert_eq!(server.log.lock().unwrap().len(), 3, "three attempts");

    // The hub announces a size (X-Linked-Size); a complete but shorter body is refused.
    let full = fixture("tiny.safetensors");
    let sha = sha256(&full);
    let server = serve(hub(full.clone(), sha, full[..1000].to_vec()));
    let dir = tmpdir("short-hub");
    let e = resolve_with(&config(&server, &dir), &format!("hf-hub:{REPO}")).unwrap_err().to_string();
    assert!(e.contains(&format!("the file has {}", full.len())), "{e}");
    assert!(files(&dir).iter().all(|f| !f.contains("snapshots") && !f.contains(".incomplete")), "{:?}", files(&dir));
}

#[test]
fn a_wrong_checksum_leaves_nothing_in_the_cache() {
    let body = fixture("tiny.safetensors");
    let wrong = sha256(b"something else");
    let server = serve(hub(body.clone(), wrong.clone(), body));
    let dir = tmpdir("sha");
    let e = resolve_with(&config(&server, &dir), &format!("hf-hub:{REPO}")).unwrap_err().to_string();
    assert!(e.contains("SHA-256 mismatch") && e.contains(&wrong) && e.contains(RESOLVE), "{e}");
    assert!(files(&dir).iter().all(|f| !f.contains("blobs/") && !f.contains("snapshots/")), "{:?}", files(&dir));
}

#[test]
fn a_partial_file_longer_than_the_file_is_started_over() {
    let body = fixture("tiny.safetensors");
    let sha = sha256(&body);
    let server = serve(hub(body.clone(), sha.clone(), body.clone()));
    let dir = tmpdir("too-long");
    let blobs = dir.join("hf/hub/models--timm--resnetv2_50x1_bit.goog_in21k/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(format!("{sha}.incomplete")), vec![7u8; body.len() + 10]).unwrap();
    let path = resolve_with(&config(&server, &dir), &format!("hf-hub:{REPO}")).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    let log = server.log.lock().unwrap().clone();
    assert_eq!(log.iter().find(|r| r.method == "GET").unwrap().range_start(), None, "{log:?}");
}

#[test]
fn two_downloads_of_one_name_take_turns() {
    let body = fixture("mini2.npz");
    let b2 = body.clone();
    let server = serve(Box::new(move |req, _| {
        // Slow enough that the second caller arrives while the first one downloads.
        std::thread::sleep(std::time::Duration::from_millis(300));
        ranged(req, &b2)
    }));
    let dir = tmpdir("turns");
    let cfg = config(&server, &dir);
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let cfg = cfg.clone();
            std::thread::spawn(move || resolve_with(&cfg, "BiT-M-R50x3"))
        })
        .collect();
    for h in handles {
        let path = h.join().unwrap().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), body);
    }
    assert_eq!(server.log.lock().unwrap().len(), 1, "one download, the other caller waited for it");
    assert!(dir.join("bitgrad/.locks/bit_models/BiT-M-R50x3.npz.lock").exists());
}
