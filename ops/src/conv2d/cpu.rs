//! The CPU kernels of conv2d: im2col + GEMM, a batch chunk at a time.
//!
//! Per chunk of `n_img` images (`N = n_img·P` columns) and per group `g`:
//!
//! * forward: `Y_g[Og, N] = W_g[Og, Kg] · cols_g[Kg, N]`;
//! * weight gradient: `dW_g[Og, Kg] += dY_g[Og, N] · cols_gᵀ[N, Kg]` — one buffer for the whole
//!   batch, accumulated chunk after chunk by the GEMM itself (no per-sample buffers); for few
//!   output channels computed as its transpose `dW_gᵀ += cols_g · dY_gᵀ`, which gemm runs faster;
//! * input gradient: `dcols_g[Kg, N] = W_gᵀ[Kg, Og] · dY_g[Og, N]`, then col2im adds the columns
//!   back onto the pixels they came from.
//!
//! A 1×1 stride-1 unpadded convolution of one image needs no columns: the image `[C, H·W]` is
//! its own column matrix and the GEMMs read and write the tensors in place. When a chunk holds one
//! image, the GEMM also writes straight into the output (or input gradient); with several images,
//! `Y` and `dY` go through a staging matrix `[O, N]` (images side by side), which makes the GEMMs
//! wide enough to be efficient on late-stage maps of 8×8 or 4×4 pixels. Chunks take images until
//! they have about `TARGET_COLUMNS` (1024) columns, evened out so that the batch splits into an
//! even number of equal chunks where it can ([`images_per_chunk`]).
//!
//! Threads. Forward and input gradient: with at least as many chunks as threads (BiT's stem and
//! stages 1–2 at batch 8), chunks run side by side, one per thread, on single-threaded GEMMs;
//! otherwise chunks run in turn and each GEMM uses gemm's own threads. Weight gradient: chunks in
//! turn (they accumulate into one buffer); in the transposed form the destination is cut into
//! row tiles that run side by side. A 1×1 convolution on maps of 256 pixels or more skips the
//! chunks: its destination's row tiles run side by side, each summing the whole batch image by
//! image straight from the tensors. im2col, col2im and the copies split their rows over rayon.
//! Every split is fixed by the shapes, and gemm never splits a sum, so results do not depend on
//! the thread count.
//!
//! Workspace: the column matrix of a chunk holds at most `max(MAX_COL_BYTES, one image's
//! columns)` bytes (32 MiB; one image of BiT's 7×7 stem at 224 px needs 7.4 MiB), plus the
//! staging matrix when a chunk holds several images; chunks that run side by side have one
//! each. A forward pass over one image at a time fills the columns a few output rows at a time
//! (about 512 KiB, to stay in L2 or close). Each thread keeps its workspace for the next call
//! (`workspace.rs`).

use ::gemm::Parallelism;
use bitgrad_engine::{FloatElem, WithDType};
use rayon::prelude::*;

use super::columns::{col2im_add, gather_images, gather_images_transposed, im2col, im2col_rows, scatter_images};
use super::matmul::{matmul, MatMut, MatRef};
use super::params::Geom;
use super::workspace::with_scratch;

/// The bound on one chunk's column matrix, in bytes.
pub(crate) const MAX_COL_BYTES: usize = 32 << 20;

/// Images are batched into one GEMM until it has about this many columns: fewer make gemm's
/// packing and threading overheads show (late-stage maps have only 16–64 pixels per image),
/// more only grow the workspace.
const TARGET_COLUMNS: usize = 1024;

/// Below this many flops per group GEMM, groups run side by side on single-threaded GEMMs
/// (depthwise and other many-group convolutions); above, one after another on all threads.
const GROUP_PARALLEL_MAX_FLOPS: usize = 1 << 22;

/// Column bytes per row tile when one image is processed in pieces: about one core's L2
/// (512 KiB on the Zen 3 machine this was tuned on; 128 and 256 KiB tiles measured slower,
/// whole images of 2.4 MiB no better).
const L2_TILE_BYTES: usize = 512 << 10;

/// Rows per destination tile of the transposed weight gradient (about). Each tile re-reads the
/// whole output gradient, so tiles should not be thin: 32-row tiles ran ~40 % slower than
/// 128-row ones on a 256 × 128 gradient.
const WEIGHT_GRAD_TILE_ROWS: usize = 96;

