//! Property tests of the engine's values (not gradients):
//!
//! * views (permute, narrow, broadcast, transpose, squeeze/unsqueeze, flatten, reshape) read the
//!   values that plain row-major index arithmetic on a `Vec` predicts, share the storage of their
//!   base (`Tensor::same_storage`, refcount), and copy nothing; `contiguous()` copies only when
//!   needed; reshape of a contiguous tensor is a view;
//! * elementwise ops over views equal the same ops over explicit copies, also for tensors large
//!   enough to take the parallel, chunked paths;
//! * sum, max, min, argmax/argmin (first index at ties), mean and var over random axis sets equal
//!   naive loops;
//! * matmul (f32 and f64; 2-d, batched, broadcast batch, 1-d, transposed and narrowed views)
//!   equals a naive f64 triple loop within `|err| ≤ tol · Σₖ|aᵢₖ·bₖⱼ|`, tol = 1e-12 (f64) and
//!   1e-5 (f32);
//! * reductions, softmax and `Tensor::randn` give bit-identical results in 1-, 2- and 3-thread
//!   rayon pools on tensors above the parallel threshold (> 1<<16 elements).

mod common;

use bitgrad_engine::{DType, Rng, Tensor};
use common::{dev, dims, numel, ravel, unravel, Domain, Gen, ViewSpec, CPU};
use proptest::prelude::*;

fn cfg() -> ProptestConfig {
    common::cases(32)
}

/// The f64 leaf `0, 1, 2, …` (every value distinct, so a misplaced read is visible).
fn ramp(d: &[usize]) -> (Vec<f64>, Tensor) {
    let v: Vec<f64> = (0..numel(d)).map(|i| i as f64).collect();
    let t = Tensor::from_vec(v.clone(), d.to_vec(), dev()).unwrap();
    (v, t)
}

/// Reduces `vals` (row-major in `dims`) over `axes` with `f`, in row-major order of the elements
/// of each group; `f(acc, value, position in the group)`. Returns one accumulator per kept index.
fn naive_reduce<A: Clone>(
    vals: &[f64],
    d: &[usize],
    axes: &[usize],
    init: A,
    f: impl Fn(A, f64, usize) -> A,
) -> Vec<A> {
    let kept: Vec<usize> = (0..d.len()).filter(|a| !axes.contains(a)).collect();
    let kept_dims: Vec<usize> = kept.iter().map(|&a| d[a]).collect();
    let red_dims: Vec<usize> = axes.iter().map(|&a| d[a]).collect();
    let mut out = vec![init; numel(&kept_dims)];
    for (i, &v) in vals.iter().enumerate() {
        let idx = unravel(i, d);
        let o = ravel(&kept.iter().map(|&a| idx[a]).collect::<Vec<_>>(), &kept_dims);
        let p = ravel(&axes.iter().map(|&a| idx[a]).collect::<Vec<_>>(), &red_dims);
        out[o] = f(out[o].clone(), v, p);
    }
    out
}

