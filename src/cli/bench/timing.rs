//! Timing on a shared machine.
//!
//! Other processes can take a core in the middle of a run, and on a 2-core machine that halves a
//! parallel kernel's speed for that run. Linux reports exactly how long each thread was ready to
//! run but waited for a CPU: the second field of `/proc/self/task/*/schedstat` (run delay, ns).
//! Every timed run, bitgrad's and NumPy's alike, records how much that wait grew over all threads
//! of its process; a run is *clean* when it grew by at most `--max-wait` of the run's duration.
//! The bench keeps going, round after round, until every case has `--reps` clean runs in each
//! implementation (or `--max-rounds` is reached), and summarises the clean runs.

use std::time::{Duration, Instant};

use super::reference::Reference;
use super::Common;

/// One timed run.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub secs: f64,
    /// Microseconds the process's threads waited for a CPU during the run, when Linux reports it.
    pub wait_us: Option<f64>,
}

impl Run {
    fn clean(&self, max_wait: f64) -> bool {
        self.wait_us.is_none_or(|w| w <= max_wait * self.secs * 1e6)
    }
}

/// Microseconds all threads of this process have spent waiting for a CPU while ready to run;
/// `None` where Linux's schedstat files are missing.
pub fn run_wait_us() -> Option<f64> {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let text = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        ns += text.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    }
    Some(ns as f64 / 1e3)
}

/// Times one call of `f` (its result is dropped inside the timed region) with its threads' wait.
pub fn time_run<R>(f: impl FnOnce() -> R) -> Run {
    let wait = run_wait_us();
    let t = Instant::now();
    drop(std::hint::black_box(f()));
    let secs = t.elapsed().as_secs_f64();
    Run { secs, wait_us: wait.zip(run_wait_us()).map(|(a, b)| b - a) }
}

/// Drops a result the optimiser must assume was used, so that computing it is not optimised away
/// (a freshly copied `Vec` that is dropped unread otherwise is: malloc, memcpy and free vanish).
pub fn consume<T>(result: T) {
    drop(std::hint::black_box(result));
}

/// One thing to time: bitgrad's run, and optionally the reference's request timed alongside it
/// (`op` and its fields rendered as JSON members, as the reference script takes them).
pub struct Case<'a> {
    pub name: String,
    pub run: Box<dyn Fn() + 'a>,
    pub numpy: Option<(&'static str, String)>,
}

impl<'a> Case<'a> {
    /// A case without a NumPy twin.
    pub fn ours(name: impl Into<String>, run: impl Fn() + 'a) -> Self {
        Case { name: name.into(), run: Box::new(run), numpy: None }
    }

    /// Times NumPy's `op` with these integer fields alongside.
    pub fn with_numpy(self, op: &'static str, fields: &[(&'static str, usize)]) -> Self {
        let json = fields.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect::<Vec<_>>().join(", ");
        self.with_reference(op, json)
    }

    /// Times the reference's `op` with these JSON members (e.g. `"model": "…", "batch": 8`).
    pub fn with_reference(self, op: &'static str, json_fields: String) -> Self {
        Case { numpy: Some((op, json_fields)), ..self }
    }
}

/// What the runs of one implementation of one case come to.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    /// Median seconds of the clean runs (of all runs when none was clean).
    pub median: f64,
    /// Fastest run.
    pub best: f64,
    pub clean: usize,
    pub total: usize,
}

impl Summary {
    /// `clean/total`, marked with `*` when fewer than `want` runs were clean.
    pub fn clean_label(&self, want: usize) -> String {
        format!("{}/{}{}", self.clean, self.total, if self.clean < want { "*" } else { "" })
    }
}

/// The timed runs of one case.
#[derive(Default)]
pub struct Timings {
    pub ours: Vec<Run>,
    pub numpy: Vec<Run>,
}

fn clean_count(runs: &[Run], max_wait: f64) -> usize {
    runs.iter().filter(|r| r.clean(max_wait)).count()
}

