//! `bitgrad bench gpu`: what a GPU device does for the memory-bound ops and GEMM, with PyTorch on
//! the same GPU in the same run (`scripts/bench_gpu_torch.py`) when it is installed.
//!
//! (a) device-to-device copy of 256 MiB, the roof for elementwise ops; (b) `add` and `relu` on
//! 64 Mi f32 through `Tensor` ops, in GB/s and as a fraction of the copy; (c) `sum_all` over the
//! same; (d) f32 GEMM 4096³ through `GpuRuntime::gemm` (cuBLAS, TF32 off) in TFLOP/s.
//!
//! Method: GPU work is asynchronous, so each measurement is a warm-up, then `--rounds` batches of
//! `--reps` runs between two `synchronize()` calls; the time is the median batch mean. Every op
//! allocates its result (through the caching allocator), as in a real step. `--device emu` runs
//! small sizes as a smoke test of the same code path.

use std::time::Instant;

use bitgrad::engine::gpu::{self, GemmArgs, GemmDType, GpuRuntime, Op};
use bitgrad::{DType, Device, Tensor};

use super::json::{self, Value};

#[derive(clap::Args)]
pub struct Args {
    /// Print the bf16 tensor-core plan of a model's training step instead (estimates; needs no
    /// GPU): per-convolution GEMMs, tiles, waves, time at the mma.sync rate, memory-bound ops.
    #[arg(long)]
    plan: bool,
    #[command(flatten)]
    plan_args: super::plan::PlanArgs,
    /// The GPU device: cuda, cuda:N, or emu (emu: small sizes, a smoke test).
    #[arg(long, default_value = "cuda")]
    device: String,
    /// Print one JSON line instead of the table.
    #[arg(long)]
    json: bool,
    /// Runs per timed batch.
    #[arg(long, default_value_t = 20, value_parser = super::positive)]
    reps: usize,
    /// Timed batches; the median batch is reported.
    #[arg(long, default_value_t = 5, value_parser = super::positive)]
    rounds: usize,
    /// Do not run the PyTorch comparison.
    #[arg(long)]
    no_reference: bool,
    /// The small sizes of --device emu on any device (a smoke test, e.g. on the CUDA shim).
    #[arg(long)]
    small: bool,
    /// The Python with torch [default: $BITGRAD_PYTHON, else python3].
    #[arg(long)]
    python: Option<String>,
}

/// Problem sizes: copy bytes, elementwise elements, GEMM side.
struct Sizes {
    copy_bytes: usize,
    n: usize,
    gemm: usize,
}

/// One reported number.
struct Row {
    key: &'static str,
    label: String,
    value: f64,
    unit: &'static str,
}

const SCRIPT: &str = include_str!("../../../scripts/bench_gpu_torch.py");

/// Mean seconds per run of `f`: warm-up, then the median over `rounds` synchronized batches.
fn timed(rt: &dyn GpuRuntime, reps: usize, rounds: usize, f: &dyn Fn() -> bitgrad::Result<()>) -> bitgrad::Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    rt.synchronize()?;
    let mut means = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..reps {
            f()?;
        }
        rt.synchronize()?;
        means.push(t.elapsed().as_secs_f64() / reps as f64);
    }
    Ok(super::timing::median(&means))
}

fn measure(device: Device, rt: &std::sync::Arc<dyn GpuRuntime>, s: &Sizes, a: &Args) -> bitgrad::Result<Vec<Row>> {
    let (reps, rounds) = (a.reps, a.rounds);
    let mut rows = Vec::new();

    let src = rt.alloc_zeroed(s.copy_bytes)?;
    let dst = rt.alloc(s.copy_bytes)?;
    let t = timed(rt.as_ref(), reps, rounds, &|| rt.dtod(src.ptr(), dst.ptr(), s.copy_bytes))?;
    let copy = 2.0 * s.copy_bytes as f64 / t / 1e9;
    rows.push(Row {
        key: "copy_gbs",
        label: format!("copy d2d {} MiB", s.copy_bytes >> 20),
        value: copy,
        unit: "GB/s",
    });
    drop((src, dst));

    let x = Tensor::zeros([s.n], DType::F32, device)?;
    let y = Tensor::zeros([s.n], DType::F32, device)?;
    let bytes = (s.n * 4) as f64;
    let t = timed(rt.as_ref(), reps, rounds, &|| x.add(&y).map(drop))?;
    rows.push(Row {
        key: "add_gbs",
        label: format!("add f32 {} Mi", s.n >> 20),
        value: 3.0 * bytes / t / 1e9,
        unit: "GB/s",
    });
    let t = timed(rt.as_ref(), reps, rounds, &|| x.relu().map(drop))?;
    rows.push(Row {
        key: "relu_gbs",
        label: format!("relu f32 {} Mi", s.n >> 20),
        value: 2.0 * bytes / t / 1e9,
        unit: "GB/s",
    });
    let t = timed(rt.as_ref(), reps, rounds, &|| x.sum_all().map(drop))?;
    rows.push(Row {
        key: "sum_gbs",
        label: format!("sum_all f32 {} Mi", s.n >> 20),
        value: bytes / t / 1e9,
        unit: "GB/s",
    });
    drop((x, y));

    let n = s.gemm;
    let (ga, gb, gc) = (rt.alloc_zeroed(n * n * 4)?, rt.alloc_zeroed(n * n * 4)?, rt.alloc(n * n * 4)?);
    let g = GemmArgs {
        dtype: GemmDType::F32,
        op_a: Op::N,
        op_b: Op::N,
        m: n,
        n,
        k: n,
        alpha: 1.0,
        a: ga.ptr(),
        lda: n,
        stride_a: 0,
        b: gb.ptr(),
        ldb: n,
        stride_b: 0,
        beta: 0.0,
        c: gc.ptr(),
        ldc: n,
        stride_c: 0,
        batch: 1,
    };
    let t = timed(rt.as_ref(), reps.div_ceil(4), rounds, &|| rt.gemm(&g))?;
    rows.push(Row {
        key: "gemm_tflops",
        label: format!("gemm f32 {n}³"),
        value: 2.0 * (n as f64).powi(3) / t / 1e12,
        unit: "TFLOP/s",
    });
    Ok(rows)
}

