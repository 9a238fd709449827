//! The exported driver API (`cu*`), one file per area. Every function checks what the real
//! driver checks (initialised, a current context on this thread, handles of the right kind and
//! context, ranges inside live allocations) and returns the real driver's status for it.

mod context;
mod device;
mod launch;
mod memory;
mod module;
mod streams;
