//! Streams and events. Each stream is a worker thread ([`crate::stream::Stream`]); an event
//! remembers how far its stream's queue had got when it was recorded.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::ffi::*;
use crate::state::{api, driver, put, Event};
use crate::stream::Stream;

/// # Safety
/// `ph` must be valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuStreamCreate(ph: *mut Handle, flags: u32) -> CUresult {
    api("cuStreamCreate", CUDA_ERROR_UNKNOWN, || {
        let mut d = driver();
        let ctx = d.current("cuStreamCreate")?;
        if flags > 1 {
            return Err(Fail::new(CUDA_ERROR_INVALID_VALUE, format!("stream flags {flags}")));
        }
        let id = d.id();
        let s = Stream::start(d.contexts[&ctx].sticky.clone(), d.cfg.latency, d.cfg.quiet);
        d.streams.insert(id, (ctx, s));
        // SAFETY: the caller's out-pointer.
        unsafe { put(ph, handle(Kind::Stream, id)) }
    })
}

/// Queued work still runs; the handle is gone at once.
///
/// # Safety
/// Plain value arguments only.
#[no_mangle]
pub unsafe extern "C" fn cuStreamDestroy_v2(h: Handle) -> CUresult {
    api("cuStreamDestroy_v2", CUDA_ERROR_UNKNOWN, || {
        let mut d = driver();
        d.check_init()?;
        let id = id_of(h, Kind::Stream)
            .filter(|id| d.streams.contains_key(id) && d.contexts.values().all(|c| c.default_stream != *id))
            .ok_or_else(|| Fail::new(CUDA_ERROR_INVALID_HANDLE, format!("{h:?} is not a stream")))?;
        if let Some((_, s)) = d.streams.remove(&id) {
            s.shutdown();
        }
        Ok(())
    })
}

/// # Safety
/// Plain value arguments only.
#[no_mangle]
pub unsafe extern "C" fn cuStreamSynchronize(h: Handle) -> CUresult {
    api("cuStreamSynchronize", CUDA_ERROR_UNKNOWN, || {
        let s = {
            let d = driver();
            let ctx = d.current("cuStreamSynchronize")?;
            d.stream(ctx, h, "cuStreamSynchronize")?
        };
        s.synchronize()
    })
}

/// # Safety
/// Plain value arguments only.
#[no_mangle]
pub unsafe extern "C" fn cuStreamQuery(h: Handle) -> CUresult {
    api("cuStreamQuery", CUDA_ERROR_UNKNOWN, || {
        let d = driver();
        let ctx = d.current("cuStreamQuery")?;
        if d.stream(ctx, h, "cuStreamQuery")?.idle() {
            Ok(())
        } else {
            Err(Fail::quiet(CUDA_ERROR_NOT_READY, "work pending"))
        }
    })
}

/// # Safety
/// `ph` must be valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuEventCreate(ph: *mut Handle, _flags: u32) -> CUresult {
    api("cuEventCreate", CUDA_ERROR_UNKNOWN, || {
        let mut d = driver();
        let ctx = d.current("cuEventCreate")?;
        let id = d.id();
        d.events.insert(id, Event { ctx, recorded: None, time: Arc::new(Mutex::new(None)) });
        // SAFETY: the caller's out-pointer.
        unsafe { put(ph, handle(Kind::Event, id)) }
    })
}

fn event_id(d: &crate::state::Driver, ctx: u64, h: Handle, call: &str) -> Res<u64> {
    id_of(h, Kind::Event)
        .filter(|id| d.events.get(id).is_some_and(|e| e.ctx == ctx))
        .ok_or_else(|| Fail::new(CUDA_ERROR_INVALID_HANDLE, format!("{call}: {h:?} is not an event of this context")))
}

