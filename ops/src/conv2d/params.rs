//! The parameters of a convolution (stride, padding, dilation, groups) and the geometry the
//! kernels work with once the input and weight shapes are known.

use bitgrad_engine::{Error, Result};

/// Zero padding of the input, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// `[ph, pw]`: `ph` rows above and below, `pw` columns left and right (PyTorch's `padding=`).
    Symmetric([usize; 2]),
    /// `[top, bottom, left, right]`, e.g. TF-"SAME"-style or BiT's "fixed" padding.
    PerSide([usize; 4]),
}

impl Padding {
    /// `[top, bottom, left, right]`.
    pub fn sides(&self) -> [usize; 4] {
        match *self {
            Padding::Symmetric([ph, pw]) => [ph, ph, pw, pw],
            Padding::PerSide(s) => s,
        }
    }

    /// BiT's `fixed_padding(k)`: `(k − 1) / 2` before and the rest after, on both axes, whatever
    /// the stride and input size (k // 2 on every side for odd k). See bit-spec §1.3.
    pub fn fixed(kernel: usize) -> Padding {
        let total = kernel.saturating_sub(1);
        let (before, after) = (total / 2, total - total / 2);
        Padding::PerSide([before, after, before, after])
    }
}

impl Default for Padding {
    fn default() -> Self {
        Padding::Symmetric([0, 0])
    }
}

/// How a 2-d convolution slides its kernel. `Default` is stride 1, no padding, dilation 1,
/// one group (a dense convolution).
///
/// ```
/// use bitgrad_ops::conv2d::{Conv2dParams, Padding};
/// let stem = Conv2dParams::new(2, 3); // BiT's 7×7/2 root conv, padding 3
/// let depthwise = Conv2dParams::default().with_padding(1).with_groups(32);
/// let asym = Conv2dParams::default().with_padding_sides(0, 1, 0, 1).with_stride(2);
/// assert_eq!(stem.output_size([128, 128], [7, 7]).unwrap(), [64, 64]);
/// assert_eq!(asym.padding, Padding::PerSide([0, 1, 0, 1]));
/// # let _ = depthwise;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    /// `[sh, sw]`, both ≥ 1.
    pub stride: [usize; 2],
    pub padding: Padding,
    /// `[dh, dw]`, both ≥ 1 (1 = an ordinary, dense kernel).
    pub dilation: [usize; 2],
    /// Input and output channels are split into this many independent groups (1 = dense,
    /// in_channels = depthwise).
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams { stride: [1, 1], padding: Padding::default(), dilation: [1, 1], groups: 1 }
    }
}

impl Conv2dParams {
    /// The same stride and symmetric padding on both axes, dilation 1, one group.
    pub fn new(stride: usize, padding: usize) -> Self {
        Conv2dParams::default().with_stride(stride).with_padding(padding)
    }
    pub fn with_stride(self, s: usize) -> Self {
        self.with_stride_hw(s, s)
    }
    pub fn with_stride_hw(self, sh: usize, sw: usize) -> Self {
        Conv2dParams { stride: [sh, sw], ..self }
    }
    /// Symmetric padding `p` on all four sides.
    pub fn with_padding(self, p: usize) -> Self {
        self.with_padding_hw(p, p)
    }
    pub fn with_padding_hw(self, ph: usize, pw: usize) -> Self {
        Conv2dParams { padding: Padding::Symmetric([ph, pw]), ..self }
    }
    pub fn with_padding_sides(self, top: usize, bottom: usize, left: usize, right: usize) -> Self {
        Conv2dParams { padding: Padding::PerSide([top, bottom, left, right]), ..self }
    }
    pub fn with_dilation(self, d: usize) -> Self {
        self.with_dilation_hw(d, d)
    }
    pub fn with_dilation_hw(self, dh: usize, dw: usize) -> Self {
        Conv2dParams { dilation: [dh, dw], ..self }
    }
    pub fn with_groups(self, groups: usize) -> Self {
        Conv2dParams { groups, ..self }
    }

