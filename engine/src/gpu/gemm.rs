//! GEMM with cuBLAS's exact argument semantics, run on host memory by the `gemm` crate — the
//! emulator's `cublas<S|D>gemmStridedBatched`, so cuBLAS call sites are tested without a GPU.

use super::{GemmArgs, GemmDType, Op};
use crate::{Error, Result};

/// The (rows, cols) of the stored matrix behind `op(X)` when `op(X)` is `r × c`.
fn stored(op: Op, r: usize, c: usize) -> (usize, usize) {
    match op {
        Op::N => (r, c),
        Op::T => (c, r),
    }
}

/// Checks the arguments as cuBLAS does (`CUBLAS_STATUS_INVALID_VALUE` cases), with a message
/// that names the offending argument.
pub fn validate(g: &GemmArgs) -> Result<()> {
    let bad = |msg: String| Err(Error::invalid("gemm", msg));
    let (ar, _) = stored(g.op_a, g.m, g.k);
    let (br, _) = stored(g.op_b, g.k, g.n);
    if g.lda < ar.max(1) {
        return bad(format!("lda = {} < rows of A ({ar}) (op_a {:?}, m {}, k {})", g.lda, g.op_a, g.m, g.k));
    }
    if g.ldb < br.max(1) {
        return bad(format!("ldb = {} < rows of B ({br}) (op_b {:?}, k {}, n {})", g.ldb, g.op_b, g.k, g.n));
    }
    if g.ldc < g.m.max(1) {
        return bad(format!("ldc = {} < m = {}", g.ldc, g.m));
    }
    Ok(())
}

/// The byte extent (from the base pointer) one operand touches: `rows × cols` column-major with
/// leading dimension `ld`, `batch` times `stride` elements apart.
pub fn extent_bytes(rows: usize, cols: usize, ld: usize, stride: usize, batch: usize, elem: usize) -> usize {
    if rows == 0 || cols == 0 || batch == 0 {
        return 0;
    }
    ((rows - 1) + (cols - 1) * ld + (batch - 1) * stride + 1) * elem
}

/// The byte extents of A, B and C of a call (for bounds checks of the pointers).
pub fn extents(g: &GemmArgs) -> [usize; 3] {
    let e = match g.dtype {
        GemmDType::F32 => 4,
        GemmDType::F64 => 8,
    };
    let (ar, ac) = stored(g.op_a, g.m, g.k);
    let (br, bc) = stored(g.op_b, g.k, g.n);
    [
        extent_bytes(ar, ac, g.lda, g.stride_a, g.batch, e),
        extent_bytes(br, bc, g.ldb, g.stride_b, g.batch, e),
        extent_bytes(g.m, g.n, g.ldc, g.stride_c, g.batch, e),
    ]
}

/// (row stride, column stride) of `op(X)` for column-major `X` with leading dimension `ld`.
fn strides(op: Op, ld: usize) -> (isize, isize) {
    match op {
        Op::N => (1, ld as isize),
        Op::T => (ld as isize, 1),
    }
}

