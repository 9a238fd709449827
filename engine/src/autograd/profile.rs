//! An opt-in profile of backward passes: time and calls per backward op, to see where a train
//! step's backward goes (`bitgrad bench train --profile`). Off by default; when off, the only
//! cost is one relaxed atomic load per node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ON: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<Option<HashMap<&'static str, (usize, f64)>>> = Mutex::new(None);

/// Starts (or stops) collecting; starting clears what was collected.
pub fn enable(on: bool) {
    if on {
        *TABLE.lock().unwrap_or_else(|e| e.into_inner()) = Some(HashMap::new());
    }
    ON.store(on, Ordering::Relaxed);
}

/// A timer for one backward op, or `None` when profiling is off.
pub(crate) fn start() -> Option<Instant> {
    ON.load(Ordering::Relaxed).then(Instant::now)
}

/// Adds the time since `t` to `name`.
pub(crate) fn stop(t: Option<Instant>, name: &'static str) {
    if let Some(t) = t {
        let dt = t.elapsed().as_secs_f64();
        let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
        let e = table.get_or_insert_with(HashMap::new).entry(name).or_insert((0, 0.0));
        e.0 += 1;
        e.1 += dt;
    }
}

/// `(name, calls, seconds)` per backward op, slowest first.
pub fn report() -> Vec<(&'static str, usize, f64)> {
    let table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let mut v: Vec<_> = table.iter().flat_map(|m| m.iter().map(|(n, (c, s))| (*n, *c, *s))).collect();
    v.sort_by(|a, b| b.2.total_cmp(&a.2));
    v
}
