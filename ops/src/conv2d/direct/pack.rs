//! The direct convolution's two copies: zero-padded images and packed weight panels.

use rayon::prelude::*;

/// Weights packed for the micro-kernel: for each block of `mr` output channels, `[cin][taps][mr]`
/// (rows past the last output channel are zero).
pub(crate) struct Panel {
    data: Vec<f32>,
    cin: usize,
    taps: usize,
    mr: usize,
}

impl Panel {
    /// The panel of output-channel block `ob` from input channel `c0` on.
    pub fn block(&self, ob: usize, c0: usize) -> &[f32] {
        let per_channel = self.taps * self.mr;
        &self.data[(ob * self.cin + c0) * per_channel..(ob + 1) * self.cin * per_channel]
    }
}

/// Packs `w(o, c, t)` for `cout` output channels, `cin` input channels and `taps` taps.
pub(crate) fn weights(
    cout: usize,
    cin: usize,
    taps: usize,
    mr: usize,
    w: impl Fn(usize, usize, usize) -> f32 + Sync,
) -> Panel {
    let blocks = cout.div_ceil(mr);
    let mut data = vec![0.0f32; blocks * cin * taps * mr];
    data.par_chunks_mut(cin * taps * mr).enumerate().for_each(|(ob, block)| {
        for c in 0..cin {
            for t in 0..taps {
                let dst = &mut block[(c * taps + t) * mr..][..mr];
                for (r, d) in dst.iter_mut().enumerate() {
                    let o = ob * mr + r;
                    if o < cout {
                        *d = w(o, c, t);
                    }
                }
            }
        }
    });
    Panel { data, cin, taps, mr }
}

/// A per-plane map applied to the input as it is copied: plane `p`'s values become
/// `v·scale[p] + shift[p]`, ReLU'd when `relu` — a group norm (+ ReLU) folded into the copy
/// (`crate::group_norm_conv2d`), with the group norm's own arithmetic
/// (`crate::group_norm::cpu::affine_relu`), so the copy holds its output bit for bit. The
/// padding stays zero, as when the normalized tensor itself is padded.
#[derive(Clone, Copy)]
pub(crate) struct PlaneMap<'a> {
    pub scale: &'a [f32],
    pub shift: &'a [f32],
    pub relu: bool,
}

impl PlaneMap<'_> {
    /// `src` mapped as plane `p` into `dst`.
    #[inline(always)]
    fn copy(&self, p: usize, src: &[f32], dst: &mut [f32]) {
        let (scale, shift) = (self.scale[p], self.shift[p]);
        if self.relu {
            dst.iter_mut().zip(src).for_each(|(d, &v)| *d = crate::group_norm::cpu::affine_relu(v, scale, shift));
        } else {
            dst.iter_mut().zip(src).for_each(|(d, &v)| *d = v * scale + shift);
        }
    }
    #[inline(always)]
    pub(crate) fn one(&self, p: usize, v: f32) -> f32 {
        let (scale, shift) = (self.scale[p], self.shift[p]);
        if self.relu {
            crate::group_norm::cpu::affine_relu(v, scale, shift)
        } else {
            v * scale + shift
        }
    }
}