/// Median, best and clean count of some runs.
pub fn summarise(runs: &[Run], max_wait: f64) -> Option<Summary> {
    let clean: Vec<f64> = runs.iter().filter(|r| r.clean(max_wait)).map(|r| r.secs).collect();
    let all: Vec<f64> = runs.iter().map(|r| r.secs).collect();
    let pick = if clean.is_empty() { &all } else { &clean };
    (!all.is_empty()).then(|| Summary {
        median: median(pick),
        best: all.iter().copied().fold(f64::INFINITY, f64::min),
        clean: clean.len(),
        total: all.len(),
    })
}

/// The median (the mean of the middle two for an even count).
pub fn median(times: &[f64]) -> f64 {
    assert!(!times.is_empty(), "median of no timings");
    let mut t = times.to_vec();
    t.sort_by(f64::total_cmp);
    let h = t.len() / 2;
    if t.len() % 2 == 1 {
        t[h]
    } else {
        (t[h - 1] + t[h]) / 2.0
    }
}

/// Times every case. In each round, every case that still lacks clean runs does a block of
/// `--warmup` untimed and `--block` timed runs in bitgrad, then the same in NumPy (one request).
/// Blocks rather than single alternating runs, so each implementation runs back to back as in a
/// real loop; a pause before each block, so that the other implementation's idle threads have gone
/// to sleep (OpenBLAS's spin for about 0.1 s after a call and would take a core from bitgrad).
pub fn measure(common: &Common, reference: &mut Option<Reference>, cases: &[Case]) -> Vec<Timings> {
    let mut out: Vec<Timings> = cases.iter().map(|_| Timings::default()).collect();
    let pause = || std::thread::sleep(Duration::from_millis(common.pause_ms));
    let lacking = |runs: &[Run]| clean_count(runs, common.max_wait) < common.reps;
    for _ in 0..common.max_rounds {
        let mut busy = false;
        for (case, t) in cases.iter().zip(&mut out) {
            if lacking(&t.ours) {
                busy = true;
                pause();
                for _ in 0..common.warmup {
                    time_run(&case.run);
                }
                t.ours.extend((0..common.block).map(|_| time_run(&case.run)));
            }
            let (Some(r), Some((op, fields))) = (reference.as_mut(), &case.numpy) else { continue };
            if lacking(&t.numpy) {
                busy = true;
                pause();
                match r.time(op, fields, common.warmup, common.block) {
                    Ok(runs) => t.numpy.extend(runs),
                    Err(e) => {
                        println!("reference: {e}; reference skipped from here on");
                        *reference = None;
                    }
                }
            }
        }
        if !busy {
            break;
        }
    }
    if reference.is_none() {
        out.iter_mut().for_each(|t| t.numpy.clear());
    }
    if common.raw {
        print_raw(cases, &out, common.max_wait);
    }
    out
}

/// Every timed run, in order: milliseconds, and the threads' wait in µs (`!`: not clean).
fn print_raw(cases: &[Case], timings: &[Timings], max_wait: f64) {
    let show = |runs: &[Run]| {
        let one = |r: &Run| {
            let wait = r.wait_us.map_or("?".into(), |w| format!("{w:.0}"));
            format!("{:.2}/{wait}{}", r.secs * 1e3, if r.clean(max_wait) { "" } else { "!" })
        };
        runs.iter().map(one).collect::<Vec<_>>().join(" ")
    };
    println!();
    println!("raw runs: ms/µs waited for a CPU, ! = not clean");
    for (case, t) in cases.iter().zip(timings) {
        println!("  {} bitgrad: {}", case.name, show(&t.ours));
        if !t.numpy.is_empty() {
            println!("  {} numpy:   {}", case.name, show(&t.numpy));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn summary_uses_clean_runs() {
        let run = |secs, wait| Run { secs, wait_us: Some(wait) };
        let runs = [run(1.0, 0.0), run(3.0, 0.0), run(0.5, 1e6), run(2.0, 100.0)];
        let s = summarise(&runs, 0.01).unwrap();
        assert_eq!((s.median, s.best, s.clean, s.total), (2.0, 0.5, 3, 4));
        let dirty = [run(1.0, 1e6), run(3.0, 1e6)];
        assert_eq!(summarise(&dirty, 0.01).unwrap().median, 2.0);
        assert!(summarise(&[], 0.01).is_none());
    }
}
