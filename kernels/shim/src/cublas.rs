//! cuBLAS: handles bound to a context and a stream, and `cublas{S,D}gemmStridedBatched` with
//! cuBLAS's contract — column-major operands, `op(A)` m×k, `op(B)` k×n, `C = α·op(A)·op(B) + β·C`,
//! C not read when β = 0, α and β read from host memory at the call.
//!
//! The arithmetic is a plain loop accumulating in f64, deliberately independent of the
//! emulator device's GEMM: a transposition or leading-dimension mistake in bitgrad's call site
//! cannot cancel against the same mistake in the reference. Operands outside live allocations
//! fault on the stream like a kernel would (`CUDA_ERROR_ILLEGAL_ADDRESS` at the next sync).

use std::ffi::c_char;

use rayon::prelude::*;

use crate::ffi::*;
use crate::state::{api, driver, BlasHandle};

const OP_N: i32 = 0;
const OP_T: i32 = 1;
/// `CUBLAS_TF32_TENSOR_OP_MATH`: f32 GEMMs in TF32, not emulated.
const TF32_MATH: i32 = 3;

/// # Safety
/// `h` must be valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cublasCreate_v2(h: *mut Handle) -> CublasStatus {
    api("cublasCreate_v2", CUBLAS_STATUS_INTERNAL_ERROR, || {
        let mut d = driver();
        let ctx = d.current("cublasCreate_v2").map_err(|f| Fail { code: CUBLAS_STATUS_NOT_INITIALIZED, ..f })?;
        if h.is_null() {
            return Err(Fail::new(CUBLAS_STATUS_INVALID_VALUE, "null handle pointer"));
        }
        let id = d.id();
        d.blas.insert(id, BlasHandle { ctx, stream: 0, math_mode: 0 });
        // SAFETY: non-null out-pointer of the caller.
        unsafe { h.write(handle(Kind::Blas, id)) };
        Ok(())
    })
}

/// Succeeds even after the handle's stream was destroyed, as cuBLAS does.
///
/// # Safety
/// Plain value arguments only.
#[no_mangle]
pub unsafe extern "C" fn cublasDestroy_v2(h: Handle) -> CublasStatus {
    api("cublasDestroy_v2", CUBLAS_STATUS_INTERNAL_ERROR, || {
        let mut d = driver();
        let id = id_of(h, Kind::Blas).filter(|id| d.blas.contains_key(id));
        let id = id.ok_or_else(|| Fail::new(CUBLAS_STATUS_NOT_INITIALIZED, format!("{h:?} is not a cuBLAS handle")))?;
        d.blas.remove(&id);
        Ok(())
    })
}

fn blas_id(d: &crate::state::Driver, h: Handle) -> Res<u64> {
    id_of(h, Kind::Blas)
        .filter(|id| d.blas.contains_key(id))
        .ok_or_else(|| Fail::new(CUBLAS_STATUS_NOT_INITIALIZED, format!("{h:?} is not a live cuBLAS handle")))
}

/// # Safety
/// Plain value arguments only.
#[no_mangle]
pub unsafe extern "C" fn cublasSetStream_v2(h: Handle, stream: Handle) -> CublasStatus {
    api("cublasSetStream_v2", CUBLAS_STATUS_INTERNAL_ERROR, || {
        let mut d = driver();
        let id = blas_id(&d, h)?;
        let ctx = d.blas[&id].ctx;
        let sid = if stream.is_null() {
            0
        } else {
            let sid = id_of(stream, Kind::Stream).filter(|s| d.streams.get(s).is_some_and(|(c, _)| *c == ctx));
            sid.ok_or_else(|| {
                Fail::new(CUBLAS_STATUS_INVALID_VALUE, format!("{stream:?} is not a stream of the handle's context"))
            })?
        };
        d.blas.get_mut(&id).expect("checked").stream = sid;
        Ok(())
    })
}

/// # Safety
/// Plain value arguments only.
#[no_mangle]
pub unsafe extern "C" fn cublasSetMathMode(h: Handle, mode: i32) -> CublasStatus {
    api("cublasSetMathMode", CUBLAS_STATUS_INTERNAL_ERROR, || {
        let mut d = driver();
        let id = blas_id(&d, h)?;
        d.blas.get_mut(&id).expect("checked").math_mode = mode;
        Ok(())
    })
}

/// # Safety
/// `v` must be valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cublasGetVersion_v2(h: Handle, v: *mut i32) -> CublasStatus {
    api("cublasGetVersion_v2", CUBLAS_STATUS_INTERNAL_ERROR, || {
        blas_id(&driver(), h)?;
        if v.is_null() {
            return Err(Fail::new(CUBLAS_STATUS_INVALID_VALUE, "null version pointer"));
        }
        // SAFETY: non-null out-pointer of the caller.
        unsafe { v.write(130_000) }; // 13.0.0: the cuBLAS of CUDA 13.0
        Ok(())
    })
}