/// `planes` planes of `h × w`, zero-padded by `pad` (`[top, bottom, left, right]`) and split
/// into `sh·sw` phase planes each: padded pixel `(i, j)` goes to phase `(i mod sh, j mod sw)` at
/// `(i / sh, j / sw)`; phase planes are `ceil(hp / sh) × ceil(wp / sw)`. With stride 1 this is
/// plain zero padding. `map`, when given, is applied to every value copied.
pub(crate) fn phase_planes(
    x: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    pad: [usize; 4],
    stride: [usize; 2],
    map: Option<PlaneMap>,
) -> Vec<f32> {
    let [sh, sw] = stride;
    let (hp, wp) = (h + pad[0] + pad[1], w + pad[2] + pad[3]);
    let (hph, wph) = (hp.div_ceil(sh), wp.div_ceil(sw));
    let per_plane = sh * sw * hph * wph;
    let mut out = vec![0.0f32; planes * per_plane];
    if per_plane == 0 || h * w == 0 {
        return out;
    }
    out.par_chunks_mut(per_plane).zip(x.par_chunks(h * w)).enumerate().for_each(|(p, (dst, src))| {
        for (i, row) in src.chunks_exact(w).enumerate() {
            let pi = i + pad[0];
            let base = (pi % sh) * sw * hph * wph + (pi / sh) * wph;
            if sw == 1 {
                let d = &mut dst[base + pad[2]..][..w];
                match &map {
                    Some(m) => m.copy(p, row, d),
                    None => d.copy_from_slice(row),
                }
                continue;
            }
            // Column phase by column phase: the row's every sw-th value from the first column
            // in that phase, to consecutive places, with no division per element (a `% sw` and
            // `/ sw` per element cost R50x1's 128-channel 3×3/2 forward at 32 px, batch 8,
            // about 10 %: 4.30–4.45 → 3.85–3.98 ms).
            for px in 0..sw {
                let j0 = (px + sw - pad[2] % sw) % sw;
                if j0 >= w {
                    continue;
                }
                let n = (w - j0).div_ceil(sw);
                let d = &mut dst[base + px * hph * wph + (j0 + pad[2]) / sw..][..n];
                for (k, v) in d.iter_mut().enumerate() {
                    let x = row[j0 + k * sw];
                    *v = match &map {
                        Some(m) => m.one(p, x),
                        None => x,
                    };
                }
            }
        }
    });
    out
}

/// `x` (`[batch][c][h][w]`) zero-padded by `pad` and packed channel-blocked:
/// `[batch][c/lanes][hp][wp][lanes]`, the channels past `c` in the last block zero.
pub(crate) fn channel_blocked(
    x: &[f32],
    batch: usize,
    c: usize,
    h: usize,
    w: usize,
    pad: [usize; 4],
    lanes: usize,
) -> Vec<f32> {
    let (hp, wp) = (h + pad[0] + pad[1], w + pad[2] + pad[3]);
    let mut out = vec![0.0f32; batch * c.div_ceil(lanes) * hp * wp * lanes];
    channel_blocked_into(&mut out, x, batch, c, h, w, pad, lanes, None);
    out
}

/// [`channel_blocked`] with `map` applied to each plane's values (the padding stays zero),
/// written into `dst` (`batch · ⌈c/lanes⌉ · hp · wp · lanes` values, each one written: the
/// caller may pass an uninitialised scratch buffer).
#[allow(clippy::too_many_arguments)]
pub(crate) fn channel_blocked_into(
    dst: &mut [f32],
    x: &[f32],
    batch: usize,
    c: usize,
    h: usize,
    w: usize,
    pad: [usize; 4],
    lanes: usize,
    map: Option<PlaneMap>,
) {
    let (hp, wp) = (h + pad[0] + pad[1], w + pad[2] + pad[3]);
    let blocks = c.div_ceil(lanes);
    let block_len = hp * wp * lanes;
    assert_eq!(dst.len(), batch * blocks * block_len, "channel_blocked_into: destination size");
    if block_len == 0 {
        return;
    }
    dst.par_chunks_mut(block_len).enumerate().for_each(|(bi, dst)| {
        let (b, cb) = (bi / blocks, bi % blocks);
        let (top, rest) = dst.split_at_mut(pad[0] * wp * lanes);
        top.fill(0.0);
        let (body, bottom) = rest.split_at_mut(h * wp * lanes);
        bottom.fill(0.0);
        let real = lanes.min(c - cb * lanes);
        // Row by row, so that the destination row (wp·lanes values) stays in L1 while the
        // block's planes are interleaved into it.
        for (i, drow) in body.chunks_exact_mut(wp * lanes).enumerate() {
            drow[..pad[2] * lanes].fill(0.0);
            drow[(pad[2] + w) * lanes..].fill(0.0);
            let drow = &mut drow[pad[2] * lanes..][..w * lanes];
            if real < lanes {
                drow.fill(0.0);
            }
            for l in 0..real {
                let p = b * c + cb * lanes + l;
                let row = &x[(p * h + i) * w..][..w];
                let cells = drow.chunks_exact_mut(lanes).zip(row);
                match &map {
                    Some(m) => cells.for_each(|(d, &v)| d[l] = m.one(p, v)),
                    None => cells.for_each(|(d, &v)| d[l] = v),
                }
            }
        }
    });
}
