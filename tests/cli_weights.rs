//! Weights by name through the binary, configured only by the environment a user sets:
//! `HF_ENDPOINT` (a local server playing the hub and, through `BITGRAD_BIT_URL`, the BiT
//! bucket), `HF_HOME` and `XDG_CACHE_HOME` (where the caches go), `HF_TOKEN` (sent to the hub),
//! `HF_HUB_OFFLINE` (no request at all). `info`, `predict` and `weights list|get` take the names;
//! the failure modes of the transfer are models/tests/hub_download.rs's.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const REPO: &str = "timm/resnetv2_tiny_bit.test";
const COMMIT: &str = "fedcba9876543210fedcba9876543210fedcba98";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(name)).unwrap()
}

/// Serves tiny.safetensors as the hub does (HEAD/GET on resolve → redirect with the hub's
/// headers → the file) for any `timm/` repository, and mini2.npz as the BiT bucket's BiT-S-R50x1.npz; logs "METHOD path
/// authorization" per request.
fn serve() -> (String, Arc<Mutex<Vec<String>>>) {
    use sha2::Digest;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    let (st, npz) = (fixture("tiny.safetensors"), fixture("mini2.npz"));
    let sha: String = sha2::Sha256::digest(&st).iter().map(|b| format!("{b:02x}")).collect();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = Vec::new();
            let mut b = [0u8; 1];
            while !buf.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
                buf.push(b[0]);
            }
            let text = String::from_utf8_lossy(&buf).to_string();
            let mut first = text.split_whitespace();
            let (method, path) = (first.next().unwrap_or("").to_string(), first.next().unwrap_or("").to_string());
            let auth =
                text.lines().find_map(|l| l.strip_prefix("authorization: ").or(l.strip_prefix("Authorization: ")));
            log2.lock().unwrap().push(format!("{method} {path} {}", auth.unwrap_or("-")));
            let (status, headers, body): (&str, String, &[u8]) = if path.starts_with("/timm/")
                && path.ends_with("/resolve/main/model.safetensors")
            {
                let h = format!(
                    "X-Repo-Commit: {COMMIT}\r\nX-Linked-Etag: \"{sha}\"\r\nX-Linked-Size: {}\r\nLocation: /cdn/{sha}\r\n",
                    st.len()
                );
                ("302 Found", h, &[])
            } else if path == format!("/cdn/{sha}") {
                ("200 OK", String::new(), &st)
            } else if path == "/bit/BiT-S-R50x1.npz" {
                ("200 OK", String::new(), &npz)
            } else {
                ("404 Not Found", String::new(), b"not found")
            };
            let head =
                format!("HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n", body.len());
            let _ = s.write_all(head.as_bytes());
            if method != "HEAD" {
                let _ = s.write_all(body);
            }
        }
    });
    (base, log)
}

struct Env {
    dir: PathBuf,
    base: String,
}

impl Env {
    fn run(&self, offline: bool, args: &[&str]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bitgrad"));
        for k in [
            "HF_HUB_CACHE",
            "HF_HUB_OFFLINE",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ] {
            c.env_remove(k);
        }
        c.env("HF_ENDPOINT", &self.base)
            .env("BITGRAD_BIT_URL", format!("{}/bit", self.base))
            .env("HF_HOME", self.dir.join("hf"))
            .env("XDG_CACHE_HOME", self.dir.join("xdg"))
            .env("HF_TOKEN", "hf_test_token");
        if offline {
            c.env("HF_HUB_OFFLINE", "1");
        }
        c.args(args).output().unwrap()
    }

    fn ok(&self, offline: bool, args: &[&str]) -> String {
        let o = self.run(offline, args);
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "bitgrad {args:?}:\n{text}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

#[test]
fn names_resolve_through_the_environment_and_the_cache() {
    let (base, log) = serve();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-weights-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let env = Env { dir: dir.clone(), base: base.clone() };
    let name = format!("hf-hub:{REPO}");

    let info = env.ok(false, &["info", "--weights", &name]);
    let snapshot =
        dir.join(format!("hf/hub/models--timm--resnetv2_tiny_bit.test/snapshots/{COMMIT}/model.safetensors"));
    assert!(info.contains("resnetv2_tiny_bit") && info.contains(&snapshot.display().to_string()), "{info}");
    let first: Vec<String> = log.lock().unwrap().clone();
    assert!(
        first[0].starts_with(&format!("HEAD /{REPO}/resolve/main/model.safetensors Bearer hf_test_token")),
        "{first:?}"
    );
    assert_eq!(first.iter().filter(|l| l.starts_with("GET")).count(), 1, "{first:?}");

    // Offline: the cached snapshot, and no request at all.
    let n = log.lock().unwrap().len();
    let img = dir.join("blue.png");
    image::RgbImage::from_pixel(16, 16, image::Rgb([10, 20, 200])).save(&img).unwrap();
    let said = env.ok(true, &["predict", "--weights", &name, "--size", "48", "--top", "1", img.to_str().unwrap()]);
    assert!(said.contains("class "), "{said}");
    assert_eq!(log.lock().unwrap().len(), n, "offline made a request");

    // A BiT release into $XDG_CACHE_HOME/bitgrad; `weights list` shows both as cached.
    let got = env.ok(false, &["weights", "get", "BiT-S-R50x1"]);
    let npz = dir.join("xdg/bitgrad/bit_models/BiT-S-R50x1.npz");
    assert_eq!(got.trim(), npz.display().to_string());
    assert_eq!(std::fs::read(&npz).unwrap(), fixture("mini2.npz"));
    let list = env.ok(true, &["weights", "list"]);
    let line = |needle: &str| list.lines().find(|l| l.contains(needle)).unwrap_or_default().to_string();
    assert!(line("BiT-S-R50x1 ").contains(&npz.display().to_string()), "{list}");
    assert!(line("BiT-M-R152x4 ").trim_end().ends_with('-'), "{list}");
    assert!(list.contains("offline"), "{list}");
    // The hub repository fetched above is not one of the known names: listed as cached too.
    assert!(line(&format!("hf-hub:{REPO}")).contains(&snapshot.display().to_string()), "{list}");

    // The name's architecture is checked against the file.
    let o = env.run(false, &["info", "--weights", "hf-hub:timm/resnetv2_50x1_bit.goog_in21k"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("names timm's architecture resnetv2_50x1_bit") && e.contains("resnetv2_tiny_bit"), "{e}");
    // An uncached name offline fails with the URL and the place for a hand-downloaded file.
    let o = env.run(true, &["info", "--weights", "BiT-M-R50x1"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains(&format!("{base}/bit/BiT-M-R50x1.npz")) && e.contains("xdg/bitgrad/bit_models/BiT-M-R50x1.npz"),
        "{e}"
    );
}
