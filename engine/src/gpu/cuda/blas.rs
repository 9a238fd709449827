//! GEMM through cuBLAS (`cublas{S,D}gemmStridedBatched`) on the runtime's stream.
//!
//! The handle keeps cuBLAS's default math mode (`CUBLAS_DEFAULT_MATH`): f32 GEMMs run in true
//! f32, never TF32, so results agree with the CPU reference to f32 rounding. Arguments are checked
//! here as cuBLAS checks them (its own failure is a bare `CUBLAS_STATUS_INVALID_VALUE`), so a
//! wrong call site gets a message that names the argument.

use std::ffi::c_longlong;

use cudarc::cublas::{result, sys};

use crate::gpu::{GemmArgs, GemmDType, Op};
use crate::{Error, Result};

fn bad(msg: String) -> Error {
    Error::invalid("gemm", msg)
}

/// Checks `g` as cuBLAS would, and that every size fits cuBLAS's 32-bit `int`.
pub fn validate(g: &GemmArgs) -> Result<()> {
    let rows = |op: Op, r: usize, c: usize| if op == Op::N { r } else { c };
    // op(A) is m×k, so A is stored m×k (N) or k×m (T); likewise B: k×n or n×k; C: m×n.
    let checks = [
        ("lda", g.lda, rows(g.op_a, g.m, g.k), "A"),
        ("ldb", g.ldb, rows(g.op_b, g.k, g.n), "B"),
        ("ldc", g.ldc, g.m, "C"),
    ];
    for (name, ld, r, which) in checks {
        if ld < r.max(1) {
            return Err(bad(format!(
                "{name} = {ld} is less than the {r} rows of {which} as stored (m={}, n={}, k={}, op_a={:?}, op_b={:?}; \
                 matrices are column-major)",
                g.m, g.n, g.k, g.op_a, g.op_b
            )));
        }
    }
    let int_max = i32::MAX as usize;
    for (name, v) in
        [("m", g.m), ("n", g.n), ("k", g.k), ("lda", g.lda), ("ldb", g.ldb), ("ldc", g.ldc), ("batch", g.batch)]
    {
        if v > int_max {
            return Err(bad(format!("{name} = {v} does not fit cuBLAS's 32-bit int")));
        }
    }
    for (name, v) in [("stride_a", g.stride_a), ("stride_b", g.stride_b), ("stride_c", g.stride_c)] {
        if v > i64::MAX as usize {
            return Err(bad(format!("{name} = {v} does not fit a 64-bit stride")));
        }
    }
    // Overlapping outputs would make batches race; inputs may overlap (stride 0 broadcasts).
    if g.batch > 1 && g.m > 0 && g.n > 0 && g.stride_c < g.ldc * (g.n - 1) + g.m {
        return Err(bad(format!(
            "stride_c = {} makes the {} output matrices overlap (each spans ldc·(n-1)+m = {} elements)",
            g.stride_c,
            g.batch,
            g.ldc * (g.n - 1) + g.m
        )));
    }
    let null = |p: crate::gpu::DevicePtr| p.0 == 0;
    if g.m > 0 && g.n > 0 && g.batch > 0 && (null(g.c) || (g.k > 0 && (null(g.a) || null(g.b)))) {
        return Err(bad("a null device pointer for a non-empty operand".into()));
    }
    Ok(())
}

/// A cuBLAS handle bound to one stream. cuBLAS handles must not be used by two threads at once,
/// so the runtime keeps it behind a mutex.
#[derive(Debug)]
pub struct Blas {
    handle: sys::cublasHandle_t,
}

// SAFETY: the handle is an opaque pointer used only under the runtime's mutex, with the
// runtime's context bound to the calling thread.
unsafe impl Send for Blas {}

impl Blas {
    /// A handle whose work goes to `stream`, in the default (no TF32) math mode.
    pub fn new(stream: cudarc::driver::sys::CUstream) -> Result<Self> {
        let handle = result::create_handle().map_err(|e| Error::Msg(format!("cublasCreate: {e}")))?;
        let blas = Blas { handle };
        // SAFETY: a fresh handle; a live stream of the current context. The two stream types are
        // the same driver `CUstream` declared in two generated binding modules.
        unsafe {
            result::set_stream(handle, stream as sys::cudaStream_t)
                .map_err(|e| Error::Msg(format!("cublasSetStream: {e}")))?;
            sys::cublasSetMathMode(handle, sys::cublasMath_t::CUBLAS_DEFAULT_MATH)
                .result()
                .map_err(|e| Error::Msg(format!("cublasSetMathMode: {e}")))?;
        }
        Ok(blas)
    }