const STATUS: &[(i32, &str, &str)] = &[
    (0, "CUBLAS_STATUS_SUCCESS\0", "success\0"),
    (1, "CUBLAS_STATUS_NOT_INITIALIZED\0", "the library was not initialized\0"),
    (3, "CUBLAS_STATUS_ALLOC_FAILED\0", "the resource allocation failed\0"),
    (7, "CUBLAS_STATUS_INVALID_VALUE\0", "an invalid numeric value was used as an argument\0"),
    (8, "CUBLAS_STATUS_ARCH_MISMATCH\0", "an absent device architectural feature is required\0"),
    (11, "CUBLAS_STATUS_MAPPING_ERROR\0", "an access to GPU memory space failed\0"),
    (13, "CUBLAS_STATUS_EXECUTION_FAILED\0", "the GPU program failed to execute\0"),
    (14, "CUBLAS_STATUS_INTERNAL_ERROR\0", "an internal operation failed\0"),
    (15, "CUBLAS_STATUS_NOT_SUPPORTED\0", "the functionality requested is not supported\0"),
    (16, "CUBLAS_STATUS_LICENSE_ERROR\0", "an error was detected when checking the current licensing\0"),
];

fn status_text(s: i32, name: bool) -> *const c_char {
    let (n, t) =
        STATUS.iter().find(|e| e.0 == s).map_or(("CUBLAS_STATUS_UNKNOWN\0", "unknown error\0"), |e| (e.1, e.2));
    (if name { n } else { t }).as_ptr().cast()
}

#[no_mangle]
pub extern "C" fn cublasGetStatusName(s: i32) -> *const c_char {
    status_text(s, true)
}

#[no_mangle]
pub extern "C" fn cublasGetStatusString(s: i32) -> *const c_char {
    status_text(s, false)
}

/// One strided batched GEMM call, as received.
#[derive(Clone, Copy)]
struct Gemm {
    ta: i32,
    tb: i32,
    m: i32,
    n: i32,
    k: i32,
    alpha: f64,
    a: u64,
    lda: i32,
    sa: i64,
    b: u64,
    ldb: i32,
    sb: i64,
    beta: f64,
    c: u64,
    ldc: i32,
    sc: i64,
    batch: i32,
}

/// Values a GEMM reads and writes, f32 or f64.
trait Elem: Copy + Send + Sync + 'static {
    fn get(p: usize, i: usize) -> f64;
    fn set(p: usize, i: usize, v: f64);
}
impl Elem for f32 {
    fn get(p: usize, i: usize) -> f64 {
        // SAFETY: callers pass indices inside checked ranges.
        unsafe { *(p as *const f32).add(i) as f64 }
    }
    fn set(p: usize, i: usize, v: f64) {
        // SAFETY: as above; columns written by one task each.
        unsafe { *(p as *mut f32).add(i) = v as f32 }
    }
}
impl Elem for f64 {
    fn get(p: usize, i: usize) -> f64 {
        // SAFETY: callers pass indices inside checked ranges.
        unsafe { *(p as *const f64).add(i) }
    }
    fn set(p: usize, i: usize, v: f64) {
        // SAFETY: as above; columns written by one task each.
        unsafe { *(p as *mut f64).add(i) = v }
    }
}