/// The expected output shape of a reduction.
fn reduced_dims(d: &[usize], axes: &[usize], keepdim: bool) -> Vec<usize> {
    d.iter()
        .enumerate()
        .filter_map(|(i, &n)| match (axes.contains(&i), keepdim) {
            (false, _) => Some(n),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect()
}

fn assert_close(got: &[f64], want: &[f64], rtol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= rtol * (1.0 + w.abs()), "{what}: element {i}: got {g}, want {w}");
    }
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn views_read_like_index_arithmetic_and_share_storage(shape in dims(1..=4), kind in 0u8..5, seed in any::<u64>()) {
        let mut g = Gen::new(seed);
        let spec = ViewSpec::random(&shape, kind, &mut g);
        let (vals, leaf) = ramp(&spec.leaf_dims);
        let before = leaf.storage_refcount();
        let view = spec.apply(&leaf)?;
        prop_assert_eq!(view.dims(), &shape[..]);
        prop_assert_eq!(view.to_vec::<f64>()?, spec.expected(&vals));
        prop_assert!(view.same_storage(&leaf), "a view must not copy");
        if view.id() != leaf.id() {
            // (A contiguous "view" of the same shape is the leaf handle itself.)
            prop_assert!(view.storage_refcount() > before, "a view holds the base's storage");
        }
        // contiguous(): the same values; a copy exactly when the view is not row-major.
        let c = view.contiguous()?;
        prop_assert!(c.is_contiguous());
        prop_assert_eq!(c.same_storage(&leaf), view.is_contiguous());
        prop_assert_eq!(c.to_vec::<f64>()?, spec.expected(&vals));
        // Other dtypes go through the same layouts.
        let leaf32 = leaf.to_dtype(DType::F32)?;
        let want32: Vec<f32> = spec.expected(&vals).iter().map(|&v| v as f32).collect();
        prop_assert_eq!(spec.apply(&leaf32)?.to_vec::<f32>()?, want32);
        let leaf_i = leaf.to_dtype(DType::I64)?;
        let want_i: Vec<i64> = spec.expected(&vals).iter().map(|&v| v as i64).collect();
        prop_assert_eq!(spec.apply(&leaf_i)?.to_vec::<i64>()?, want_i);
    }

    #[test]
    fn named_views_share_storage(shape in dims(1..=4), seed in any::<u64>()) {
        let mut g = Gen::new(seed);
        let rank = shape.len();
        let (vals, x) = ramp(&shape);
        let (a, b) = (g.below(rank), g.below(rank));
        let tr = x.transpose(a as isize, b as isize)?;
        let mut perm: Vec<usize> = (0..rank).collect();
        perm.swap(a, b);
        let expect_perm = |p: &[usize]| -> Vec<f64> {
            let out_dims: Vec<usize> = p.iter().map(|&q| shape[q]).collect();
            (0..vals.len())
                .map(|i| {
                    let idx = unravel(i, &out_dims);
                    let mut src = vec![0; rank];
                    for (k, &q) in p.iter().enumerate() {
                        src[q] = idx[k];
                    }
                    vals[ravel(&src, &shape)]
                })
                .collect()
        };
        prop_assert_eq!(tr.to_vec::<f64>()?, expect_perm(&perm));
        let mut views = vec![("transpose", tr)];
        if rank >= 2 {
            let mut p: Vec<usize> = (0..rank).collect();
            p.swap(rank - 2, rank - 1);
            let t = x.t()?;
            prop_assert_eq!(t.to_vec::<f64>()?, expect_perm(&p));
            views.push(("t", t));
        }
        let u = g.below(rank + 1) as isize;
        views.push(("unsqueeze", x.unsqueeze(u)?));
        views.push(("unsqueeze+squeeze", x.unsqueeze(u)?.squeeze(u)?));
        views.push(("flatten", x.flatten(0, -1)?));
        views.push(("reshape", x.reshape(shape.iter().rev().copied().collect::<Vec<_>>())?));
        views.push(("broadcast_to", x.broadcast_to([&[2usize][..], &shape].concat())?));
        for (name, v) in &views {
            prop_assert!(v.same_storage(&x), "{} copied", name);
        }
        // Reshape-like views keep row-major order.
        for (name, v) in &views[views.len() - 5..views.len() - 1] {
            prop_assert_eq!(v.to_vec::<f64>()?, vals.clone(), "{}", name);
        }
        prop_assert_eq!(x.storage_refcount(), 1 + views.len());
        drop(views);
        prop_assert_eq!(x.storage_refcount(), 1);
    }

    #[test]
    fn reshape_is_a_view_when_possible(shape in dims(1..=4), kind in 0u8..5, seed in any::<u64>()) {
        let mut g = Gen::new(seed);
        let n = numel(&shape);
        // A random factorisation of n (with size-1 axes).
        let mut target = Vec::new();
        let mut rest = n;
        while rest > 1 {
            let f = (2..=rest).find(|f| rest.is_multiple_of(*f) && g.coin()).unwrap_or(rest);
            target.push(f);
            rest /= f;
            if g.below(3) == 0 { target.push(1); }
        }
        if target.is_empty() { target.push(1); }
        let (vals, x) = ramp(&shape);
        let r = x.reshape(target.clone())?;
        prop_assert!(r.same_storage(&x), "reshape of a contiguous tensor must be a view");
        prop_assert_eq!(r.to_vec::<f64>()?, vals);
        // Of an arbitrary view: the row-major order of the view's elements, copied or not.
        let spec = ViewSpec::random(&shape, kind, &mut g);
        let (lv, leaf) = ramp(&spec.leaf_dims);
        let v = spec.apply(&leaf)?;
        let rv = v.reshape(target.clone())?;
        prop_assert_eq!(rv.dims(), &target[..]);
        prop_assert_eq!(rv.to_vec::<f64>()?, spec.expected(&lv));
        if v.is_contiguous() {
            prop_assert!(rv.same_storage(&leaf));
        }
        // Splitting an axis of a permuted view never needs a copy.
        if let Some(p) = &spec.perm {
            if spec.narrow.is_none() {
                let mut split = v.dims().to_vec();
                split.insert(0, 1);
                prop_assert!(v.reshape(split)?.same_storage(&leaf), "{:?}", p);
            }
        }
    }

    #[test]
    fn elementwise_over_views_equals_over_copies(out in dims(1..=4), kinds in (0u8..5, 0u8..5), seed in any::<u64>()) {
        let mut g = Gen::new(seed);
        let sb: Vec<usize> = out.iter().map(|&d| if g.coin() { 1 } else { d }).collect();
        let (sa, sbv) = (ViewSpec::random(&out, kinds.0, &mut g), ViewSpec::random(&sb, kinds.1, &mut g));
        let va = g.values(numel(&sa.leaf_dims), Domain::Normal);
        let vb = g.values(numel(&sbv.leaf_dims), Domain::AwayFromZero);
        let a = sa.apply(&Tensor::from_vec(va.clone(), sa.leaf_dims.clone(), dev())?)?;
        let b = sbv.apply(&Tensor::from_vec(vb.clone(), sbv.leaf_dims.clone(), dev())?)?;
        let (ea, eb) = (sa.expected(&va), sbv.expected(&vb));
        let want: Vec<f64> = (0..numel(&out))
            .map(|i| {
                let idx = unravel(i, &out);
                let j: Vec<usize> = idx.iter().zip(&sb).map(|(&k, &d)| if d == 1 { 0 } else { k }).collect();
                let (x, y) = (ea[i], eb[ravel(&j, &sb)]);
                (x * y - x / y).exp().min(1e6) + x.max(y)
            })
            .collect();
        let got = a.mul(&b)?.sub(&a.div(&b)?)?.exp()?.minimum(&Tensor::scalar(1e6, DType::F64, dev())?)?.add(&a.maximum(&b)?)?;
        assert_close(&got.to_vec::<f64>()?, &want, 1e-12, "a*b - a/b");
        // Comparisons produce u8 masks with the same broadcasting.
        let mask = a.gt(&b)?;
        prop_assert_eq!(mask.dtype(), DType::U8);
        let want_mask: Vec<u8> = (0..numel(&out))
            .map(|i| {
                let idx = unravel(i, &out);
                let j: Vec<usize> = idx.iter().zip(&sb).map(|(&k, &d)| if d == 1 { 0 } else { k }).collect();
                (ea[i] > eb[ravel(&j, &sb)]) as u8
            })
            .collect();
        prop_assert_eq!(mask.to_vec::<u8>()?, want_mask);
    }

    #[test]
    fn reductions_equal_naive_loops(
        shape in prop::collection::vec(1usize..=5, 1..=4),
        kind in 0u8..5,
        keepdim in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut g = Gen::new(seed);
        let rank = shape.len();
        let axes = g.subset(rank);
        let spelled: Vec<isize> = axes.iter().map(|&a| if g.coin() { a as isize } else { a as isize - rank as isize }).collect();
        let spec = ViewSpec::random(&shape, kind, &mut g);
        // Grid values: many ties, so "first index wins" is exercised for argmax/argmin.
        let leaf_vals = g.values(numel(&spec.leaf_dims), Domain::Grid);
        let leaf = Tensor::from_vec(leaf_vals.clone(), spec.leaf_dims.clone(), dev())?;
        let x = spec.apply(&leaf)?;
        let vals = spec.expected(&leaf_vals);
        let out_dims = reduced_dims(&shape, &axes, keepdim);
        let what = format!("over {spelled:?} of {shape:?} (kind {kind}, keepdim {keepdim})");
        let n: usize = axes.iter().map(|&a| shape[a]).product();

        let sum = naive_reduce(&vals, &shape, &axes, 0.0, |a, v, _| a + v);
        let max = naive_reduce(&vals, &shape, &axes, f64::NEG_INFINITY, |a, v, _| a.max(v));
        let min = naive_reduce(&vals, &shape, &axes, f64::INFINITY, |a, v, _| a.min(v));
        let mean: Vec<f64> = sum.iter().map(|s| s / n as f64).collect();
        let sq = naive_reduce(&vals, &shape, &axes, 0.0, |a, v, _| a + v * v);
        let var: Vec<f64> = sq.iter().zip(&mean).map(|(s, m)| s / n as f64 - m * m).collect();

        for (name, t, want) in [
            ("sum", x.sum(&spelled, keepdim)?, &sum),
            ("max", x.max(&spelled, keepdim)?, &max),
            ("min", x.min(&spelled, keepdim)?, &min),
            ("mean", x.mean(&spelled, keepdim)?, &mean),
            ("var", x.var(&spelled, keepdim, false)?, &var),
        ] {
            prop_assert_eq!(t.dims(), &out_dims[..], "{} {}", name, what);
            assert_close(&t.to_vec::<f64>()?, want, 1e-12, &format!("{name} {what}"));
        }
        // f32 (sums accumulate in f64 and round once) and i64 (exact).
        let x32 = x.to_dtype(DType::F32)?;
        let s32: Vec<f64> = x32.sum(&spelled, keepdim)?.to_vec::<f32>()?.iter().map(|&v| v as f64).collect();
        assert_close(&s32, &sum, 1e-6, &format!("f32 sum {what}"));
        let xi = x.mul_scalar(4.0)?.to_dtype(DType::I64)?;
        let si = xi.sum(&spelled, keepdim)?.to_vec::<i64>()?;
        prop_assert_eq!(si, sum.iter().map(|s| (s * 4.0) as i64).collect::<Vec<_>>());
        prop_assert_eq!(xi.max(&spelled, keepdim)?.to_vec::<i64>()?, max.iter().map(|s| (s * 4.0) as i64).collect::<Vec<_>>());

        // argmax/argmin along one axis: the first position of the extreme.
        let axis = g.below(rank);
        let am = naive_reduce(&vals, &shape, &[axis], (f64::NEG_INFINITY, 0i64), |(m, i), v, p| if v > m { (v, p as i64) } else { (m, i) });
        let an = naive_reduce(&vals, &shape, &[axis], (f64::INFINITY, 0i64), |(m, i), v, p| if v < m { (v, p as i64) } else { (m, i) });
        let ax = if g.coin() { axis as isize } else { axis as isize - rank as isize };
        let got_am = x.argmax(ax, keepdim)?;
        prop_assert_eq!(got_am.dtype(), DType::I64);
        prop_assert_eq!(got_am.dims(), &reduced_dims(&shape, &[axis], keepdim)[..]);
        prop_assert_eq!(got_am.to_vec::<i64>()?, am.iter().map(|p| p.1).collect::<Vec<_>>(), "argmax {}", what);
        prop_assert_eq!(x.argmin(ax, keepdim)?.to_vec::<i64>()?, an.iter().map(|p| p.1).collect::<Vec<_>>(), "argmin {}", what);
        prop_assert_eq!(x32.argmax(ax, keepdim)?.to_vec::<i64>()?, am.iter().map(|p| p.1).collect::<Vec<_>>(), "f32 argmax {}", what);
    }

    #[test]
    fn indexing_joining_and_softmax_equal_index_arithmetic(shape in dims(1..=4), kinds in (0u8..5, 0u8..5), seed in any::<u64>()) {
        let mut g = Gen::new(seed);
        let rank = shape.len();
        let spec = ViewSpec::random(&shape, kinds.0, &mut g);
        let leaf_vals = g.values(numel(&spec.leaf_dims), Domain::Normal);
        let x = spec.apply(&Tensor::from_vec(leaf_vals.clone(), spec.leaf_dims.clone(), dev())?)?;
        let xv = spec.expected(&leaf_vals);
        let axis = g.below(rank);
        // index_select
        let ids: Vec<usize> = (0..1 + g.below(5)).map(|_| g.below(shape[axis])).collect();
        let idx = Tensor::from_vec(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [ids.len()], dev())?;
        let mut od = shape.clone();
        od[axis] = ids.len();
        let want: Vec<f64> = (0..numel(&od)).map(|i| { let mut p = unravel(i, &od); p[axis] = ids[p[axis]]; xv[ravel(&p, &shape)] }).collect();
        let got = x.index_select(axis as isize, &idx)?;
        prop_assert_eq!(got.dims(), &od[..]);
        prop_assert_eq!(got.to_vec::<f64>()?, want);
        // gather
        let gd: Vec<usize> = shape.iter().enumerate().map(|(i, &d)| if i == axis { 1 + g.below(4) } else { 1 + g.below(d) }).collect();
        let gi: Vec<usize> = (0..numel(&gd)).map(|_| g.below(shape[axis])).collect();
        let index = Tensor::from_vec(gi.iter().map(|&i| i as i64).collect::<Vec<_>>(), gd.clone(), dev())?;
        let want: Vec<f64> = (0..numel(&gd)).map(|i| { let mut p = unravel(i, &gd); p[axis] = gi[i]; xv[ravel(&p, &shape)] }).collect();
        prop_assert_eq!(x.gather(axis as isize, &index)?.to_vec::<f64>()?, want);
        // cat with a second (differently laid out) tensor along `axis`, and stack with itself
        let mut yd = shape.clone();
        yd[axis] = 1 + g.below(3);
        let ys = ViewSpec::random(&yd, kinds.1, &mut g);
        let yl = g.values(numel(&ys.leaf_dims), Domain::Normal);
        let y = ys.apply(&Tensor::from_vec(yl.clone(), ys.leaf_dims.clone(), dev())?)?;
        let yv = ys.expected(&yl);
        let mut cd = shape.clone();
        cd[axis] += yd[axis];
        let want: Vec<f64> = (0..numel(&cd))
            .map(|i| {
                let mut p = unravel(i, &cd);
                if p[axis] < shape[axis] { xv[ravel(&p, &shape)] } else { p[axis] -= shape[axis]; yv[ravel(&p, &yd)] }
            })
            .collect();
        prop_assert_eq!(Tensor::cat(&[&x, &y], axis as isize)?.to_vec::<f64>()?, want);
        let sa = g.below(rank + 1);
        let st = Tensor::stack(&[&x, &x.neg()?], sa as isize)?;
        let mut sd = shape.clone();
        sd.insert(sa, 2);
        let want: Vec<f64> = (0..numel(&sd))
            .map(|i| { let mut p = unravel(i, &sd); let which = p.remove(sa); let v = xv[ravel(&p, &shape)]; if which == 0 { v } else { -v } })
            .collect();
        prop_assert_eq!(st.to_vec::<f64>()?, want);
        // where_cond with a broadcast mask
        let md: Vec<usize> = shape.iter().map(|&d| if g.coin() { 1 } else { d }).collect();
        let mv: Vec<u8> = (0..numel(&md)).map(|_| g.coin() as u8).collect();
        let mask = Tensor::from_vec(mv.clone(), md.clone(), dev())?;
        let w = Tensor::where_cond(&mask, &x, &Tensor::scalar(7.0, DType::F64, dev())?)?;
        let want: Vec<f64> = (0..xv.len())
            .map(|i| { let p: Vec<usize> = unravel(i, &shape).iter().zip(&md).map(|(&k, &d)| if d == 1 { 0 } else { k }).collect(); if mv[ravel(&p, &md)] != 0 { xv[i] } else { 7.0 } })
            .collect();
        prop_assert_eq!(w.to_vec::<f64>()?, want);
        // softmax / log_softmax along `axis`, against exp(x - max) / Σ
        let mx = naive_reduce(&xv, &shape, &[axis], f64::NEG_INFINITY, |a, v, _| a.max(v));
        let kept: Vec<usize> = (0..rank).filter(|&a| a != axis).collect();
        let kd: Vec<usize> = kept.iter().map(|&a| shape[a]).collect();
        let group = |i: usize| { let p = unravel(i, &shape); ravel(&kept.iter().map(|&a| p[a]).collect::<Vec<_>>(), &kd) };
        let den = naive_reduce(&xv.iter().enumerate().map(|(i, v)| (v - mx[group(i)]).exp()).collect::<Vec<_>>(), &shape, &[axis], 0.0, |a, v, _| a + v);
        let sm: Vec<f64> = (0..xv.len()).map(|i| (xv[i] - mx[group(i)]).exp() / den[group(i)]).collect();
        let lsm: Vec<f64> = (0..xv.len()).map(|i| xv[i] - mx[group(i)] - den[group(i)].ln()).collect();
        assert_close(&x.softmax(axis as isize)?.to_vec::<f64>()?, &sm, 1e-14, "softmax");
        assert_close(&x.log_softmax(axis as isize - rank as isize)?.to_vec::<f64>()?, &lsm, 1e-14, "log_softmax");
    }

    #[test]
    fn matmul_equals_naive_triple_loop(
        case in 0usize..8,
        (m, k, n, b) in (1usize..=17, 1usize..=17, 1usize..=17, 1usize..=3),
        kinds in (0u8..5, 0u8..5),
        f32_too in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut g = Gen::new(seed);
        let (sa, sb): (Vec<usize>, Vec<usize>) = match case {
            0 => (vec![m, k], vec![k, n]),
            1 => (vec![b, m, k], vec![b, k, n]),
            2 => (vec![b, 1, m, k], vec![2, k, n]),
            3 => (vec![m, k], vec![b, k, n]),
            4 => (vec![k], vec![k, n]),
            5 => (vec![b, m, k], vec![k]),
            6 => (vec![k], vec![k]),
            _ => (vec![1, m, k], vec![b, 1, k, n]),
        };
        let (va_spec, vb_spec) = (ViewSpec::random(&sa, kinds.0, &mut g), ViewSpec::random(&sb, kinds.1, &mut g));
        let (la, lb) = (g.values(numel(&va_spec.leaf_dims), Domain::Normal), g.values(numel(&vb_spec.leaf_dims), Domain::Normal));
        let (ea, eb) = (va_spec.expected(&la), vb_spec.expected(&lb));
        // Promote 1-d operands as NumPy does, then broadcast the batch axes.
        let a2 = if sa.len() == 1 { vec![1, sa[0]] } else { sa.clone() };
        let b2 = if sb.len() == 1 { vec![sb[0], 1] } else { sb.clone() };
        let (ra, rb) = (a2.len(), b2.len());
        let batch_rank = (ra - 2).max(rb - 2);
        let pad = |d: &[usize]| [vec![1; batch_rank + 2 - d.len()], d.to_vec()].concat();
        let (pa, pb) = (pad(&a2), pad(&b2));
        let batch: Vec<usize> = (0..batch_rank).map(|i| pa[i].max(pb[i])).collect();
        let (mm, kk, nn) = (a2[ra - 2], a2[ra - 1], b2[rb - 1]);
        let mut want = Vec::new();
        let mut scale = Vec::new();
        for bi in 0..numel(&batch) {
            let bidx = unravel(bi, &batch);
            let ia: Vec<usize> = bidx.iter().zip(&pa).map(|(&i, &d)| if d == 1 { 0 } else { i }).collect();
            let ib: Vec<usize> = bidx.iter().zip(&pb).map(|(&i, &d)| if d == 1 { 0 } else { i }).collect();
            let (oa, ob) = (ravel(&ia, &pa[..batch_rank]) * mm * kk, ravel(&ib, &pb[..batch_rank]) * kk * nn);
            for i in 0..mm {
                for j in 0..nn {
                    let (mut s, mut abs) = (0.0, 0.0);
                    for q in 0..kk {
                        let p = ea[oa + i * kk + q] * eb[ob + q * nn + j];
                        s += p;
                        abs += p.abs();
                    }
                    want.push(s);
                    scale.push(abs);
                }
            }
        }
        let mut out_dims = batch.clone();
        if sa.len() > 1 { out_dims.push(mm); }
        if sb.len() > 1 { out_dims.push(nn); }
        let what = format!("case {case}: {sa:?} @ {sb:?} (views {kinds:?})");
        let mut dtypes = vec![(DType::F64, 1e-12)];
        if f32_too { dtypes.push((DType::F32, 1e-5)); }
        for (dt, tol) in dtypes {
            let a = va_spec.apply(&Tensor::from_vec(la.clone(), va_spec.leaf_dims.clone(), dev())?.to_dtype(dt)?)?;
            let bb = vb_spec.apply(&Tensor::from_vec(lb.clone(), vb_spec.leaf_dims.clone(), dev())?.to_dtype(dt)?)?;
            let y = a.matmul(&bb)?;
            prop_assert_eq!(y.dims(), &out_dims[..], "{}", what);
            prop_assert_eq!(y.dtype(), dt);
            // f32 inputs are rounded too: allow for that in the scale.
            for (i, ((got, w), s)) in y.to_vec_f64()?.iter().zip(&want).zip(&scale).enumerate() {
                prop_assert!((got - w).abs() <= tol * (s + 1e-300) + 1e-300, "{} {}: element {}: {} vs {}", dt, what, i, got, w);
            }
        }
    }
}

