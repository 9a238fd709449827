//! Dropout on a GPU device (`kernels/cuda/dropout.cu`), shared by Cuda and Emu: one grid-stride
//! kernel that regenerates the mask from `(seed, offset + i)` and applies it, for the forward and
//! the backward alike. The mask equals the CPU's bit for bit (integer hashing only).

use bitgrad_engine::gpu::prims::{dtype_suffix, launch_n, out_like};
use bitgrad_engine::{Result, Storage, Tensor};

use super::MaskSource;

/// `t · m / (1 − p)` as a fresh contiguous device tensor (f32 or f64), not recorded.
pub(super) fn masked(t: &Tensor, src: MaskSource) -> Result<Tensor> {
    let t = t.contiguous()?;
    let st = t.storage();
    let s = st.gpu("dropout")?;
    let n = t.numel();
    let out = out_like(s, s.dtype(), n)?;
    let args = [
        (n as i64).into(),
        src.seed.into(),
        src.offset.into(),
        src.p.into(),
        src.scale().into(),
        s.ptr_at(t.layout().offset()).into(),
        out.ptr().into(),
    ];
    launch_n(s.runtime(), &format!("dropout_{}", dtype_suffix(s.dtype())), n, &args)?;
    Ok(Tensor::from_storage(Storage::Gpu(out), t.shape()))
}