/// PyTorch's numbers for the same sizes, or why there are none.
fn torch(a: &Args, s: &Sizes, index: usize) -> Result<json::Object, String> {
    let python = a.python.clone().or_else(|| std::env::var("BITGRAD_PYTHON").ok()).unwrap_or_else(|| "python3".into());
    let out = std::process::Command::new(&python)
        .args(["-c", SCRIPT, "--copy-mib"])
        .arg((s.copy_bytes >> 20).to_string())
        .args(["--n", &s.n.to_string(), "--gemm", &s.gemm.to_string(), "--device", &index.to_string()])
        .args(["--reps", &a.reps.to_string(), "--rounds", &a.rounds.to_string()])
        .output()
        .map_err(|e| format!("`{python}` could not be started ({e})"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().ok_or_else(|| format!("`{python}` printed nothing"))?;
    let obj = json::parse(line)?;
    if obj.get("torch") == Some(&Value::Bool(true)) {
        Ok(obj)
    } else {
        match obj.get("error") {
            Some(Value::Str(e)) => Err(e.clone()),
            _ => Err("no torch".into()),
        }
    }
}

pub fn run(a: Args) -> bitgrad::Result<()> {
    if a.plan {
        return super::plan::run(&a.plan_args);
    }
    let device: Device = a.device.parse()?;
    let sizes = match device {
        Device::Cuda(_) | Device::Emu if a.small => Sizes { copy_bytes: 4 << 20, n: 1 << 20, gemm: 256 },
        Device::Cuda(_) => Sizes { copy_bytes: 256 << 20, n: 64 << 20, gemm: 4096 },
        Device::Emu => Sizes { copy_bytes: 4 << 20, n: 1 << 20, gemm: 256 },
        Device::Cpu => return Err(bitgrad::Error::Msg("bench gpu: --device must be cuda, cuda:N or emu".into())),
    };
    let rt = gpu::runtime(device)?;
    if !a.json {
        println!("bitgrad bench gpu on {device}: {}", rt.describe());
        println!(
            "method:    3 warm-up runs, then {} batches of {} runs between synchronize(); median batch",
            a.rounds, a.reps
        );
    }
    let rows = measure(device, &rt, &sizes, &a)?;
    let reference = match (device, a.no_reference) {
        (_, true) => Err("--no-reference".to_string()),
        (Device::Cuda(i), false) => torch(&a, &sizes, i),
        _ => Err("PyTorch runs only for --device cuda".to_string()),
    };
    let theirs = |key: &str| match &reference {
        Ok(o) => match o.get(key) {
            Some(Value::Num(v)) => Some(*v),
            _ => None,
        },
        Err(_) => None,
    };
    let copy = rows[0].value;
    if a.json {
        let mut fields = vec![format!("\"device\": \"{device}\"")];
        for r in &rows {
            fields.push(format!("\"{}\": {:.4}", r.key, r.value));
            if let Some(t) = theirs(r.key) {
                fields.push(format!("\"torch_{}\": {t:.4}", r.key));
            }
        }
        if let Err(why) = &reference {
            fields.push(format!("\"torch_skipped\": \"{}\"", why.replace('\\', "\\\\").replace('"', "\\\"")));
        }
        println!("{{{}}}", fields.join(", "));
        return Ok(());
    }
    match &reference {
        Ok(o) => match o.get("torch_version") {
            Some(Value::Str(v)) => println!("reference: PyTorch {v} on the same GPU (TF32 off)"),
            _ => println!("reference: PyTorch on the same GPU (TF32 off)"),
        },
        Err(why) => println!("reference: PyTorch skipped: {why}"),
    }
    println!();
    println!("{:<22} {:>10} {:<8} {:>7} {:>10} {:>8}", "measurement", "bitgrad", "unit", "÷copy", "torch", "÷torch");
    for r in &rows {
        let of_copy =
            if r.unit == "GB/s" && r.key != "copy_gbs" { format!("{:.2}", r.value / copy) } else { "-".into() };
        let t = theirs(r.key);
        println!(
            "{:<22} {:>10.2} {:<8} {:>7} {:>10} {:>8}",
            r.label,
            r.value,
            r.unit,
            of_copy,
            super::opt(t, 2),
            super::opt(t.map(|t| r.value / t), 2)
        );
    }
    println!();
    println!("GB/s = 10⁹ bytes read + written per second; ÷copy = fraction of the device-to-device copy;");
    println!("÷torch = bitgrad ÷ PyTorch (> 1: bitgrad faster). GEMM: 2·n³ FLOP, f32 without TF32.");
    Ok(())
}
