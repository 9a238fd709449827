//! Memory formats on tensors (`memory_format`, `is_channels_last`, `to_memory_format`) and the
//! rule that gives elementwise outputs the strides of their input (see `crate::memory_format`).

use crate::{cpu, BackwardOp, Error, Layout, MemoryFormat, Result, Shape, Storage, Tensor};

impl Tensor {
    /// True when this is a 4-d tensor whose elements are dense in NHWC order (size-1 axes
    /// ignored, so a tensor with `C = 1` or `H = W = 1` is both this and contiguous).
    pub fn is_channels_last(&self) -> bool {
        self.layout().is_channels_last()
    }

    /// The format this tensor's strides suggest for an op's output (PyTorch's
    /// `suggest_memory_format`): channels-last when they run in NHWC order, else contiguous.
    pub fn memory_format(&self) -> MemoryFormat {
        self.layout().suggest_memory_format()
    }

    /// True when the elements are dense in `fmt` (`is_contiguous` or `is_channels_last`).
    pub fn is_in_format(&self, fmt: MemoryFormat) -> bool {
        self.layout().is_in_format(fmt)
    }

    /// This tensor dense in `fmt`: `self` when it already is (no copy), else one copy with the
    /// same logical shape and `fmt`'s strides — PyTorch's `x.contiguous(memory_format=fmt)`.
    /// `to_memory_format(MemoryFormat::Contiguous)` is [`Tensor::contiguous`] except for the
    /// gradient: here it comes back in the format the input suggested (so an op that converts
    /// a channels-last input at its boundary hands back a channels-last gradient), while
    /// `contiguous`'s gradient passes through unchanged. Channels-last needs a 4-d tensor.
    pub fn to_memory_format(&self, fmt: MemoryFormat) -> Result<Tensor> {
        let Some(out_layout) = Layout::of_format(self.shape().clone(), fmt) else {
            return Err(Error::invalid(
                "to_memory_format",
                format!("{fmt} needs a 4-d [N, C, H, W] tensor, got shape {}", self.shape()),
            ));
        };
        if self.is_in_format(fmt) {
            return Ok(self.clone());
        }
        let order = OutputOrder::from_layout(&out_layout);
        let src = order.apply(self.layout());
        let out = match &*self.storage() {
            Storage::Cpu(s) => Storage::Cpu(cpu::copy::contiguous(s, &src)),
            Storage::Gpu(s) => Storage::Gpu(crate::gpu::prims::copy::contiguous(s, &src)?),
        };
        let back = self.memory_format();
        Ok(Tensor::from_storage_in(out, out_layout).record(&[self], FormatBackward(back)))
    }

    /// Wraps a fresh storage holding exactly `layout`'s elements (dense, offset 0).
    pub(crate) fn from_storage_in(storage: Storage, layout: Layout) -> Tensor {
        debug_assert!(layout.offset() == 0 && layout.storage_extent() <= storage.len());
        let t = Tensor::from_storage(storage, layout.shape().clone());
        if t.layout() == &layout {
            t
        } else {
            t.with_layout(layout)
        }
    }
}

/// The gradient of a format conversion is the gradient in the input's format.
struct FormatBackward(MemoryFormat);

impl BackwardOp for FormatBackward {
    fn name(&self) -> &'static str {
        "to_memory_format"
    }
    fn backward(&self, _inputs: &[Tensor], _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.to_memory_format(self.0)?)])
    }
}

/// How an elementwise op lays out its output: like its first operand that has the output's
/// full shape and is dense in some axis order (PyTorch's "preserve format"), else row-major.
///
/// The CPU and GPU kernels write their output in row-major order of the shape they are given,
/// so the op hands them its operands' layouts *permuted* into the output's storage order
/// (outermost to innermost stride) and then views the result with the output's strides. When
/// the operands share those strides (a channels-last tensor and a channels-last tensor, or a
/// transposed and a transposed one), the permuted layouts are row-major, the kernels' axis
/// merging makes them one flat run, and the op runs over the buffers as if they were vectors.
pub(crate) struct OutputOrder {
    /// `None`: row-major (the identity order), nothing to permute.
    perm: Option<Vec<usize>>,
    layout: Option<Layout>,
}

