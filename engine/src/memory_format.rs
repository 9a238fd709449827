//! Memory formats: which order a 4-d `[N, C, H, W]` tensor keeps its elements in, as PyTorch's
//! `torch.contiguous_format` and `torch.channels_last`.
//!
//! The logical shape never changes: a channels-last tensor is still indexed `[n, c, h, w]`, only
//! its strides are NHWC's, `[H·W·C, 1, W·C, C]`. So every op that reads through layouts works on
//! it unchanged, and the format is a property of the layout, not a flag on the tensor.
//!
//! Two predicates, with PyTorch's meanings (size-1 axes are where they differ):
//!
//! * [`Layout::is_channels_last`] is `is_contiguous(memory_format=torch.channels_last)`: the
//!   elements are dense in NHWC order, **ignoring size-1 axes** (their stride never moves the
//!   index). A tensor with `C = 1`, or with `H = W = 1`, is therefore both contiguous and
//!   channels-last: the two orders coincide, and converting between them copies nothing.
//! * [`Layout::suggest_memory_format`] is PyTorch's `suggest_memory_format`: the format an op
//!   should give its output. It follows the *stride order* (so a slice of a channels-last tensor
//!   still suggests channels-last), and breaks the ties size-1 axes create in favour of
//!   contiguous, as PyTorch does: `[N, 1, H, W]` row-major and `[N, C, 1, 1]` row-major suggest
//!   contiguous; `[N, C, 1, 1]` made channels-last suggests channels-last.
//!
//! Elementwise ops go further than the two formats: their output copies the strides of any
//! operand that is dense in some order ([`Layout::dense_order`]), as PyTorch's TensorIterator
//! does, so a channels-last input gives a channels-last output and the kernel walks one flat run.

use crate::{Layout, Shape};

/// The order a 4-d tensor keeps its elements in (its logical shape is always `[N, C, H, W]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MemoryFormat {
    /// Row-major NCHW strides `[C·H·W, H·W, W, 1]` (any rank).
    #[default]
    Contiguous,
    /// NHWC strides `[H·W·C, 1, W·C, C]` under the NCHW shape (4-d only).
    ChannelsLast,
}

impl MemoryFormat {
    pub fn name(self) -> &'static str {
        match self {
            MemoryFormat::Contiguous => "contiguous",
            MemoryFormat::ChannelsLast => "channels_last",
        }
    }
}

impl std::fmt::Display for MemoryFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// NHWC's axis order, innermost first: C, W, H, N.
const CL_INNER_FIRST: [usize; 4] = [1, 3, 2, 0];

impl Layout {
    /// The channels-last layout of a fresh 4-d tensor: strides `[H·W·C, 1, W·C, C]`.
    /// `None` for other ranks.
    pub fn channels_last(shape: impl Into<Shape>) -> Option<Self> {
        let shape = shape.into();
        let &[_, c, h, w] = shape.dims() else { return None };
        let strides = vec![h * w * c, 1, w * c, c];
        Some(Layout::new(shape, strides, 0))
    }

    /// The fresh layout of `fmt` for `shape` (`None`: channels-last asked of a rank other than 4).
    pub fn of_format(shape: impl Into<Shape>, fmt: MemoryFormat) -> Option<Self> {
        match fmt {
            MemoryFormat::Contiguous => Some(Layout::contiguous(shape)),
            MemoryFormat::ChannelsLast => Layout::channels_last(shape),
        }
    }

    /// True when the tensor is 4-d and its elements are dense in NHWC order, size-1 axes ignored
    /// (PyTorch's `is_contiguous(memory_format=torch.channels_last)`; see the module docs).
    pub fn is_channels_last(&self) -> bool {
        if self.dims().len() != 4 {
            return false;
        }
        let mut expected = 1;
        for a in CL_INNER_FIRST {
            let d = self.dims()[a];
            if d != 1 {
                if self.strides()[a] != expected {
                    return false;
                }
                expected *= d;
            }
        }
        true
    }

    /// True when the layout is dense in `fmt` (size-1 axes ignored): `is_contiguous` or
    /// `is_channels_last`.
    pub fn is_in_format(&self, fmt: MemoryFormat) -> bool {
        match fmt {
            MemoryFormat::Contiguous => self.is_contiguous(),
            MemoryFormat::ChannelsLast => self.is_channels_last(),
        }
    }

    /// The format an op should give an output computed from this layout: channels-last when the
    /// strides run in NHWC order, else contiguous (PyTorch's `suggest_memory_format`, with its
    /// tie-breaks for size-1 axes — see the module docs). Non-dense layouts (slices) count too.
    pub fn suggest_memory_format(&self) -> MemoryFormat {
        let (d, s) = (self.dims(), self.strides());
        if d.len() != 4 || s[1] == 0 {
            return MemoryFormat::Contiguous;
        }
        // PyTorch's `is_channels_last_strides_2d_s4`: the strides must not decrease going from C
        // to W to H to N; a size-1 axis does not widen the step; N may not tie with C (that
        // would be an `[N, 1, …]`-like ambiguity resolved in favour of contiguous).
        let mut min = 0;
        for a in CL_INNER_FIRST {
            if d[a] == 0 || s[a] < min || (a == 0 && min == s[1]) {
                return MemoryFormat::Contiguous;
            }
            min = s[a];
            if d[a] > 1 {
                min *= d[a];
            }
        }
        MemoryFormat::ChannelsLast
    }