/// Runs `g` on host memory.
///
/// # Safety
/// The pointers in `g` are host addresses valid for the extents of [`extents`], and C does not
/// overlap A or B.
pub unsafe fn gemm_host(g: &GemmArgs) -> Result<()> {
    validate(g)?;
    if g.m == 0 || g.n == 0 || g.batch == 0 {
        return Ok(());
    }
    let (ars, acs) = strides(g.op_a, g.lda);
    let (brs, bcs) = strides(g.op_b, g.ldb);
    let par = if 2 * g.m * g.n * g.k >= 1 << 18 { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    // cuBLAS: C = alpha·AB + beta·C, and beta = 0 ignores C (NaNs included). The gemm crate:
    // dst = a·dst + b·lhs·rhs, reading dst only when asked.
    let read_c = g.beta != 0.0;
    macro_rules! run {
        ($t:ty) => {{
            for i in 0..g.batch {
                let a = (g.a.0 as *const $t).add(i * g.stride_a);
                let b = (g.b.0 as *const $t).add(i * g.stride_b);
                let c = (g.c.0 as *mut $t).add(i * g.stride_c);
                if g.k == 0 {
                    // An empty product: C = beta·C.
                    for col in 0..g.n {
                        for row in 0..g.m {
                            let p = c.add(row + col * g.ldc);
                            *p = if read_c { (g.beta as $t) * *p } else { 0.0 };
                        }
                    }
                    continue;
                }
                gemm::gemm(
                    g.m,
                    g.n,
                    g.k,
                    c,
                    g.ldc as isize,
                    1,
                    read_c,
                    a,
                    acs,
                    ars,
                    b,
                    bcs,
                    brs,
                    g.beta as $t,
                    g.alpha as $t,
                    false,
                    false,
                    false,
                    par,
                );
            }
        }};
    }
    match g.dtype {
        GemmDType::F32 => run!(f32),
        GemmDType::F64 => run!(f64),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::DevicePtr;

    /// Reference: the definition, column-major, in f64.
    fn reference(g: &GemmArgs, a: &[f64], b: &[f64], c: &[f64]) -> Vec<f64> {
        let mut out = c.to_vec();
        let at = |x: &[f64], op: Op, ld: usize, s: usize, bi: usize, r: usize, cc: usize| match op {
            Op::N => x[bi * s + r + cc * ld],
            Op::T => x[bi * s + cc + r * ld],
        };
        for bi in 0..g.batch {
            for j in 0..g.n {
                for i in 0..g.m {
                    let dot: f64 = (0..g.k)
                        .map(|l| {
                            at(a, g.op_a, g.lda, g.stride_a, bi, i, l) * at(b, g.op_b, g.ldb, g.stride_b, bi, l, j)
                        })
                        .sum();
                    let p = bi * g.stride_c + i + j * g.ldc;
                    out[p] = g.alpha * dot + if g.beta == 0.0 { 0.0 } else { g.beta * c[p] };
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_definition_for_every_transpose_and_padding() {
        let (m, n, k, batch) = (5, 3, 4, 2);
        for (op_a, op_b) in [(Op::N, Op::N), (Op::T, Op::N), (Op::N, Op::T), (Op::T, Op::T)] {
            for beta in [0.0, 0.5] {
                let (ar, ac) = stored(op_a, m, k);
                let (br, bc) = stored(op_b, k, n);
                let (lda, ldb, ldc) = (ar + 1, br + 2, m + 3);
                let (sa, sb, sc) = (lda * ac + 1, ldb * bc, ldc * n + 2);
                let a: Vec<f64> = (0..sa * batch).map(|i| (i as f64 * 0.37).sin()).collect();
                let b: Vec<f64> = (0..sb * batch).map(|i| (i as f64 * 0.71).cos()).collect();
                // NaN in C must not leak through when beta = 0.
                let c0: Vec<f64> =
                    (0..sc * batch).map(|i| if beta == 0.0 && i % 5 == 0 { f64::NAN } else { i as f64 }).collect();
                let mut c = c0.clone();
                let g = GemmArgs {
                    dtype: GemmDType::F64,
                    op_a,
                    op_b,
                    m,
                    n,
                    k,
                    alpha: 1.5,
                    a: DevicePtr(a.as_ptr() as u64),
                    lda,
                    stride_a: sa,
                    b: DevicePtr(b.as_ptr() as u64),
                    ldb,
                    stride_b: sb,
                    beta,
                    c: DevicePtr(c.as_mut_ptr() as u64),
                    ldc,
                    stride_c: sc,
                    batch,
                };
                unsafe { gemm_host(&g).unwrap() };
                let want = reference(&g, &a, &b, &c0);
                for bi in 0..batch {
                    for j in 0..n {
                        for i in 0..m {
                            let p = bi * sc + i + j * ldc;
                            assert!((c[p] - want[p]).abs() < 1e-12, "{op_a:?}{op_b:?} beta {beta} at {p}");
                        }
                    }
                }
                // Padding between columns and batches is untouched.
                assert!(c[m].is_nan() == c0[m].is_nan() && (c0[m].is_nan() || c[m] == c0[m]));
            }
        }
    }

    #[test]
    fn bad_leading_dimensions_are_errors() {
        let mut g = GemmArgs {
            dtype: GemmDType::F32,
            op_a: Op::N,
            op_b: Op::N,
            m: 4,
            n: 2,
            k: 3,
            alpha: 1.0,
            a: DevicePtr(0),
            lda: 3,
            stride_a: 0,
            b: DevicePtr(0),
            ldb: 3,
            stride_b: 0,
            beta: 0.0,
            c: DevicePtr(0),
            ldc: 4,
            stride_c: 0,
            batch: 1,
        };
        let e = validate(&g).unwrap_err().to_string();
        assert!(e.contains("lda = 3 < rows of A (4)"), "{e}");
        g.lda = 4;
        g.ldc = 2;
        assert!(validate(&g).unwrap_err().to_string().contains("ldc = 2 < m = 4"));
    }
}
