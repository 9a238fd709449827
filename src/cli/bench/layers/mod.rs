//! `bitgrad bench layers`: a model's layers one by one on a GPU device — every distinct
//! convolution's fprop, dgrad and wgrad next to cuDNN (PyTorch bf16 `channels_last`, in the same
//! run, `scripts/bench_gpu_layers_torch.py`), and GroupNorm + ReLU, weight standardization and
//! SGD as a share of the HBM roof. The layer list comes from the model's definition, as the plan
//! (`bench gpu --plan`) does. Prints Markdown tables (gpu-check.sh keeps them as a results file).
//!
//! bitgrad runs whatever kernels the op dispatches to for `--dtype` (NCHW); the memory-bound
//! ops' bytes are the minimum traffic of their passes (see the table in the output).

mod measure;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use bitgrad::engine::gpu;
use bitgrad::models::ResNetV2Config;
use bitgrad::{DType, Device, Rng};

use super::json::{self, Value};
use super::plan::net::{walk, Conv};
use measure::Timer;

#[derive(clap::Args)]
pub struct Args {
    /// The GPU device: cuda, cuda:N, or emu.
    #[arg(long, default_value = "cuda")]
    device: String,
    /// Architecture (a BiT name or a small config).
    #[arg(long, default_value = "resnetv2_50x1_bit")]
    model: String,
    #[arg(long, default_value_t = 64, value_parser = super::positive)]
    batch: usize,
    /// Input size in pixels (square).
    #[arg(long, default_value_t = 224, value_parser = super::positive)]
    size: usize,
    /// bitgrad's dtype for convs, GN and WS: f32, bf16 or f16 (SGD is always f32).
    #[arg(long, default_value = "bf16")]
    dtype: String,
    /// Runs per timed batch.
    #[arg(long, default_value_t = 10, value_parser = super::positive)]
    reps: usize,
    /// Timed batches; the median is reported.
    #[arg(long, default_value_t = 3, value_parser = super::positive)]
    rounds: usize,
    /// HBM bandwidth in TB/s for the roof [default: H100 SXM5's 3.35].
    #[arg(long, default_value_t = 3.35)]
    hbm_tbs: f64,
    /// The Python with torch [default: $BITGRAD_PYTHON, else python3].
    #[arg(long)]
    python: Option<String>,
    /// PyTorch's device: cuda (default for a Cuda device) or cpu (dry runs at tiny sizes).
    #[arg(long)]
    torch_device: Option<String>,
    /// Do not run PyTorch.
    #[arg(long)]
    no_reference: bool,
}

const SCRIPT: &str = include_str!("../../../../scripts/bench_gpu_layers_torch.py");

/// Distinct convolutions (same shape and stride) in network order, with their counts.
fn distinct(convs: &[Conv]) -> Vec<(Conv, usize)> {
    let key = |c: &Conv| (c.c, c.h, c.w, c.k, c.r, c.s, c.stride, c.pad);
    let mut out: Vec<(Conv, usize)> = Vec::new();
    for c in convs {
        match out.iter_mut().find(|(d, _)| key(d) == key(c)) {
            Some(e) => e.1 += 1,
            None => out.push((c.clone(), 1)),
        }
    }
    out
}

