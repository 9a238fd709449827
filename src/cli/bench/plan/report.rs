//! The plan as Markdown tables (so it can go into docs/kernels.md as printed): assumptions, the
//! GEMMs grouped by identical problem, the memory-bound ops, and where the step's time goes.

use std::collections::BTreeMap;

use super::gemm::{Pass, NEAR_FASTEST, TILES};
use super::{Plan, Row};

fn us(s: f64) -> String {
    format!("{:.1}", s * 1e6)
}

fn pct(x: f64) -> String {
    format!("{:.0} %", x * 100.0)
}

/// Which part of the network a layer belongs to: "stem", "stage 1" … "stage 4", "head".
fn part(layer: &str) -> String {
    match layer.strip_prefix("stages.").and_then(|s| s.split('.').next()).and_then(|i| i.parse::<usize>().ok()) {
        Some(i) => format!("stage {}", i + 1),
        None => layer.split('.').next().unwrap_or(layer).to_string(),
    }
}

/// Rows of one pass with the same problem merged: (first layer, count, row).
fn grouped(rows: &[Row]) -> Vec<(String, usize, &Row)> {
    let mut out: Vec<(String, usize, &Row)> = Vec::new();
    for r in rows {
        let g = &r.gemm;
        match out.iter_mut().find(|(_, _, o)| {
            (o.gemm.pass, o.gemm.m, o.gemm.n, o.gemm.k, o.gemm.phase) == (g.pass, g.m, g.n, g.k, g.phase)
        }) {
            Some(e) => e.1 += 1,
            None => out.push((r.layer.clone(), 1, r)),
        }
    }
    out
}

pub fn print(plan: &Plan) {
    let a = &plan.args;
    let g = &a.gpu;
    println!("# bf16 tensor-core training step plan: {}, batch {}, {} px (estimate)", a.model, a.batch, a.size);
    println!();
    println!(
        "GPU model: {} SMs, dense bf16 tensor peak {} TFLOP/s × mma.sync share {} = {:.0} TFLOP/s, HBM {} TB/s",
        g.sms,
        g.tensor_tflops,
        g.mma_fraction,
        g.tensor_tflops * g.mma_fraction,
        g.hbm_tbs
    );
    println!("(defaults: H100 SXM5; sources in src/cli/bench/plan/spec.rs). Nothing here is measured.");
    let tiles: Vec<String> =
        TILES.iter().map(|t| format!("{} ({} KiB smem)", t.label(), t.smem_bytes() / 1024)).collect();
    println!(
        "Tiles BM×BN×BK/stages: {}. Rule: of the (tile, split-K) within {:.0} % of the least estimated time, the least \
         padded work, then the largest tile, then the smallest split (split-K for wgrad only).",
        tiles.join(", "),
        (NEAR_FASTEST - 1.0) * 100.0
    );
    println!(
        "Time per GEMM = max(⌈CTAs/SMs⌉ × padded CTA FLOP ÷ per-SM mma.sync rate, min HBM bytes ÷ HBM bandwidth)."
    );
    println!();
    println!("## GEMMs (identical problems merged; µs each)");
    println!();
    println!("| pass | layer (first of ×n) | ×n | M | N | K | tile | split | grid | waves | wave eff | useful | GFLOP | µs | bound |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |");
    for (layer, count, r) in grouped(&plan.rows) {
        let p = &r.priced;
        let layer = match r.gemm.phase {
            Some((ph, pw)) => format!("{layer} (phase {ph},{pw})"),
            None => layer,
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {}×{}×{} | {:.2} | {} | {} | {:.2} | {} | {} |",
            r.gemm.pass.name(),
            layer,
            count,
            r.gemm.m,
            r.gemm.n,
            r.gemm.k,
            p.tile.label(),
            p.split,
            p.grid[0],
            p.grid[1],
            p.grid[2],
            p.waves,
            pct(p.wave_eff),
            pct(p.useful),
            p.flop / 1e9,
            us(p.time()),
            if p.t_compute >= p.t_memory { "mma" } else { "HBM" }
        );
    }
    println!();
    println!("## Memory-bound ops at the HBM roof");
    println!();
    println!("| op | instances | MB | µs |");
    println!("| --- | ---: | ---: | ---: |");
    let bw = g.hbm_bytes_per_s();
    for m in &plan.mem {
        println!("| {} | {} | {:.1} | {} |", m.name, m.count, m.bytes / 1e6, us(m.bytes / bw));
    }
    println!();
    print_totals(plan);
}

fn print_totals(plan: &Plan) {
    let a = &plan.args;
    let rate = a.gpu.tensor_tflops * 1e12 * a.gpu.mma_fraction;
    let step = plan.step_time();
    let flop: f64 = plan.rows.iter().map(|r| r.priced.flop).sum();
    println!("## Where the time goes");
    println!();
    println!("| part | GFLOP | µs | share of step |");
    println!("| --- | ---: | ---: | ---: |");
    let mut by_pass: BTreeMap<Pass, (f64, f64)> = BTreeMap::new();
    let mut by_part: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for r in &plan.rows {
        let e = by_pass.entry(r.gemm.pass).or_default();
        (e.0, e.1) = (e.0 + r.priced.flop, e.1 + r.priced.time());
        let e = by_part.entry(part(&r.layer)).or_default();
        (e.0, e.1) = (e.0 + r.priced.flop, e.1 + r.priced.time());
    }
    for (pass, (f, t)) in &by_pass {
        println!("| {} GEMMs | {:.1} | {} | {} |", pass.name(), f / 1e9, us(*t), pct(t / step));
    }
    for (part, (f, t)) in &by_part {
        println!("| GEMMs of {part} | {:.1} | {} | {} |", f / 1e9, us(*t), pct(t / step));
    }
    println!("| memory-bound ops | - | {} | {} |", us(plan.mem_time()), pct(plan.mem_time() / step));
    println!();
    println!(
        "GEMMs: {:.1} GFLOP in {} µs; at the mma.sync rate with no wave or padding loss {} µs (efficiency {}).",
        flop / 1e9,
        us(plan.gemm_time()),
        us(flop / rate),
        pct(flop / rate / plan.gemm_time())
    );
    println!(
        "Estimated step: {} µs = {} GEMMs + {} memory-bound ops → at most {:.0} img/s (an upper bound: no launch gaps, no overlap assumed).",
        us(step),
        us(plan.gemm_time()),
        us(plan.mem_time()),
        plan.images_per_s()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_the_network() {
        assert_eq!(part("stem.conv"), "stem");
        assert_eq!(part("stages.0.blocks.2.conv1"), "stage 1");
        assert_eq!(part("stages.3.blocks.0.downsample.conv"), "stage 4");
        assert_eq!(part("head"), "head");
    }
}
