//! A stream: a worker thread that runs the stream's work in order, asynchronously to the host.
//!
//! Work waits [`crate::config::Config::latency`] before it runs unless somebody synchronizes
//! (as a GPU's queue does, the host races ahead), so a result read before a synchronize is
//! stale, as it would be on hardware. The first failure (a kernel fault) is recorded in the
//! context's [`Sticky`] state: later work on every stream of the context is skipped and every
//! later call fails with the same status.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::ffi::Fail;

/// Work for a stream: runs on the worker, may fail like a kernel.
pub type Job = Box<dyn FnOnce() -> Result<(), Fail> + Send>;

/// A context's first asynchronous failure, shared by its streams.
#[derive(Debug, Default)]
pub struct Sticky(Mutex<Option<Fail>>);

impl Sticky {
    pub fn get(&self) -> Option<Fail> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records `f` unless a failure is already recorded.
    pub fn set(&self, f: Fail) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if s.is_none() {
            *s = Some(f);
        }
    }
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<(Instant, Job)>,
    enqueued: u64,
    done: u64,
    /// Threads waiting for the queue to drain: work then runs without the latency.
    waiters: u32,
    shutdown: bool,
}

/// One stream of one context.
pub struct Stream {
    queue: Mutex<Queue>,
    cv: Condvar,
    sticky: Arc<Sticky>,
    latency: Duration,
    quiet: bool,
}

impl Stream {
    /// A stream with its worker thread running.
    pub fn start(sticky: Arc<Sticky>, latency: Duration, quiet: bool) -> Arc<Stream> {
        let s = Arc::new(Stream { queue: Mutex::default(), cv: Condvar::new(), sticky, latency, quiet });
        let worker = s.clone();
        std::thread::Builder::new()
            .name("bitgrad-shim-stream".into())
            .spawn(move || worker.run())
            .expect("a thread for the stream");
        s
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job`; returns at once.
    pub fn enqueue(&self, job: Job) {
        let mut q = self.lock();
        q.jobs.push_back((Instant::now(), job));
        q.enqueued += 1;
        self.cv.notify_all();
    }

    /// How many jobs were queued so far (an event records this).
    pub fn enqueued(&self) -> u64 {
        self.lock().enqueued
    }

    /// Whether the first `upto` jobs have finished.
    pub fn reached(&self, upto: u64) -> bool {
        self.lock().done >= upto
    }

    /// Waits until the first `upto` jobs have finished.
    pub fn wait_for(&self, upto: u64) {
        let mut q = self.lock();
        q.waiters += 1;
        self.cv.notify_all();
        while q.done < upto {
            q = self.cv.wait(q).unwrap_or_else(|e| e.into_inner());
        }
        q.waiters -= 1;
    }

    /// Waits for everything queued so far; the context's sticky failure, if any.
    pub fn synchronize(&self) -> Result<(), Fail> {
        let upto = self.enqueued();
        self.wait_for(upto);
        self.sticky.get().map_or(Ok(()), Err)
    }

    /// Whether all queued work has finished.
    pub fn idle(&self) -> bool {
        let q = self.lock();
        q.done == q.enqueued
    }

    /// Lets the worker finish what is queued and exit.
    pub fn shutdown(&self) {
        let mut q = self.lock();
        q.shutdown = true;
        q.waiters += 1; // nobody will wait any more: run the rest now
        self.cv.notify_all();
    }

    fn run(self: Arc<Self>) {
        loop {
            let mut q = self.lock();
            let job = loop {
                match q.jobs.front() {
                    Some(&(at, _)) => {
                        let due = at + self.latency;
                        let now = Instant::now();
                        if q.waiters > 0 || now >= due {
                            break q.jobs.pop_front().map(|(_, j)| j);
                        }
                        q = self.cv.wait_timeout(q, due - now).unwrap_or_else(|e| e.into_inner()).0;
                    }
                    None if q.shutdown => return,
                    None => q = self.cv.wait(q).unwrap_or_else(|e| e.into_inner()),
                }
            };
            drop(q);
            if let Some(job) = job {
                // A context with a fault runs nothing more (as on a GPU: the context is lost).
                if self.sticky.get().is_none() {
                    if let Err(f) = job() {
                        if !self.quiet {
                            eprintln!("bitgrad CUDA shim: {}", f.msg);
                        }
                        crate::state::set_last_error(&f.msg);
                        self.sticky.set(f);
                    }
                }
            }
            let mut q = self.lock();
            q.done += 1;
            self.cv.notify_all();
        }
    }
}