/// `a @ b` by the naive triple loop in f64, for contiguous row-major `[m,k]` and `[k,n]`.
fn naive_mm(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|q| a[i * k + q] * b[q * n + j]).sum();
        }
    }
    out
}

#[test]
fn large_matmuls_take_the_parallel_paths_and_stay_correct() {
    let mut rng = Rng::new(7);
    // One big product (gemm's own threading), and many small ones (batches side by side); the
    // right operand is a transposed view in both.
    for (batch, m, k, n) in [(1, 96, 80, 72), (16, 9, 7, 5)] {
        let a = Tensor::randn([batch, m, k], 0.0, 1.0, DType::F64, dev(), &mut rng).unwrap();
        let bt = Tensor::randn([n, k], 0.0, 1.0, DType::F64, dev(), &mut rng).unwrap();
        let y = a.matmul(&bt.t().unwrap()).unwrap();
        let (av, btv) = (a.to_vec::<f64>().unwrap(), bt.t().unwrap().to_vec::<f64>().unwrap());
        let yv = y.to_vec::<f64>().unwrap();
        for i in 0..batch {
            let want = naive_mm(&av[i * m * k..(i + 1) * m * k], &btv, m, k, n);
            for (g, w) in yv[i * m * n..(i + 1) * m * n].iter().zip(&want) {
                assert!((g - w).abs() <= 1e-12 * k as f64 * (1.0 + w.abs()), "{g} vs {w}");
            }
        }
    }
}