fn gemm<T: Elem>(name: &str, h: Handle, g: Gemm) -> Res<()> {
    let elem = std::mem::size_of::<T>();
    let d = driver();
    let id = blas_id(&d, h)?;
    let hd = &d.blas[&id];
    let ctx = d.current(name).map_err(|f| {
        let code = if f.code == CUDA_ERROR_INVALID_CONTEXT {
            CUBLAS_STATUS_NOT_INITIALIZED
        } else {
            CUBLAS_STATUS_EXECUTION_FAILED
        };
        Fail { code, ..f }
    })?;
    if ctx != hd.ctx {
        return Err(Fail::new(
            CUBLAS_STATUS_NOT_INITIALIZED,
            "the handle was created in another context than the current one",
        ));
    }
    if hd.math_mode & TF32_MATH == TF32_MATH && elem == 4 {
        return Err(Fail::new(CUBLAS_STATUS_NOT_SUPPORTED, "TF32 math mode is not emulated"));
    }
    let stream = if hd.stream == 0 { std::ptr::null_mut() } else { handle(Kind::Stream, hd.stream) };
    let s = d.stream(ctx, stream, name).map_err(|f| Fail { code: CUBLAS_STATUS_EXECUTION_FAILED, ..f })?;
    let bad = |why: String| Err(Fail::new(CUBLAS_STATUS_INVALID_VALUE, format!("{name}: {why}")));
    // The argument rules of the cuBLAS documentation, in its order.
    let op_ok = |t: i32| t == OP_N || t == OP_T;
    if !op_ok(g.ta) || !op_ok(g.tb) {
        return bad(format!("transa = {}, transb = {} (N = 0, T = 1; conjugate makes no sense for reals)", g.ta, g.tb));
    }
    if g.m < 0 || g.n < 0 || g.k < 0 || g.batch < 0 {
        return bad(format!("negative size m={} n={} k={} batch={}", g.m, g.n, g.k, g.batch));
    }
    let (rows_a, cols_a) = if g.ta == OP_N { (g.m, g.k) } else { (g.k, g.m) };
    let (rows_b, cols_b) = if g.tb == OP_N { (g.k, g.n) } else { (g.n, g.k) };
    for (ld, rows, what) in [(g.lda, rows_a, "lda"), (g.ldb, rows_b, "ldb"), (g.ldc, g.m, "ldc")] {
        if ld < rows.max(1) {
            return bad(format!(
                "{what} = {ld} < max(1, {rows}) (column-major: the leading dimension is the row count)"
            ));
        }
    }
    if g.m == 0 || g.n == 0 || g.batch == 0 {
        return Ok(());
    }
    // Every operand's span over the whole batch must be device memory of this context.
    let span = |stride: i64, rows: i32, cols: i32, ld: i32| -> usize {
        ((g.batch as i64 - 1) * stride + (cols as i64 - 1) * ld as i64 + rows as i64) as usize * elem
    };
    let mut operands = vec![("C", g.c, span(g.sc, g.m, g.n, g.ldc))];
    if g.k > 0 && g.alpha != 0.0 {
        operands.push(("A", g.a, span(g.sa, rows_a, cols_a, g.lda)));
        operands.push(("B", g.b, span(g.sb, rows_b, cols_b, g.ldb)));
    }
    let mut fault = None;
    for (what, ptr, bytes) in operands {
        if let Err(f) = d.range(ctx, ptr, bytes, &format!("{name}: operand {what}")) {
            fault.get_or_insert(f.msg);
        }
    }
    drop(d);
    s.enqueue(Box::new(move || {
        if let Some(msg) = fault {
            return Err(Fail::new(CUDA_ERROR_ILLEGAL_ADDRESS, msg));
        }
        run::<T>(g);
        Ok(())
    }));
    Ok(())
}

/// `C = α·op(A)·op(B) + β·C` for every batch entry, one column of C per task.
fn run<T: Elem>(g: Gemm) {
    let elem = std::mem::size_of::<T>();
    let (m, n, k) = (g.m as usize, g.n as usize, g.k as usize);
    (0..g.batch as usize * n).into_par_iter().for_each(|bj| {
        let (b, j) = (bj / n, bj % n);
        let a = g.a as usize + b * g.sa as usize * elem;
        let bb = g.b as usize + b * g.sb as usize * elem;
        let c = g.c as usize + b * g.sc as usize * elem;
        let (lda, ldb, ldc) = (g.lda as usize, g.ldb as usize, g.ldc as usize);
        for i in 0..m {
            let mut acc = 0.0f64;
            if g.alpha != 0.0 {
                for p in 0..k {
                    let av = if g.ta == OP_N { T::get(a, i + p * lda) } else { T::get(a, p + i * lda) };
                    let bv = if g.tb == OP_N { T::get(bb, p + j * ldb) } else { T::get(bb, j + p * ldb) };
                    acc += av * bv;
                }
            }
            let old = if g.beta == 0.0 { 0.0 } else { g.beta * T::get(c, i + j * ldc) };
            T::set(c, i + j * ldc, g.alpha * acc + old);
        }
    });
}

macro_rules! strided_batched {
    ($name:ident, $t:ty) => {
        /// # Safety
        /// `alpha` and `beta` must point to host values; the matrices are device pointers.
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "C" fn $name(
            h: Handle,
            ta: i32,
            tb: i32,
            m: i32,
            n: i32,
            k: i32,
            alpha: *const $t,
            a: u64,
            lda: i32,
            sa: i64,
            b: u64,
            ldb: i32,
            sb: i64,
            beta: *const $t,
            c: u64,
            ldc: i32,
            sc: i64,
            batch: i32,
        ) -> CublasStatus {
            api(stringify!($name), CUBLAS_STATUS_INTERNAL_ERROR, || {
                if alpha.is_null() || beta.is_null() {
                    return Err(Fail::new(CUBLAS_STATUS_INVALID_VALUE, "null alpha or beta"));
                }
                // Host pointer mode: read now, the caller's values may be gone after the call.
                // SAFETY: non-null host pointers of the caller.
                let (alpha, beta) = unsafe { (*alpha as f64, *beta as f64) };
                let g = Gemm { ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, batch };
                gemm::<$t>(stringify!($name), h, g)
            })
        }
    };
}

strided_batched!(cublasSgemmStridedBatched, f32);
strided_batched!(cublasDgemmStridedBatched, f64);