    /// When the elements are dense in *some* axis order (no gaps, no overlaps, no broadcast
    /// axis), the axes from outermost to innermost; `None` otherwise and for empty tensors.
    /// Size-1 axes are placed by their stride (ties keep axis order); they do not affect density.
    pub fn dense_order(&self) -> Option<Vec<usize>> {
        if self.numel() == 0 {
            return None;
        }
        let (d, s) = (self.dims(), self.strides());
        let mut order: Vec<usize> = (0..d.len()).collect();
        // Stable: equal strides keep the logical order, so a row-major layout gives 0, 1, 2, ….
        order.sort_by(|&a, &b| s[b].cmp(&s[a]));
        let mut expected = 1;
        for &a in order.iter().rev() {
            if d[a] != 1 {
                if s[a] != expected {
                    return None;
                }
                expected *= d[a];
            }
        }
        Some(order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_last_strides_and_predicates() {
        let l = Layout::channels_last([2, 3, 4, 5]).unwrap();
        assert_eq!(l.strides(), &[60, 1, 15, 3]);
        assert!(l.is_channels_last() && !l.is_contiguous());
        assert_eq!(l.suggest_memory_format(), MemoryFormat::ChannelsLast);
        assert_eq!(l.dense_order().unwrap(), vec![0, 2, 3, 1]);
        let c = Layout::contiguous([2, 3, 4, 5]);
        assert!(!c.is_channels_last());
        assert_eq!(c.suggest_memory_format(), MemoryFormat::Contiguous);
        assert!(Layout::channels_last([3, 4, 5]).is_none());
        assert!(!Layout::contiguous([3, 4, 5]).is_channels_last());
    }

    #[test]
    fn size_one_axes_make_both_formats_hold() {
        // C = 1: NCHW and NHWC address the same elements at the same places.
        let c1 = Layout::contiguous([2, 1, 4, 5]);
        assert!(c1.is_contiguous() && c1.is_channels_last());
        assert_eq!(c1.suggest_memory_format(), MemoryFormat::Contiguous);
        let c1_cl = Layout::channels_last([2, 1, 4, 5]).unwrap();
        assert!(c1_cl.is_contiguous() && c1_cl.is_channels_last());
        // H = W = 1 (a pooled tensor): row-major suggests contiguous, the NHWC strides
        // channels-last, as in PyTorch.
        let p = Layout::contiguous([2, 3, 1, 1]);
        assert!(p.is_contiguous() && p.is_channels_last());
        assert_eq!(p.suggest_memory_format(), MemoryFormat::Contiguous);
        let p_cl = Layout::channels_last([2, 3, 1, 1]).unwrap();
        assert_eq!(p_cl.strides(), &[3, 1, 3, 3]);
        assert_eq!(p_cl.suggest_memory_format(), MemoryFormat::ChannelsLast);
        // N = 1 changes nothing.
        let n1 = Layout::channels_last([1, 3, 4, 5]).unwrap();
        assert!(n1.is_channels_last() && !n1.is_contiguous());
        assert_eq!(n1.suggest_memory_format(), MemoryFormat::ChannelsLast);
    }

    #[test]
    fn views_of_channels_last() {
        let l = Layout::channels_last([2, 3, 4, 5]).unwrap();
        // A slice along H is no longer dense but keeps the NHWC stride order.
        let s = l.narrow(2, 1, 2).unwrap();
        assert!(!s.is_channels_last() && s.dense_order().is_none());
        assert_eq!(s.suggest_memory_format(), MemoryFormat::ChannelsLast);
        // A slice along N stays dense channels-last.
        let n = l.narrow(0, 1, 1).unwrap();
        assert!(n.is_channels_last());
        // permute([0, 2, 3, 1]) of channels-last is the row-major NHWC tensor.
        let nhwc = l.permute(&[0, 2, 3, 1]).unwrap();
        assert!(nhwc.is_contiguous());
        // A broadcast axis is never dense.
        let b = Layout::contiguous([1, 3, 1, 1]).broadcast_to(&Shape::from([2, 3, 4, 5])).unwrap();
        assert!(b.dense_order().is_none() && !b.is_channels_last());
        assert_eq!(b.suggest_memory_format(), MemoryFormat::Contiguous);
        // Empty tensors have no order.
        assert!(Layout::contiguous([0, 3]).dense_order().is_none());
        // A transposed matrix is dense in the other order.
        assert_eq!(Layout::contiguous([3, 4]).permute(&[1, 0]).unwrap().dense_order().unwrap(), vec![1, 0]);
    }
}
