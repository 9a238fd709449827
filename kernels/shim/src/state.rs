//! The driver's state: devices, primary contexts, the current context of each thread,
//! allocations, modules, functions, streams, events and cuBLAS handles.
//!
//! One mutex guards it. Nothing blocks while holding it: a synchronize first takes the streams
//! it needs (`Arc`s) and waits after releasing the lock, since stream workers report faults
//! without the lock.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bitgrad_kernels::emu;

use crate::config::Config;
use crate::ffi::*;
use crate::image::Image;
use crate::stream::{Sticky, Stream};

pub struct Context {
    pub device: usize,
    pub refcount: u32,
    pub sticky: Arc<Sticky>,
    /// The NULL stream's stand-in.
    pub default_stream: u64,
}

pub struct Alloc {
    pub ctx: u64,
    pub device: usize,
    pub len: usize,
    /// What the allocation counts against the device's memory (rounded to 256 B).
    pub footprint: usize,
    pub buf: emu::Buffer,
}

pub struct Module {
    pub ctx: u64,
    pub image: Arc<Image>,
}

pub struct Function {
    pub module: u64,
    pub ctx: u64,
    pub name: String,
    /// Dynamic shared memory allowed so far (`cuFuncSetAttribute`).
    pub max_dynamic_shared: u32,
}

pub struct Event {
    pub ctx: u64,
    /// (stream, jobs queued on it when recorded); `None` until recorded.
    pub recorded: Option<(Arc<Stream>, u64)>,
    pub time: Arc<Mutex<Option<std::time::Instant>>>,
}

pub struct BlasHandle {
    pub ctx: u64,
    /// 0: the context's default stream.
    pub stream: u64,
    pub math_mode: i32,
}

pub struct Driver {
    pub cfg: Config,
    pub initialized: bool,
    next_id: u64,
    pub contexts: HashMap<u64, Context>,
    /// Each device's primary context, while retained.
    pub primary: Vec<Option<u64>>,
    pub allocs: BTreeMap<u64, Alloc>,
    /// Freed buffers, kept inaccessible for a while so that a use after free faults.
    quarantine: VecDeque<emu::Buffer>,
    pub used: Vec<u64>,
    pub modules: HashMap<u64, Module>,
    pub functions: HashMap<u64, Function>,
    pub streams: HashMap<u64, (u64, Arc<Stream>)>,
    pub events: HashMap<u64, Event>,
    pub blas: HashMap<u64, BlasHandle>,
}

/// How many freed buffers stay revoked before their address range is returned to the system.
const QUARANTINE: usize = 4096;

impl Driver {
    fn new() -> Driver {
        let cfg = Config::from_env();
        let n = cfg.devices;
        Driver {
            cfg,
            initialized: false,
            next_id: 1,
            contexts: HashMap::new(),
            primary: vec![None; n],
            allocs: BTreeMap::new(),
            quarantine: VecDeque::new(),
            used: vec![0; n],
            modules: HashMap::new(),
            functions: HashMap::new(),
            streams: HashMap::new(),
            events: HashMap::new(),
            blas: HashMap::new(),
        }
    }

    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn check_init(&self) -> Res<()> {
        if self.initialized {
            Ok(())
        } else {
            Err(Fail::new(CUDA_ERROR_NOT_INITIALIZED, "cuInit has not been called"))
        }
    }

    pub fn device(&self, dev: CUdevice) -> Res<usize> {
        self.check_init()?;
        if dev < 0 || dev as usize >= self.cfg.devices {
            return Err(Fail::new(
                CUDA_ERROR_INVALID_DEVICE,
                format!("device {dev} does not exist ({} emulated, BITGRAD_SHIM_DEVICES)", self.cfg.devices),
            ));
        }
        Ok(dev as usize)
    }

    /// The calling thread's current context, live and not broken by a fault.
    pub fn current(&self, call: &str) -> Res<u64> {
        self.check_init()?;
        let ctx = CURRENT.with(Cell::get);
        let Some(c) = (ctx != 0).then(|| self.contexts.get(&ctx)).flatten() else {
            return Err(Fail::new(
                CUDA_ERROR_INVALID_CONTEXT,
                format!(
                    "{call}: no current context on thread {:?} — every thread that calls the driver must make a \
                     context current first (cuCtxSetCurrent), as on a GPU",
                    std::thread::current().name().unwrap_or("unnamed")
                ),
            ));
        };
        if let Some(f) = c.sticky.get() {
            return Err(Fail { msg: format!("{call}: the context is broken by an earlier fault: {}", f.msg), ..f });
        }
        Ok(ctx)
    }

