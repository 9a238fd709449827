//! Benchmark: conv2d on the CPU — forward, input gradient and weight gradient — for every
//! distinct convolution of BiT-R50x1 at 128 px, batch 8, against PyTorch on the CPU measured in
//! the same run (`scripts/bench_conv_torch.py`, same thread count; its repetitions alternate
//! with ours so that both see the same machine load).
//!
//! Run: `cargo run --release --example bench_conv [-- --python PATH] [--reps N] [--only LABEL-PART] [--min]
//! [--isa scalar|neon|avx2|avx512|avx512bf16] [--cpu-time] [--size 224] [--bf16]` (`--isa` forces a lower instruction-set level for
//! bitgrad's own kernels; the FMA peak the totals are compared with is measured at that level).
//!
//! `--bf16` times the mixed-precision convolution a model trained with `--precision bf16` runs:
//! `std_conv2d` on bf16 channels-last activations with the f32 master weight (no weight
//! standardization: the bf16 rounding and packing of the weight are timed, WS is not) — on
//! AMX CPUs the AMX kernels, whose roof is the measured `tdpbf16ps` rate, on AVX512-BF16 CPUs
//! the `vdpbf16ps` kernels, against the measured `vdpbf16ps` rate — against PyTorch's
//! bf16 channels-last convolution (oneDNN; its weight is converted to bf16 once, untimed).
//! (`--python` or `BITGRAD_PYTHON` picks the interpreter that has torch; default `python3`).
//! The thread count is rayon's (`RAYON_NUM_THREADS`, default: all cores); torch gets the same.
//!
//! Each time is the median of `--reps` (default 7) repetitions after 2 warm-ups, each started
//! on an idle machine (a 30 ms pause before it; see `settle`). The ratio is
//! torch's time / ours (> 1: bitgrad is faster). The total weights each shape by the number of
//! times it occurs in R50x1 (53 convolutions). "gi" of the stem is listed but a network never
//! needs it (the image does not require a gradient); the totals include it anyway.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use bitgrad::engine::autograd;
use bitgrad::engine::MemoryFormat;
use bitgrad::ops::conv2d::{conv2d, Conv2dParams};
use bitgrad::ops::std_conv2d::std_conv2d;
use bitgrad::{no_grad, DType, Device, Result, Rng, Tensor};

const TORCH_SCRIPT: &str = include_str!("../scripts/bench_conv_torch.py");

/// One convolution of the network: NCHW input, O output channels, square k×k kernel.
#[derive(Clone, Copy)]
struct Conv {
    n: usize,
    c: usize,
    hw: usize,
    o: usize,
    k: usize,
    stride: usize,
    pad: usize,
    /// How many times R50x1 has this convolution.
    count: usize,
}

impl Conv {
    const fn new(c: usize, hw: usize, o: usize, k: usize, stride: usize, count: usize) -> Conv {
        Conv { n: 8, c, hw, o, k, stride, pad: k / 2, count }
    }
    fn out_hw(&self) -> usize {
        (self.hw + 2 * self.pad - self.k) / self.stride + 1
    }
    fn flops(&self) -> f64 {
        2.0 * (self.n * self.o * self.c * self.k * self.k * self.out_hw() * self.out_hw()) as f64
    }
    fn label(&self) -> String {
        format!("{}→{} {}×{}/{} @{}", self.c, self.o, self.k, self.k, self.stride, self.hw)
    }
}

/// BiT-R50x1 at 128 px (bit-spec §1.4–1.7): the 7×7/2 stem on 128 px, then per stage (maps of
/// 32, 16, 8, 4 px; mid 64/128/256/512, out 256/512/1024/2048 channels) the 1×1 reduce of unit 1
/// and of units 2.., the 3×3 (stride 2 in unit 1 of stages 2–4, on the larger map), the 1×1
/// expand, and the 1×1 projection shortcut (stride 2 in stages 2–4). Counts sum to 53.
const R50X1_128: [Conv; 23] = [
    Conv::new(3, 128, 64, 7, 2, 1),
    // stage 1 (32 px): unit 1 reduce, 3×3 ×3, expand ×3 + projection (same shape), reduce ×2
    Conv::new(64, 32, 64, 1, 1, 1),
    Conv::new(64, 32, 64, 3, 1, 3),
    Conv::new(64, 32, 256, 1, 1, 4),
    Conv::new(256, 32, 64, 1, 1, 2),
    // stage 2 (32 → 16 px)
    Conv::new(256, 32, 128, 1, 1, 1),
    Conv::new(128, 32, 128, 3, 2, 1),
    Conv::new(256, 32, 512, 1, 2, 1),
    Conv::new(128, 16, 512, 1, 1, 4),
    Conv::new(512, 16, 128, 1, 1, 3),
    Conv::new(128, 16, 128, 3, 1, 3),
    // stage 3 (16 → 8 px)
    Conv::new(512, 16, 256, 1, 1, 1),
    Conv::new(256, 16, 256, 3, 2, 1),
    Conv::new(512, 16, 1024, 1, 2, 1),
    Conv::new(256, 8, 1024, 1, 1, 6),
    Conv::new(1024, 8, 256, 1, 1, 5),
    Conv::new(256, 8, 256, 3, 1, 5),
    // stage 4 (8 → 4 px)
    Conv::new(1024, 8, 512, 1, 1, 1),
    Conv::new(512, 8, 512, 3, 2, 1),
    Conv::new(1024, 8, 2048, 1, 2, 1),
    Conv::new(512, 4, 2048, 1, 1, 3),
    Conv::new(2048, 4, 512, 1, 1, 2),
    Conv::new(512, 4, 512, 3, 1, 2),
];

