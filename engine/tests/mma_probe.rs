//! The mma numerics probe: the tensor-core GEMM (`tc_gemm_bf16`: mma.sync m16n8k16 bf16 → f32)
//! on `Cuda(0)` against the emulator, on random and adversarial inputs, with the differences
//! written down. The emulator sums the products in f32, in k order, rounding every addition;
//! tensor cores sum blocks of products with truncation (docs/kernels.md), so on hardware small
//! differences are expected and recorded, not failed — the probe fails only when the device
//! cannot run the kernel or a result is off by more than the bf16 tolerance. Under the CUDA shim
//! `Cuda(0)` is the emulator and the difference must be zero.
//!
//! `scripts/gpu-check.sh` runs it (`hardware_probe`) with `BITGRAD_PROBE_DIR` set; it writes
//! `mma-probe.json` there. Without a CUDA device it skips with the reason.

use bitgrad_engine::gpu::{self, cuda, KernelArg, LaunchConfig};
use bitgrad_engine::Device;
use half::bf16;

/// One input set: its name and the A, B matrices.
struct Inputs {
    name: &'static str,
    a: Vec<bf16>,
    b: Vec<bf16>,
}

const M: usize = 256;
const N: usize = 256;
const K: usize = 512;

fn lcg(seed: u64) -> impl FnMut() -> f32 {
    let mut s = seed;
    move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn inputs() -> Vec<Inputs> {
    let mut r = lcg(1);
    let random =
        |r: &mut dyn FnMut() -> f32, n: usize| (0..n).map(|_| bf16::from_f32(r() * 2.0 - 1.0)).collect::<Vec<_>>();
    let (a, b) = (random(&mut r, M * K), random(&mut r, K * N));
    // Cancellation at mixed magnitudes: every row of A alternates ±2^e with e over a wide range,
    // B is ones, so the exact sums are small differences of large terms — where truncating
    // block sums and round-to-nearest part ways.
    let mut r2 = lcg(2);
    let adv_a: Vec<bf16> = (0..M * K)
        .map(|i| {
            let e = ((r2() * 24.0) as i32) - 12;
            let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
            bf16::from_f32(sign * 2f32.powi(e) * (1.0 + (i % 7) as f32 / 8.0))
        })
        .collect();
    let ones = vec![bf16::from_f32(1.0); K * N];
    vec![Inputs { name: "random [-1, 1)", a, b }, Inputs { name: "cancellation ±2^[-12, 12)", a: adv_a, b: ones }]
}

fn run(device: Device, a: &[bf16], b: &[bf16]) -> Vec<f32> {
    let g = bitgrad_kernels::tc::TC_GEMM_BF16;
    g.check_shape(M, N, K).unwrap();
    let rt = gpu::runtime(device).unwrap();
    let (da, db, dc) = (rt.alloc(2 * M * K).unwrap(), rt.alloc(2 * K * N).unwrap(), rt.alloc(4 * M * N).unwrap());
    rt.htod(bytemuck::cast_slice(a), da.ptr()).unwrap();
    rt.htod(bytemuck::cast_slice(b), db.ptr()).unwrap();
    let cfg = LaunchConfig { grid: g.grid(M, N), block: [g.threads, 1, 1], shared_bytes: g.smem_bytes };
    let args = [da.ptr(), db.ptr(), dc.ptr()].map(KernelArg::Ptr);
    let dims = [M, N, K].map(|d| KernelArg::I32(d as i32));
    rt.launch(g.kernel, &cfg, &[args.as_slice(), dims.as_slice()].concat()).unwrap();
    rt.synchronize().unwrap();
    let mut out = vec![0f32; M * N];
    rt.dtoh(dc.ptr(), bytemuck::cast_slice_mut(&mut out)).unwrap();
    out
}

/// Distance in units in the last place between two finite f32 values.
fn ulps(x: f32, y: f32) -> u64 {
    let key = |v: f32| {
        let b = v.to_bits() as i64;
        if b < 0x8000_0000 {
            b
        } else {
            0x8000_0000 - b
        }
    };
    (key(x) - key(y)).unsigned_abs()
}

#[test]
fn hardware_probe() {
    let Ok(rt) = gpu::runtime(Device::Cuda(0)) else {
        eprintln!("skipped: no CUDA device (the probe compares a GPU's mma with the emulator's)");
        return;
    };
    let describe = rt.describe();
    let shim = cuda::is_shim(&describe);
    let mut cases = Vec::new();
    for inp in inputs() {
        let (dev, emu) = (run(Device::Cuda(0), &inp.a, &inp.b), run(Device::Emu, &inp.a, &inp.b));
        let differing = dev.iter().zip(&emu).filter(|(d, e)| d.to_bits() != e.to_bits()).count();
        let max_ulps = dev.iter().zip(&emu).map(|(&d, &e)| ulps(d, e)).max().unwrap_or(0);
        let mut max_abs = 0f64;
        for i in 0..M * N {
            let (r, c) = (i / N, i % N);
            // Σ|a·b| bounds the error of any order of f32 summation (k additions).
            let scale: f64 = (0..K).map(|k| (inp.a[r * K + k].to_f64() * inp.b[k * N + c].to_f64()).abs()).sum();
            let diff = (dev[i] as f64 - emu[i] as f64).abs();
            max_abs = max_abs.max(diff);
            let tol = 2.0 * K as f64 * f32::EPSILON as f64 * scale;
            assert!(diff <= tol, "{}: C[{r}][{c}] device {} vs emulator {} beyond {tol:e}", inp.name, dev[i], emu[i]);
        }
        if shim {
            assert_eq!(differing, 0, "{}: on the shim Cuda(0) is the emulator", inp.name);
        }
        println!(
            "{:<28} {differing:>6} of {} elements differ, max {max_ulps} ulp, max |diff| {max_abs:e}",
            inp.name,
            M * N
        );
        cases.push(format!(
            "{{\"inputs\": \"{}\", \"elements\": {}, \"differing\": {differing}, \"max_ulps\": {max_ulps}, \"max_abs_diff\": {max_abs:e}}}",
            inp.name,
            M * N
        ));
    }
    if let Ok(dir) = std::env::var("BITGRAD_PROBE_DIR") {
        std::fs::create_dir_all(&dir).unwrap();
        let json = format!(
            "{{\"device\": {:?}, \"kernel\": \"tc_gemm_bf16\", \"m\": {M}, \"n\": {N}, \"k\": {K}, \"cases\": [{}]}}\n",
            describe,
            cases.join(", ")
        );
        std::fs::write(format!("{dir}/mma-probe.json"), json).unwrap();
    }
}
