//! `bitgrad bench forward|train`: images per second of a whole BiT model — inference forward, or
//! one training step (forward, mean cross-entropy, backward, SGD with momentum, zero_grad) —
//! against timm's same model in PyTorch measured in the same run
//! (`scripts/bench_model_torch.py`, through the same block-alternating method as the kernels).

use bitgrad::models::bit::BIT_NAMES;
use bitgrad::models::{Module, NormKind, Precision, ResNetV2, ResNetV2Config};
use bitgrad::ops::sgd::Sgd;
use bitgrad::ops::softmax_xent::{cross_entropy, Target};
use bitgrad::{no_grad, DType, Device, Rng, Tensor};

use super::reference::Kind;
use super::timing::{consume, measure, summarise, Case};
use super::{opt, print_footer, print_header, start_reference_of, Common};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: Common,
    /// Architecture (a BiT name, or resnetv2_tiny_bit / resnetv2_small_bit).
    #[arg(long, default_value = "resnetv2_50x1_bit")]
    model: String,
    /// Images per step.
    #[arg(long, default_value_t = 8, value_parser = super::positive)]
    batch: usize,
    /// Input size in pixels (square).
    #[arg(long, default_value_t = 128, value_parser = super::positive)]
    size: usize,
    /// Classes of the head.
    #[arg(long, default_value_t = 1000, value_parser = super::positive)]
    classes: usize,
    /// cpu, emu or cuda[:i] (the PyTorch reference runs on the CPU; compare on the CPU).
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// Activations in bf16 or f32 [default: bf16 on a CUDA GPU of compute capability 8.0 or
    /// newer, f32 elsewhere]; PyTorch runs under torch.autocast(bfloat16) for bf16.
    #[arg(long)]
    precision: Option<Precision>,
    /// Instead of timing against PyTorch, profile 3 steps: forward, backward (per backward op),
    /// SGD and zero_grad, in seconds per step.
    #[arg(long)]
    profile: bool,
}

/// Which whole-model benchmark.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Forward,
    Train,
}

