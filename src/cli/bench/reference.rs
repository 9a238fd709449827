//! The NumPy reference: `scripts/bench_reference.py` run as a long-lived child process.
//!
//! The script's source is built into the binary, so the bench works from any directory, and run
//! as `python3 -c <script> --serve`. It answers one JSON request line with one JSON line of
//! timings, so the bench can alternate bitgrad's repetitions with NumPy's and both see the same
//! machine load. OpenBLAS tuning variables that slow a current NumPy on this kind of machine are
//! removed from the child's environment (only the child's).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use super::json::{self, Object, Value};
use super::timing::Run;

/// Which reference script runs: NumPy for the kernel benchmarks, PyTorch/timm for the models.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Numpy,
    Torch,
}

impl Kind {
    fn script(self) -> &'static str {
        match self {
            Kind::Numpy => include_str!("../../../scripts/bench_reference.py"),
            Kind::Torch => include_str!("../../../scripts/bench_model_torch.py"),
        }
    }
}

/// Removed from the reference's environment: forced core types and cache sizes pick slower
/// kernels or blockings than OpenBLAS's own detection on current builds.
const REMOVED_VARS: [&str; 2] = ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"];

/// A running reference process.
pub struct Reference {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    info: Object,
    removed: Vec<String>,
    kind: Kind,
}

impl Reference {
    /// Starts the reference; `Err` says why it is skipped (no Python, no NumPy, bad output).
    pub fn start(python: &str, kind: Kind) -> Result<Reference, String> {
        let mut cmd = Command::new(python);
        cmd.arg("-c").arg(kind.script()).arg("--serve").stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut removed = Vec::new();
        for var in REMOVED_VARS {
            if let Some(v) = std::env::var_os(var) {
                removed.push(format!("{var}={}", v.to_string_lossy()));
            }
            cmd.env_remove(var);
        }
        let mut child = cmd.spawn().map_err(|e| format!("`{python}` could not be started ({e})"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut r = Reference { child, stdin, stdout, info: Object::new(), removed, kind };
        r.info = r.read_line()?;
        let ok = match kind {
            Kind::Numpy => r.info.get("numpy"),
            Kind::Torch => r.info.get("ok"),
        };
        if ok != Some(&Value::Bool(true)) {
            let why = r.text("error");
            let what = if kind == Kind::Numpy { "numpy" } else { "torch and timm" };
            return Err(format!("{what} not found ({why})"));
        }
        Ok(r)
    }

    fn read_line(&mut self) -> Result<Object, String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => Err("the reference process exited early".into()),
            Ok(_) => json::parse(line.trim()),
            Err(e) => Err(format!("reading the reference's output: {e}")),
        }
    }

    fn text(&self, key: &str) -> String {
        match self.info.get(key) {
            Some(Value::Str(s)) => s.clone(),
            Some(Value::Num(x)) => format!("{x}"),
            _ => "unknown".into(),
        }
    }

    /// One line on what the reference is: NumPy and BLAS versions, kernel, threads.
    pub fn describe(&self) -> String {
        if self.kind == Kind::Torch {
            return format!(
                "torch {} + timm {} (Python {}), {} threads, oneDNN {}, CPU capability {}",
                self.text("torch_version"),
                self.text("timm_version"),
                self.text("python"),
                self.text("threads"),
                if self.info.get("mkldnn") == Some(&Value::Bool(true)) { "on" } else { "off" },
                self.text("cpu_capability")
            );
        }
        let mut s = format!("numpy {} (Python {})", self.text("numpy_version"), self.text("python"));
        if self.info.get("threadpoolctl") == Some(&Value::Bool(true)) {
            s += &format!(
                ", BLAS {} {}, kernel {}, {} threads",
                self.text("blas"),
                self.text("blas_version"),
                self.text("blas_arch"),
                self.text("blas_threads")
            );
        } else {
            s += ", BLAS kernel and threads unknown (pip install threadpoolctl to see them)";
        }
        s
    }

    /// The variables removed from the reference's environment, as `NAME=value`.
    pub fn removed_vars(&self) -> &[String] {
        &self.removed
    }

    /// Times `op` with the given fields (JSON members, e.g. `"m": 64, "k": 576`): `warmup`
    /// untimed runs, then `reps` timed ones, each with how long the reference's threads waited
    /// for a CPU.
    pub fn time(&mut self, op: &str, fields: &str, warmup: usize, reps: usize) -> Result<Vec<Run>, String> {
        let sep = if fields.is_empty() { "" } else { ", " };
        let req = format!("{{\"op\": \"{op}\", \"warmup\": {warmup}, \"reps\": {reps}{sep}{fields}}}\n");
        let stdin = self.stdin.as_mut().ok_or("the reference's input is closed")?;
        stdin
            .write_all(req.as_bytes())
            .and_then(|_| stdin.flush())
            .map_err(|e| format!("writing to the reference: {e}"))?;
        let reply = self.read_line()?;
        let times = match (reply.get("times_s"), reply.get("error")) {
            (Some(Value::Nums(t)), _) => t,
            (_, Some(Value::Str(e))) => return Err(format!("the reference failed: {e}")),
            _ => return Err("the reference's reply has no times".into()),
        };
        let waits = match reply.get("wait_us") {
            Some(Value::Nums(w)) if w.len() == times.len() => w.iter().map(|&w| Some(w)).collect(),
            _ => vec![None; times.len()],
        };
        Ok(times.iter().zip(waits).map(|(&secs, wait_us)| Run { secs, wait_us }).collect())
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        drop(self.stdin.take()); // end of input: the script exits
        let _ = self.child.wait();
    }
}
