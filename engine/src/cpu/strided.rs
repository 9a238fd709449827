//! Walking strided layouts fast.
//!
//! Every CPU primitive reads its inputs through this module. Axes that are contiguous with each
//! other in *all* operands are merged first, so a contiguous tensor becomes a single run and a
//! transposed one a few long runs; the inner loops then work on plain (possibly strided) runs.
//! Work is split into chunks of a fixed size, so results do not depend on the thread count.

use rayon::prelude::*;

use super::lanes;
use crate::Layout;

/// Elements per parallel chunk: large enough to amortise scheduling, small enough to balance.
pub const CHUNK: usize = 1 << 15;
/// Below this many elements, parallelism costs more than it saves.
pub const PAR_THRESHOLD: usize = 1 << 16;

/// `N` layouts of the same shape, with jointly mergeable axes merged.
#[derive(Debug, Clone)]
pub struct Runs<const N: usize> {
    dims: Vec<usize>,
    strides: [Vec<usize>; N],
    offsets: [usize; N],
}

impl<const N: usize> Runs<N> {
    /// All layouts must have the same shape (broadcast them first).
    pub fn new(layouts: [&Layout; N]) -> Self {
        let shape = layouts[0].dims();
        debug_assert!(layouts.iter().all(|l| l.dims() == shape));
        let mut dims: Vec<usize> = Vec::new();
        let mut strides: [Vec<usize>; N] = std::array::from_fn(|_| Vec::new());
        for (axis, &d) in shape.iter().enumerate() {
            if d == 1 {
                continue; // size-1 axes never move the index
            }
            let mergeable =
                !dims.is_empty() && (0..N).all(|k| strides[k].last().copied() == Some(layouts[k].strides()[axis] * d));
            if mergeable {
                *dims.last_mut().unwrap() *= d;
                for (k, s) in strides.iter_mut().enumerate() {
                    *s.last_mut().unwrap() = layouts[k].strides()[axis];
                }
            } else {
                dims.push(d);
                for (k, s) in strides.iter_mut().enumerate() {
                    s.push(layouts[k].strides()[axis]);
                }
            }
        }
        if dims.is_empty() {
            dims.push(1);
            for s in strides.iter_mut() {
                s.push(0);
            }
        }
        Runs { dims, strides, offsets: std::array::from_fn(|k| layouts[k].offset()) }
    }

    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// Strides of the innermost (run) axis, per operand.
    pub fn inner_strides(&self) -> [usize; N] {
        std::array::from_fn(|k| *self.strides[k].last().unwrap())
    }

    /// Calls `f(start_offsets, len)` for consecutive runs covering the logical indices `range`;
    /// inside a run, operand `k` advances by `inner_strides()[k]`.
    pub fn for_each(&self, range: std::ops::Range<usize>, mut f: impl FnMut([usize; N], usize)) {
        if range.is_empty() {
            return;
        }
        let rank = self.dims.len();
        // Multi-index of range.start.
        let mut idx = vec![0; rank];
        let mut rem = range.start;
        for a in (0..rank).rev() {
            idx[a] = rem % self.dims[a];
            rem /= self.dims[a];
        }
        let mut offs: [usize; N] = std::array::from_fn(|k| {
            self.offsets[k] + idx.iter().zip(&self.strides[k]).map(|(i, s)| i * s).sum::<usize>()
        });
        let inner = self.dims[rank - 1];
        let inner_s = self.inner_strides();
        let mut left = range.len();
        while left > 0 {
            let len = (inner - idx[rank - 1]).min(left);
            f(offs, len);
            left -= len;
            if left == 0 {
                break;
            }
            // Advance to the start of the next run, carrying into the outer axes.
            idx[rank - 1] += len;
            for k in 0..N {
                offs[k] += len * inner_s[k];
            }
            let mut a = rank - 1;
            while idx[a] == self.dims[a] {
                for (o, s) in offs.iter_mut().zip(&self.strides) {
                    *o -= self.dims[a] * s[a];
                }
                idx[a] = 0;
                a -= 1;
                idx[a] += 1;
                for (o, s) in offs.iter_mut().zip(&self.strides) {
                    *o += s[a];
                }
            }
        }
    }
}

/// Fills `out` (the contiguous output, one element per logical index) chunk by chunk, in
/// parallel when large; `f(out_chunk, start)` must fill the chunk for logical indices
/// `start..start + out_chunk.len()`.
pub fn fill_chunks<U: Send>(out: &mut [U], f: impl Fn(&mut [U], usize) + Sync) {
    if out.len() < PAR_THRESHOLD {
        f(out, 0);
    } else {
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, c)| f(c, i * CHUNK));
    }
}

/// A vector of `n` default values: every CPU op's output buffer. For the primitive numbers this is
/// a zeroed allocation, which the OS provides lazily, so it costs no extra pass over memory.
/// Large buffers are backed by transparent huge pages where Linux offers them (see
/// [`advise_huge_pages`]).
pub fn alloc<U: Default + Clone>(n: usize) -> Vec<U> {
    let v = vec![U::default(); n];
    advise_huge_pages(&v);
    v
}

/// Buffers of at least this many bytes are worth backing with huge pages (NumPy's threshold too).
pub const HUGE_PAGE_MIN_BYTES: usize = 4 << 20;

