//! Benchmark: group norm and weight standardization, forward + backward, against PyTorch (CPU).
//!
//! Run: `cargo run --release --example bench_norm [-- --python PATH] [--reps N] [--only gn|ws]`
//! (`BITGRAD_PYTHON` also names the interpreter; the default is `python3`).
//!
//! * GN: `group_norm(x, 32, γ, β, 1e-5, act)` on the BiT-R50x1 activation shapes at 128 px and
//!   batch 8, with and without the fused ReLU; gradients of x, γ and β. PyTorch:
//!   `F.group_norm` (+ in-place ReLU, timm's GroupNormAct), `torch.autograd.grad`.
//! * WS: `weight_std(w, 1e-10)` on the R50x1 conv weight shapes; gradient of w. PyTorch: timm's
//!   `F.batch_norm` form and the explicit formula; the ratio is taken against the faster one.
//!
//! PyTorch runs in a child process (`scripts/bench_norm_torch.py`, built into this binary) with
//! 2 threads; bitgrad uses rayon's pool (2 threads on a 2-core machine). For each case the two
//! sides alternate for three rounds so that both see the same machine load; the printed time is
//! the median over all repetitions. GB/s counts the minimum traffic of forward + backward in
//! f32: GN reads x and writes y, then reads g, x (and y for the ReLU mask) and writes dx; WS
//! reads w and writes ŵ, then reads g and ŵ and writes dw. Ratio = torch time / bitgrad time
//! (> 1: bitgrad is faster).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use bitgrad::engine::autograd;
use bitgrad::ops::group_norm::{group_norm, Activation, BIT_GROUPS, GN_EPS};
use bitgrad::ops::weight_std::{weight_std, WS_EPS_BIT};
use bitgrad::{DType, Device, Result, Rng, Tensor};

const SCRIPT: &str = include_str!("../scripts/bench_norm_torch.py");
const ROUNDS: usize = 3;

/// R50x1 GroupNorm inputs at 128 px, batch 8: stage outputs and bottleneck (mid) widths.
const GN_SHAPES: [[usize; 4]; 8] = [
    [8, 64, 32, 32],
    [8, 256, 32, 32],
    [8, 128, 16, 16],
    [8, 512, 16, 16],
    [8, 256, 8, 8],
    [8, 1024, 8, 8],
    [8, 512, 4, 4],
    [8, 2048, 4, 4],
];

/// R50x1 conv weights (OIHW): stem, stage-1 convs, and the larger later ones.
const WS_SHAPES: [[usize; 4]; 10] = [
    [64, 3, 7, 7],
    [64, 64, 1, 1],
    [64, 64, 3, 3],
    [256, 64, 1, 1],
    [128, 128, 3, 3],
    [256, 256, 3, 3],
    [512, 512, 3, 3],
    [1024, 256, 1, 1],
    [2048, 512, 1, 1],
    [1024, 2048, 1, 1],
];

/// The PyTorch child process, or why there is none.
struct Torch {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    info: String,
}

impl Torch {
    fn start(python: &str) -> std::result::Result<Torch, String> {
        let mut child = Command::new(python)
            .arg("-c")
            .arg(SCRIPT)
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("`{python}` could not be started ({e})"))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut t = Torch { child, stdin, stdout, info: String::new() };
        let first = t.read_line()?;
        match first.split_once(' ') {
            Some(("info", rest)) => t.info = rest.to_string(),
            _ => return Err(first),
        }
        Ok(t)
    }

    fn read_line(&mut self) -> std::result::Result<String, String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => Err("the torch process exited early".into()),
            Ok(_) => Ok(line.trim().to_string()),
            Err(e) => Err(format!("reading the torch process: {e}")),
        }
    }

    /// Sends one request; returns the repetition times in seconds.
    fn time(&mut self, request: &str) -> std::result::Result<Vec<f64>, String> {
        writeln!(self.stdin, "{request}").map_err(|e| format!("writing to the torch process: {e}"))?;
        let line = self.read_line()?;
        match line.split_once(' ') {
            Some(("ok", times)) => Ok(times.split_whitespace().filter_map(|t| t.parse().ok()).collect()),
            _ => Err(line),
        }
    }
}

impl Drop for Torch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// Times `step` `reps` times after one warm-up call.
fn time_reps(reps: usize, mut step: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    step()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t0 = Instant::now();
        step()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    Ok(times)
}

/// Repetitions per round for a case of `numel` elements: ~0.15 s per side per round.
fn reps_for(numel: usize, forced: Option<usize>) -> usize {
    forced.unwrap_or_else(|| (150e6 / (numel as f64 * 4.0)).clamp(5.0, 400.0) as usize)
}

struct Row {
    name: String,
    bytes: f64,
    ours: f64,
    torch: Vec<(String, f64)>,
}

fn print_table(title: &str, rows: &[Row]) {
    println!("\n{title}");
    let torch_cols: Vec<String> =
        rows.first().map(|r| r.torch.iter().map(|(n, _)| n.clone()).collect()).unwrap_or_default();
    let mut head = format!("{:<28} {:>11} {:>8}", "shape", "bitgrad ms", "GB/s");
    for c in &torch_cols {
        head += &format!(" {:>14} {:>8}", format!("{c} ms"), "GB/s");
    }
    head += &format!(" {:>7}", "ratio");
    println!("{head}");
    let mut log_sum = 0.0;
    let mut counted = 0;
    for r in rows {
        let mut line = format!("{:<28} {:>11.3} {:>8.1}", r.name, r.ours * 1e3, r.bytes / r.ours / 1e9);
        for (_, t) in &r.torch {
            line += &format!(" {:>14.3} {:>8.1}", t * 1e3, r.bytes / t / 1e9);
        }
        let best = r.torch.iter().map(|(_, t)| *t).fold(f64::INFINITY, f64::min);
        if best.is_finite() {
            line += &format!(" {:>6.2}x", best / r.ours);
            log_sum += (best / r.ours).ln();
            counted += 1;
        } else {
            line += &format!(" {:>7}", "-");
        }
        println!("{line}");
    }
    if counted > 0 {
        println!(
            "geometric mean ratio: {:.2}x (torch time / bitgrad time; > 1 = bitgrad faster)",
            (log_sum / counted as f64).exp()
        );
    }
}

