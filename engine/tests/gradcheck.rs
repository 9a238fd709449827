//! Gradient checks: every differentiable op's autograd gradient against f64 central differences
//! (`bitgrad_engine::gradcheck::check_gradients`), over proptest-generated shapes with size-1
//! dims, broadcasting, and inputs that reach the op as permuted, narrowed or broadcast views.
//!
//! Value domains keep the finite differences away from kinks and ties (see `common::Domain`).

mod common;

use bitgrad_engine::gradcheck::GradCheck;
use bitgrad_engine::{DType, Result, Tensor};
use common::{dims, gradcheck, named, numel, Arg, Domain, Gen, CPU};
use proptest::prelude::*;

type UnaryFn = fn(&Tensor) -> Result<Tensor>;

/// Every elementwise op of one tensor, with the domain its derivative is smooth on.
const UNARY: &[(&str, Domain, UnaryFn)] = &[
    ("neg", Domain::Normal, |x| x.neg()),
    ("exp", Domain::Normal, |x| x.exp()),
    ("log", Domain::Positive, |x| x.log()),
    ("sqrt", Domain::Positive, |x| x.sqrt()),
    ("rsqrt", Domain::Positive, |x| x.rsqrt()),
    ("recip", Domain::AwayFromZero, |x| x.recip()),
    ("sqr", Domain::Normal, |x| x.sqr()),
    ("relu", Domain::AwayFromZero, |x| x.relu()),
    ("sigmoid", Domain::Normal, |x| x.sigmoid()),
    ("tanh", Domain::Normal, |x| x.tanh()),
    ("abs", Domain::AwayFromZero, |x| x.abs()),
    ("sign", Domain::AwayFromZero, |x| x.sign()),
    ("powf(3)", Domain::Normal, |x| x.powf(3.0)),
    ("powf(0.5)", Domain::Positive, |x| x.powf(0.5)),
    ("powf(-1.5)", Domain::Positive, |x| x.powf(-1.5)),
    ("affine", Domain::Normal, |x| x.affine(-1.7, 0.3)),
    ("add_scalar", Domain::Normal, |x| x.add_scalar(0.8)),
    ("mul_scalar", Domain::Normal, |x| x.mul_scalar(-2.5)),
];

type BinaryFn = fn(&Tensor, &Tensor) -> Result<Tensor>;

/// Broadcasting binary ops, with the domains of their two operands.
const BINARY: &[(&str, Domain, Domain, BinaryFn)] = &[
    ("add", Domain::Normal, Domain::Normal, |a, b| a.add(b)),
    ("sub", Domain::Normal, Domain::Normal, |a, b| a.sub(b)),
    ("mul", Domain::Normal, Domain::Normal, |a, b| a.mul(b)),
    ("div", Domain::Normal, Domain::AwayFromZero, |a, b| a.div(b)),
    // Values on two interleaved grids never tie.
    ("maximum", Domain::Grid, Domain::GridShifted, |a, b| a.maximum(b)),
    ("minimum", Domain::GridShifted, Domain::Grid, |a, b| a.minimum(b)),
];

/// Operand shapes that broadcast to `out`: trailing axes of `out`, some of them set to 1.
fn broadcast_operand(out: &[usize], g: &mut Gen) -> Vec<usize> {
    let drop = g.below(out.len() + 1);
    out[drop..].iter().map(|&d| if g.below(3) == 0 { 1 } else { d }).collect()
}

/// Axes as the user might spell them: each one at random as `a` or `a - rank`.
fn spell_axes(axes: &[usize], rank: usize, g: &mut Gen) -> Vec<isize> {
    axes.iter().map(|&a| if g.coin() { a as isize } else { a as isize - rank as isize }).collect()
}

/// `t` with the dtype and device of `like` (the functions below also run on Emu in f32).
fn on(t: &Tensor, like: &Tensor) -> Result<Tensor> {
    t.to_dtype(like.dtype())?.to_device(like.device())
}