    /// The output's `[OH, OW]` for an input of `input_hw` and a kernel of `kernel_hw`:
    /// `⌊(H + pt + pb − dh·(kh − 1) − 1) / sh⌋ + 1` (likewise for W). An error when the
    /// parameters are invalid (zero stride or dilation) or the dilated kernel is larger than the
    /// padded input.
    pub fn output_size(&self, input_hw: [usize; 2], kernel_hw: [usize; 2]) -> Result<[usize; 2]> {
        self.check_sliding()?;
        let [pt, pb, pl, pr] = self.padding.sides();
        let axis = |n: usize, before: usize, after: usize, k: usize, s: usize, d: usize, name: &str| {
            if k == 0 {
                return Err(Error::invalid("conv2d", format!("kernel {name} must be ≥ 1, got kernel {kernel_hw:?}")));
            }
            let padded = n + before + after;
            let extent = d * (k - 1) + 1;
            if extent > padded {
                return Err(Error::invalid(
                    "conv2d",
                    format!(
                        "kernel {name} {k} (dilation {d}: extent {extent}) is larger than the padded input \
                         {name} {n} + {before} + {after} = {padded}"
                    ),
                ));
            }
            Ok((padded - extent) / s + 1)
        };
        let oh = axis(input_hw[0], pt, pb, kernel_hw[0], self.stride[0], self.dilation[0], "height")?;
        let ow = axis(input_hw[1], pl, pr, kernel_hw[1], self.stride[1], self.dilation[1], "width")?;
        Ok([oh, ow])
    }

    fn check_sliding(&self) -> Result<()> {
        if self.stride.contains(&0) {
            return Err(Error::invalid("conv2d", format!("stride must be ≥ 1, got {:?}", self.stride)));
        }
        if self.dilation.contains(&0) {
            return Err(Error::invalid("conv2d", format!("dilation must be ≥ 1, got {:?}", self.dilation)));
        }
        if self.groups == 0 {
            return Err(Error::invalid("conv2d", "groups must be ≥ 1, got 0"));
        }
        Ok(())
    }
}

/// Everything the kernels need to know about one convolution, with shapes already checked:
/// input `[batch, c, h, w]`, weight `[o, c / groups, kh, kw]`, output `[batch, o, oh, ow]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geom {
    pub batch: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub oh: usize,
    pub ow: usize,
    pub stride: [usize; 2],
    /// `[top, bottom, left, right]`.
    pub pad: [usize; 4],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Geom {
    /// Checks the parameters against the input and weight dims (NCHW, OIHW) and derives the
    /// output size. Rank, dtype and device checks are the caller's.
    pub fn new(x: &[usize], w: &[usize], p: &Conv2dParams) -> Result<Geom> {
        let (batch, c, h, wd) = (x[0], x[1], x[2], x[3]);
        let (o, ci, kh, kw) = (w[0], w[1], w[2], w[3]);
        p.check_sliding()?;
        let g = p.groups;
        if c == 0 {
            return Err(Error::invalid("conv2d", format!("input {x:?} has no channels")));
        }
        if c % g != 0 || o % g != 0 {
            return Err(Error::invalid(
                "conv2d",
                format!("groups = {g} must divide both the input channels ({c}, input {x:?}) and the output channels ({o}, weight {w:?})"),
            ));
        }
        if ci * g != c {
            return Err(Error::invalid(
                "conv2d",
                format!(
                    "input {x:?} has {c} channels but weight {w:?} expects {ci} per group × {g} groups = {}",
                    ci * g
                ),
            ));
        }
        let [oh, ow] = p.output_size([h, wd], [kh, kw])?;
        Ok(Geom {
            batch,
            c,
            h,
            w: wd,
            o,
            kh,
            kw,
            oh,
            ow,
            stride: p.stride,
            pad: p.padding.sides(),
            dilation: p.dilation,
            groups: g,
        })
    }

    /// Input channels per group.
    pub fn cg(&self) -> usize {
        self.c / self.groups
    }
    /// Output channels per group.
    pub fn og(&self) -> usize {
        self.o / self.groups
    }
    /// Rows of one group's column matrix (= columns of its weight matrix): `cg·kh·kw`.
    pub fn kg(&self) -> usize {
        self.cg() * self.kh * self.kw
    }
    /// Rows of the whole column matrix, all groups: `c·kh·kw`.
    pub fn k_all(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// Output pixels per image.
    pub fn p(&self) -> usize {
        self.oh * self.ow
    }
    /// Input pixels per image.
    pub fn hw(&self) -> usize {
        self.h * self.w
    }
    /// A 1×1, stride-1, unpadded convolution: the input image `[c, h·w]` already *is* its
    /// column matrix, so no im2col is needed.
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.pad == [0; 4]
    }
}