impl OutputOrder {
    /// The order for an output of `shape` computed from `operands` (their original layouts).
    pub(crate) fn of(shape: &Shape, operands: &[&Layout]) -> Self {
        // A row-major operand that comes first wins too (then there is nothing to permute).
        let first = operands.iter().find(|l| l.shape() == shape && l.dense_order().is_some());
        match first {
            Some(l) => OutputOrder::from_layout(&Layout::new(shape.clone(), l.strides().to_vec(), 0)),
            None => OutputOrder { perm: None, layout: None },
        }
    }

    /// The order of a given dense output layout.
    fn from_layout(out: &Layout) -> Self {
        match out.dense_order() {
            Some(perm) if !out.is_contiguous() => OutputOrder { perm: Some(perm), layout: Some(out.clone()) },
            _ => OutputOrder { perm: None, layout: None },
        }
    }

    /// An operand's layout (already broadcast to the output shape) in the output's storage order.
    pub(crate) fn apply(&self, l: &Layout) -> Layout {
        match &self.perm {
            Some(p) => l.permute(p).expect("a permutation of the output's axes"),
            None => l.clone(),
        }
    }

    /// The kernel's output (row-major in the permuted order) as a tensor of `shape`.
    pub(crate) fn wrap(&self, out: Storage, shape: Shape) -> Tensor {
        match &self.layout {
            Some(l) => Tensor::from_storage_in(out, l.clone()),
            None => Tensor::from_storage(out, shape),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::strided::Runs;

    /// How many runs the kernels walk for these layouts after the output order is applied.
    fn runs(shape: &Shape, layouts: &[&Layout]) -> usize {
        let order = OutputOrder::of(shape, layouts);
        let l: Vec<Layout> = layouts.iter().map(|l| order.apply(&l.broadcast_to(shape).unwrap())).collect();
        let r = Runs::new([&l[0], &l[1]]);
        let mut n = 0;
        r.for_each(0..r.numel(), |_, _| n += 1);
        n
    }

    #[test]
    fn same_dense_strides_are_one_flat_run() {
        let shape = Shape::from([2, 3, 4, 5]);
        let cl = Layout::channels_last(shape.clone()).unwrap();
        assert_eq!(runs(&shape, &[&cl, &cl]), 1, "channels-last ⊕ channels-last");
        let c = Layout::contiguous(shape.clone());
        assert_eq!(runs(&shape, &[&c, &c]), 1, "NCHW ⊕ NCHW");
        // Any dense permutation, e.g. [N, C, H, W] stored as C, N, W, H.
        let odd = Layout::contiguous([3, 2, 5, 4]).permute(&[1, 0, 3, 2]).unwrap();
        assert_eq!(runs(odd.shape(), &[&odd, &odd]), 1, "another permutation");
        // A per-channel operand: one run of C per pixel, read with stride 1 in both.
        let bias = Layout::contiguous([1, 3, 1, 1]);
        assert_eq!(runs(&shape, &[&cl, &bias]), 2 * 4 * 5);
        // Channels-last against NCHW can only be walked in short runs.
        assert!(runs(&shape, &[&cl, &c]) > 1);
    }

    #[test]
    fn output_follows_the_first_dense_full_shape_operand() {
        let shape = Shape::from([2, 3, 4, 5]);
        let cl = Layout::channels_last(shape.clone()).unwrap();
        let bias = Layout::contiguous([1, 3, 1, 1]);
        let o = OutputOrder::of(&shape, &[&bias, &cl]);
        assert_eq!(o.perm.as_deref(), Some(&[0, 2, 3, 1][..]));
        assert_eq!(o.layout.as_ref().unwrap().strides(), cl.strides());
        // Row-major first: nothing to permute.
        let o = OutputOrder::of(&shape, &[&Layout::contiguous(shape.clone()), &cl]);
        assert!(o.perm.is_none());
        // A slice is not dense: row-major output.
        let s = cl.narrow(2, 0, 2).unwrap();
        assert!(OutputOrder::of(s.shape(), &[&s]).perm.is_none());
    }
}