/// # Safety
/// Plain value arguments only.
#[no_mangle]
pub unsafe extern "C" fn cuEventRecord(h: Handle, stream: Handle) -> CUresult {
    api("cuEventRecord", CUDA_ERROR_UNKNOWN, || {
        let mut d = driver();
        let ctx = d.current("cuEventRecord")?;
        let id = event_id(&d, ctx, h, "cuEventRecord")?;
        let s = d.stream(ctx, stream, "cuEventRecord")?;
        let time = Arc::new(Mutex::new(None));
        let t = time.clone();
        s.enqueue(Box::new(move || {
            *t.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            Ok(())
        }));
        let upto = s.enqueued();
        let e = d.events.get_mut(&id).expect("checked");
        e.recorded = Some((s, upto));
        e.time = time;
        Ok(())
    })
}

fn recorded(h: Handle, call: &str) -> Res<Option<(Arc<Stream>, u64)>> {
    let d = driver();
    let ctx = d.current(call)?;
    let id = event_id(&d, ctx, h, call)?;
    Ok(d.events[&id].recorded.clone())
}

/// # Safety
/// Plain value arguments only.
#[no_mangle]
pub unsafe extern "C" fn cuEventSynchronize(h: Handle) -> CUresult {
    api("cuEventSynchronize", CUDA_ERROR_UNKNOWN, || {
        if let Some((s, upto)) = recorded(h, "cuEventSynchronize")? {
            s.wait_for(upto);
        }
        Ok(())
    })
}

/// # Safety
/// Plain value arguments only.
#[no_mangle]
pub unsafe extern "C" fn cuEventQuery(h: Handle) -> CUresult {
    api("cuEventQuery", CUDA_ERROR_UNKNOWN, || match recorded(h, "cuEventQuery")? {
        Some((s, upto)) if !s.reached(upto) => Err(Fail::quiet(CUDA_ERROR_NOT_READY, "event pending")),
        _ => Ok(()),
    })
}

/// Makes later work on `stream` wait for the event's work.
///
/// # Safety
/// Plain value arguments only.
#[no_mangle]
pub unsafe extern "C" fn cuStreamWaitEvent(stream: Handle, h: Handle, _flags: u32) -> CUresult {
    api("cuStreamWaitEvent", CUDA_ERROR_UNKNOWN, || {
        let target = {
            let d = driver();
            let ctx = d.current("cuStreamWaitEvent")?;
            d.stream(ctx, stream, "cuStreamWaitEvent")?
        };
        if let Some((s, upto)) = recorded(h, "cuStreamWaitEvent")? {
            if !Arc::ptr_eq(&s, &target) {
                target.enqueue(Box::new(move || {
                    s.wait_for(upto);
                    Ok(())
                }));
            }
        }
        Ok(())
    })
}

/// # Safety
/// Plain value arguments only.
#[no_mangle]
pub unsafe extern "C" fn cuEventDestroy_v2(h: Handle) -> CUresult {
    api("cuEventDestroy_v2", CUDA_ERROR_UNKNOWN, || {
        let mut d = driver();
        d.check_init()?;
        let id = id_of(h, Kind::Event)
            .filter(|id| d.events.contains_key(id))
            .ok_or_else(|| Fail::new(CUDA_ERROR_INVALID_HANDLE, format!("{h:?} is not an event")))?;
        d.events.remove(&id);
        Ok(())
    })
}

/// Milliseconds between two completed events (host time on the stream workers).
///
/// # Safety
/// `ms` must be valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime_v2(ms: *mut f32, start: Handle, end: Handle) -> CUresult {
    api("cuEventElapsedTime_v2", CUDA_ERROR_UNKNOWN, || {
        let d = driver();
        let ctx = d.current("cuEventElapsedTime_v2")?;
        let at = |h| -> Res<Instant> {
            let e = &d.events[&event_id(&d, ctx, h, "cuEventElapsedTime_v2")?];
            let t = *e.time.lock().unwrap_or_else(|e| e.into_inner());
            t.ok_or_else(|| Fail::new(CUDA_ERROR_NOT_READY, "the event has not completed (or was never recorded)"))
        };
        let (a, b) = (at(start)?, at(end)?);
        let v = if b >= a { (b - a).as_secs_f32() * 1e3 } else { -((a - b).as_secs_f32() * 1e3) };
        // SAFETY: the caller's out-pointer.
        unsafe { put(ms, v) }
    })
}