    /// The stream `h` of context `ctx` (NULL: the context's default stream).
    pub fn stream(&self, ctx: u64, h: Handle, call: &str) -> Res<Arc<Stream>> {
        let id = if h.is_null() {
            self.contexts[&ctx].default_stream
        } else {
            id_of(h, Kind::Stream)
                .ok_or_else(|| Fail::new(CUDA_ERROR_INVALID_HANDLE, format!("{call}: {h:?} is not a stream")))?
        };
        match self.streams.get(&id) {
            Some((c, s)) if *c == ctx => Ok(s.clone()),
            Some(_) => {
                Err(Fail::new(CUDA_ERROR_INVALID_HANDLE, format!("{call}: the stream belongs to another context")))
            }
            None => {
                Err(Fail::new(CUDA_ERROR_INVALID_HANDLE, format!("{call}: stream {h:?} does not exist (destroyed?)")))
            }
        }
    }

    /// Every stream of `ctx`, to wait for them all.
    pub fn ctx_streams(&self, ctx: u64) -> Vec<Arc<Stream>> {
        self.streams.values().filter(|(c, _)| *c == ctx).map(|(_, s)| s.clone()).collect()
    }

    /// The host address of `[ptr, ptr + bytes)` if it lies inside one live allocation of `ctx`.
    pub fn range(&self, ctx: u64, ptr: CUdeviceptr, bytes: usize, what: &str) -> Res<usize> {
        let bad = |why: String| Err(Fail::new(CUDA_ERROR_INVALID_VALUE, format!("{what}: {why}")));
        match self.allocs.range(..=ptr).next_back() {
            Some((&base, a)) if ptr < base + a.len as u64 => {
                if ptr + bytes as u64 > base + a.len as u64 {
                    bad(format!(
                        "{bytes} bytes at {ptr:#x} run {} bytes past the end of a {}-byte allocation",
                        ptr + bytes as u64 - base - a.len as u64,
                        a.len
                    ))
                } else if a.ctx != ctx {
                    bad(format!("{ptr:#x} belongs to another context"))
                } else {
                    Ok(ptr as usize)
                }
            }
            _ => bad(format!("{ptr:#x} is not device memory (never allocated, or freed)")),
        }
    }

    /// Frees an allocation's memory: revoked and quarantined, so later accesses fault.
    pub fn release(&mut self, base: u64) {
        if let Some(mut a) = self.allocs.remove(&base) {
            self.used[a.device] -= a.footprint as u64;
            a.buf.revoke();
            self.quarantine.push_back(a.buf);
            if self.quarantine.len() > QUARANTINE {
                self.quarantine.pop_front();
            }
        }
    }
}

thread_local! {
    /// The calling thread's current context (0: none), as the driver keeps it per thread.
    static CURRENT: Cell<u64> = const { Cell::new(0) };
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

pub fn set_current(ctx: u64) {
    CURRENT.with(|c| c.set(ctx));
}

pub fn current_raw() -> u64 {
    CURRENT.with(Cell::get)
}

pub fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
    *GLOBAL_LAST.lock().unwrap_or_else(|e| e.into_inner()) = msg.to_string();
}

/// The last error of this thread, or else of any thread (a stream worker's fault).
pub fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|e| {
        if e.borrow().as_bytes().is_empty() {
            let g = GLOBAL_LAST.lock().unwrap_or_else(|e| e.into_inner()).clone();
            *e.borrow_mut() = CString::new(g.replace('\0', " ")).unwrap_or_default();
        }
        e.borrow().as_ptr()
    })
}

static GLOBAL_LAST: Mutex<String> = Mutex::new(String::new());

pub fn driver() -> MutexGuard<'static, Driver> {
    static DRIVER: OnceLock<Mutex<Driver>> = OnceLock::new();
    DRIVER.get_or_init(|| Mutex::new(Driver::new())).lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the body of an exported function: a failure becomes its status (reported on stderr
/// unless quiet) and a panic becomes `panic_code`, since a panic must not cross `extern "C"`.
pub fn api(name: &str, panic_code: i32, body: impl FnOnce() -> Res<()>) -> i32 {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => 0,
        Ok(Err(f)) => {
            if !f.quiet {
                let quiet = driver().cfg.quiet;
                if !quiet {
                    eprintln!("bitgrad CUDA shim: {name}: {}", f.msg);
                }
            }
            set_last_error(&format!("{name}: {}", f.msg));
            f.code
        }
        Err(_) => {
            eprintln!("bitgrad CUDA shim: {name} panicked (a bug in the shim)");
            panic_code
        }
    }
}

/// Writes `v` through the caller's out-pointer, refusing a null one.
///
/// # Safety
/// `out` must be null or valid for one write of `T`.
pub unsafe fn put<T>(out: *mut T, v: T) -> Res<()> {
    if out.is_null() {
        return Err(Fail::new(CUDA_ERROR_INVALID_VALUE, "a null output pointer"));
    }
    // SAFETY: non-null, and valid by the caller's contract.
    unsafe { out.write(v) };
    Ok(())
}