#[test]
fn in_place_writes_are_seen_through_every_view() {
    if dev() != CPU {
        return; // writes through with_cpu_slice_mut, a CPU-only API
    }
    let (_, x) = ramp(&[3, 4]);
    let (t, row, b) =
        (x.t().unwrap(), x.narrow(0, 1, 1).unwrap(), x.narrow(0, 2, 1).unwrap().broadcast_to([2, 4]).unwrap());
    // A contiguous narrow is a window on the same buffer: write through it.
    row.with_cpu_slice_mut::<f64, _>(|v| v.iter_mut().for_each(|e| *e = -*e)).unwrap();
    x.with_cpu_slice_mut::<f64, _>(|v| v[8] = 100.0).unwrap();
    assert_eq!(x.to_vec::<f64>().unwrap(), vec![0., 1., 2., 3., -4., -5., -6., -7., 100., 9., 10., 11.]);
    assert_eq!(t.to_vec::<f64>().unwrap()[..3], [0.0, -4.0, 100.0]);
    assert_eq!(b.to_vec::<f64>().unwrap(), vec![100., 9., 10., 11., 100., 9., 10., 11.]);
    assert_eq!(row.with_cpu_slice::<f64, _>(|v| v.to_vec()).unwrap(), vec![-4., -5., -6., -7.]);
    // Strided views cannot be handed out as slices.
    assert!(t.with_cpu_slice::<f64, _>(|v| v.len()).is_err());
    assert!(b.with_cpu_slice_mut::<f64, _>(|v| v.len()).is_err());
    assert!(x.with_cpu_slice::<f32, _>(|v| v.len()).is_err());
}

