//! Unary and binary maps, comparisons and `where` on a GPU device (`elementwise.cu`).

use super::{dtype_suffix, expect_float, launch_n, out_like, LayoutArg};
use crate::ops::{BinaryOp, CmpOp, UnaryOp};
use crate::{DType, Error, GpuStorage, Layout, Result};

/// The op code `bg_unary` switches on, with its two parameters.
fn unary_code(op: UnaryOp) -> (i32, f64, f64) {
    match op {
        UnaryOp::Neg => (0, 0.0, 0.0),
        UnaryOp::Exp => (1, 0.0, 0.0),
        UnaryOp::Log => (2, 0.0, 0.0),
        UnaryOp::Sqrt => (3, 0.0, 0.0),
        UnaryOp::Rsqrt => (4, 0.0, 0.0),
        UnaryOp::Recip => (5, 0.0, 0.0),
        UnaryOp::Sqr => (6, 0.0, 0.0),
        UnaryOp::Relu => (7, 0.0, 0.0),
        UnaryOp::Sigmoid => (8, 0.0, 0.0),
        UnaryOp::Tanh => (9, 0.0, 0.0),
        UnaryOp::Abs => (10, 0.0, 0.0),
        UnaryOp::Sign => (11, 0.0, 0.0),
        UnaryOp::Step => (12, 0.0, 0.0),
        UnaryOp::Powf(p) => (13, p, 0.0),
        UnaryOp::Affine { mul, add } => (14, mul, add),
    }
}

fn binary_code(op: BinaryOp) -> i32 {
    match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::Div => 3,
        BinaryOp::Max => 4,
        BinaryOp::Min => 5,
    }
}

fn cmp_code(op: CmpOp) -> i32 {
    match op {
        CmpOp::Eq => 0,
        CmpOp::Ne => 1,
        CmpOp::Lt => 2,
        CmpOp::Le => 3,
        CmpOp::Gt => 4,
        CmpOp::Ge => 5,
    }
}

/// True when the f32 float4 kernels can take `l` of `s`: contiguous, 16-byte aligned start.
fn vec4_ok(s: &GpuStorage, l: &Layout) -> bool {
    s.dtype() == DType::F32 && l.is_contiguous() && s.ptr_at(l.offset()).0.is_multiple_of(16)
}

/// `op(x)` elementwise into a fresh contiguous storage.
pub fn unary(s: &GpuStorage, l: &Layout, op: UnaryOp) -> Result<GpuStorage> {
    expect_float(op.name(), s.dtype())?;
    let n = l.numel();
    let out = out_like(s, s.dtype(), n)?;
    let rt = s.runtime();
    let (code, p0, p1) = unary_code(op);
    let mut done = 0;
    // float4 loads and stores need 16-byte alignment on both sides (a misaligned one faults on a
    // GPU, and on the emulator's end-aligned guarded buffers).
    if vec4_ok(s, l) && out.ptr().0 % 16 == 0 && n >= 4 {
        let n4 = n / 4;
        let args =
            [(n4 as i64).into(), code.into(), p0.into(), p1.into(), s.ptr_at(l.offset()).into(), out.ptr().into()];
        launch_n(rt, "unary_vec4_f32", n4, &args)?;
        done = n4 * 4;
    }
    let rest = Layout::contiguous([n - done]);
    let lx = if done > 0 { LayoutArg::of(&rest)?.with_offset(l.offset() + done) } else { LayoutArg::of(l)? };
    let args = [
        ((n - done) as i64).into(),
        code.into(),
        p0.into(),
        p1.into(),
        s.ptr().into(),
        lx.arg(),
        out.ptr_at(done).into(),
    ];
    launch_n(rt, &format!("unary_{}", dtype_suffix(s.dtype())), n - done, &args)?;
    Ok(out)
}

/// `op(a, b)` elementwise; both layouts already broadcast to the output shape.
pub fn binary(a: &GpuStorage, la: &Layout, b: &GpuStorage, lb: &Layout, op: BinaryOp) -> Result<GpuStorage> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op: op.name(), lhs: a.dtype(), rhs: b.dtype() });
    }
    expect_float(op.name(), a.dtype())?;
    let n = la.numel();
    let out = out_like(a, a.dtype(), n)?;
    let rt = a.runtime();
    let code = binary_code(op);
    if vec4_ok(a, la) && vec4_ok(b, lb) && out.ptr().0 % 16 == 0 && n.is_multiple_of(4) {
        let args = [
            ((n / 4) as i64).into(),
            code.into(),
            a.ptr_at(la.offset()).into(),
            b.ptr_at(lb.offset()).into(),
            out.ptr().into(),
        ];
        launch_n(rt, "binary_vec4_f32", n / 4, &args)?;
        return Ok(out);
    }
    let m = LayoutArg::merged(&[la, lb])?;
    let args =
        [(n as i64).into(), code.into(), a.ptr().into(), m[0].arg(), b.ptr().into(), m[1].arg(), out.ptr().into()];
    launch_n(rt, &format!("binary_{}", dtype_suffix(a.dtype())), n, &args)?;
    Ok(out)
}

/// Elementwise comparison giving a u8 mask.
pub fn compare(a: &GpuStorage, la: &Layout, b: &GpuStorage, lb: &Layout, op: CmpOp) -> Result<GpuStorage> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op: "compare", lhs: a.dtype(), rhs: b.dtype() });
    }
    let n = la.numel();
    let out = out_like(a, DType::U8, n)?;
    let m = LayoutArg::merged(&[la, lb])?;
    let args = [
        (n as i64).into(),
        cmp_code(op).into(),
        a.ptr().into(),
        m[0].arg(),
        b.ptr().into(),
        m[1].arg(),
        out.ptr().into(),
    ];
    launch_n(a.runtime(), &format!("compare_{}", dtype_suffix(a.dtype())), n, &args)?;
    Ok(out)
}

/// `mask ? a : b`; all three layouts broadcast to the output shape.
pub fn where_cond(
    m: &GpuStorage,
    lm: &Layout,
    a: &GpuStorage,
    la: &Layout,
    b: &GpuStorage,
    lb: &Layout,
) -> Result<GpuStorage> {
    if m.dtype() != DType::U8 {
        return Err(Error::invalid("where_cond", format!("the mask must be u8, got {}", m.dtype())));
    }
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op: "where_cond", lhs: a.dtype(), rhs: b.dtype() });
    }
    let n = la.numel();
    let out = out_like(a, a.dtype(), n)?;
    let l = LayoutArg::merged(&[lm, la, lb])?;
    let args = [
        (n as i64).into(),
        m.ptr().into(),
        l[0].arg(),
        a.ptr().into(),
        l[1].arg(),
        b.ptr().into(),
        l[2].arg(),
        out.ptr().into(),
    ];
    launch_n(a.runtime(), &format!("where_{}", super::bytes_suffix(a.dtype())), n, &args)?;
    Ok(out)
}