fn cfg() -> ProptestConfig {
    common::cases(24)
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn unary_ops(shape in dims(0..=4), kind in 0u8..5, seed in any::<u64>()) {
        for &(name, domain, op) in UNARY {
            let mut g = Gen::new(seed);
            let x = Arg::new(&shape, kind, domain, &mut g);
            named(name, gradcheck(&[x], GradCheck::default(), |v| op(&v[0])))?;
        }
    }

    #[test]
    fn binary_ops_broadcast(out in dims(1..=4), kinds in (0u8..4, 0u8..4), seed in any::<u64>()) {
        for &(name, da, db, op) in BINARY {
            let mut g = Gen::new(seed);
            let (sa, sb) = (broadcast_operand(&out, &mut g), broadcast_operand(&out, &mut g));
            let a = Arg::new(&sa, kinds.0, da, &mut g);
            let b = Arg::new(&sb, kinds.1, db, &mut g);
            named(format!("{name} {sa:?} {sb:?}"), gradcheck(&[a, b], GradCheck::default(), |v| op(&v[0], &v[1])))?;
        }
    }

    #[test]
    fn binary_same_input_twice(shape in dims(1..=3), seed in any::<u64>()) {
        // One leaf feeding both operands (and a broadcast copy of itself).
        let mut g = Gen::new(seed);
        let x = Arg::contiguous(&shape, Domain::AwayFromZero, &mut g);
        named("x*x+x/x", gradcheck(std::slice::from_ref(&x), GradCheck::default(), |v| v[0].mul(&v[0])?.add(&v[0].div(&v[0])?)))?;
        named("x - x.sum(-1)", gradcheck(&[x], GradCheck::default(), |v| v[0].sub(&v[0].sum(&[-1], true)?)))?;
    }

    #[test]
    fn reductions(shape in dims(1..=4), kind in 0u8..5, keepdim in any::<bool>(), seed in any::<u64>()) {
        let mut g = Gen::new(seed);
        let axes_u = g.subset(shape.len());
        let axes = spell_axes(&axes_u, shape.len(), &mut g);
        let n: usize = axes_u.iter().map(|&a| shape[a]).product();
        let x = Arg::new(&shape, kind, Domain::Normal, &mut g);
        let d = Arg::new(&shape, kind, Domain::Distinct, &mut g);
        let what = |op: &str| format!("{op} over {axes:?} of {shape:?} keepdim={keepdim}");
        named(what("sum"), gradcheck(std::slice::from_ref(&x), GradCheck::default(), |v| v[0].sum(&axes, keepdim)))?;
        named(what("mean"), gradcheck(std::slice::from_ref(&x), GradCheck::default(), |v| v[0].mean(&axes, keepdim)))?;
        named(what("var"), gradcheck(std::slice::from_ref(&x), GradCheck::default(), |v| v[0].var(&axes, keepdim, false)))?;
        if n > 1 {
            named(what("var unbiased"), gradcheck(&[x], GradCheck::default(), |v| v[0].var(&axes, keepdim, true)))?;
        }
        // Distinct values: no ties between different elements (a broadcast view repeats one leaf
        // element, whose copies share the gradient and sum back to the right total).
        named(what("max"), gradcheck(std::slice::from_ref(&d), GradCheck::default(), |v| v[0].max(&axes, keepdim)))?;
        named(what("min"), gradcheck(&[d], GradCheck::default(), |v| v[0].min(&axes, keepdim)))?;
    }

    #[test]
    fn reductions_all(shape in dims(0..=4), kind in 0u8..5, seed in any::<u64>()) {
        let mut g = Gen::new(seed);
        let x = Arg::new(&shape, kind, Domain::Normal, &mut g);
        named("sum_all", gradcheck(std::slice::from_ref(&x), GradCheck::default(), |v| v[0].sum_all()))?;
        named("mean_all", gradcheck(&[x], GradCheck::default(), |v| v[0].mean_all()))?;
    }

    #[test]
    fn matmul(
        case in 0usize..10,
        (m, k, n, b, c) in (1usize..=4, 1usize..=4, 1usize..=4, 1usize..=3, 1usize..=3),
        kinds in (0u8..4, 0u8..4),
        seed in any::<u64>(),
    ) {
        let mut g = Gen::new(seed);
        // (lhs dims, rhs dims, transpose-view operands?)
        let (sa, sb, transposed): (Vec<usize>, Vec<usize>, bool) = match case {
            0 => (vec![m, k], vec![k, n], false),
            1 => (vec![b, m, k], vec![b, k, n], false),
            2 => (vec![b, 1, m, k], vec![c, k, n], false), // broadcast batch, different ranks
            3 => (vec![1, m, k], vec![b, k, n], false),
            4 => (vec![k], vec![k, n], false),
            5 => (vec![m, k], vec![k], false),
            6 => (vec![k], vec![k], false),
            7 => (vec![k], vec![b, k, n], false),
            8 => (vec![m, k], vec![k, n], true), // 2-d: the gradients come back transposed
            _ => (vec![b, m, k], vec![k, n], true),
        };
        let what = format!("matmul case {case}: {sa:?} @ {sb:?}");
        if transposed {
            // Operands given as `.t()` of leaves stored the other way round.
            let swap = |s: &[usize]| { let mut s = s.to_vec(); let r = s.len(); s.swap(r - 2, r - 1); s };
            let a = Arg::contiguous(&swap(&sa), Domain::Normal, &mut g);
            let bt = Arg::contiguous(&swap(&sb), Domain::Normal, &mut g);
            named(what, gradcheck(&[a, bt], GradCheck::default(), |v| v[0].t()?.matmul(&v[1].t()?)))?;
        } else {
            let a = Arg::new(&sa, kinds.0, Domain::Normal, &mut g);
            let bb = Arg::new(&sb, kinds.1, Domain::Normal, &mut g);
            named(what, gradcheck(&[a, bb], GradCheck::default(), |v| v[0].matmul(&v[1])))?;
        }
    }

    #[test]
    fn softmax_and_log_softmax(shape in dims(1..=4), kind in 0u8..5, seed in any::<u64>()) {
        let mut g = Gen::new(seed);
        let rank = shape.len() as isize;
        let axis = g.below(2 * shape.len()) as isize - rank; // -rank..rank
        let x = Arg::new(&shape, kind, Domain::Normal, &mut g);
        named(format!("softmax({axis}) of {shape:?}"), gradcheck(std::slice::from_ref(&x), GradCheck::default(), |v| v[0].softmax(axis)))?;
        named(format!("log_softmax({axis}) of {shape:?}"), gradcheck(&[x], GradCheck::default(), |v| v[0].log_softmax(axis)))?;
    }

    #[test]
    fn index_select(shape in dims(1..=4), kind in 0u8..5, len in 1usize..=5, seed in any::<u64>()) {
        let mut g = Gen::new(seed);
        let axis = g.below(shape.len());
        // Repeated indices accumulate their gradients.
        let ids: Vec<i64> = (0..len).map(|_| g.below(shape[axis]) as i64).collect();
        let idx = Tensor::from_vec(ids.clone(), [len], CPU)?;
        let x = Arg::new(&shape, kind, Domain::Normal, &mut g);
        let ax = if g.coin() { axis as isize } else { axis as isize - shape.len() as isize };
        named(format!("index_select({ax}, {ids:?}) of {shape:?}"),
            gradcheck(&[x], GradCheck::default(), |v| v[0].index_select(ax, &idx)))?;
    }

    #[test]
    fn gather(shape in dims(1..=4), kind in 0u8..5, seed in any::<u64>()) {
        let mut g = Gen::new(seed);
        let axis = g.below(shape.len());
        // Same rank; no larger than the source on the other axes; any length along `axis`.
        let idims: Vec<usize> =
            shape.iter().enumerate().map(|(i, &d)| if i == axis { 1 + g.below(4) } else { 1 + g.below(d) }).collect();
        let ids: Vec<i64> = (0..numel(&idims)).map(|_| g.below(shape[axis]) as i64).collect();
        let index = Tensor::from_vec(ids, idims.clone(), CPU)?;
        let x = Arg::new(&shape, kind, Domain::Normal, &mut g);
        named(format!("gather({axis}, index {idims:?}) of {shape:?}"),
            gradcheck(&[x], GradCheck::default(), |v| v[0].gather(axis as isize, &index)))?;
    }

    #[test]
    fn where_cond_and_masked_fill(out in dims(1..=4), kinds in (0u8..5, 0u8..5), seed in any::<u64>()) {
        let mut g = Gen::new(seed);
        let (sm, st, sf) =
            (broadcast_operand(&out, &mut g), broadcast_operand(&out, &mut g), broadcast_operand(&out, &mut g));
        let mask: Vec<u8> = (0..numel(&sm)).map(|_| g.coin() as u8).collect();
        let mask = Tensor::from_vec(mask, sm.clone(), CPU)?;
        let t = Arg::new(&st, kinds.0, Domain::Normal, &mut g);
        let f = Arg::new(&sf, kinds.1, Domain::Normal, &mut g);
        // The result must have `out`'s shape even when all three operands are smaller.
        let full = Tensor::zeros(out.clone(), DType::F64, CPU)?;
        named(format!("where_cond mask {sm:?} true {st:?} false {sf:?}"),
            gradcheck(&[t.clone(), f], GradCheck::default(), |v| Tensor::where_cond(&mask.to_device(v[0].device())?, &v[0], &v[1])?.add(&on(&full, &v[0])?)))?;
        // masked_fill: the mask may broadcast against self only where self is the larger.
        let mask_for_t = Tensor::from_vec((0..numel(&st)).map(|_| g.coin() as u8).collect::<Vec<_>>(), st.clone(), CPU)?;
        named(format!("masked_fill {st:?}"),
            gradcheck(&[t], GradCheck::default(), |v| v[0].masked_fill(&mask_for_t.to_device(v[0].device())?, -3.5)))?;
    }

    #[test]
    fn view_ops(shape in dims(1..=4), kind in 0u8..5, seed in any::<u64>()) {
        let mut g = Gen::new(seed);
        let rank = shape.len();
        let x = Arg::new(&shape, kind, Domain::Normal, &mut g);
        let check = |name: String, f: &dyn Fn(&Tensor) -> Result<Tensor>| {
            named(name, gradcheck(std::slice::from_ref(&x), GradCheck::default(), |v| f(&v[0])))
        };
        let n = numel(&shape);
        let reversed: Vec<usize> = shape.iter().rev().copied().collect();
        check(format!("reshape {shape:?} -> {reversed:?}"), &|t| t.reshape(reversed.clone()))?;
        check(format!("reshape {shape:?} -> [1, {n}, 1]"), &|t| t.reshape([1, n, 1]))?;
        let perm = g.perm(rank);
        check(format!("permute {perm:?}"), &|t| t.permute(&perm))?;
        let (a, b) = (g.below(rank) as isize, g.below(rank) as isize - rank as isize);
        check(format!("transpose({a}, {b})"), &|t| t.transpose(a, b))?;
        if rank >= 2 {
            check("t".into(), &|t| t.t())?;
        }
        let axis = g.below(rank);
        let start = g.below(shape[axis]);
        let len = 1 + g.below(shape[axis] - start);
        check(format!("narrow({axis}, {start}, {len})"), &|t| t.narrow(axis as isize, start, len))?;
        // Broadcast: a new leading axis, and every size-1 axis grown to 3.
        let mut to: Vec<usize> = shape.iter().map(|&d| if d == 1 { 3 } else { d }).collect();
        to.insert(0, 2);
        check(format!("broadcast_to {to:?}"), &|t| t.broadcast_to(to.clone()))?;
        let u = g.below(rank + 1) as isize;
        check(format!("unsqueeze({u})"), &|t| t.unsqueeze(u))?;
        check(format!("unsqueeze({u}).squeeze({u})"), &|t| t.unsqueeze(u)?.squeeze(u))?;
        if let Some(ones) = shape.iter().position(|&d| d == 1) {
            check(format!("squeeze({ones})"), &|t| t.squeeze(ones as isize))?;
        }
        let (s, e) = (g.below(rank), g.below(rank));
        let (s, e) = (s.min(e) as isize, s.max(e) as isize);
        check(format!("flatten({s}, {e})"), &|t| t.flatten(s, e))?;
        check("contiguous".into(), &|t| t.contiguous())?;
        // sum_to_shape (the gradient of broadcasting) down to a random broadcast-compatible shape.
        let small = bitgrad_engine::Shape::from(broadcast_operand(&shape, &mut g));
        check(format!("sum_to_shape {small}"), &|t| t.sum_to_shape(&small))?;
        // Views feeding an op that reads them (so a wrong stride shows up in the values too).
        check(format!("permute {perm:?} then exp"), &|t| t.permute(&perm)?.exp())?;
    }

    #[test]
    fn cat_and_stack(shape in dims(1..=4), kinds in (0u8..5, 0u8..5, 0u8..5), seed in any::<u64>()) {
        let mut g = Gen::new(seed);
        let rank = shape.len();
        let axis = g.below(rank);
        let parts: Vec<Arg> = [kinds.0, kinds.1, kinds.2]
            .iter()
            .map(|&k| {
                let mut s = shape.clone();
                s[axis] = 1 + g.below(3);
                Arg::new(&s, k, Domain::Normal, &mut g)
            })
            .collect();
        let ax = if g.coin() { axis as isize } else { axis as isize - rank as isize };
        named(format!("cat axis {ax}"), gradcheck(&parts, GradCheck::default(), |v| Tensor::cat(&[&v[0], &v[1], &v[2]], ax)))?;
        named("cat of one".to_string(), gradcheck(&parts[..1], GradCheck::default(), |v| Tensor::cat(&[&v[0]], ax)))?;
        let same: Vec<Arg> = [kinds.0, kinds.1].iter().map(|&k| Arg::new(&shape, k, Domain::Normal, &mut g)).collect();
        let sa = g.below(rank + 1) as isize - if g.coin() { 0 } else { rank as isize + 1 };
        named(format!("stack axis {sa}"), gradcheck(&same, GradCheck::default(), |v| Tensor::stack(&[&v[0], &v[1]], sa)))?;
        // The same tensor twice: both slices of the gradient flow back to it.
        named("cat x with x".to_string(), gradcheck(&same[..1], GradCheck::default(), |v| Tensor::cat(&[&v[0], &v[0]], ax)))?;
    }

    #[test]
    fn to_dtype_round_trip(shape in dims(0..=3), kind in 0u8..5, seed in any::<u64>()) {
        let mut g = Gen::new(seed);
        let x = Arg::new(&shape, kind, Domain::Normal, &mut g);
        // f32 rounding (relative 6e-8) dominates the finite differences: a larger step and a
        // loose tolerance still catch a missing or mis-scaled gradient.
        let loose = GradCheck { eps: 1e-3, atol: 1e-2, rtol: 1e-2, seed: 0 };
        named("f64 -> f32 -> f64", gradcheck(std::slice::from_ref(&x), loose, |v| v[0].to_dtype(DType::F32)?.sqr()?.to_dtype(DType::F64)))?;
        // Same dtype: a no-op that still passes the gradient through.
        named("f64 -> f64", gradcheck(&[x], GradCheck::default(), |v| v[0].to_dtype(DType::F64)?.mul_scalar(2.0)))?;
    }

    #[test]
    fn small_network(batch in 1usize..=4, (din, dh, classes) in (1usize..=4, 1usize..=4, 2usize..=4), seed in any::<u64>()) {
        // relu(x·W1 + b1)·W2 + b2 → log_softmax → gather the labels → mean: the shape of a
        // training step, with the first weight used through a transposed view.
        let mut g = Gen::new(seed);
        let x = Tensor::from_vec(g.values(batch * din, Domain::Normal), [batch, din], CPU)?;
        let labels: Vec<i64> = (0..batch).map(|_| g.below(classes) as i64).collect();
        let labels = Tensor::from_vec(labels, [batch, 1], CPU)?;
        let args = [
            Arg::contiguous(&[dh, din], Domain::Normal, &mut g), // W1ᵀ
            Arg::contiguous(&[dh], Domain::Normal, &mut g),
            Arg::contiguous(&[dh, classes], Domain::Normal, &mut g),
            Arg::contiguous(&[classes], Domain::Normal, &mut g),
        ];
        // (A pre-activation within a finite-difference step of relu's kink has probability ~1e-6.)
        named("network", gradcheck(&args, GradCheck::default(), |v| {
            let h = on(&x, &v[0])?.matmul(&v[0].t()?)?.add(&v[1])?.relu()?;
            let logits = h.matmul(&v[2])?.add(&v[3])?;
            logits.log_softmax(-1)?.gather(1, &labels.to_device(v[0].device())?)?.mean_all()?.neg()
        }))?;
    }
}