pub fn run(mode: Mode, mut args: Args) -> bitgrad::models::Result<()> {
    let c = &mut args.common;
    // A model step takes seconds: fewer, longer blocks than the kernel benchmarks' defaults.
    if c.reps == 7 && c.block == 3 {
        (c.reps, c.block) = (5, 1);
    }
    let c = &args.common;
    let what = if mode == Mode::Forward { "forward (eval, no graph)" } else { "train step (fwd + xent + bwd + SGD)" };
    args.device.check_available()?;
    let precision = Precision::resolve(args.precision, args.device);
    print_header(
        &format!(
            "bitgrad bench {}: {} {what}, batch {}, {} px, {}",
            op(mode),
            args.model,
            args.batch,
            args.size,
            match precision {
                Precision::F32 => "f32",
                Precision::Bf16 => "bf16 activations, f32 master weights",
            }
        ),
        c,
    );
    let config = ResNetV2Config::named(&args.model, args.classes)?;
    let mut model = ResNetV2::new_in(&config, 0, DType::F32, args.device)?;
    model.set_precision(precision)?;
    model.set_training(mode == Mode::Train);
    let mut rng = Rng::new(1);
    let x = Tensor::randn([args.batch, 3, args.size, args.size], 0.0, 1.0, DType::F32, args.device, &mut rng)?;
    let labels: Vec<i64> = (0..args.batch).map(|i| (i * 7 % args.classes) as i64).collect();
    let y = Tensor::from_vec(labels, [args.batch], Device::Cpu)?.to_device(args.device)?;
    let params = model.parameters();
    let sgd = std::cell::RefCell::new(Sgd::new(0.003, 0.9, 0.0, false)?);
    println!(
        "model:     {} parameters, {:.2} GFLOP per image forward",
        config.param_count(),
        gflop_per_image(&config, args.size)
    );

    let runtime = if args.device.is_gpu() { Some(bitgrad::engine::gpu::runtime(args.device)?) } else { None };
    let step = || -> bitgrad::models::Result<()> {
        match mode {
            Mode::Forward => {
                let _g = no_grad();
                consume(model.forward(&x)?);
            }
            Mode::Train => {
                let loss = cross_entropy(&model.forward(&x)?, Target::Hard(&y), 0.0)?;
                // As the trainer does: the WS weights updated inside backward (`ws-sgd`), the
                // rest by `step`.
                let mut sgd = sgd.borrow_mut();
                sgd.update_in_backward(&params, || loss.backward())?;
                let _g = no_grad();
                sgd.step(&params)?;
                bitgrad::ops::sgd::zero_grad(&params);
            }
        }
        // GPU work is asynchronous: a step ends when the device has finished it.
        if let Some(rt) = &runtime {
            rt.synchronize()?;
        }
        Ok(())
    };
    step()?; // fail before timing, with the error, if the step cannot run
    if args.profile {
        return profile(&model, &x, &y, &params, mode);
    }
    let mut reference = start_reference_of(c, Kind::Torch);
    let mut fields = format!(
        "\"model\": \"{}\", \"batch\": {}, \"size\": {}, \"classes\": {}, \"precision\": \"{precision}\"",
        args.model, args.batch, args.size, args.classes
    );
    if !config.name().is_some_and(|n| BIT_NAMES.contains(&n)) {
        // Not registered in timm: the reference builds the same ResNetV2 from these.
        let groups = match config.norm {
            NormKind::Group { groups, .. } => groups,
            _ => 32,
        };
        fields += &format!(
            ", \"layers\": {:?}, \"channels\": {:?}, \"stem_chs\": {}, \"groups\": {groups}",
            config.layers, config.channels, config.stem_chs
        );
    }
    let cases = [Case::ours(args.model.clone(), || step().expect("the step ran once before timing"))
        .with_reference(op(mode), fields)];
    let timings = measure(c, &mut reference, &cases);

    let t = &timings[0];
    let ours = summarise(&t.ours, c.max_wait).expect("bitgrad always runs");
    let torch = summarise(&t.numpy, c.max_wait);
    let ips = |secs: f64| args.batch as f64 / secs;
    println!();
    println!(
        "{:<20} {:>10} {:>8} {:>8} {:>7} {:>10} {:>8} {:>8} {:>7} {:>6} {:>6}",
        "model", "bitgrad s", "img/s", "best", "clean", "torch s", "img/s", "best", "clean", "ratio", "best"
    );
    println!(
        "{:<20} {:>10.3} {:>8.2} {:>8.2} {:>7} {:>10} {:>8} {:>8} {:>7} {:>6} {:>6}",
        args.model,
        ours.median,
        ips(ours.median),
        ips(ours.best),
        ours.clean_label(c.reps),
        opt(torch.map(|s| s.median), 3),
        opt(torch.map(|s| ips(s.median)), 2),
        opt(torch.map(|s| ips(s.best)), 2),
        torch.map_or_else(|| "-".into(), |s| s.clean_label(c.reps)),
        opt(torch.map(|s| s.median / ours.median), 2),
        opt(torch.map(|s| s.best / ours.best), 2),
    );
    println!();
    println!("s: median seconds per step of the clean runs; best: fastest step; clean: clean/all timed steps");
    println!("(* fewer clean than --reps). ratio = bitgrad img/s ÷ torch img/s (medians; best runs). Target ≥ 1.0.");
    println!("bitgrad's CPU kernels ran with: {}", bitgrad::engine::cpu::isa::report_line());
    print_footer();
    Ok(())
}

fn op(mode: Mode) -> &'static str {
    match mode {
        Mode::Forward => "forward",
        Mode::Train => "train",
    }
}

