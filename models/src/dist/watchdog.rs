//! Deadlines on collectives. An engine waits for every rank; when one has died or is stuck, the
//! others would wait forever (NCCL does; MPI does when the launcher does not notice the death,
//! e.g. a process frozen rather than killed). [`Watched`] wraps a backend: a watchdog thread
//! checks the calls in flight, and a call older than the timeout ends the process with a message
//! naming the rank, the operation and the limit (exit code [`EXIT_TIMEOUT`]). A launcher then
//! sees a rank fail and stops the rest (mpirun, srun and torchrun all do).
//!
//! The timeout must cover the longest legitimate wait: a rank reaching a collective while rank 0
//! is still writing a checkpoint. PyTorch's default is the same 10 minutes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Collectives, ReduceOp};
use crate::Result;

/// The exit code of a process ended by the watchdog.
pub const EXIT_TIMEOUT: i32 = 3;
/// The default deadline of one collective.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

type InFlight = Mutex<HashMap<u64, (&'static str, Instant)>>;

/// A backend whose every call has a deadline (see the module docs).
pub struct Watched {
    inner: Arc<dyn Collectives>,
    in_flight: Arc<InFlight>,
    next_id: AtomicU64,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Watched({:?})", self.inner)
    }
}

impl Watched {
    pub fn new(inner: Arc<dyn Collectives>, timeout: Duration) -> Watched {
        let in_flight: Arc<InFlight> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (flights, stopped) = (in_flight.clone(), stop.clone());
        let (rank, world, backend) = (inner.rank(), inner.world_size(), inner.backend());
        let tick = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let thread = std::thread::Builder::new()
            .name("bitgrad-watchdog".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    let late = flights
                        .lock()
                        .map(|m| m.values().find(|(_, t0)| t0.elapsed() > timeout).copied())
                        .unwrap_or(None);
                    if let Some((op, _)) = late {
                        eprintln!(
                            "bitgrad: rank {rank} of {world}: the {backend} {op} did not complete within {} s: \
                             another rank has probably died or stopped (see its output); exiting \
                             (the limit is --dist-timeout)",
                            timeout.as_secs_f64()
                        );
                        std::process::exit(EXIT_TIMEOUT);
                    }
                }
            })
            .ok();
        Watched { inner, in_flight, next_id: AtomicU64::new(0), stop, thread }
    }

    fn watch<T>(&self, op: &'static str, f: impl FnOnce() -> T) -> T {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.in_flight.lock() {
            m.insert(id, (op, Instant::now()));
        }
        let out = f();
        if let Ok(mut m) = self.in_flight.lock() {
            m.remove(&id);
        }
        out
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Collectives for Watched {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn world_size(&self) -> usize {
        self.inner.world_size()
    }
    fn all_reduce(&self, buf: &mut [f32], op: ReduceOp) -> Result<()> {
        self.watch("all-reduce", || self.inner.all_reduce(buf, op))
    }
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        self.watch("broadcast", || self.inner.broadcast(buf, root))
    }
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()> {
        self.watch("broadcast", || self.inner.broadcast_bytes(buf, root))
    }
    fn barrier(&self) -> Result<()> {
        self.watch("barrier", || self.inner.barrier())
    }
}
