//! Layout: how a tensor's logical indices map into its storage (shape, strides, offset).
//!
//! Every view (reshape, permute, narrow, broadcast, squeeze/unsqueeze) is a new `Layout` over the
//! same storage; nothing here touches data.

use crate::{Error, Result, Shape};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    shape: Shape,
    /// Strides in elements; 0 for a broadcast dimension.
    strides: Vec<usize>,
    /// Index of the first element in the storage.
    offset: usize,
}

impl Layout {
    /// The row-major layout of a fresh tensor.
    pub fn contiguous(shape: impl Into<Shape>) -> Self {
        let shape = shape.into();
        let strides = shape.contiguous_strides();
        Layout { shape, strides, offset: 0 }
    }

    pub fn new(shape: Shape, strides: Vec<usize>, offset: usize) -> Self {
        debug_assert_eq!(shape.rank(), strides.len());
        Layout { shape, strides, offset }
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }
    pub fn offset(&self) -> usize {
        self.offset
    }
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }

    /// True when the elements are laid out row-major without gaps (size-1 dims are ignored).
    pub fn is_contiguous(&self) -> bool {
        let mut acc = 1;
        for (&d, &s) in self.dims().iter().zip(&self.strides).rev() {
            if d != 1 && s != acc {
                return false;
            }
            acc *= d;
        }
        true
    }

    /// One past the largest storage index this layout can touch (0 for an empty tensor).
    pub fn storage_extent(&self) -> usize {
        if self.numel() == 0 {
            return 0;
        }
        self.offset + self.dims().iter().zip(&self.strides).map(|(d, s)| (d - 1) * s).sum::<usize>() + 1
    }

    /// Reorders the axes: axis `i` of the result is axis `perm[i]` of `self`.
    pub fn permute(&self, perm: &[usize]) -> Result<Layout> {
        let rank = self.shape.rank();
        let mut seen = vec![false; rank];
        if perm.len() != rank || perm.iter().any(|&p| p >= rank || std::mem::replace(&mut seen[p], true)) {
            return Err(Error::invalid(
                "permute",
                format!("{perm:?} is not a permutation of the {rank} axes of shape {}", self.shape),
            ));
        }
        let dims = perm.iter().map(|&p| self.dims()[p]).collect::<Vec<_>>();
        let strides = perm.iter().map(|&p| self.strides[p]).collect();
        Ok(Layout { shape: dims.into(), strides, offset: self.offset })
    }

    /// Keeps `len` entries of `axis` starting at `start`.
    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Result<Layout> {
        let size = self.dims()[axis];
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::RangeOutOfBounds { op: "narrow", axis, start, end: start.saturating_add(len), size });
        }
        let mut dims = self.dims().to_vec();
        dims[axis] = len;
        let offset = if len == 0 { self.offset } else { self.offset + start * self.strides[axis] };
        Ok(Layout { shape: dims.into(), strides: self.strides.clone(), offset })
    }

    /// Broadcasts to `shape` (NumPy rules) by giving the new or size-1 axes a stride of 0.
    pub fn broadcast_to(&self, shape: &Shape) -> Result<Layout> {
        let err = || Error::BroadcastIncompatible { op: "broadcast_to", lhs: self.shape.clone(), rhs: shape.clone() };
        if shape.rank() < self.shape.rank() {
            return Err(err());
        }
        let lead = shape.rank() - self.shape.rank();
        let mut strides = vec![0; shape.rank()];
        for (i, &d) in shape.dims().iter().enumerate() {
            if i < lead {
                continue;
            }
            let (src_d, src_s) = (self.dims()[i - lead], self.strides[i - lead]);
            strides[i] = match src_d {
                _ if src_d == d => src_s,
                1 => 0,
                _ => return Err(err()),
            };
        }
        Ok(Layout { shape: shape.clone(), strides, offset: self.offset })
    }

    /// The same elements seen with a new shape, when that is possible without moving data.
    ///
    /// Follows NumPy's no-copy reshape: groups of old axes that are contiguous among themselves
    /// can be split or merged freely; a reshape that would need to cross a gap returns `None`.
    pub fn reshape(&self, shape: &Shape) -> Option<Layout> {
        if shape.numel() != self.numel() {
            return None;
        }
        // An empty tensor addresses no element, so any strides describe it; the general path
        // below would index past the end of its dims when a zero-size axis meets a larger one.
        if self.is_contiguous() || self.numel() == 0 {
            return Some(Layout { shape: shape.clone(), strides: shape.contiguous_strides(), offset: self.offset });
        }
        // Drop size-1 axes of the old layout: they carry no stride information.
        let (old_d, old_s): (Vec<usize>, Vec<usize>) =
            self.dims().iter().zip(&self.strides).filter(|(&d, _)| d != 1).map(|(&d, &s)| (d, s)).unzip();
        let new_d = shape.dims();
        let mut new_s = vec![0; new_d.len()];
        let (mut oi, mut ni) = (0, 0);
        while oi < old_d.len() && ni < new_d.len() {
            // Find the smallest matching groups old[oi..oj] and new[ni..nj] with equal products.
            let (mut oj, mut nj) = (oi + 1, ni + 1);
            let (mut op, mut np) = (old_d[oi], new_d[ni]);
            while op != np {
                if op < np {
                    op *= old_d[oj];
                    oj += 1;
                } else {
                    np *= new_d[nj];
                    nj += 1;
                }
            }
            // The old group must be contiguous among itself.
            if (oi..oj - 1).any(|k| old_s[k] != old_s[k + 1] * old_d[k + 1]) {
                return None;
            }
            // Assign the new strides from the innermost old stride outwards.
            let mut stride = old_s[oj - 1];
            for k in (ni..nj).rev() {
                new_s[k] = stride;
                stride *= new_d[k];
            }
            oi = oj;
            ni = nj;
        }
        // Trailing new axes are all of size 1 (products matched); give them a harmless stride.
        for s in new_s.iter_mut().skip(ni) {
            *s = 1;
        }
        Some(Layout { shape: shape.clone(), strides: new_s, offset: self.offset })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_of_transposed_splits_but_does_not_merge() {
        let l = Layout::contiguous([2, 3, 4]).permute(&[2, 0, 1]).unwrap(); // shape [4, 2, 3]
                                                                            // Merging the last two axes (2, 3) is fine: they stay contiguous among themselves.
        let m = l.reshape(&Shape::from([4, 6])).unwrap();
        assert_eq!(m.strides(), &[1, 4]);
        // Merging 4 and 2 would cross a gap.
        assert!(l.reshape(&Shape::from([8, 3])).is_none());
        // Splitting is always possible.
        let s = l.reshape(&Shape::from([2, 2, 2, 3])).unwrap();
        assert_eq!(s.strides(), &[2, 1, 12, 4]);
    }

    #[test]
    fn narrow_checks_bounds() {
        let l = Layout::contiguous([5, 3]);
        assert!(l.narrow(0, 4, 2).is_err());
        assert_eq!(l.narrow(0, 2, 2).unwrap().offset(), 6);
    }
}