#[test]
fn strided_copies_across_parallel_chunks() {
    // 300×400 = 120000 elements: above the parallel threshold, with chunk boundaries falling in
    // the middle of runs. Transposed, narrowed and broadcast views copied to row-major.
    let (vals, x) = ramp(&[300, 400]);
    let t = x.t().unwrap();
    let got = t.contiguous().unwrap().to_vec::<f64>().unwrap();
    assert!(got.iter().enumerate().all(|(i, &v)| v == vals[(i % 300) * 400 + i / 300]));
    let nr = x.narrow(1, 3, 390).unwrap().t().unwrap();
    let got = nr.to_vec::<f64>().unwrap();
    assert!(got.iter().enumerate().all(|(i, &v)| v == vals[(i % 300) * 400 + 3 + i / 300]));
    let row = x.narrow(0, 5, 1).unwrap().broadcast_to([250, 400]).unwrap();
    let got = row.affine(0.5, 1.0).unwrap().to_vec::<f64>().unwrap();
    assert!(got.iter().enumerate().all(|(i, &v)| v == vals[5 * 400 + i % 400] * 0.5 + 1.0));
    // A binary op of two differently strided operands.
    let s = x.t().unwrap().add(&x.t().unwrap().contiguous().unwrap()).unwrap();
    assert!(s.to_vec::<f64>().unwrap().iter().enumerate().all(|(i, &v)| v == 2.0 * vals[(i % 300) * 400 + i / 300]));
}

