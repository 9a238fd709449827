//! Parity with PyTorch: every op of the ops crate run on the inputs of a fixture written by
//! tests/fixtures/gen_fixtures.py (torch 2.15, CPU, f32), compared with PyTorch's output and
//! input gradients. Tolerance: |got − want| ≤ 1e-5·max|want| + 1e-6 per tensor (f32 rounding of
//! differently ordered sums), unless a case states otherwise.

use std::collections::HashMap;

use bitgrad::engine::autograd::grad as autograd_grad;
use bitgrad::ops::batch_norm::{batch_norm, RunningStats};
use bitgrad::ops::conv2d::{conv2d, Conv2dParams};
use bitgrad::ops::group_norm::{group_norm, Activation};
use bitgrad::ops::linear::linear;
use bitgrad::ops::pad::pad2d;
use bitgrad::ops::pool::{avg_pool2d, global_avg_pool, max_pool2d};
use bitgrad::ops::sgd::Sgd;
use bitgrad::ops::softmax_xent::{cross_entropy, Target};
use bitgrad::ops::weight_std::weight_std;
use bitgrad::{Device, Result, Tensor};
use safetensors::{Dtype, SafeTensors};

/// An op of one input, as the pooling cases are called.
type UnaryOp = dyn Fn(&Tensor) -> Result<Tensor>;

struct Fixture {
    name: String,
    tensors: HashMap<String, Tensor>,
    meta: HashMap<String, String>,
}

impl Fixture {
    fn load(name: &str) -> Fixture {
        let path = format!("{}/tests/fixtures/ops/{name}.safetensors", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e} (see tests/fixtures/README.md)"));
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = header.metadata().clone().unwrap_or_default();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut tensors = HashMap::new();
        for (key, view) in st.tensors() {
            let shape = view.shape().to_vec();
            let t = match view.dtype() {
                Dtype::F32 => {
                    let v: Vec<f32> =
                        view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
                    Tensor::from_vec(v, shape, Device::Cpu)
                }
                Dtype::I64 => {
                    let v: Vec<i64> =
                        view.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect();
                    Tensor::from_vec(v, shape, Device::Cpu)
                }
                d => panic!("{name}: unexpected dtype {d:?} for {key}"),
            };
            tensors.insert(key, t.unwrap());
        }
        Fixture { name: name.into(), tensors, meta }
    }
    fn t(&self, key: &str) -> Tensor {
        self.tensors.get(key).unwrap_or_else(|| panic!("{}: no tensor {key}", self.name)).clone()
    }
    fn leaf(&self, key: &str) -> Tensor {
        self.t(key).requires_grad_(true)
    }
    fn opt(&self, key: &str) -> Option<Tensor> {
        self.tensors.get(key).map(|t| t.requires_grad_(true))
    }
    fn meta(&self, key: &str) -> f64 {
        self.meta.get(key).unwrap_or_else(|| panic!("{}: no metadata {key}", self.name)).parse().unwrap()
    }

    /// Compares `got` with the fixture tensor `key`.
    fn check(&self, got: &Tensor, key: &str) {
        let want = self.t(key);
        assert_eq!(got.shape(), want.shape(), "{}: shape of {key}", self.name);
        let (g, w) = (got.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
        let scale = w.iter().fold(0f64, |m, v| m.max(v.abs()));
        let tol = 1e-5 * scale + 1e-6;
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            assert!((a - b).abs() <= tol, "{}: {key}[{i}] = {a}, PyTorch {b} (tol {tol:e})", self.name);
        }
    }

    /// Backpropagates the fixture's `gy` from `y` and checks `g_<name>` for each named leaf.
    fn check_grads(&self, y: &Tensor, leaves: &[(&str, &Tensor)]) -> Result<()> {
        self.check(y, "y");
        let store = autograd_grad(y, &self.t("gy"))?;
        for (name, leaf) in leaves {
            let g = store.get(leaf).unwrap_or_else(|| panic!("{}: no gradient for {name}", self.name));
            self.check(g, &format!("g_{name}"));
        }
        Ok(())
    }
}

#[test]
fn conv2d_matches_pytorch() -> Result<()> {
    for name in
        ["conv_3x3_s2_p1", "conv_1x1", "conv_1x1_s2", "conv_stem_7x7_s2_p3", "conv_depthwise", "conv_groups2_dil2_asym"]
    {
        let f = Fixture::load(name);
        let m = |k: &str| f.meta(k) as usize;
        let p = Conv2dParams::default()
            .with_stride(m("stride"))
            .with_padding_sides(m("pad_top"), m("pad_bottom"), m("pad_left"), m("pad_right"))
            .with_dilation(m("dilation"))
            .with_groups(m("groups"));
        let (x, w, b) = (f.leaf("x"), f.leaf("w"), f.opt("b"));
        let y = conv2d(&x, &w, b.as_ref(), &p)?;
        let mut leaves = vec![("x", &x), ("w", &w)];
        if let Some(b) = &b {
            leaves.push(("b", b));
        }
        f.check_grads(&y, &leaves)?;
    }
    Ok(())
}