/// The tile height for `rows` rows: an even number of tiles (two at least, which balances two
/// threads), at most 64.
fn weight_grad_tile(rows: usize) -> usize {
    let tiles = (rows / WEIGHT_GRAD_TILE_ROWS).clamp(1, 64);
    rows.div_ceil(tiles + tiles % 2).max(1)
}

/// How many images one chunk takes: about [`TARGET_COLUMNS`] columns (within the column
/// bound), then evened out over the batch.
///
/// Chunks that run side by side are one per thread, so unequal ones leave a thread idle: at
/// batch 8 on 14 × 14 maps (196 columns per image) the target alone gives chunks of 6 and 2
/// images, and the 1×1 forwards of 224 px stage 3 ran at 0.55–0.69× PyTorch on a 2-core Zen 3.
/// So the batch is cut into an even number of equal chunks where it can be (4 + 4 there), the
/// chunk size nearest the target's; else into chunks as equal as the count allows. The choice
/// depends on the shapes only, never on the thread count (the results must not).
pub(crate) fn images_per_chunk(g: &Geom, elem_bytes: usize, max_col_bytes: usize) -> usize {
    let p = g.p().max(1);
    let per_image = (g.k_all() * p * elem_bytes).max(1);
    let by_bound = (max_col_bytes / per_image).max(1);
    let target = TARGET_COLUMNS.div_ceil(p).min(by_bound).min(g.batch).max(1);
    even_chunks(g.batch, target, by_bound)
}

/// Images per chunk for `batch` images, near `target` and at most `bound` (see
/// [`images_per_chunk`]): the divisor of `batch` in `target/2 ..= 2·target` (and `bound`) that
/// makes an even number of chunks, nearest `target` by ratio; else `target` with the
/// images spread evenly over the same number of chunks.
pub(crate) fn even_chunks(batch: usize, target: usize, bound: usize) -> usize {
    if batch <= 1 || target >= batch {
        return target.min(batch).max(1);
    }
    let off = |nb: usize| (nb.max(target) as f64 / nb.min(target) as f64, nb);
    let even = (target.div_ceil(2)..=(2 * target).min(bound).min(batch))
        .filter(|&nb| batch.is_multiple_of(nb) && (batch / nb).is_multiple_of(2))
        .min_by(|&a, &b| off(a).partial_cmp(&off(b)).unwrap_or(std::cmp::Ordering::Equal));
    even.unwrap_or_else(|| batch.div_ceil(batch.div_ceil(target)))
}

/// Runs `f(group, block, parallelism)` on each group's block of `dst` (`groups` equal,
/// contiguous blocks). A chunk that runs beside others (`!ch.threaded`) keeps to its thread.
fn per_group<T: Send>(
    dst: &mut [T],
    ch: &Chunk,
    flops_per_group: usize,
    f: impl Fn(usize, &mut [T], Parallelism) + Sync,
) {
    if dst.is_empty() {
        return;
    }
    let groups = ch.g.groups;
    let block = dst.len() / groups;
    if !ch.threaded {
        dst.chunks_mut(block).enumerate().for_each(|(gi, d)| f(gi, d, Parallelism::None));
    } else if groups > 1 && flops_per_group < GROUP_PARALLEL_MAX_FLOPS {
        dst.par_chunks_mut(block).enumerate().for_each(|(gi, d)| f(gi, d, Parallelism::None));
    } else {
        // gemm itself stays on one thread for small products (its own threshold).
        dst.chunks_mut(block).enumerate().for_each(|(gi, d)| f(gi, d, Parallelism::Rayon(0)));
    }
}

/// What a forward's output starts from before the products are added to it: the bias of each
/// output channel, and a residual `[batch, o, oh, ow]` (`conv2d_add`: the residual is the
/// initial accumulator, so the sum is written once instead of once by the convolution and once
/// more by an add).
#[derive(Clone, Copy)]
pub(crate) struct Start<'a, T> {
    pub bias: Option<&'a [T]>,
    pub residual: Option<&'a [T]>,
}

impl<'a, T> Start<'a, T> {
    pub fn bias(bias: Option<&'a [T]>) -> Self {
        Start { bias, residual: None }
    }
    /// Whether the products are added to something (else they overwrite zeros).
    pub fn accumulates(&self) -> bool {
        self.bias.is_some() || self.residual.is_some()
    }
}

