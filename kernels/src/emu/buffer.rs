//! Device buffers for the emulator: plain aligned heap memory, or (guard mode) a mapping whose
//! end touches an inaccessible page so that the first byte past the end faults.

use std::alloc::{self, Layout};
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::Mutex;

use super::EmuError;

/// Plain buffers are 256-byte aligned like `cudaMalloc`'s, with this much slack after the end so
/// a small overrun in fast mode cannot corrupt the heap (it goes unnoticed: use guard mode).
const ALIGN: usize = 256;
const SLACK: usize = 256;

/// Live guarded buffers: guard page address (= buffer end) -> buffer length. Fault reports use it
/// to say "N bytes past the end of a B-byte buffer".
static GUARDED: Mutex<BTreeMap<usize, usize>> = Mutex::new(BTreeMap::new());

/// Memory a kernel may access. Dropping it releases the memory.
#[derive(Debug)]
pub struct Buffer {
    ptr: NonNull<u8>,
    len: usize,
    /// Guarded: the whole mapping (start, length); plain: the allocation's layout size.
    map: (usize, usize),
    guarded: bool,
}

// The buffer is plain memory owned by this value; synchronising access to it is the user's job,
// as with device memory.
unsafe impl Send for Buffer {}
unsafe impl Sync for Buffer {}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// Allocates `bytes` of device memory. With `guard`, the buffer ends exactly at a `PROT_NONE`
/// page (so it starts aligned to the largest power of two dividing `bytes`, up to a page) and is
/// filled with 0xFF; otherwise it is 256-byte aligned and zeroed.
pub fn alloc(bytes: usize, guard: bool) -> Result<Buffer, EmuError> {
    let fail = |detail: &str| EmuError::Alloc { bytes, detail: detail.to_string() };
    if guard {
        let page = page_size();
        let body = bytes.checked_add(page - 1).ok_or_else(|| fail("size overflow"))? / page * page;
        let total = body + page;
        // SAFETY: an anonymous private mapping; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(fail("mmap failed"));
        }
        let base = base as usize;
        let end = base + body;
        // SAFETY: the last page belongs to the mapping just made.
        if unsafe { libc::mprotect(end as *mut libc::c_void, page, libc::PROT_NONE) } != 0 {
            // SAFETY: unmapping what we mapped.
            unsafe { libc::munmap(base as *mut libc::c_void, total) };
            return Err(fail("mprotect failed"));
        }
        let start = end - bytes;
        // SAFETY: [start, end) is inside the readable/writable part of the mapping.
        unsafe { std::ptr::write_bytes(start as *mut u8, 0xFF, bytes) };
        GUARDED.lock().unwrap_or_else(|e| e.into_inner()).insert(end, bytes);
        let ptr = NonNull::new(start as *mut u8).ok_or_else(|| fail("null mapping"))?;
        Ok(Buffer { ptr, len: bytes, map: (base, total), guarded: true })
    } else {
        let size = bytes.checked_add(SLACK).ok_or_else(|| fail("size overflow"))?;
        let layout = Layout::from_size_align(size, ALIGN).map_err(|_| fail("size overflow"))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc::alloc_zeroed(layout) }).ok_or_else(|| fail("out of memory"))?;
        Ok(Buffer { ptr, len: bytes, map: (0, size), guarded: false })
    }
}

impl Buffer {
    /// The first byte (the device pointer to pass to kernels).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes, as requested.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Makes every byte of a guarded buffer inaccessible and releases its pages, keeping the
    /// address range reserved: a later access faults like one past the end (a driver uses this to
    /// make a use after free fault instead of reading whatever reuses the memory). Returns false
    /// for a plain buffer, which cannot be revoked.
    pub fn revoke(&mut self) -> bool {
        if !self.guarded {
            return false;
        }
        // SAFETY: the mapping was made by `alloc` and stays mapped (now inaccessible) until drop.
        unsafe {
            libc::mprotect(self.map.0 as *mut libc::c_void, self.map.1, libc::PROT_NONE);
            libc::madvise(self.map.0 as *mut libc::c_void, self.map.1, libc::MADV_DONTNEED);
        }
        true
    }

    /// Whether a guard page follows the buffer.
    pub fn is_guarded(&self) -> bool {
        self.guarded
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if self.guarded {
            let end = self.ptr.as_ptr() as usize + self.len;
            GUARDED.lock().unwrap_or_else(|e| e.into_inner()).remove(&end);
            // SAFETY: the mapping was made by `alloc` and is released exactly once.
            unsafe { libc::munmap(self.map.0 as *mut libc::c_void, self.map.1) };
        } else if let Ok(layout) = Layout::from_size_align(self.map.1, ALIGN) {
            // SAFETY: allocated by `alloc` with this layout.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

/// If `addr` lies in the guard page of a live guarded buffer: (bytes past its end, its length).
pub(crate) fn past_guarded_end(addr: usize) -> Option<(usize, usize)> {
    let page = page_size();
    let map = GUARDED.lock().unwrap_or_else(|e| e.into_inner());
    let (&end, &len) = map.range(..=addr).next_back()?;
    (addr < end + page).then_some((addr - end, len))
}
