//! A bounds-checked front to `gemm::gemm` for strided matrices inside slices.
//!
//! The convolution multiplies sub-blocks of its buffers (one group's rows, a transposed view of
//! the column matrix), so operands are described by a slice plus rows, columns and strides. The
//! constructors check that every element they describe lies inside the slice, which is what
//! makes the one `unsafe` call below sound.

use ::gemm::{gemm, Parallelism};
use bitgrad_engine::FloatElem;

/// A read-only `rows × cols` matrix: element `(r, c)` is `data[r·rs + c·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

/// A writable `rows × cols` matrix with the same addressing.
pub(crate) struct MatMut<'a, T> {
    data: &'a mut [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

fn fits(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < len
}

impl<'a, T> MatRef<'a, T> {
    pub fn new(data: &'a [T], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        assert!(
            fits(data.len(), rows, cols, rs, cs),
            "MatRef {rows}×{cols} (strides {rs}, {cs}) outside {} elements",
            data.len()
        );
        MatRef { data, rows, cols, rs, cs }
    }
    /// A row-major matrix (row stride `cols`).
    pub fn rows(data: &'a [T], rows: usize, cols: usize) -> Self {
        MatRef::new(data, rows, cols, cols, 1)
    }
    /// The transpose, as a view.
    pub fn t(self) -> Self {
        MatRef { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }
}

impl<'a, T> MatMut<'a, T> {
    pub fn new(data: &'a mut [T], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        assert!(
            fits(data.len(), rows, cols, rs, cs),
            "MatMut {rows}×{cols} (strides {rs}, {cs}) outside {} elements",
            data.len()
        );
        MatMut { data, rows, cols, rs, cs }
    }
    pub fn rows(data: &'a mut [T], rows: usize, cols: usize) -> Self {
        assert!(fits(data.len(), rows, cols, cols, 1), "MatMut {rows}×{cols} outside {} elements", data.len());
        MatMut { data, rows, cols, rs: cols, cs: 1 }
    }
}

/// `dst = a·b` (`accumulate = false`) or `dst += a·b` (`accumulate = true`).
///
/// gemm keeps, for every destination element, the same summation order whatever `par` is and
/// however many threads run it (threads own disjoint destination blocks; the depth loop is never
/// split), so results do not depend on the thread count.
pub(crate) fn matmul<T: FloatElem>(
    dst: MatMut<'_, T>,
    accumulate: bool,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    par: Parallelism,
) {
    bitgrad_engine::cpu::isa::record_gemm();
    assert!(
        dst.rows == a.rows && dst.cols == b.cols && a.cols == b.rows,
        "matmul: [{}×{}] = [{}×{}]·[{}×{}]",
        dst.rows,
        dst.cols,
        a.rows,
        a.cols,
        b.rows,
        b.cols
    );
    let (m, n, k) = (dst.rows, dst.cols, a.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            // An empty sum: gemm would leave dst untouched, so clear it ourselves.
            for r in 0..m {
                for c in 0..n {
                    dst.data[r * dst.rs + c * dst.cs] = T::zero();
                }
            }
        }
        return;
    }
    // SAFETY: the three constructors checked that every addressed element lies inside its slice;
    // `dst` is borrowed mutably and the operands immutably, so they cannot overlap.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            dst.cs as isize,
            dst.rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par,
        );
    }
}