#[test]
fn large_reductions_and_softmax_equal_naive_loops() {
    // Above the parallel threshold, reduced ranges longer than one chunk (and not a multiple of
    // it), with the reduced axis strided.
    let mut rng = Rng::new(3);
    let x = Tensor::randn([3, 70001], 0.0, 1.0, DType::F64, dev(), &mut rng).unwrap();
    let v = x.to_vec::<f64>().unwrap();
    let (rows, cols) = (3, 70001);
    for (name, t, transposed) in [("x", x.clone(), false), ("xᵀ", x.t().unwrap(), true)] {
        let axis = if transposed { 0 } else { 1 };
        let sums = t.sum(&[axis], false).unwrap().to_vec::<f64>().unwrap();
        let maxs = t.max(&[axis], false).unwrap().to_vec::<f64>().unwrap();
        let args = t.argmax(axis, false).unwrap().to_vec::<i64>().unwrap();
        for r in 0..rows {
            let row = &v[r * cols..(r + 1) * cols];
            let s: f64 = row.iter().sum();
            assert!((sums[r] - s).abs() <= 1e-9, "{name} sum row {r}: {} vs {s}", sums[r]);
            let (am, m) = row
                .iter()
                .enumerate()
                .fold((0, f64::NEG_INFINITY), |(i, m), (j, &x)| if x > m { (j, x) } else { (i, m) });
            assert_eq!(maxs[r], m, "{name} max row {r}");
            assert_eq!(args[r], am as i64, "{name} argmax row {r}");
        }
        let sm = t.softmax(axis).unwrap();
        let total = sm.sum(&[axis], false).unwrap().to_vec::<f64>().unwrap();
        assert!(total.iter().all(|s| (s - 1.0).abs() < 1e-12), "{name} softmax rows sum to 1: {total:?}");
        let sv = if transposed { sm.t().unwrap().to_vec::<f64>().unwrap() } else { sm.to_vec::<f64>().unwrap() };
        let den: f64 = v[..cols].iter().map(|&x| (x - maxs[0]).exp()).sum();
        for j in [0, 1, 32767, 32768, 70000] {
            assert!((sv[j] - (v[j] - maxs[0]).exp() / den).abs() < 1e-15, "{name} softmax element {j}");
        }
    }
    // Softmax is stable for large logits and exact for masked (-inf) ones.
    let big = Tensor::from_vec(vec![1000.0f32, 1000.0, f32::NEG_INFINITY, -1000.0], [4], dev()).unwrap();
    let sm = big.softmax(0).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(sm, vec![0.5, 0.5, 0.0, 0.0]);
    let lsm = big.log_softmax(0).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(lsm[2], f32::NEG_INFINITY);
    assert!((lsm[0] + std::f32::consts::LN_2).abs() < 1e-6);
}