/// cuDNN's seconds per (fprop, dgrad, wgrad) for each of `convs`, and its description.
fn torch_convs(a: &Args, convs: &[(Conv, usize)], torch_device: &str) -> Result<(String, Vec<[f64; 3]>), String> {
    let python = a.python.clone().or_else(|| std::env::var("BITGRAD_PYTHON").ok()).unwrap_or_else(|| "python3".into());
    let mut child = Command::new(&python)
        .args(["-c", SCRIPT, "conv", "--device", torch_device])
        .args(["--reps", &a.reps.to_string(), "--rounds", &a.rounds.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("`{python}` could not be started ({e})"))?;
    {
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        for (i, (c, _)) in convs.iter().enumerate() {
            let (n, k) = (c.n, c.k);
            let req =
                format!("conv {i} {n} {} {} {} {k} {} {} {} {}\n", c.c, c.h, c.w, c.r, c.s, c.stride[0], c.pad[0]);
            // A script that stopped early (no torch) closes its stdin: its first line says why.
            if stdin.write_all(req.as_bytes()).is_err() {
                break;
            }
        }
    }
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    let info = json::parse(&lines.next().ok_or_else(|| format!("`{python}` printed nothing"))?)?;
    if info.get("torch") != Some(&Value::Bool(true)) {
        let _ = child.wait();
        return Err(match info.get("error") {
            Some(Value::Str(e)) => e.clone(),
            _ => "no torch".into(),
        });
    }
    let describe = match (info.get("torch_version"), info.get("device"), info.get("cudnn")) {
        (Some(Value::Str(v)), Some(Value::Str(d)), Some(Value::Num(c))) => format!("PyTorch {v}, cuDNN {c}, on {d}"),
        (Some(Value::Str(v)), Some(Value::Str(d)), _) => format!("PyTorch {v} on {d} (no cuDNN)"),
        _ => "PyTorch".into(),
    };
    let mut times = Vec::with_capacity(convs.len());
    for line in lines {
        let o = json::parse(&line)?;
        let num = |k: &str| match o.get(k) {
            Some(Value::Num(v)) => Ok(*v),
            _ => Err(format!("PyTorch answered {line:?}")),
        };
        times.push([num("fwd")?, num("dgrad")?, num("wgrad")?]);
    }
    let _ = child.wait();
    if times.len() != convs.len() {
        return Err(format!("PyTorch timed {} of {} convolutions", times.len(), convs.len()));
    }
    Ok((describe, times))
}

fn ms(s: f64) -> String {
    format!("{:.3}", s * 1e3)
}

pub fn run(a: Args) -> bitgrad::models::Result<()> {
    let device: Device = a.device.parse()?;
    if !device.is_gpu() {
        return Err(bitgrad::Error::Msg("bench layers: --device must be cuda, cuda:N or emu".into()).into());
    }
    let dtype: DType = match a.dtype.as_str() {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        "f16" => DType::F16,
        d => return Err(bitgrad::Error::Msg(format!("bench layers: --dtype {d:?} is not f32, bf16 or f16")).into()),
    };
    if !(a.hbm_tbs > 0.0 && a.hbm_tbs.is_finite()) {
        return Err(bitgrad::Error::Msg(format!("--hbm-tbs {} is not a positive number", a.hbm_tbs)).into());
    }
    let config = ResNetV2Config::named(&a.model, 1000)?;
    let net = walk(&config, a.batch, a.size).map_err(bitgrad::Error::Msg)?;
    let rt = gpu::runtime(device)?;
    let timer = Timer { rt: rt.as_ref(), reps: a.reps, rounds: a.rounds };
    let mut rng = Rng::new(0);
    let convs = distinct(&net.convs);

    println!("# bitgrad bench layers: {} batch {}, {} px, {} on {device}", a.model, a.batch, a.size, a.dtype);
    println!();
    println!("bitgrad: {} (NCHW; whatever kernels conv2d dispatches to for {})", rt.describe(), a.dtype);
    let torch_device = a.torch_device.clone().unwrap_or_else(|| "cuda".into());
    let reference = match (a.no_reference, device) {
        (true, _) => Err("--no-reference".to_string()),
        (false, Device::Cuda(_)) => torch_convs(&a, &convs, &torch_device),
        (false, _) if a.torch_device.is_some() => torch_convs(&a, &convs, &torch_device),
        _ => Err("PyTorch runs with --device cuda (or with --torch-device)".to_string()),
    };
    match &reference {
        Ok((d, _)) => println!("reference: {d}, bf16 channels_last"),
        Err(why) => println!("reference: PyTorch skipped: {why}"),
    }
    println!(
        "method: 1 untimed batch, then {} batches of {} runs between synchronizations; median batch, ms per run",
        a.rounds, a.reps
    );
    println!();
    println!("## Convolutions (ms; ÷ = bitgrad time ÷ PyTorch time)");
    println!();
    println!("| layer (first of ×n) | ×n | C→K | R×S/stride | H×W | pass | GFLOP | bitgrad ms | TFLOP/s | PyTorch ms | TFLOP/s | ÷ |");
    println!("| --- | ---: | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut total = [0.0f64; 2];
    for (i, (c, count)) in convs.iter().enumerate() {
        let ours = measure::conv(&timer, c, dtype, device, &mut rng)?;
        let flop = 2.0 * (c.n * c.p * c.q * c.k * c.r * c.s * c.c) as f64;
        for (j, pass) in ["fprop", "dgrad", "wgrad"].iter().enumerate() {
            let theirs = reference.as_ref().ok().map(|(_, t)| t[i][j]);
            total[0] += ours[j] * *count as f64;
            total[1] += theirs.unwrap_or(0.0) * *count as f64;
            println!(
                "| {} | {count} | {}→{} | {}×{}/{} | {}×{} | {pass} | {:.3} | {} | {:.2} | {} | {} | {} |",
                c.name,
                c.c,
                c.k,
                c.r,
                c.s,
                c.stride[0],
                c.h,
                c.w,
                flop / 1e9,
                ms(ours[j]),
                flop / ours[j] / 1e12,
                theirs.map_or("-".into(), ms),
                theirs.map_or("-".into(), |t| format!("{:.2}", flop / t / 1e12)),
                theirs.map_or("-".into(), |t| format!("{:.2}", ours[j] / t)),
            );
        }
    }
    println!();
    let torch_total = if reference.is_ok() { format!("{} ms", ms(total[1])) } else { "-".into() };
    println!("All convolution passes of one step (×n weighted): bitgrad {} ms, PyTorch {torch_total}.", ms(total[0]));
    println!();
    memory_bound(&a, &net, &timer, dtype, device, &mut rng)?;
    Ok(())
}

/// GN + ReLU, WS and SGD as a share of the HBM roof.
fn memory_bound(
    a: &Args,
    net: &super::plan::net::Net,
    timer: &Timer,
    dtype: DType,
    device: Device,
    rng: &mut Rng,
) -> bitgrad::models::Result<()> {
    let d = dtype.size_in_bytes() as f64;
    let roof = a.hbm_tbs * 1e12;
    println!("## Memory-bound ops against the HBM roof ({} TB/s)", a.hbm_tbs);
    println!();
    println!("Bytes are the minimum of each op's passes (E elements of {} B): GN + ReLU fwd 3·E (statistics read,", d);
    println!("normalize read + write), bwd 5·E (x, dy read twice, dx written); WS fwd 3·W, bwd 5·W; SGD 20 B per f32 parameter.");
    println!();
    println!("| op | shape | ×n | MB | ms | GB/s | % of roof |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    let row = |op: &str, shape: String, count: usize, bytes: f64, t: f64| {
        println!(
            "| {op} | {shape} | {count} | {:.1} | {} | {:.0} | {:.1} % |",
            bytes / 1e6,
            ms(t),
            bytes / t / 1e9,
            100.0 * bytes / t / roof
        );
    };
    let mut sums = [(0.0f64, 0.0f64); 4];
    if let Some(groups) = net.gn_groups {
        let mut seen: Vec<(usize, usize, usize)> = Vec::new();
        for n in &net.norms {
            match seen.iter_mut().find(|s| (s.0, s.1) == (n.c, n.hw)) {
                Some(s) => s.2 += 1,
                None => seen.push((n.c, n.hw, 1)),
            }
        }
        for (c, hw, count) in seen {
            let norm = super::plan::net::Norm { name: String::new(), c, hw, elems: net.batch * c * hw };
            let [f, b] = measure::group_norm_relu(timer, &norm, net.batch, groups, dtype, device, rng)?;
            let e = norm.elems as f64 * d;
            let shape = format!("{}×{c}×{hw}", net.batch);
            row("GN + ReLU fwd", shape.clone(), count, 3.0 * e, f);
            row("GN + ReLU bwd", shape, count, 5.0 * e, b);
            sums[0] = (sums[0].0 + 3.0 * e * count as f64, sums[0].1 + f * count as f64);
            sums[1] = (sums[1].0 + 5.0 * e * count as f64, sums[1].1 + b * count as f64);
        }
    }
    // WS depends on the weight's shape alone (a stride-2 3×3 has its stride-1 siblings' weights).
    let mut weights: Vec<([usize; 4], usize)> = Vec::new();
    for c in &net.convs {
        let dims = [c.k, c.c, c.r, c.s];
        match weights.iter_mut().find(|w| w.0 == dims) {
            Some(w) => w.1 += 1,
            None => weights.push((dims, 1)),
        }
    }
    for (dims, count) in weights {
        let [f, b] = measure::weight_std_pass(timer, &dims, dtype, device, rng)?;
        let w = dims.iter().product::<usize>() as f64 * d;
        let shape = format!("{}×{}×{}×{}", dims[0], dims[1], dims[2], dims[3]);
        row("WS fwd", shape.clone(), count, 3.0 * w, f);
        row("WS bwd", shape, count, 5.0 * w, b);
        sums[2] = (sums[2].0 + 8.0 * w * count as f64, sums[2].1 + (f + b) * count as f64);
    }
    let t = measure::sgd(timer, &net.param_shapes, device, rng)?;
    let bytes = 20.0 * net.params as f64;
    row("SGD (momentum)", format!("{} tensors, {} parameters", net.param_shapes.len(), net.params), 1, bytes, t);
    sums[3] = (bytes, t);
    println!();
    for (name, (bytes, t)) in ["GN + ReLU fwd", "GN + ReLU bwd", "WS fwd + bwd", "SGD"].iter().zip(sums) {
        if t > 0.0 {
            println!(
                "{name}: {:.1} MB in {} ms per step = {:.1} % of the HBM roof",
                bytes / 1e6,
                ms(t),
                100.0 * bytes / t / roof
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r50x1_has_distinct_conv_shapes_counted() {
        let net = walk(&ResNetV2Config::named("resnetv2_50x1_bit", 1000).unwrap(), 64, 224).unwrap();
        let d = distinct(&net.convs);
        assert_eq!(d.iter().map(|(_, n)| n).sum::<usize>(), 53);
        // Stage 3's 3×3: one stride-2 (unit 1) and five stride-1 layers.
        let s3: Vec<usize> = d.iter().filter(|(c, _)| c.r == 3 && c.k == 256).map(|(_, n)| *n).collect();
        assert_eq!(s3, [1, 5]);
        assert!(d.len() < 30, "{}", d.len());
    }
}