#[test]
fn weight_standardization_matches_timm_and_bit() -> Result<()> {
    for name in ["ws_timm_eps1e-8", "ws_bit_eps1e-10"] {
        let f = Fixture::load(name);
        let w = f.leaf("w");
        let y = weight_std(&w, f.meta("eps"))?;
        f.check_grads(&y, &[("w", &w)])?;
    }
    Ok(())
}

#[test]
fn group_norm_matches_pytorch() -> Result<()> {
    for name in ["gn_g32_c64", "gn_relu_g4_c8", "gn_ln_g1", "gn_in_gc"] {
        let f = Fixture::load(name);
        let (x, gamma, beta) = (f.leaf("x"), f.leaf("gamma"), f.leaf("beta"));
        let act = if f.meta("relu") == 1.0 { Activation::Relu } else { Activation::None };
        let y = group_norm(&x, f.meta("groups") as usize, Some(&gamma), Some(&beta), f.meta("eps"), act)?;
        f.check_grads(&y, &[("x", &x), ("gamma", &gamma), ("beta", &beta)])?;
    }
    Ok(())
}

#[test]
fn batch_norm_matches_pytorch_in_both_modes() -> Result<()> {
    let f = Fixture::load("bn_train");
    let stats = RunningStats::from_tensors(f.t("running_mean_before").contiguous()?, f.t("running_var_before"))?;
    let (x, gamma, beta) = (f.leaf("x"), f.leaf("gamma"), f.leaf("beta"));
    let y = batch_norm(&x, Some(&gamma), Some(&beta), Some(&stats), true, f.meta("momentum"), f.meta("eps"))?;
    f.check_grads(&y, &[("x", &x), ("gamma", &gamma), ("beta", &beta)])?;
    f.check(stats.mean(), "running_mean_after");
    f.check(stats.var(), "running_var_after");

    let f = Fixture::load("bn_eval");
    let stats = RunningStats::from_tensors(f.t("running_mean"), f.t("running_var"))?;
    let (x, gamma, beta) = (f.leaf("x"), f.leaf("gamma"), f.leaf("beta"));
    let y = batch_norm(&x, Some(&gamma), Some(&beta), Some(&stats), false, 0.1, f.meta("eps"))?;
    f.check_grads(&y, &[("x", &x), ("gamma", &gamma), ("beta", &beta)])
}

#[test]
fn padding_pooling_and_the_bit_stem_match_pytorch() -> Result<()> {
    let cases: [(&str, &UnaryOp); 7] = [
        ("pad_1_2_0_3", &|x| pad2d(x, [1, 2, 0, 3], 0.0)),
        ("maxpool_3_s2_p1", &|x| max_pool2d(x, [3, 3], [2, 2], [1, 1])),
        ("maxpool_2_s2", &|x| max_pool2d(x, [2, 2], [2, 2], [0, 0])),
        ("avgpool_3_s2_p1", &|x| avg_pool2d(x, [3, 3], [2, 2], [1, 1], true)),
        ("avgpool_3_s2_p1_excl", &|x| avg_pool2d(x, [3, 3], [2, 2], [1, 1], false)),
        ("global_avg_pool", &|x| global_avg_pool(x)),
        ("stem_pad_pool", &|x| max_pool2d(&pad2d(x, [1, 1, 1, 1], 0.0)?, [3, 3], [2, 2], [0, 0])),
    ];
    for (name, op) in cases {
        let f = Fixture::load(name);
        let x = f.leaf("x");
        let y = op(&x)?;
        f.check_grads(&y, &[("x", &x)])?;
    }
    Ok(())
}

#[test]
fn linear_matches_pytorch() -> Result<()> {
    let f = Fixture::load("linear");
    let (x, w, b) = (f.leaf("x"), f.leaf("w"), f.leaf("b"));
    let y = linear(&x, &w, Some(&b))?;
    f.check_grads(&y, &[("x", &x), ("w", &w), ("b", &b)])
}

#[test]
fn cross_entropy_matches_pytorch() -> Result<()> {
    for name in ["xent_hard", "xent_hard_ls0.1", "xent_soft"] {
        let f = Fixture::load(name);
        let logits = f.leaf("logits");
        let (labels, soft) = (f.tensors.get("labels").cloned(), f.tensors.get("target").cloned());
        let target = match (&labels, &soft) {
            (Some(l), _) => Target::Hard(l),
            (None, Some(s)) => Target::Soft(s),
            _ => panic!("{name}: no target"),
        };
        let ls = f.meta.get("label_smoothing").map_or(0.0, |s| s.parse().unwrap());
        let y = cross_entropy(&logits, target, ls)?;
        f.check_grads(&y, &[("logits", &logits)])?;
    }
    Ok(())
}

#[test]
fn sgd_matches_torch_optim_sgd_over_three_steps() -> Result<()> {
    for name in ["sgd_momentum", "sgd_nesterov_wd"] {
        let f = Fixture::load(name);
        let w = f.t("w0").contiguous()?.requires_grad_(true);
        let mut opt = Sgd::new(f.meta("lr"), f.meta("momentum"), f.meta("weight_decay"), f.meta("nesterov") == 1.0)?;
        for step in 0..3 {
            w.zero_grad();
            w.accumulate_grad(&f.t(&format!("grad{step}")))?;
            opt.step(std::slice::from_ref(&w))?;
            f.check(&w, &format!("w{}", step + 1));
        }
    }
    Ok(())
}
