//! `bitgrad bench elementwise`: memory-bound ops in GB/s, against memcpy and NumPy measured in
//! the same run.
//!
//! Each op reads one or two contiguous f32 tensors of `--mib` MiB and writes a new one; GB/s counts
//! bytes read plus bytes written (10⁹ bytes per GB). The baseline ("memcpy, fresh") is what an op
//! that allocates its output has to beat: one thread allocates a buffer exactly as the CPU ops do
//! (`strided::alloc`: zeroed, huge pages advised), copies the operand into it with
//! `copy_from_slice` (a memcpy) and frees it. For context: the same on all rayon threads in the
//! ops' chunks; `slice::to_vec` (plain malloc, no huge-page advice); and a copy into a buffer
//! already written once, which has no page faults at all.

use std::cell::RefCell;

use bitgrad::engine::cpu::strided::{alloc, CHUNK};
use bitgrad::{DType, Device, Rng, Tensor};
use rayon::prelude::*;

use super::timing::{consume, measure, summarise, Case};
use super::{opt, print_footer, print_header, start_reference, Common};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: Common,
    /// Size of each operand, in MiB (f32, so 262144 elements per MiB).
    #[arg(long, default_value_t = 64, value_parser = super::positive)]
    mib: usize,
}

/// A copy of `src` in a fresh buffer allocated as every CPU op allocates its output
/// (`strided::alloc`), by one thread, or by all in the ops' chunks.
fn copy_fresh(src: &[f32], parallel: bool) -> Vec<f32> {
    let mut out = alloc::<f32>(src.len());
    if parallel {
        out.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(d, s)| d.copy_from_slice(s));
    } else {
        out.copy_from_slice(src);
    }
    out
}

pub fn run(args: Args) -> bitgrad::Result<()> {
    let c = &args.common;
    let n = args.mib << 18;
    let size = n * 4;
    print_header(&format!("bitgrad bench elementwise: f32, {} MiB operands ({n} elements)", args.mib), c);
    let mut reference = start_reference(c);

    let mut rng = Rng::new(0);
    let a = Tensor::randn([n], 0.0, 1.0, DType::F32, Device::Cpu, &mut rng)?;
    let b = Tensor::randn([n], 0.0, 1.0, DType::F32, Device::Cpu, &mut rng)?;
    let (x, y) = (a.to_vec::<f32>()?, b.to_vec::<f32>()?);
    // The engine must compute the right thing before its speed means anything.
    let ok = a.add(&b)?.to_vec::<f32>()?.iter().zip(&x).zip(&y).all(|((r, p), q)| *r == p + q)
        && a.mul(&b)?.to_vec::<f32>()?.iter().zip(&x).zip(&y).all(|((r, p), q)| *r == p * q)
        && a.relu()?.to_vec::<f32>()?.iter().zip(&x).all(|(r, p)| *r == p.max(0.0));
    if !ok {
        return Err(bitgrad::Error::Msg("elementwise results differ from plain Rust".into()));
    }
    let written = RefCell::new(vec![1.0f32; n]); // written once, so its pages exist before timing

    let threads = rayon::current_num_threads();
    let numpy = [("n", n)];
    // (bytes read + written, case); the first row is the baseline.
    let rows = [
        (2 * size, Case::ours("memcpy, fresh", || consume(copy_fresh(&x, false)))),
        (2 * size, Case::ours(format!("memcpy, fresh, {threads} thr"), || consume(copy_fresh(&x, true)))),
        (2 * size, Case::ours("memcpy, to_vec", || consume(x.to_vec()))),
        (2 * size, Case::ours("memcpy, written", || written.borrow_mut().copy_from_slice(&x))),
        (3 * size, Case::ours("add", || consume(a.add(&b))).with_numpy("add", &numpy)),
        (3 * size, Case::ours("mul", || consume(a.mul(&b))).with_numpy("mul", &numpy)),
        (2 * size, Case::ours("relu", || consume(a.relu())).with_numpy("relu", &numpy)),
    ];
    let (bytes, cases): (Vec<usize>, Vec<Case>) = rows.into_iter().unzip();
    let timings = measure(c, &mut reference, &cases);

    let gbs = |bytes: usize, t: f64| bytes as f64 / t / 1e9;
    let ours: Vec<_> = timings.iter().map(|t| summarise(&t.ours, c.max_wait).expect("bitgrad always runs")).collect();
    let memcpy_gbs = gbs(bytes[0], ours[0].median);
    println!();
    println!(
        "{:<20} {:>5} {:>10} {:>6} {:>6} {:>6} {:>7} {:>9} {:>6} {:>6} {:>7}",
        "op", "MiB", "bitgrad ms", "GB/s", "best", "clean", "÷memcpy", "numpy ms", "GB/s", "clean", "÷numpy"
    );
    for (((case, &bytes), t), s) in cases.iter().zip(&bytes).zip(&timings).zip(&ours) {
        let np = summarise(&t.numpy, c.max_wait);
        println!(
            "{:<20} {:>5} {:>10.2} {:>6.2} {:>6.2} {:>6} {:>7.2} {:>9} {:>6} {:>6} {:>7}",
            case.name,
            bytes >> 20,
            s.median * 1e3,
            gbs(bytes, s.median),
            gbs(bytes, s.best),
            s.clean_label(c.reps),
            gbs(bytes, s.median) / memcpy_gbs,
            opt(np.map(|n| n.median * 1e3), 2),
            opt(np.map(|n| gbs(bytes, n.median)), 2),
            np.map_or_else(|| "-".into(), |n| n.clean_label(c.reps)),
            opt(np.map(|n| n.median / s.median), 2)
        );
    }
    println!();
    println!("ms, GB/s: median of the clean runs; best: fastest run; clean: clean/all timed runs (* fewer");
    println!("clean than --reps). MiB: bytes read + written per run; GB/s = 10⁹ bytes per second.");
    println!("÷memcpy = GB/s ÷ median GB/s of \"memcpy, fresh\" (target ≥ 0.7 for the ops). memcpy rows: one");
    println!("thread copies into a fresh buffer allocated like an op's output (zeroed, huge pages advised)");
    println!("and frees it; \"{threads} thr\": the same on all threads; to_vec: plain malloc (4 KiB pages);");
    println!("written: into a buffer whose pages already exist. ÷numpy = numpy time ÷ bitgrad time.");
    print_footer();
    Ok(())
}