/// See [`settle`].
const SETTLE_MS: u64 = 30;

const OPS: [&str; 3] = ["fwd", "gi", "gw"];

/// PyTorch in a child process (see the script's docstring for the protocol).
struct Torch {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    info: String,
}

impl Torch {
    fn start(python: &str, threads: usize, bf16: bool) -> std::result::Result<Torch, String> {
        let mut child = Command::new(python)
            .arg("-c")
            .arg(TORCH_SCRIPT)
            .args(["--serve", "--threads", &threads.to_string()])
            .args(bf16.then_some("--bf16"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("`{python}` could not be started ({e})"))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut t = Torch { _child: child, stdin, stdout, info: String::new() };
        let first = t.read()?;
        match first.strip_prefix("info ") {
            Some(info) => t.info = info.to_string(),
            None => return Err(first),
        }
        Ok(t)
    }

    fn read(&mut self) -> std::result::Result<String, String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => Err("the torch process exited".into()),
            Ok(_) => Ok(line.trim().to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn request(&mut self, line: &str) -> std::result::Result<String, String> {
        writeln!(self.stdin, "{line}").map_err(|e| e.to_string())?;
        self.stdin.flush().map_err(|e| e.to_string())?;
        let reply = self.read()?;
        match reply.strip_prefix("error ") {
            Some(e) => Err(e.to_string()),
            None => Ok(reply),
        }
    }

    fn set_shape(&mut self, s: &Conv) -> std::result::Result<(), String> {
        let (n, c, h, o, k) = (s.n, s.c, s.hw, s.o, s.k);
        self.request(&format!("shape {n} {c} {h} {h} {o} {k} {k} {} {}", s.stride, s.pad)).map(|_| ())
    }

    fn time(&mut self, op: &str, reps: usize) -> std::result::Result<Vec<f64>, String> {
        let reply = self.request(&format!("time {op} {reps}"))?;
        let nums = reply.strip_prefix("times ").ok_or_else(|| format!("unexpected reply {reply:?}"))?;
        nums.split_whitespace().map(|t| t.parse::<f64>().map_err(|e| e.to_string())).collect()
    }
}

/// Our tensors for one shape, and one timed repetition of an op.
struct Ours {
    x: Tensor,
    w: Tensor,
    dy: Tensor,
    params: Conv2dParams,
    bf16: bool,
}

impl Ours {
    fn new(s: &Conv, bf16: bool) -> Result<Ours> {
        let mut rng = Rng::new(0);
        let x = Tensor::randn([s.n, s.c, s.hw, s.hw], 0.0, 1.0, DType::F32, Device::Cpu, &mut rng)?;
        let w = Tensor::randn([s.o, s.c, s.k, s.k], 0.0, 0.05, DType::F32, Device::Cpu, &mut rng)?;
        let dy = Tensor::randn([s.n, s.o, s.out_hw(), s.out_hw()], 0.0, 1.0, DType::F32, Device::Cpu, &mut rng)?;
        let (x, dy) = if bf16 {
            let half = |t: Tensor| t.to_dtype(DType::BF16)?.to_memory_format(MemoryFormat::ChannelsLast);
            (half(x)?, half(dy)?)
        } else {
            (x, dy)
        };
        Ok(Ours { x, w, dy, params: Conv2dParams::new(s.stride, s.pad), bf16 })
    }

    fn conv(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        if self.bf16 {
            std_conv2d(x, w, None, &self.params)
        } else {
            conv2d(x, w, None, &self.params)
        }
    }

    /// Seconds for one run of `op`. The gradients run the real backward pass on a fresh graph
    /// (built outside the timed region) in which only the differentiated input requires a grad.
    fn time(&self, op: &str) -> Result<f64> {
        if op == "fwd" {
            let _g = no_grad();
            let t = Clock::now();
            let y = self.conv(&self.x, &self.w)?;
            let dt = t.elapsed();
            drop(y);
            return Ok(dt);
        }
        let (x, w) = match op {
            "gi" => (self.x.requires_grad_(true), self.w.clone()),
            _ => (self.x.clone(), self.w.requires_grad_(true)),
        };
        let y = self.conv(&x, &w)?;
        let t = Clock::now();
        let grads = autograd::grad(&y, &self.dy)?;
        let dt = t.elapsed();
        drop(grads);
        Ok(dt)
    }
}

/// Wall time, or with `--cpu-time` the CPU time of the whole process (all threads). On a
/// machine shared with other work, CPU time leaves out the time spent waiting for a core, so
/// one-thread runs (`RAYON_NUM_THREADS=1`) measure the kernels' own speed even under load; it
/// is not a wall-clock speed and is not compared with torch's.
enum Clock {
    Wall(Instant),
    Cpu(f64),
}

impl Clock {
    fn now() -> Clock {
        if std::env::args().any(|a| a == "--cpu-time") {
            Clock::Cpu(process_cpu_seconds())
        } else {
            Clock::Wall(Instant::now())
        }
    }
    fn elapsed(&self) -> f64 {
        match self {
            Clock::Wall(t) => t.elapsed().as_secs_f64(),
            Clock::Cpu(t) => process_cpu_seconds() - t,
        }
    }
}

fn process_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Pause between our repetitions and torch's: PyTorch's OpenMP workers keep spinning on both
/// cores for some milliseconds after each op (libgomp's default spin-wait), which would slow
/// down whatever runs next; rayon's workers go to sleep quickly too. Waiting lets each side
/// start on an idle machine.
fn settle() {
    std::thread::sleep(Duration::from_millis(SETTLE_MS));
}

/// The median of the repetitions, or with `--min` their minimum (steadier when other processes
/// share the machine: interference only ever adds time).
fn summary(mut v: Vec<f64>, min: bool) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if min {
        v[0]
    } else {
        v[v.len() / 2]
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<()> {
    let reps: usize = arg("--reps").and_then(|r| r.parse().ok()).unwrap_or(7).max(1);
    let python = arg("--python").or_else(|| std::env::var("BITGRAD_PYTHON").ok()).unwrap_or_else(|| "python3".into());
    let use_min = std::env::args().any(|a| a == "--min");
    let threads = rayon::current_num_threads();
    if let Some(level) = arg("--isa") {
        let isa = bitgrad::engine::cpu::isa::parse_forced(&level).map_err(bitgrad::Error::Msg)?;
        bitgrad::engine::cpu::isa::force(Some(isa)).map_err(bitgrad::Error::Msg)?;
    }
    let active = bitgrad::engine::cpu::isa::active();
    let bf16 = std::env::args().any(|a| a == "--bf16");
    // The roof of what the convolutions run: the bf16 instruction they take here, else FMA.
    use bitgrad::ops::bf16_gemm::{amx, dot};
    let bf16_peak = bf16
        .then(|| amx::peak_gflops().map(|p| ("tdpbf16ps", p)).or_else(|| dot::peak_gflops().map(|p| ("vdpbf16ps", p))))
        .flatten();
    let (roof, peak) = match bf16_peak {
        Some((name, p)) => (name, p * threads as f64),
        None => ("FMA", bitgrad::ops::conv2d::fma_peak_gflops(active) * threads as f64),
    };
    println!(
        "cpu: {}; ISA {active} (of {} here); {roof} peak at {active}: {peak:.0} GFLOP/s on {threads} threads (measured)",
        bitgrad::engine::info::cpu_model().unwrap_or_else(|| "unknown".into()),
        bitgrad::engine::cpu::isa::detected()
    );
    let mut torch = match Torch::start(&python, threads, bf16) {
        Ok(t) => {
            println!("reference: {} via {python}", t.info);
            Some(t)
        }
        Err(e) => {
            println!("torch not found, reference skipped ({e}; set BITGRAD_PYTHON or pass --python)");
            None
        }
    };
    println!(
        "bitgrad {}, {threads} rayon threads, BiT-R50x1 convs at {} px, batch 8; {} of {reps}",
        if bf16 { "std_conv2d, bf16 channels-last activations, f32 weight" } else { "conv2d f32" },
        arg("--size").unwrap_or_else(|| "128".into()),
        if use_min { "minimum" } else { "median" }
    );
    println!("times in ms; GF/s = 2·N·O·C·kh·kw·OH·OW / time; ratio = torch time / bitgrad time\n");
    println!("{:<22} {:>2} | {:^34} | {:^34} | {:^34}", "conv", "×", "forward", "grad input", "grad weight");
    println!("{:<22} {:>2} |{}", "", "", " ours ms  GF/s torch ms  GF/s  ratio |".repeat(3));
    let mut totals = [[0.0f64; 2]; 3]; // [op][ours, torch]
    let mut worst = (f64::INFINITY, String::new());
    let only = arg("--only");
    // `--size S`: the same convolutions on an S-pixel input (maps scale by S/128).
    let size: usize = arg("--size").and_then(|v| v.parse().ok()).filter(|&v: &usize| v >= 32).unwrap_or(128);
    let shapes: Vec<Conv> = R50X1_128.iter().map(|c| Conv { hw: c.hw * size / 128, ..*c }).collect();
    for s in &shapes {
        if only.as_deref().is_some_and(|o| !s.label().contains(o)) {
            continue;
        }
        let ours = Ours::new(s, bf16)?;
        if let Some(t) = torch.as_mut() {
            if let Err(e) = t.set_shape(s) {
                println!("torch failed ({e}); reference skipped from here on");
                torch = None;
            }
        }
        let mut line = format!("{:<22} {:>2} |", s.label(), s.count);
        for (oi, op) in OPS.iter().enumerate() {
            let (mut mine, mut theirs) = (Vec::new(), Vec::new());
            for _ in 0..2 {
                ours.time(op)?;
            }
            if let Some(t) = torch.as_mut() {
                let _ = t.time(op, 2);
            }
            for _ in 0..reps {
                settle();
                mine.push(ours.time(op)?);
                if let Some(t) = torch.as_mut() {
                    settle();
                    match t.time(op, 1) {
                        Ok(v) => theirs.extend(v),
                        Err(e) => {
                            println!("torch failed ({e}); reference skipped from here on");
                            torch = None;
                        }
                    }
                }
            }
            let m = summary(mine, use_min);
            totals[oi][0] += s.count as f64 * m;
            line += &format!(" {:>7.3} {:>5.0}", m * 1e3, s.flops() / m / 1e9);
            if theirs.len() == reps {
                let tm = summary(theirs, use_min);
                totals[oi][1] += s.count as f64 * tm;
                let ratio = tm / m;
                if ratio < worst.0 {
                    worst = (ratio, format!("{} {op}", s.label()));
                }
                line += &format!(" {:>8.3} {:>5.0} {:>6.2} |", tm * 1e3, s.flops() / tm / 1e9, ratio);
            } else {
                line += &format!(" {:>8} {:>5} {:>6} |", "-", "-", "-");
            }
        }
        println!("{line}");
    }
    let flops: f64 = shapes
        .iter()
        .filter(|s| only.as_deref().is_none_or(|o| s.label().contains(o)))
        .map(|s| s.count as f64 * s.flops())
        .sum();
    println!("\nweighted total over the R50x1 convs above ({:.1} GFLOP per pass):", flops / 1e9);
    let mut all = [0.0f64; 2];
    for (oi, op) in ["forward", "grad input", "grad weight"].iter().enumerate() {
        let [o, t] = totals[oi];
        all[0] += o;
        all[1] += t;
        let vs = if t > 0.0 {
            format!("torch {:>8.2} ms ({:>5.1} GF/s), ratio {:.2}", t * 1e3, flops / t / 1e9, t / o)
        } else {
            String::new()
        };
        println!(
            "  {op:<12} ours {:>8.2} ms ({:>5.1} GF/s, {:>3.0} % of peak)  {vs}",
            o * 1e3,
            flops / o / 1e9,
            100.0 * flops / o / 1e9 / peak
        );
    }
    let vs = if all[1] > 0.0 {
        format!("torch {:>8.2} ms, ratio {:.2}", all[1] * 1e3, all[1] / all[0])
    } else {
        String::new()
    };
    println!("  {:<12} ours {:>8.2} ms                {vs}", "all three", all[0] * 1e3);
    println!("bitgrad kernels: {}", bitgrad::engine::cpu::isa::report_line());
    if torch.is_some() {
        println!("lowest per-op ratio: {:.2} ({})", worst.0, worst.1);
    }
    Ok(())
}