/// Asks Linux to back a large, not yet written buffer with transparent huge pages
/// (`madvise(MADV_HUGEPAGE)`; it matters when THP is in `madvise` mode, the common default).
///
/// A fresh buffer of 64 MiB is otherwise faulted in as 16384 pages of 4 KiB on its first write,
/// and those faults, not the arithmetic, then dominate a memory-bound op: with 2 MiB pages there
/// are 32. On a 2-core KVM guest this made `add` of two 64 MiB tensors about 3× faster (see
/// docs/benchmarks.md). The advice changes no contents; where it is refused nothing changes.
#[cfg(target_os = "linux")]
pub fn advise_huge_pages<U>(v: &[U]) {
    let bytes = std::mem::size_of_val(v);
    if bytes < HUGE_PAGE_MIN_BYTES {
        return;
    }
    const PAGE: usize = 4096;
    let start = v.as_ptr() as usize;
    let first = start.next_multiple_of(PAGE); // madvise wants a page-aligned start
    let len = (start + bytes - first) / PAGE * PAGE;
    // SAFETY: the range lies inside `v`'s live allocation, and MADV_HUGEPAGE is only advice about
    // how to back it: it neither reads, writes nor frees memory. A failure (e.g. THP off) is fine.
    unsafe {
        libc::madvise(first as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
    }
}

/// Elsewhere the OS's own page size is all there is.
#[cfg(not(target_os = "linux"))]
pub fn advise_huge_pages<U>(_v: &[U]) {}

/// Maps one strided operand into a fresh contiguous vector.
pub fn map1<T: Copy + Sync, U: Copy + Default + Send>(src: &[T], layout: &Layout, f: impl Fn(T) -> U + Sync) -> Vec<U> {
    let isa = lanes::level();
    let runs = Runs::new([layout]);
    let mut out = alloc::<U>(runs.numel());
    let [s] = runs.inner_strides();
    fill_chunks(&mut out, |chunk, start| {
        let mut pos = 0;
        runs.for_each(start..start + chunk.len(), |[o], len| {
            let dst = &mut chunk[pos..pos + len];
            if s == 1 {
                lanes::map1(isa, dst, &src[o..o + len], &f);
            } else {
                for (i, d) in dst.iter_mut().enumerate() {
                    *d = f(src[o + i * s]);
                }
            }
            pos += len;
        });
    });
    out
}

/// Maps two strided operands of the same (broadcast) shape into a fresh contiguous vector.
pub fn map2<A: Copy + Sync, B: Copy + Sync, U: Copy + Default + Send>(
    a: &[A],
    la: &Layout,
    b: &[B],
    lb: &Layout,
    f: impl Fn(A, B) -> U + Sync,
) -> Vec<U> {
    let isa = lanes::level();
    let runs = Runs::new([la, lb]);
    let mut out = alloc::<U>(runs.numel());
    let [sa, sb] = runs.inner_strides();
    fill_chunks(&mut out, |chunk, start| {
        let mut pos = 0;
        runs.for_each(start..start + chunk.len(), |[oa, ob], len| {
            let dst = &mut chunk[pos..pos + len];
            // The common cases get loops compiled for the CPU's vectors (`lanes`).
            match (sa, sb) {
                (1, 1) => lanes::map2(isa, dst, &a[oa..oa + len], &b[ob..ob + len], &f),
                (1, 0) => lanes::map2_right(isa, dst, &a[oa..oa + len], b[ob], &f),
                (0, 1) => lanes::map2_left(isa, dst, a[oa], &b[ob..ob + len], &f),
                _ => {
                    for (i, d) in dst.iter_mut().enumerate() {
                        *d = f(a[oa + i * sa], b[ob + i * sb]);
                    }
                }
            }
            pos += len;
        });
    });
    out
}

/// Maps three strided operands of the same (broadcast) shape (used by `where`).
pub fn map3<A: Copy + Sync, B: Copy + Sync, C: Copy + Sync, U: Copy + Default + Send>(
    (a, la): (&[A], &Layout),
    (b, lb): (&[B], &Layout),
    (c, lc): (&[C], &Layout),
    f: impl Fn(A, B, C) -> U + Sync,
) -> Vec<U> {
    let runs = Runs::new([la, lb, lc]);
    let mut out = alloc::<U>(runs.numel());
    let [sa, sb, sc] = runs.inner_strides();
    fill_chunks(&mut out, |chunk, start| {
        let mut pos = 0;
        runs.for_each(start..start + chunk.len(), |[oa, ob, oc], len| {
            for (i, d) in chunk[pos..pos + len].iter_mut().enumerate() {
                *d = f(a[oa + i * sa], b[ob + i * sb], c[oc + i * sc]);
            }
            pos += len;
        });
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Shape;

    #[test]
    fn runs_visit_every_element_in_row_major_order() {
        let l = Layout::contiguous([3, 4, 5]).permute(&[2, 0, 1]).unwrap();
        let runs = Runs::new([&l]);
        for (a, b) in [(0, 60), (7, 33), (19, 20)] {
            let mut got = Vec::new();
            runs.for_each(a..b, |[o], len| {
                for i in 0..len {
                    got.push(o + i * runs.inner_strides()[0]);
                }
            });
            let want: Vec<usize> = (a..b)
                .map(|i| {
                    let (d2, d0, d1) = (i / 12, (i / 4) % 3, i % 4);
                    d0 * 20 + d1 * 5 + d2
                })
                .collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn contiguous_merges_into_one_run() {
        let l = Layout::contiguous([2, 3, 4]);
        let r = Runs::new([&l, &Layout::contiguous([4]).broadcast_to(&Shape::from([2, 3, 4])).unwrap()]);
        assert_eq!(r.dims, vec![6, 4]);
    }
}