/// `y[batch, o, oh, ow]` from `x[batch, c, h, w]`, `w[o, c/groups, kh, kw]`, `bias[o]` and the
/// residual (`start`).
pub(crate) fn forward<T: FloatElem>(x: &[T], w: &[T], start: Start<T>, g: &Geom, max_col_bytes: usize) -> Vec<T> {
    if let Some(y) = super::direct::forward(x, w, start, g) {
        return y;
    }
    let len = g.batch * g.o * g.p();
    let mut out = match start.residual {
        Some(r) => {
            assert_eq!(r.len(), len, "conv2d forward: the residual must have the output's shape");
            r.to_vec()
        }
        None => vec![T::zero(); len],
    };
    if out.is_empty() {
        return out;
    }
    let nb = images_per_chunk(g, size_of::<T>(), max_col_bytes);
    let img_out = g.o * g.p();
    // (Tests pass a tiny column bound to exercise the tiling too.)
    let tile_bytes = L2_TILE_BYTES.min(max_col_bytes);
    for_each_chunk(g, nb, &mut out, img_out, |chunk, col_buf, stage, out| {
        forward_chunk(x, w, start, chunk, col_buf, stage, out, tile_bytes)
    });
    out
}

/// Runs `f(chunk, col_buf, stage, part)` for every chunk of `nb` images, where `part` is the
/// chunk's images of `dst` (`per_image` elements each).
///
/// With at least as many chunks as threads, chunks run side by side, each on one thread with
/// its own scratch and single-threaded GEMMs: no synchronisation inside a GEMM, and each image
/// is computed exactly as it would be alone, so the result does not depend on the thread count.
/// Otherwise chunks run one after another and each GEMM uses every thread.
fn for_each_chunk<T: FloatElem>(
    g: &Geom,
    nb: usize,
    dst: &mut [T],
    per_image: usize,
    f: impl Fn(&Chunk, &mut [T], &mut [T], &mut [T]) + Sync,
) {
    let n_chunks = g.batch.div_ceil(nb);
    let threads = rayon::current_num_threads();
    let side_by_side = threads > 1 && n_chunks >= threads;
    let run = |ci: usize, part: &mut [T]| {
        let chunk = Chunk::new(g, ci * nb, nb.min(g.batch - ci * nb), !side_by_side);
        with_scratch::<T, _>(scratch_lens(g, nb), |col_buf, stage| f(&chunk, col_buf, stage, part));
    };
    if side_by_side {
        dst.par_chunks_mut(nb * per_image).enumerate().for_each(|(ci, part)| run(ci, part));
    } else {
        dst.chunks_mut(nb * per_image).enumerate().for_each(|(ci, part)| run(ci, part));
    }
}

/// Scratch sizes: the column matrix (none for 1×1 convolutions one image at a time) and the
/// staging matrix (none for one image at a time).
fn scratch_lens(g: &Geom, nb: usize) -> [usize; 2] {
    let cols = if g.is_pointwise() && nb == 1 { 0 } else { g.k_all() * nb * g.p() };
    let stage = if nb > 1 { g.o * nb * g.p() } else { 0 };
    [cols, stage]
}

/// Images `b0..b0 + n_img` of the batch: `n = n_img·P` GEMM columns.
struct Chunk<'g> {
    g: &'g Geom,
    b0: usize,
    n_img: usize,
    n: usize,
    /// Whether this chunk's GEMMs may use every thread (false when chunks run side by side).
    threaded: bool,
}

impl<'g> Chunk<'g> {
    fn new(g: &'g Geom, b0: usize, n_img: usize, threaded: bool) -> Self {
        Chunk { g, b0, n_img, n: n_img * g.p(), threaded }
    }
    /// This chunk's elements of an input-shaped tensor.
    fn inputs(&self) -> std::ops::Range<usize> {
        let img = self.g.c * self.g.hw();
        self.b0 * img..(self.b0 + self.n_img) * img
    }
    /// This chunk's elements of an output-shaped tensor.
    fn outputs(&self) -> std::ops::Range<usize> {
        let img = self.g.o * self.g.p();
        self.b0 * img..(self.b0 + self.n_img) * img
    }
    /// A 1×1 stride-1 unpadded convolution of one image: the image is its own column matrix.
    fn in_place(&self) -> bool {
        self.g.is_pointwise() && self.n_img == 1
    }
    /// The column matrix `[k_all, n]` of this chunk's images `xs`: `xs` itself when in place,
    /// else im2col into `col_buf`.
    fn columns<'a, T: FloatElem>(&self, xs: &'a [T], col_buf: &'a mut [T]) -> &'a [T] {
        if self.in_place() {
            return xs;
        }
        let cols = &mut col_buf[..self.g.k_all() * self.n];
        im2col(xs, self.g, self.n_img, cols);
        cols
    }
}

