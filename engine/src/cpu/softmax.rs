//! Softmax and log-softmax along one axis, max-subtracted for stability, sums in f64.

use num_traits::Float;
use rayon::prelude::*;

use super::{copy, unsupported, via_f32};
use crate::{CpuStorage, Layout, Result};

fn rows<T: Float + Send + Sync>(x: &[T], len: usize, log: bool) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    let row = |(o, xi): (&mut [T], &[T])| {
        let m = xi.iter().fold(T::neg_infinity(), |a, &b| if b > a || b.is_nan() { b } else { a });
        let m = if m.is_infinite() { T::zero() } else { m }; // an all -inf row gives NaN, as in torch
        let sum: f64 = xi.iter().map(|&v| (v - m).exp().to_f64().unwrap()).sum();
        if log {
            let lse = T::from(sum.ln()).unwrap();
            o.iter_mut().zip(xi).for_each(|(o, &v)| *o = v - m - lse);
        } else {
            let inv = T::from(1.0 / sum).unwrap();
            o.iter_mut().zip(xi).for_each(|(o, &v)| *o = (v - m).exp() * inv);
        }
    };
    if x.len() >= 1 << 14 {
        out.par_chunks_mut(len).zip(x.par_chunks(len)).for_each(row);
    } else {
        out.chunks_mut(len).zip(x.chunks(len)).for_each(row);
    }
    out
}

/// Softmax (or log-softmax) along `axis`; the result is contiguous in the input's shape.
pub fn softmax(s: &CpuStorage, l: &Layout, axis: usize, log: bool) -> Result<CpuStorage> {
    via_f32(s, l, |s, l| {
        let rank = l.dims().len();
        // Move the axis last (a view), copy to rows, compute, and put the axis back.
        let mut perm: Vec<usize> = (0..rank).filter(|&a| a != axis).collect();
        perm.push(axis);
        let pl = l.permute(&perm)?;
        let len = l.dims()[axis];
        if len == 0 || l.numel() == 0 {
            return Ok(copy::contiguous(s, l));
        }
        let xs = copy::contiguous(s, &pl);
        let ys = match &xs {
            CpuStorage::F32(v) => CpuStorage::F32(rows(v, len, log)),
            CpuStorage::F64(v) => CpuStorage::F64(rows(v, len, log)),
            other => return Err(unsupported("softmax", other.dtype())),
        };
        if axis == rank - 1 {
            return Ok(ys);
        }
        // Un-permute: the rows are in `pl`'s order; view them back in the original axis order.
        let mut inv = vec![0; rank];
        for (i, &p) in perm.iter().enumerate() {
            inv[p] = i;
        }
        let back = Layout::contiguous(pl.shape().clone()).permute(&inv)?;
        Ok(copy::contiguous(&ys, &back))
    })
}
