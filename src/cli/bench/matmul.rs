//! `bitgrad bench matmul`: f32 GFLOP/s of `Tensor::matmul` on all cores, against NumPy's matmul
//! (its BLAS, usually OpenBLAS) measured in the same run.
//!
//! The default shapes are the 1×1-convolution-sized products of a BiT ResNet at 224×224
//! (`N = 56·56 = 3136` positions). GFLOP/s counts `2·M·K·N` floating-point operations.

use bitgrad::{DType, Device, Rng, Tensor};

use super::timing::{consume, measure, summarise, Case};
use super::{opt, print_footer, print_header, start_reference, Common};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: Common,
    /// Shapes as MxKxN, comma-separated: C[M×N] = A[M×K]·B[K×N], all contiguous.
    #[arg(long, value_delimiter = ',', default_value = "64x576x3136,256x2304x3136,1024x2304x3136", value_parser = parse_shape)]
    shapes: Vec<(usize, usize, usize)>,
}

fn parse_shape(s: &str) -> Result<(usize, usize, usize), String> {
    let d: Vec<usize> = s
        .split(['x', '×'])
        .map(|p| p.trim().parse().map_err(|_| format!("bad size `{p}`")))
        .collect::<Result<_, _>>()?;
    match d[..] {
        [m, k, n] if m * k * n > 0 => Ok((m, k, n)),
        _ => Err(format!("`{s}` is not MxKxN with positive sizes")),
    }
}

/// The largest relative error of a few entries of `c = a·b` against an f64 dot product; a guard
/// against timing something that computes the wrong thing.
fn spot_check(a: &[f32], b: &[f32], c: &[f32], (m, k, n): (usize, usize, usize)) -> f64 {
    let mut rng = Rng::new(7);
    (0..16)
        .map(|_| {
            let (i, j) = (rng.below(m as u64) as usize, rng.below(n as u64) as usize);
            let want: f64 = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum();
            let scale: f64 = (0..k).map(|p| (a[i * k + p] as f64 * b[p * n + j] as f64).abs()).sum();
            (c[i * n + j] as f64 - want).abs() / scale.max(f64::MIN_POSITIVE)
        })
        .fold(0.0, f64::max)
}

pub fn run(args: Args) -> bitgrad::Result<()> {
    let c = &args.common;
    print_header("bitgrad bench matmul: f32 C[M×N] = A[M×K]·B[K×N] through Tensor::matmul", c);
    let mut reference = start_reference(c);

    let mut rng = Rng::new(0);
    let mut operands = Vec::new();
    let mut errors = Vec::new();
    for &(m, k, n) in &args.shapes {
        let a = Tensor::randn([m, k], 0.0, 1.0, DType::F32, Device::Cpu, &mut rng)?;
        let b = Tensor::randn([k, n], 0.0, 1.0, DType::F32, Device::Cpu, &mut rng)?;
        errors.push(spot_check(&a.to_vec::<f32>()?, &b.to_vec::<f32>()?, &a.matmul(&b)?.to_vec::<f32>()?, (m, k, n)));
        operands.push((a, b));
    }
    let cases: Vec<Case> = args
        .shapes
        .iter()
        .zip(&operands)
        .map(|(&(m, k, n), (a, b))| {
            Case::ours(format!("{m}×{k}×{n}"), move || consume(a.matmul(b)))
                .with_numpy("matmul", &[("m", m), ("k", k), ("n", n)])
        })
        .collect();
    let timings = measure(c, &mut reference, &cases);

    println!();
    println!(
        "{:<15} {:>10} {:>7} {:>7} {:>6} {:>9} {:>7} {:>7} {:>6} {:>6} {:>6}  check",
        "M×K×N", "bitgrad ms", "GFLOP/s", "best", "clean", "numpy ms", "GFLOP/s", "best", "clean", "ratio", "best"
    );
    for ((&(m, k, n), t), err) in args.shapes.iter().zip(&timings).zip(&errors) {
        let gflops = |secs: f64| 2.0 * (m * k * n) as f64 / secs / 1e9;
        let ours = summarise(&t.ours, c.max_wait).expect("bitgrad always runs");
        let np = summarise(&t.numpy, c.max_wait);
        println!(
            "{:<15} {:>10.2} {:>7.1} {:>7.1} {:>6} {:>9} {:>7} {:>7} {:>6} {:>6} {:>6}  {:.0e}",
            format!("{m}×{k}×{n}"),
            ours.median * 1e3,
            gflops(ours.median),
            gflops(ours.best),
            ours.clean_label(c.reps),
            opt(np.map(|s| s.median * 1e3), 2),
            opt(np.map(|s| gflops(s.median)), 1),
            opt(np.map(|s| gflops(s.best)), 1),
            np.map_or_else(|| "-".into(), |s| s.clean_label(c.reps)),
            opt(np.map(|s| s.median / ours.median), 2),
            opt(np.map(|s| s.best / ours.best), 2),
            err
        );
    }
    println!();
    println!("ms, GFLOP/s: median of the clean runs; best: fastest run; clean: clean/all timed runs (* fewer");
    println!("clean than --reps: the machine was busy). ratio = bitgrad GFLOP/s ÷ numpy GFLOP/s of the medians,");
    println!("and of the best runs (target ≥ 0.95). check: largest error of 16 entries against an f64 dot");
    println!("product, relative to the dot product of the absolute values.");
    print_footer();
    Ok(())
}