/// The forward of one chunk into `out` (its part of the output, holding the chunk's residual
/// when `start` has one, else zeros).
#[allow(clippy::too_many_arguments)]
fn forward_chunk<T: FloatElem>(
    x: &[T],
    w: &[T],
    start: Start<T>,
    ch: &Chunk,
    col_buf: &mut [T],
    stage: &mut [T],
    out: &mut [T],
    tile_bytes: usize,
) {
    let (g, n) = (ch.g, ch.n);
    let (p, o, og, kg) = (g.p(), g.o, g.og(), g.kg());
    // One image: the GEMM writes the output directly (on top of the residual and the bias, if
    // any).
    let direct = ch.n_img == 1;
    let accumulate = start.accumulates();
    if direct {
        if let Some(bias) = start.bias {
            let rows = out.chunks_exact_mut(p).zip(bias);
            match start.residual {
                Some(_) => rows.for_each(|(row, &b)| row.iter_mut().for_each(|v| *v = *v + b)),
                None => rows.for_each(|(row, &b)| row.fill(b)),
            }
        }
        if !ch.in_place() {
            // Output rows a few at a time, so that the columns stay in L2 between im2col
            // and the GEMM.
            let xs = &x[ch.inputs()];
            for rows in row_tiles(g, tile_bytes, size_of::<T>()) {
                let oh0 = rows.start;
                let tp = rows.len() * g.ow;
                let cols = &mut col_buf[..g.k_all() * tp];
                im2col_rows(xs, g, rows, cols);
                per_group(&mut *out, ch, 2 * og * kg * tp, |gi, d, par| {
                    let a = MatRef::rows(&w[gi * og * kg..][..og * kg], og, kg);
                    let b = MatRef::rows(&cols[gi * kg * tp..][..kg * tp], kg, tp);
                    matmul(MatMut::new(&mut d[oh0 * g.ow..], og, tp, p, 1), accumulate, a, b, par);
                });
            }
            return;
        }
    }
    let cols = ch.columns(&x[ch.inputs()], col_buf);
    let dst: &mut [T] = if direct { &mut *out } else { &mut stage[..o * n] };
    per_group(dst, ch, 2 * og * kg * n, |gi, d, par| {
        let a = MatRef::rows(&w[gi * og * kg..][..og * kg], og, kg);
        let b = MatRef::rows(&cols[gi * kg * n..][..kg * n], kg, n);
        matmul(MatMut::rows(d, og, n), direct && accumulate, a, b, par);
    });
    if !direct {
        scatter_images(&stage[..o * n], o, p, start.bias, start.residual.is_some(), out);
    }
}

/// Which gradients to compute, and the results.
#[derive(Default)]
pub(crate) struct Grads<V> {
    pub dx: Option<V>,
    pub dw: Option<V>,
    pub db: Option<V>,
}

/// The gradients of `forward` for the output gradient `gy[batch, o, oh, ow]`; `need` says which
/// of (input, weight, bias) are wanted.
pub(crate) fn backward<T: FloatElem>(
    x: &[T],
    w: &[T],
    gy: &[T],
    g: &Geom,
    need: [bool; 3],
    max_col_bytes: usize,
) -> Grads<Vec<T>> {
    let [need_dx, need_dw, need_db] = need;
    // Stride-1 3-wide f32 convolutions get their weight gradient from the direct kernels.
    let direct_dw = if need_dw && g.batch * g.p() > 0 { super::direct::weight_grad(x, gy, g) } else { None };
    let dw_done = direct_dw.is_some();
    let mut dw = direct_dw.or_else(|| need_dw.then(|| vec![T::zero(); g.o * g.kg()]));
    // Stride-1 k×k f32 convolutions get their input gradient from the direct kernels.
    let direct_dx = if need_dx && g.batch * g.p() > 0 { super::direct::input_grad(w, gy, g) } else { None };
    let direct = direct_dx.is_some();
    let mut dx = direct_dx.or_else(|| need_dx.then(|| vec![T::zero(); g.batch * g.c * g.hw()]));
    let nb = images_per_chunk(g, size_of::<T>(), max_col_bytes);
    let transposed = weight_grad_transposed(g, nb);
    if g.batch * g.p() > 0 {
        if let Some(dw) = dw.as_deref_mut().filter(|_| !dw_done) {
            weight_grad(x, gy, g, nb, transposed, dw);
        }
        if let Some(dx) = dx.as_deref_mut().filter(|_| !direct) {
            for_each_chunk(g, nb, dx, g.c * g.hw(), |chunk, col_buf, stage, dx| {
                let dys = chunk_grad(&gy[chunk.outputs()], chunk, stage);
                input_grad_chunk(w, dys, chunk, col_buf, dx);
            });
        }
    }
    if transposed && !dw_done {
        dw = dw.map(|t| untranspose_weight_grad(&t, g));
    }
    Grads { dx, dw, db: need_db.then(|| bias_grad(gy, g)) }
}