/// Forward multiply-adds ×2 of the convolutions and the head, per image, in GFLOP.
fn gflop_per_image(c: &ResNetV2Config, size: usize) -> f64 {
    let out = |n: usize, k: usize, s: usize, p: usize| (n + 2 * p - k) / s + 1;
    let mut flops = 0.0;
    let mut conv = |cin: usize, cout: usize, k: usize, hw: usize| flops += 2.0 * (cin * cout * k * k * hw * hw) as f64;
    let stem_hw = out(size, 7, 2, 3);
    conv(c.in_chans, c.stem_chs, 7, stem_hw);
    let mut hw = out(stem_hw + 2, 3, 2, 0);
    let mut cin = c.stem_chs;
    for i in 0..4 {
        let (mid, cout) = (c.mid_chs(i), c.channels[i]);
        for j in 0..c.layers[i] {
            let stride = if j == 0 && i > 0 { 2 } else { 1 };
            let hw_out = out(hw, 3, stride, 1);
            if j == 0 {
                conv(cin, cout, 1, hw_out);
            }
            conv(cin, mid, 1, hw);
            conv(mid, mid, 3, hw_out);
            conv(mid, cout, 1, hw_out);
            (cin, hw) = (cout, hw_out);
        }
    }
    conv(cin, c.num_classes, 1, 1);
    flops / 1e9
}

/// `--profile`: three steps split into their phases, the backward per op (the averages of the
/// three; no PyTorch run).
fn profile(model: &ResNetV2, x: &Tensor, y: &Tensor, params: &[Tensor], mode: Mode) -> bitgrad::models::Result<()> {
    use bitgrad::engine::autograd::profile as prof;
    use std::time::Instant;
    const STEPS: usize = 3;
    let mut sgd = Sgd::new(0.003, 0.9, 0.0, false)?;
    let mut phases = [0.0f64; 4];
    prof::enable(true);
    for _ in 0..STEPS {
        let t = Instant::now();
        if mode == Mode::Forward {
            let _g = no_grad();
            consume(model.forward(x)?);
            phases[0] += t.elapsed().as_secs_f64();
            continue;
        }
        let loss = cross_entropy(&model.forward(x)?, Target::Hard(y), 0.0)?;
        phases[0] += t.elapsed().as_secs_f64();
        let t = Instant::now();
        sgd.update_in_backward(params, || loss.backward())?;
        phases[1] += t.elapsed().as_secs_f64();
        let _g = no_grad();
        let t = Instant::now();
        sgd.step(params)?;
        phases[2] += t.elapsed().as_secs_f64();
        let t = Instant::now();
        bitgrad::ops::sgd::zero_grad(params);
        phases[3] += t.elapsed().as_secs_f64();
    }
    prof::enable(false);
    let per = |s: f64| s / STEPS as f64 * 1e3;
    println!("\nprofile, ms per step (mean of {STEPS}):");
    // With `ws-sgd` the WS weights' updates run inside backward (in weight_std's row).
    let fused = bitgrad::ops::fusion::enabled(bitgrad::ops::fusion::Fusion::WsSgd);
    let (backward, sgd_step) =
        if fused { ("backward (+ WS weights' SGD)", "sgd step (the rest)") } else { ("backward", "sgd step") };
    for (name, s) in ["forward (+ loss)", backward, sgd_step, "zero_grad"].iter().zip(phases) {
        println!("  {name:<28} {:>9.1}", per(s));
    }
    println!("backward by op (calls per step, ms per step):");
    for (name, calls, s) in prof::report() {
        println!("  {name:<28} {:>5} {:>9.1}", calls / STEPS, per(s));
    }
    println!("bitgrad's CPU kernels ran with: {}", bitgrad::engine::cpu::isa::report_line());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ResNet-50's well-known ≈4.1 GMAC at 224 px is ≈8.2 GFLOP; BiT's R50x1 is the same
    /// network shape (pre-activation changes no FLOP count of the convs).
    #[test]
    fn r50_flops() {
        let c = ResNetV2Config::named("resnetv2_50x1_bit", 1000).unwrap();
        let g = gflop_per_image(&c, 224);
        assert!((8.0..8.4).contains(&g), "{g}");
    }
}
