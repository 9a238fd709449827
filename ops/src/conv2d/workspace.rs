//! Per-thread scratch buffers for the column and staging matrices.
//!
//! They are large (up to the 32 MiB column bound) and always fully written before being read, so
//! allocating them afresh on every call would only add zeroing and page faults — about 5 % of a
//! forward pass on BiT's early-stage shapes. Each thread that calls conv2d keeps its largest
//! buffers for the next call instead (rayon workers only see slices of the caller's).

use std::cell::RefCell;

use bitgrad_engine::{DType, FloatElem};

thread_local! {
    /// Stored as f64 words: 8-byte aligned, so also a valid home for f32 values.
    static SCRATCH: RefCell<[Vec<f64>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// Calls `f` with two scratch slices of `lens[0]` and `lens[1]` elements (contents unspecified).
pub(crate) fn with_scratch<T: FloatElem, R>(lens: [usize; 2], f: impl FnOnce(&mut [T], &mut [T]) -> R) -> R {
    let size = size_of::<T>();
    assert!(matches!(T::DTYPE, DType::F32 | DType::F64) && (size == 4 || size == 8), "scratch holds f32 or f64");
    // Taking the buffers out (instead of borrowing them) keeps a nested call — none exists
    // today — correct: it would just get fresh ones.
    let mut bufs = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    for (buf, &len) in bufs.iter_mut().zip(&lens) {
        let words = (len * size).div_ceil(8);
        if buf.len() < words {
            *buf = vec![0.0; words];
        }
    }
    let [a, b] = &mut bufs;
    // SAFETY: T is f32 or f64 (checked above): every bit pattern is a valid value, its
    // alignment divides f64's, and `len` elements of T fit in the `words` f64s just ensured.
    let (sa, sb) = unsafe {
        (
            std::slice::from_raw_parts_mut(a.as_mut_ptr().cast::<T>(), lens[0]),
            std::slice::from_raw_parts_mut(b.as_mut_ptr().cast::<T>(), lens[1]),
        )
    };
    let out = f(sa, sb);
    SCRATCH.with(|s| *s.borrow_mut() = bufs);
    out
}