/// The weight gradient of the whole batch into `dw` (`[groups, Kg, Og]` when `transposed`).
/// One buffer is accumulated chunk after chunk, so chunks run in order.
fn weight_grad<T: FloatElem>(x: &[T], gy: &[T], g: &Geom, nb: usize, transposed: bool, dw: &mut [T]) {
    let [cols, _] = scratch_lens(g, nb);
    if whole_batch_pointwise(g) {
        // Large 1×1 maps: the images are their own columns, so every tile can take the whole
        // batch in one task.
        if !transposed {
            weight_grad_pointwise(x, gy, g, dw);
            return;
        }
        with_scratch::<T, _>([0, g.o * g.batch * g.p()], |_, dyt| {
            gather_images_transposed(gy, g.o, g.p(), g.batch, dyt);
            weight_grad_pointwise_transposed(x, dyt, g, dw);
        });
        return;
    }
    with_scratch::<T, _>([cols, g.o * nb * g.p()], |col_buf, stage| {
        for b0 in (0..g.batch).step_by(nb) {
            let chunk = Chunk::new(g, b0, nb.min(g.batch - b0), true);
            let (xs, gys) = (&x[chunk.inputs()], &gy[chunk.outputs()]);
            if transposed {
                let dyt = &mut stage[..g.o * chunk.n];
                gather_images_transposed(gys, g.o, g.p(), chunk.n_img, dyt);
                weight_grad_chunk_transposed(xs, dyt, &chunk, col_buf, dw);
            } else {
                let dys = chunk_grad(gys, &chunk, stage);
                weight_grad_chunk(xs, dys, &chunk, col_buf, dw);
            }
        }
    });
}

/// The chunk's output gradient as a `[O, n]` matrix: in place for one image, else gathered
/// into `stage`.
fn chunk_grad<'a, T: FloatElem>(gy: &'a [T], ch: &Chunk, stage: &'a mut [T]) -> &'a [T] {
    if ch.n_img == 1 {
        return gy;
    }
    let dst = &mut stage[..ch.g.o * ch.n];
    gather_images(gy, ch.g.o, ch.g.p(), ch.n_img, dst);
    dst
}

/// Whether the weight gradient is accumulated transposed, as `dW_gᵀ[Kg, Og]` (with `nb` images
/// per chunk). gemm runs its micro-kernel along the destination's contiguous axis and is
/// markedly faster when that is the shorter one for few output channels (64 × 576: ~90 GFLOP/s
/// transposed against ~60 on one Zen 3 core), and the transposed form runs as row tiles side by
/// side, which also beats gemm's own threading on one-image chunks (many small GEMMs). Measured
/// on BiT's shapes: up to 64 output channels always, 128 only for one-image chunks; beyond, the
/// plain form (and gemm's threads) wins.
fn weight_grad_transposed(g: &Geom, nb: usize) -> bool {
    if whole_batch_pointwise(g) {
        // Whole-batch tiles (below): the shorter destination axis contiguous, as above.
        return g.og() <= g.kg();
    }
    g.og() <= g.kg() && (g.og() <= 64 || (g.og() <= 128 && nb == 1))
}