#[test]
fn empty_tensors_reshape_and_reduce() {
    // Zero-size axes: views of them, reshape of a non-contiguous one, sums (zero) and copies.
    let x = Tensor::zeros([0, 3], DType::F32, dev()).unwrap();
    let t = x.t().unwrap();
    assert_eq!(t.dims(), &[3, 0]);
    assert_eq!(t.reshape([0]).unwrap().dims(), &[0]);
    assert_eq!(t.reshape([0, 5]).unwrap().dims(), &[0, 5]);
    assert_eq!(t.contiguous().unwrap().numel(), 0);
    assert_eq!(x.sum(&[0], false).unwrap().to_vec::<f32>().unwrap(), vec![0.0; 3]);
    assert!(x.max(&[0], false).is_err(), "max over an empty axis has no value");
    // Ops on empty tensors, and a matmul whose inner dimension is empty (zeros).
    assert_eq!(x.add(&Tensor::ones([3], DType::F32, dev()).unwrap()).unwrap().dims(), &[0, 3]);
    assert_eq!(x.softmax(0).unwrap().dims(), &[0, 3]);
    assert_eq!(Tensor::cat(&[&x, &x], 0).unwrap().dims(), &[0, 3]);
    let none = Tensor::from_vec(Vec::<i64>::new(), [0], dev()).unwrap();
    assert_eq!(x.t().unwrap().index_select(1, &none).unwrap().dims(), &[3, 0]);
    let (a, b) = (Tensor::zeros([2, 0], DType::F64, dev()).unwrap(), Tensor::zeros([0, 3], DType::F64, dev()).unwrap());
    assert_eq!(a.matmul(&b).unwrap().to_vec::<f64>().unwrap(), vec![0.0; 6]);
    assert_eq!(b.t().unwrap().matmul(&a.t().unwrap()).unwrap().dims(), &[3, 2]);
    assert!(x.mean(&[0], false).unwrap().to_vec::<f32>().unwrap().iter().all(|m| m.is_nan()), "mean of nothing is NaN");
}