    /// cuBLAS's version, e.g. 130100 for 13.1.0.
    pub fn version(&self) -> Option<i32> {
        let mut v = 0;
        // SAFETY: a live handle and an out-pointer to a local.
        unsafe { sys::cublasGetVersion_v2(self.handle, &mut v) }.result().ok().map(|_| v)
    }

    /// Runs `g` (validated by the caller).
    pub fn gemm(&self, g: &GemmArgs) -> Result<()> {
        if g.m == 0 || g.n == 0 || g.batch == 0 {
            return Ok(()); // nothing to write; cuBLAS would accept it too
        }
        let op = |o: Op| match o {
            Op::N => sys::cublasOperation_t::CUBLAS_OP_N,
            Op::T => sys::cublasOperation_t::CUBLAS_OP_T,
        };
        let (ta, tb) = (op(g.op_a), op(g.op_b));
        let (m, n, k) = (g.m as i32, g.n as i32, g.k as i32);
        let (lda, ldb, ldc, batch) = (g.lda as i32, g.ldb as i32, g.ldc as i32, g.batch as i32);
        let (sa, sb, sc) = (g.stride_a as c_longlong, g.stride_b as c_longlong, g.stride_c as c_longlong);
        // SAFETY: sizes and leading dimensions were validated; the pointers are device memory of
        // this context that the caller keeps alive until the stream reaches this call; alpha and
        // beta are host scalars read before the call returns (the handle's pointer mode is host).
        let status = unsafe {
            match g.dtype {
                GemmDType::F32 => {
                    let (alpha, beta) = (g.alpha as f32, g.beta as f32);
                    result::sgemm_strided_batched(
                        self.handle,
                        ta,
                        tb,
                        m,
                        n,
                        k,
                        &alpha,
                        g.a.0 as *const f32,
                        lda,
                        sa,
                        g.b.0 as *const f32,
                        ldb,
                        sb,
                        &beta,
                        g.c.0 as *mut f32,
                        ldc,
                        sc,
                        batch,
                    )
                }
                GemmDType::F64 => result::dgemm_strided_batched(
                    self.handle,
                    ta,
                    tb,
                    m,
                    n,
                    k,
                    &g.alpha,
                    g.a.0 as *const f64,
                    lda,
                    sa,
                    g.b.0 as *const f64,
                    ldb,
                    sb,
                    &g.beta,
                    g.c.0 as *mut f64,
                    ldc,
                    sc,
                    batch,
                ),
            }
        };
        status.map_err(|e| Error::Msg(format!("cuBLAS gemm ({:?}, m={m} n={n} k={k} batch={batch}): {e}", g.dtype)))
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        // SAFETY: created by cublasCreate, destroyed once.
        let _ = unsafe { result::destroy_handle(self.handle) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::DevicePtr;

    fn args() -> GemmArgs {
        GemmArgs {
            dtype: GemmDType::F32,
            op_a: Op::N,
            op_b: Op::N,
            m: 4,
            n: 3,
            k: 5,
            alpha: 1.0,
            a: DevicePtr(256),
            lda: 4,
            stride_a: 20,
            b: DevicePtr(512),
            ldb: 5,
            stride_b: 15,
            beta: 0.0,
            c: DevicePtr(1024),
            ldc: 4,
            stride_c: 12,
            batch: 2,
        }
    }

    fn err(g: GemmArgs) -> String {
        validate(&g).unwrap_err().to_string()
    }

    #[test]
    fn accepts_valid_and_names_the_bad_argument() {
        validate(&args()).unwrap();
        validate(&GemmArgs { op_a: Op::T, lda: 5, op_b: Op::T, ldb: 3, ..args() }).unwrap();
        validate(&GemmArgs { stride_a: 0, ..args() }).unwrap(); // broadcast input
        assert!(err(GemmArgs { lda: 3, ..args() }).contains("lda = 3 is less than the 4 rows of A"));
        assert!(err(GemmArgs { op_a: Op::T, ..args() }).contains("lda = 4 is less than the 5 rows"));
        assert!(err(GemmArgs { ldb: 4, ..args() }).contains("ldb"));
        assert!(err(GemmArgs { ldc: 1, ..args() }).contains("ldc"));
        assert!(err(GemmArgs { stride_c: 11, ..args() }).contains("overlap"));
        assert!(
            err(GemmArgs { m: 1 << 31, lda: 1 << 31, ldc: 1 << 31, stride_c: 1 << 40, ..args() }).contains("32-bit")
        );
        assert!(err(GemmArgs { c: DevicePtr(0), ..args() }).contains("null"));
        // Empty problems are valid whatever the pointers.
        validate(&GemmArgs { m: 0, c: DevicePtr(0), ..args() }).unwrap();
    }
}