/// Whether the weight gradient of a 1×1 convolution runs as whole-batch row tiles, side by
/// side, each summing image after image with single-threaded GEMMs at least 256 pixels deep:
/// the images are their own columns, and one parallel region replaces gemm's own threading over
/// chunk after chunk, which scales poorly on these small destinations with long sums (on a
/// Zen 4 EPYC, batch 8: 512 → 128 channels on 16 × 16 maps 6.1 → 3.2 ms, 64 → 256 on 32 × 32
/// maps 4.7 → 2.8 ms). Smaller maps keep the chunks, whose staged GEMMs are deeper.
fn whole_batch_pointwise(g: &Geom) -> bool {
    g.is_pointwise() && g.p() >= 256
}

/// `dW_g += dY_g · cols_gᵀ` for one chunk (`=` for the first, so `dw` needs no clearing).
/// `dys` is the chunk's output gradient `[O, n]`.
fn weight_grad_chunk<T: FloatElem>(xs: &[T], dys: &[T], ch: &Chunk, col_buf: &mut [T], dw: &mut [T]) {
    let (g, n) = (ch.g, ch.n);
    let (og, kg) = (g.og(), g.kg());
    let cols = ch.columns(xs, col_buf);
    per_group(dw, ch, 2 * og * kg * n, |gi, d, par| {
        let dy = MatRef::rows(&dys[gi * og * n..][..og * n], og, n);
        let col = MatRef::rows(&cols[gi * kg * n..][..kg * n], kg, n);
        matmul(MatMut::rows(d, og, kg), ch.b0 > 0, dy, col.t(), par);
    });
}

/// The transposed form `dW_gᵀ += cols_g · dY_gᵀ` into `dwt` laid out `[groups, Kg, Og]` (see
/// [`weight_grad_transposed`]), with `dyt` the chunk's output gradient stored transposed,
/// `[n, O]`, so that gemm can read it in place.
///
/// Each group's destination is split into tiles of rows, of a size fixed by the shape, and
/// each tile is one single-threaded GEMM over the whole chunk, the tiles spread over the
/// threads. gemm's own threading synchronises at every depth block and scales poorly here,
/// where the destination is small and the depth (pixels) long: BiT's stem sums 147 × 64
/// products over 4096 pixels per image.
fn weight_grad_chunk_transposed<T: FloatElem>(xs: &[T], dyt: &[T], ch: &Chunk, col_buf: &mut [T], dwt: &mut [T]) {
    let (g, n) = (ch.g, ch.n);
    let (og, kg, o) = (g.og(), g.kg(), g.o);
    let cols = ch.columns(xs, col_buf);
    let tile = weight_grad_tile(kg);
    dwt.par_chunks_mut(kg * og).enumerate().for_each(|(gi, dwt_g)| {
        dwt_g.par_chunks_mut(tile * og).enumerate().for_each(|(ti, d)| {
            let (k0, rows) = (ti * tile, d.len() / og);
            let col = MatRef::rows(&cols[(gi * kg + k0) * n..][..rows * n], rows, n);
            let dy = MatRef::new(&dyt[gi * og..], n, og, o, 1);
            matmul(MatMut::rows(d, rows, og), ch.b0 > 0, col, dy, Parallelism::None);
        });
    });
}

/// [`weight_grad_chunk_transposed`] for a 1×1 stride-1 unpadded convolution over the whole
/// batch at once: each tile sums image after image (in order) straight from `x`, so the batch
/// costs one parallel region instead of one per image. `dyt` is `gy` transposed, `[B·P, O]`.
fn weight_grad_pointwise_transposed<T: FloatElem>(x: &[T], dyt: &[T], g: &Geom, dwt: &mut [T]) {
    let (og, kg, o, p) = (g.og(), g.kg(), g.o, g.p());
    let tile = weight_grad_tile(kg);
    dwt.par_chunks_mut(kg * og).enumerate().for_each(|(gi, dwt_g)| {
        dwt_g.par_chunks_mut(tile * og).enumerate().for_each(|(ti, d)| {
            let (k0, rows) = (ti * tile, d.len() / og);
            for b in 0..g.batch {
                let xb = MatRef::rows(&x[(b * g.c + gi * kg + k0) * p..][..rows * p], rows, p);
                let dy = MatRef::new(&dyt[b * p * o + gi * og..], p, og, o, 1);
                matmul(MatMut::rows(&mut *d, rows, og), b > 0, xb, dy, Parallelism::None);
            }
        });
    });
}