/// Runs one case: `ROUNDS` rounds of (torch requests, then bitgrad reps).
fn run_case(
    torch: &mut Option<Torch>,
    requests: &[(String, String)],
    reps: usize,
    mut step: impl FnMut() -> Result<()>,
) -> Result<(f64, Vec<(String, f64)>)> {
    let mut ours = Vec::new();
    let mut theirs: Vec<Vec<f64>> = vec![Vec::new(); requests.len()];
    for _ in 0..ROUNDS {
        if let Some(t) = torch.as_mut() {
            for (k, (_, req)) in requests.iter().enumerate() {
                match t.time(&format!("{req} {reps}")) {
                    Ok(v) => theirs[k].extend(v),
                    Err(e) => eprintln!("torch: {req}: {e}"),
                }
            }
        }
        ours.extend(time_reps(reps, &mut step)?);
    }
    let torch_times = if torch.is_some() {
        requests.iter().zip(theirs.iter_mut()).map(|((name, _), v)| (name.clone(), median(v))).collect()
    } else {
        Vec::new()
    };
    Ok((median(&mut ours), torch_times))
}

fn bench_gn(torch: &mut Option<Torch>, forced: Option<usize>, rng: &mut Rng) -> Result<()> {
    for act in [Activation::Relu, Activation::None] {
        let mut rows = Vec::new();
        for dims in GN_SHAPES {
            let numel: usize = dims.iter().product();
            let c = dims[1];
            let x = Tensor::randn(dims, 0.0, 1.0, DType::F32, Device::Cpu, rng)?.requires_grad_(true);
            let gamma = Tensor::randn([c], 1.0, 0.1, DType::F32, Device::Cpu, rng)?.requires_grad_(true);
            let beta = Tensor::randn([c], 0.0, 0.1, DType::F32, Device::Cpu, rng)?.requires_grad_(true);
            let up = Tensor::randn(dims, 0.0, 1.0, DType::F32, Device::Cpu, rng)?;
            let act_name = if act == Activation::Relu { "relu" } else { "none" };
            let [n, c, h, w] = dims;
            let req = format!("gn {n} {c} {h} {w} {BIT_GROUPS} {act_name}");
            let (ours, torch_times) = run_case(torch, &[("torch".into(), req)], reps_for(numel, forced), || {
                let y = group_norm(&x, BIT_GROUPS, Some(&gamma), Some(&beta), GN_EPS, act)?;
                autograd::grad(&y, &up).map(|_| ())
            })?;
            let passes = if act == Activation::Relu { 6.0 } else { 5.0 };
            rows.push(Row { name: format!("{dims:?}"), bytes: passes * 4.0 * numel as f64, ours, torch: torch_times });
        }
        let title = match act {
            Activation::Relu => "GroupNorm(32) + ReLU, forward + backward (x, gamma, beta), f32",
            Activation::None => "GroupNorm(32), forward + backward (x, gamma, beta), f32",
        };
        print_table(title, &rows);
    }
    Ok(())
}

fn bench_ws(torch: &mut Option<Torch>, forced: Option<usize>, rng: &mut Rng) -> Result<()> {
    let mut rows = Vec::new();
    for dims in WS_SHAPES {
        let numel: usize = dims.iter().product();
        let w = Tensor::randn(dims, 0.0, 0.05, DType::F32, Device::Cpu, rng)?.requires_grad_(true);
        let up = Tensor::randn(dims, 0.0, 1.0, DType::F32, Device::Cpu, rng)?;
        let [o, i, kh, kw] = dims;
        let requests: Vec<(String, String)> = ["timm", "formula"]
            .iter()
            .map(|v| (format!("torch {v}"), format!("ws {o} {i} {kh} {kw} {WS_EPS_BIT:e} {v}")))
            .collect();
        let (ours, torch_times) = run_case(torch, &requests, reps_for(numel, forced), || {
            let y = weight_std(&w, WS_EPS_BIT)?;
            autograd::grad(&y, &up).map(|_| ())
        })?;
        rows.push(Row { name: format!("{dims:?}"), bytes: 5.0 * 4.0 * numel as f64, ours, torch: torch_times });
    }
    print_table("Weight standardization (eps 1e-10), forward + backward (w), f32", &rows);
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let python = value("--python").or_else(|| std::env::var("BITGRAD_PYTHON").ok()).unwrap_or_else(|| "python3".into());
    let forced = value("--reps").and_then(|r| r.parse().ok());
    let only = value("--only");

    println!("bench_norm: bitgrad with {} rayon threads", rayon::current_num_threads());
    let mut torch = match Torch::start(&python) {
        Ok(t) => {
            println!("reference: PyTorch {} ({python})", t.info);
            Some(t)
        }
        Err(why) => {
            println!("torch not found, reference skipped ({why})");
            None
        }
    };
    let mut rng = Rng::new(0);
    if only.as_deref() != Some("ws") {
        bench_gn(&mut torch, forced, &mut rng)?;
    }
    if only.as_deref() != Some("gn") {
        bench_ws(&mut torch, forced, &mut rng)?;
    }
    Ok(())
}