/// `y = 2x` whose backward wrongly claims `3g`: the checker must catch it.
struct WrongDouble;

impl bitgrad_engine::BackwardOp for WrongDouble {
    fn name(&self) -> &'static str {
        "wrong_double"
    }
    fn backward(&self, _inputs: &[Tensor], _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.mul_scalar(3.0)?)])
    }
}

#[test]
fn the_checker_catches_a_wrong_gradient() -> Result<()> {
    let x = Tensor::from_vec(vec![0.5, -1.0, 2.0, 0.25], [2, 2], CPU)?;
    let wrong = |v: &[Tensor]| {
        let y = {
            let _off = bitgrad_engine::no_grad();
            v[0].mul_scalar(2.0)?
        };
        Ok(y.record(&[&v[0]], WrongDouble))
    };
    let err =
        bitgrad_engine::gradcheck::check_gradients(wrong, std::slice::from_ref(&x), GradCheck::default()).unwrap_err();
    assert!(err.to_string().contains("gradient check failed"), "{err}");
    // And a permuted view of a leaf does not fool it: the checker sees the leaf's elements.
    let ok = bitgrad_engine::gradcheck::check_gradients(|v| v[0].t()?.mul_scalar(2.0), &[x], GradCheck::default())?;
    assert_eq!(ok.checked, 4);
    Ok(())
}

/// A linear layer's `x·wᵀ`: w's gradient is gᵀ·x exactly (computed in that form, laid out as w
/// is), and row-major.
#[test]
fn a_transposed_operand_gets_its_gradient_in_its_own_layout() {
    let mut g = Gen::new(5);
    let mut t = |dims: [usize; 2]| Tensor::from_vec(g.values(dims[0] * dims[1], Domain::Normal), dims, CPU).unwrap();
    let (x, w, gy) = (t([3, 5]).requires_grad_(true), t([4, 5]).requires_grad_(true), t([3, 4]));
    let y = x.matmul(&w.t().unwrap()).unwrap();
    y.backward_with(&gy).unwrap();
    let gw = w.grad().unwrap();
    assert!(gw.is_contiguous(), "w's gradient is row-major");
    let want = gy.t().unwrap().matmul(&x.detach()).unwrap();
    assert_eq!(gw.to_vec::<f64>().unwrap(), want.to_vec::<f64>().unwrap());
}