/// The plain form `dW_g = Σ_b dY_b,g · X_b,gᵀ` of [`weight_grad_pointwise_transposed`] (for
/// more output channels than input channels): row tiles of `dw` (`[groups, Og, Kg]`) side by
/// side, each summing image after image straight from `gy` and `x`.
fn weight_grad_pointwise<T: FloatElem>(x: &[T], gy: &[T], g: &Geom, dw: &mut [T]) {
    let (og, kg, p) = (g.og(), g.kg(), g.p());
    let tile = weight_grad_tile(og);
    dw.par_chunks_mut(og * kg).enumerate().for_each(|(gi, dw_g)| {
        dw_g.par_chunks_mut(tile * kg).enumerate().for_each(|(ti, d)| {
            let (o0, rows) = (ti * tile, d.len() / kg);
            for b in 0..g.batch {
                let dy = MatRef::rows(&gy[(b * g.o + gi * og + o0) * p..][..rows * p], rows, p);
                let xb = MatRef::rows(&x[(b * g.c + gi * kg) * p..][..kg * p], kg, p);
                matmul(MatMut::rows(&mut *d, rows, kg), b > 0, dy, xb.t(), Parallelism::None);
            }
        });
    });
}

/// `[groups, Kg, Og]` → `[groups, Og, Kg]`, in tiles that stay in L1.
fn untranspose_weight_grad<T: FloatElem>(dwt: &[T], g: &Geom) -> Vec<T> {
    const TILE: usize = 32;
    let (og, kg) = (g.og(), g.kg());
    let mut dw = vec![T::zero(); dwt.len()];
    for (d, s) in dw.chunks_exact_mut(og * kg).zip(dwt.chunks_exact(og * kg)) {
        for k0 in (0..kg).step_by(TILE) {
            for o0 in (0..og).step_by(TILE) {
                for k in k0..(k0 + TILE).min(kg) {
                    for o in o0..(o0 + TILE).min(og) {
                        d[o * kg + k] = s[k * og + o];
                    }
                }
            }
        }
    }
    dw
}

/// `dcols_g = W_gᵀ · dY_g`, then col2im onto `dx` (the chunk's part of the input gradient,
/// zero on entry). In place, each group's rows of `dx` are its block of the column matrix.
/// (Unlike the forward, this is not tiled by output rows: with only `Og` deep GEMMs and col2im
/// passes per tile, tiles measured ~10 % slower on BiT's stage-1 3×3.)
fn input_grad_chunk<T: FloatElem>(w: &[T], dys: &[T], ch: &Chunk, col_buf: &mut [T], dx: &mut [T]) {
    let (g, n) = (ch.g, ch.n);
    let (og, kg) = (g.og(), g.kg());
    let (dcols, rows) = if ch.in_place() { (&mut *dx, g.cg()) } else { (&mut col_buf[..g.k_all() * n], kg) };
    per_group(dcols, ch, 2 * og * kg * n, |gi, d, par| {
        let wt = MatRef::rows(&w[gi * og * kg..][..og * kg], og, kg).t();
        let dy = MatRef::rows(&dys[gi * og * n..][..og * n], og, n);
        matmul(MatMut::rows(d, rows, n), false, wt, dy, par);
    });
    if !ch.in_place() {
        col2im_add(&col_buf[..g.k_all() * n], g, ch.n_img, dx);
    }
}

/// Output rows in tiles whose columns take about `tile_bytes` (at least one row each).
fn row_tiles(g: &Geom, tile_bytes: usize, elem_bytes: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let per_tile = (tile_bytes / (g.k_all() * g.ow * elem_bytes).max(1)).clamp(1, g.oh.max(1));
    let oh = g.oh;
    (0..oh).step_by(per_tile).map(move |r| r..(r + per_tile).min(oh))
}

/// `db[o] = Σ_{b, p} gy[b, o, p]`, summed in f64 in a fixed order and rounded once.
fn bias_grad<T: FloatElem>(gy: &[T], g: &Geom) -> Vec<T> {
    let (o, p) = (g.o, g.p());
    (0..o)
        .into_par_iter()
        .map(|oc| {
            let mut acc = 0.0f64;
            for b in 0..g.batch {
                acc += gy[(b * o + oc) * p..][..p].iter().map(|&v| WithDType::to_f64(v)).sum::<f64>();
            }
            <T as WithDType>::from_f64(acc)
        })
        .collect()
}
