//! Primary contexts and the per-thread current context.

use std::sync::Arc;

use crate::ffi::*;
use crate::state::{self, api, driver, put, Context};
use crate::stream::{Sticky, Stream};

/// # Safety
/// `pctx` must be valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(pctx: *mut Handle, dev: CUdevice) -> CUresult {
    api("cuDevicePrimaryCtxRetain", CUDA_ERROR_UNKNOWN, || {
        let mut d = driver();
        let dev = d.device(dev)?;
        let id = match d.primary[dev] {
            Some(id) => {
                d.contexts.get_mut(&id).expect("primary contexts are live").refcount += 1;
                id
            }
            None => {
                let (id, sid) = (d.id(), d.id());
                let sticky = Arc::new(Sticky::default());
                let s = Stream::start(sticky.clone(), d.cfg.latency, d.cfg.quiet);
                d.streams.insert(sid, (id, s));
                d.contexts.insert(id, Context { device: dev, refcount: 1, sticky, default_stream: sid });
                d.primary[dev] = Some(id);
                id
            }
        };
        // SAFETY: the caller's out-pointer.
        unsafe { put(pctx, handle(Kind::Context, id)) }
    })
}

/// # Safety
/// Plain value arguments only.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRelease_v2(dev: CUdevice) -> CUresult {
    api("cuDevicePrimaryCtxRelease_v2", CUDA_ERROR_UNKNOWN, || {
        // Destroying a context first lets its queued work finish (outside the lock, which the
        // stream workers need), as the driver synchronizes before tearing a context down.
        let (id, last, streams) = {
            let d = driver();
            let dev = d.device(dev)?;
            let id = d.primary[dev]
                .ok_or_else(|| Fail::new(CUDA_ERROR_INVALID_CONTEXT, "the primary context is not retained"))?;
            let last = d.contexts[&id].refcount == 1;
            (id, last, if last { d.ctx_streams(id) } else { Vec::new() })
        };
        for s in &streams {
            s.wait_for(s.enqueued());
        }
        let mut d = driver();
        let Some(c) = d.contexts.get_mut(&id) else { return Ok(()) };
        c.refcount -= 1;
        if last && c.refcount == 0 {
            // Destroyed: its streams stop, its memory, modules and handles are gone.
            let dev = c.device;
            d.contexts.remove(&id);
            d.primary[dev] = None;
            for (_, s) in d.streams.values().filter(|(c, _)| *c == id) {
                s.shutdown();
            }
            d.streams.retain(|_, (c, _)| *c != id);
            let bases: Vec<u64> = d.allocs.iter().filter(|(_, a)| a.ctx == id).map(|(&b, _)| b).collect();
            for b in bases {
                d.release(b);
            }
            d.modules.retain(|_, m| m.ctx != id);
            d.functions.retain(|_, f| f.ctx != id);
            d.events.retain(|_, e| e.ctx != id);
            d.blas.retain(|_, b| b.ctx != id);
        }
        Ok(())
    })
}

/// # Safety
/// `pctx` must be valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetCurrent(pctx: *mut Handle) -> CUresult {
    api("cuCtxGetCurrent", CUDA_ERROR_UNKNOWN, || {
        driver().check_init()?;
        let id = state::current_raw();
        let h = if id == 0 { std::ptr::null_mut() } else { handle(Kind::Context, id) };
        // SAFETY: the caller's out-pointer.
        unsafe { put(pctx, h) }
    })
}

/// # Safety
/// Plain value arguments only.
#[no_mangle]
pub unsafe extern "C" fn cuCtxSetCurrent(ctx: Handle) -> CUresult {
    api("cuCtxSetCurrent", CUDA_ERROR_UNKNOWN, || {
        let d = driver();
        d.check_init()?;
        if ctx.is_null() {
            state::set_current(0);
            return Ok(());
        }
        match id_of(ctx, Kind::Context).filter(|id| d.contexts.contains_key(id)) {
            Some(id) => {
                state::set_current(id);
                Ok(())
            }
            None => Err(Fail::new(CUDA_ERROR_INVALID_CONTEXT, format!("{ctx:?} is not a live context (destroyed?)"))),
        }
    })
}

/// # Safety
/// `dev` must be valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetDevice(dev: *mut CUdevice) -> CUresult {
    api("cuCtxGetDevice", CUDA_ERROR_UNKNOWN, || {
        let d = driver();
        let ctx = d.current("cuCtxGetDevice")?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(dev, d.contexts[&ctx].device as CUdevice) }
    })
}

/// Waits for every stream of the current context; the context's fault, if any.
#[no_mangle]
pub extern "C" fn cuCtxSynchronize() -> CUresult {
    api("cuCtxSynchronize", CUDA_ERROR_UNKNOWN, || sync_current("cuCtxSynchronize"))
}

/// Drains every stream of the calling thread's context (the lock is not held while waiting).
pub fn sync_current(call: &str) -> Res<()> {
    let streams = {
        let d = driver();
        let ctx = d.current(call)?;
        d.ctx_streams(ctx)
    };
    for s in &streams {
        s.synchronize().map_err(|f| Fail { msg: format!("{call}: {}", f.msg), ..f })?;
    }
    Ok(())
}
