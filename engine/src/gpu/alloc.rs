//! A caching allocator in front of a device's raw allocation, as PyTorch's CUDA allocator does in
//! spirit: `cudaMalloc`/`cudaFree` synchronize the device and cost tens of microseconds, and a
//! training step frees and reallocates the same sizes every iteration.
//!
//! Sizes are rounded up to a size class (512-byte steps below 1 MiB, then 1/8 of the next power
//! of two above), and freed blocks wait in a per-class free list for the next request of that
//! class. `trim` hands every cached block back to the device, and an allocation that fails with
//! blocks cached trims and retries once. With `exact` the allocator neither rounds nor caches:
//! the emulator's guard-page mode needs every buffer to end exactly at its guard page.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{DevicePtr, GpuRuntime};
use crate::Result;

/// Statistics of a [`CachingAllocator`], in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocStats {
    /// Bytes in buffers handed out and not yet freed (size classes, not requests).
    pub in_use: usize,
    /// Bytes held in the free lists.
    pub cached: usize,
    /// The highest `in_use` seen.
    pub peak_in_use: usize,
    /// Raw allocations made (cache misses).
    pub raw_allocs: usize,
}

#[derive(Debug, Default)]
struct State {
    free: HashMap<usize, Vec<DevicePtr>>,
    stats: AllocStats,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct CachingAllocator {
    exact: bool,
    state: Mutex<State>,
}

impl CachingAllocator {
    /// A caching allocator with size classes.
    pub fn new() -> Self {
        Self::default()
    }
    /// An allocator that passes every request straight through with its exact size.
    pub fn exact() -> Self {
        CachingAllocator { exact: true, state: Mutex::default() }
    }

    /// The size class serving a request of `bytes` bytes.
    pub fn size_class(&self, bytes: usize) -> usize {
        if self.exact {
            return bytes;
        }
        const SMALL: usize = 1 << 20;
        if bytes <= SMALL {
            bytes.div_ceil(512).max(1) * 512
        } else {
            let step = bytes.next_power_of_two() / 8;
            bytes.div_ceil(step) * step
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the lists consistent (every update is one push or
        // pop), so a poisoned lock is safe to keep using.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Memory for `bytes` bytes; zero bytes give a null pointer that is never dereferenced.
    pub fn alloc(&self, rt: &dyn GpuRuntime, bytes: usize) -> Result<DevicePtr> {
        if bytes == 0 {
            return Ok(DevicePtr(0));
        }
        let class = self.size_class(bytes);
        {
            let mut st = self.lock();
            if let Some(p) = st.free.get_mut(&class).and_then(Vec::pop) {
                st.stats.cached -= class;
                st.stats.in_use += class;
                st.stats.peak_in_use = st.stats.peak_in_use.max(st.stats.in_use);
                return Ok(p);
            }
        }
        let p = match rt.raw_alloc(class) {
            Ok(p) => p,
            Err(_) if self.stats().cached > 0 => {
                self.trim(rt);
                rt.raw_alloc(class)?
            }
            Err(e) => return Err(e),
        };
        let mut st = self.lock();
        st.stats.raw_allocs += 1;
        st.stats.in_use += class;
        st.stats.peak_in_use = st.stats.peak_in_use.max(st.stats.in_use);
        Ok(p)
    }

    /// Takes back memory from [`CachingAllocator::alloc`] with the same `bytes`.
    pub fn free(&self, rt: &dyn GpuRuntime, ptr: DevicePtr, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let class = self.size_class(bytes);
        if self.exact {
            self.lock().stats.in_use -= class;
            // SAFETY: `ptr` came from `raw_alloc(class)` in `alloc` and its owner is gone.
            unsafe { rt.raw_free(ptr, class) };
            return;
        }
        let mut st = self.lock();
        st.stats.in_use -= class;
        st.stats.cached += class;
        st.free.entry(class).or_default().push(ptr);
    }

    /// Returns every cached block to the device.
    pub fn trim(&self, rt: &dyn GpuRuntime) {
        let free = std::mem::take(&mut self.lock().free);
        for (class, ptrs) in free {
            for p in ptrs {
                self.lock().stats.cached -= class;
                // SAFETY: cached blocks have no owner.
                unsafe { rt.raw_free(p, class) };
            }
        }
    }

    pub fn stats(&self) -> AllocStats {
        self.lock().stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_round_up_and_are_stable() {
        let a = CachingAllocator::new();
        assert_eq!(a.size_class(1), 512);
        assert_eq!(a.size_class(512), 512);
        assert_eq!(a.size_class(513), 1024);
        assert_eq!(a.size_class((1 << 20) + 1), (1 << 20) + (1 << 18));
        for b in [1usize, 700, 4097, 3 << 20, (5 << 20) + 7] {
            let c = a.size_class(b);
            assert!(c >= b && c < b + b / 4 + 512, "{b} -> {c}");
            assert_eq!(a.size_class(c), c, "a class is its own class");
        }
        assert_eq!(CachingAllocator::exact().size_class(13), 13);
    }
}