// ---- thread-count independence -----------------------------------------------------------------

/// Runs `f` in rayon pools of 1, 2 and 3 threads and checks that all give the same bits.
fn same_in_all_pools(what: &str, f: impl Fn() -> Vec<u64> + Sync) {
    let runs: Vec<Vec<u64>> = [1, 2, 3]
        .iter()
        .map(|&n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap().install(&f))
        .collect();
    for (i, r) in runs.iter().enumerate().skip(1) {
        assert_eq!(r.len(), runs[0].len(), "{what}");
        if let Some(p) = r.iter().zip(&runs[0]).position(|(a, b)| a != b) {
            panic!("{what}: {} threads differ from 1 thread at element {p}", i + 1);
        }
    }
}

/// The bits of every element (f32 widened exactly to f64).
fn bits(t: &Tensor) -> Vec<u64> {
    t.to_vec_f64().unwrap().iter().map(|v| v.to_bits()).collect()
}

proptest! {
    // Fixed: each case reduces ~100k-element tensors in three pools.
    #![proptest_config(ProptestConfig::with_cases(4))]

    #[test]
    fn reductions_are_bit_identical_across_thread_counts(which in 0usize..4, dt64 in any::<bool>(), seed in any::<u64>()) {
        if dev() != CPU {
            return Ok(()); // about the CPU's thread pools; GPU reductions have a fixed order
        }
        // > 1<<16 elements; shapes chosen so that the per-output and the chunk-parallel paths are
        // both taken (and differ between the pools: few outputs with 1 thread is "many").
        let shape: Vec<usize> = [vec![5, 20000], vec![300, 300], vec![1, 70001], vec![40, 50, 40]][which].clone();
        let dt = if dt64 { DType::F64 } else { DType::F32 };
        let x = Tensor::randn(shape.clone(), 0.5, 2.0, dt, dev(), &mut Rng::new(seed))?;
        let rank = shape.len() as isize;
        let xt = x.transpose(0, rank - 1)?;
        for (name, t) in [("x", &x), ("transposed", &xt)] {
            let mut axis_sets: Vec<Vec<isize>> = (0..rank).map(|a| vec![a]).collect();
            axis_sets.push((0..rank).collect());
            axis_sets.push(vec![-1, 0]);
            for axes in &axis_sets {
                let what = format!("{name} {shape:?} {dt} over {axes:?}");
                same_in_all_pools(&format!("sum {what}"), || bits(&t.sum(axes, false).unwrap()));
                same_in_all_pools(&format!("mean {what}"), || bits(&t.mean(axes, true).unwrap()));
                same_in_all_pools(&format!("var {what}"), || bits(&t.var(axes, false, true).unwrap()));
                same_in_all_pools(&format!("max {what}"), || bits(&t.max(axes, false).unwrap()));
                same_in_all_pools(&format!("min {what}"), || bits(&t.min(axes, false).unwrap()));
            }
            for a in 0..rank {
                same_in_all_pools(&format!("argmax {name} axis {a}"), || bits(&t.argmax(a, false).unwrap()));
                same_in_all_pools(&format!("argmin {name} axis {a}"), || bits(&t.argmin(a, false).unwrap()));
                same_in_all_pools(&format!("softmax {name} axis {a}"), || bits(&t.softmax(a).unwrap()));
            }
        }
    }

    #[test]
    fn randn_is_bit_identical_across_thread_counts(seed in any::<u64>(), n in 70_000usize..140_000) {
        if dev() != CPU {
            return Ok(()); // about the CPU's thread pools (device_parity checks Emu's numbers)
        }
        same_in_all_pools("randn f64", || bits(&Tensor::randn([n], 0.0, 1.0, DType::F64, dev(), &mut Rng::new(seed)).unwrap()));
        same_in_all_pools("randn f32", || bits(&Tensor::randn([n], 1.0, 3.0, DType::F32, dev(), &mut Rng::new(seed)).unwrap()));
        same_in_all_pools("rand f64", || bits(&Tensor::rand([n], -1.0, 1.0, DType::F64, dev(), &mut Rng::new(seed)).unwrap()));
        // Counter-based: one big (parallel) draw equals a small (serial) draw followed by the rest.
        let mut r = Rng::new(seed);
        let small = Tensor::randn([100], 0.0, 1.0, DType::F64, dev(), &mut r)?;
        let rest = Tensor::randn([n - 100], 0.0, 1.0, DType::F64, dev(), &mut r)?;
        prop_assert_eq!(r.offset(), n as u64);
        let whole = Tensor::randn([n], 0.0, 1.0, DType::F64, dev(), &mut Rng::new(seed))?;
        prop_assert_eq!(bits(&Tensor::cat(&[&small, &rest], 0)?), bits(&whole));
        let other = Tensor::randn([n], 0.0, 1.0, DType::F64, dev(), &mut Rng::new(seed ^ 1))?;
        prop_assert_ne!(bits(&other), bits(&whole));
    }
}
