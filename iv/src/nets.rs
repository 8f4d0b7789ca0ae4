//! The IV networks of docs/protocols.md on plain [`Params`]: linear layers with spectral normalisation,
//! LayerNorm (with gain and bias), ReLU, and a Tanh head for the treatment network.
//!
//! Spectral norm divides W by σ̂ = ‖uW‖ with u a unit vector from power iteration. u is held
//! fixed during a forward and refreshed only by [`Net::refresh`] (one power step per outer
//! iteration, as PyTorch's `spectral_norm` does one per training forward): the forward is then a
//! pure function of the parameters, which the finite-difference Hessian products of AID/ITD/penalty
//! and the gradient tests need.

use std::cell::{Cell, RefCell};

use burn::tensor::{DType, Tensor, TensorData, activation};
use funcrl_bilevel::{
    BilevelError, Ctx, Forward, InnerModel, Params, Precision, State, ctx::to_vec,
};

pub use funcrl_kernels::normed::{Act, Layer};
use funcrl_kernels::{Real, normed::HostNet};
use rand::{RngExt, rngs::StdRng};

/// An MLP whose last `features` block is followed (for the instrument net) by a linear head.
#[derive(Debug)]
pub struct Net {
    pub widths: Vec<usize>,
    pub layers: Vec<Layer>,
    pub spectral_norm: bool,
    /// Linear head appended after the last layer (the inner model's `[W, b]`), width `head`.
    pub head: Option<usize>,
    /// Inner and adjoint steps through the fused host kernel (`funcrl_kernels::normed`), in the
    /// tensors' precision or the one a caller asks for; `false`: burn's autodiff (the kernel's
    /// tests compare the two).
    pub host_kernel: bool,
    /// Power-iteration vectors of the selected parameter set ([`InnerModel::select_state`]).
    u: RefCell<Vec<Option<Tensor<2>>>>,
    /// Those of the other parameter sets, by slot (the selected slot's entry is empty).
    parked: RefCell<Vec<Vec<Option<Tensor<2>>>>>,
    slot: Cell<usize>,
}

impl Net {
    /// `widths` = [input, hidden.., features]; LayerNorm after every layer but the first.
    pub fn new(
        widths: Vec<usize>,
        final_act: Act,
        layer_norm: bool,
        spectral_norm: bool,
        head: Option<usize>,
    ) -> Self {
        let k = widths.len() - 1;
        let layers = (0..k)
            .map(|l| Layer {
                layer_norm: layer_norm && l > 0,
                norm_after_act: false,
                act: if l == k - 1 { final_act } else { Act::Relu },
            })
            .collect();
        Self::with_layers(widths, layers, spectral_norm, head)
    }

    /// funcBO's placement of LayerNorm (its `OuterModel` and instrument `Sequential` for
    /// dSprites): after the activation of hidden layers — the second only for the treatment
    /// net (`final_act` Tanh), every hidden layer from the second on for the instrument net —
    /// and before the final activation. Four layers: treatment Lin-ReLU, Lin-ReLU-LN, Lin-ReLU,
    /// Lin-LN-Tanh; instrument Lin-ReLU, Lin-ReLU-LN, Lin-ReLU-LN, Lin-LN-ReLU.
    pub fn funcbo(
        widths: Vec<usize>,
        final_act: Act,
        spectral_norm: bool,
        head: Option<usize>,
    ) -> Self {
        let k = widths.len() - 1;
        let layers = (0..k)
            .map(|l| {
                let last = l == k - 1;
                let hidden_norm = match final_act {
                    Act::Tanh | Act::Identity => l == 1,
                    Act::Relu => l >= 1,
                };
                Layer {
                    layer_norm: last || hidden_norm,
                    norm_after_act: !last,
                    act: if last { final_act } else { Act::Relu },
                }
            })
            .collect();
        Self::with_layers(widths, layers, spectral_norm, head)
    }

    fn with_layers(
        widths: Vec<usize>,
        layers: Vec<Layer>,
        spectral_norm: bool,
        head: Option<usize>,
    ) -> Self {
        let k = widths.len() - 1;
        Self {
            u: RefCell::new(vec![None; k]),
            parked: RefCell::new(vec![Vec::new()]),
            slot: Cell::new(0),
            widths,
            layers,
            spectral_norm,
            head,
            host_kernel: true,
        }
    }

    fn per_layer(&self, l: usize) -> usize {
        if self.layers[l].layer_norm { 4 } else { 2 }
    }

    /// PyTorch-style U(±1/√fan_in) weights and biases, LayerNorm gain 1 and bias 0.
    pub fn init(&self, ctx: &Ctx, rng: &mut StdRng) -> Params {
        let mut out = Vec::new();
        let linear = |i: usize, o: usize, rng: &mut StdRng, out: &mut Vec<Tensor<2>>| {
            let b = 1.0 / (i as f64).sqrt();
            let mut draw = |n: usize| -> Vec<f64> {
                (0..n)
                    .map(|_| b * (2.0 * rng.random::<f64>() - 1.0))
                    .collect()
            };
            out.push(ctx.tensor2(draw(i * o), i, o));
            out.push(ctx.tensor2(draw(o), 1, o));
        };
        for l in 0..self.layers.len() {
            let (i, o) = (self.widths[l], self.widths[l + 1]);
            linear(i, o, rng, &mut out);
            if self.layers[l].layer_norm {
                out.push(ctx.ones2(1, o));
                out.push(ctx.zeros2(1, o));
            }
        }
        if let Some(h) = self.head {
            linear(*self.widths.last().expect("widths"), h, rng, &mut out);
        }
        Params::new(out)
    }

    /// W / σ̂(W) with the stored power-iteration vector (W itself without spectral norm).
    fn weight(&self, l: usize, w: &Tensor<2>) -> Tensor<2> {
        if !self.spectral_norm {
            return w.clone();
        }
        let u = self.u.borrow()[l].clone();
        let Some(u) = u else {
            return w.clone();
        };
        // v = uW/‖uW‖ (constant), σ̂ = u W vᵀ = ‖uW‖, differentiable in W.
        let uw = u.clone().matmul(w.clone().detach());
        let v = uw.clone().div(uw.square().sum().sqrt().reshape([1, 1]));
        let sigma = u.matmul(w.clone()).mul(v).sum().reshape([1, 1]);
        w.clone().mul(sigma.recip())
    }

    /// One power-iteration step per layer (five on the first call) at the current parameters.
    pub fn refresh(&self, ctx: &Ctx, params: &Params) {
        if !self.spectral_norm {
            return;
        }
        let mut us = self.u.borrow_mut();
        let mut at = 0;
        for l in 0..self.layers.len() {
            let w = params.0[at].clone().detach();
            let (steps, mut u) = match &us[l] {
                Some(u) => (1, u.clone()),
                None => {
                    let i = self.widths[l];
                    (5, ctx.ones2(1, i).mul_scalar(1.0 / (i as f64).sqrt()))
                }
            };
            for _ in 0..steps {
                let v = u.matmul(w.clone());
                let v = v.clone().div(v.square().sum().sqrt().reshape([1, 1]));
                let nu = v.matmul(w.clone().transpose());
                u = nu.clone().div(nu.square().sum().sqrt().reshape([1, 1]));
            }
            us[l] = Some(u.detach());
            at += self.per_layer(l);
        }
    }

    /// The power-iteration vectors of every parameter set into `state` under `prefix`
    /// (`{prefix}.slot{s}.u{l}`, `[1, widths[l]]`), so that a resumed run normalises with the
    /// vectors the uninterrupted one would have. Nothing without spectral norm.
    pub fn save_norm_state(&self, state: &mut State, prefix: &str) {
        let now = self.slot.get();
        let parked = self.parked.borrow();
        let us = self.u.borrow();
        for slot in 0..parked.len().max(now + 1) {
            let vectors: &[Option<Tensor<2>>] = if slot == now { &us } else { &parked[slot] };
            for (l, u) in vectors.iter().enumerate() {
                if let Some(u) = u {
                    state.put(
                        &format!("{prefix}.slot{slot}.u{l}"),
                        &Params::new(vec![u.clone()]),
                    );
                }
            }
        }
    }

    /// Restores what [`save_norm_state`](Self::save_norm_state) put (slot 0 selected, as between
    /// outer iterations); a slot with no stored vector starts fresh.
    pub fn restore_norm_state(
        &self,
        ctx: &Ctx,
        state: &State,
        prefix: &str,
    ) -> Result<(), BilevelError> {
        self.select_state(0);
        let k = self.layers.len();
        let slots = state
            .tensors
            .keys()
            .filter_map(|name| {
                let rest = name.strip_prefix(prefix)?.strip_prefix(".slot")?;
                rest.split('.').next()?.parse::<usize>().ok()
            })
            .max()
            .map_or(1, |s| s + 1);
        let mut all = Vec::with_capacity(slots);
        for slot in 0..slots {
            let mut us = Vec::with_capacity(k);
            for l in 0..k {
                let name = format!("{prefix}.slot{slot}.u{l}");
                let like = Params::new(vec![ctx.zeros2(1, self.widths[l])]);
                us.push(match state.tensors.contains_key(&name) {
                    true => Some(state.get_like(ctx, &name, &like)?.0.remove(0)),
                    false => None,
                });
            }
            all.push(us);
        }
        *self.u.borrow_mut() = std::mem::take(&mut all[0]);
        let mut parked = self.parked.borrow_mut();
        *parked = all;
        parked[0] = Vec::new();
        Ok(())
    }

    /// Features (after the last layer's activation) and, with a head, the prediction.
    pub fn run(&self, params: &Params, x: &Tensor<2>) -> (Tensor<2>, Option<Tensor<2>>) {
        let mut h = x.clone();
        // Row vectors (biases, LayerNorm gains) are spread over the rows as 1·p, a rank-one GEMM,
        // rather than by broadcasting: the backward of a broadcast sums the gradient down the
        // columns with a strided loop (burn flex), ≈ 10 % of an iteration; 1ᵀG is a GEMM.
        // LayerNorm's row means are GEMVs with a column of 1/width, and per-row values are spread
        // over the columns as v·1ᵀ, for the same reason (mean_dim is a scalar add chain).
        let (device, dtype) = (x.device(), x.dtype());
        let ones = Tensor::<2>::ones([x.dims()[0], 1], (&device, dtype));
        let spread = |p: &Tensor<2>| ones.clone().matmul(p.clone());
        let mut at = 0;
        for (l, layer) in self.layers.iter().enumerate() {
            let w = self.weight(l, &params.0[at]);
            h = h.matmul(w) + spread(&params.0[at + 1]);
            let width = self.widths[l + 1];
            let norm = |h: Tensor<2>| {
                let mean_col =
                    Tensor::<2>::ones([width, 1], (&device, dtype)).mul_scalar(1.0 / width as f64);
                let row = Tensor::<2>::ones([1, width], (&device, dtype));
                let m = h.clone().matmul(mean_col.clone());
                let c = h - m.matmul(row.clone());
                let var = c.clone().square().matmul(mean_col);
                let inv = var.add_scalar(1e-5).sqrt().recip();
                c.mul(inv.matmul(row)) * spread(&params.0[at + 2]) + spread(&params.0[at + 3])
            };
            if layer.layer_norm && !layer.norm_after_act {
                h = norm(h);
            }
            h = match layer.act {
                Act::Relu => activation::relu(h),
                Act::Tanh => h.tanh(),
                Act::Identity => h,
            };
            if layer.layer_norm && layer.norm_after_act {
                h = norm(h);
            }
            at += self.per_layer(l);
        }
        let out = self
            .head
            .map(|_| h.clone().matmul(params.0[at].clone()) + spread(&params.0[at + 1]));
        (h, out)
    }

    /// Largest |σ̂ − σ| / σ over layers after `refresh` (diagnostic).
    pub fn sigma_hat(&self, params: &Params, l: usize) -> f64 {
        let mut at = 0;
        for k in 0..l {
            at += self.per_layer(k);
        }
        let w = &params.0[at];
        let ws = self.weight(l, w);
        let _ = ws;
        let u = self.u.borrow()[l].clone().expect("refreshed");
        let uw = u.matmul(w.clone().detach());
        to_vec(&uw.square().sum())[0].sqrt()
    }
}

impl InnerModel for Net {
    fn init(&self, ctx: &Ctx, rng: &mut StdRng) -> Params {
        Net::init(self, ctx, rng)
    }
    fn forward(&self, theta: &Params, x: &Tensor<2>) -> Forward {
        let (features, output) = self.run(theta, x);
        Forward {
            features,
            output: output.expect("the inner model has a head"),
        }
    }
    fn output_dim(&self) -> usize {
        self.head.expect("the inner model has a head")
    }

    fn refresh(&self, ctx: &Ctx, params: &Params) {
        Net::refresh(self, ctx, params);
    }

    fn select_state(&self, slot: usize) {
        let now = self.slot.get();
        if slot == now {
            return;
        }
        let mut parked = self.parked.borrow_mut();
        if parked.len() <= slot {
            parked.resize(slot + 1, Vec::new());
        }
        let mut next = std::mem::take(&mut parked[slot]);
        if next.is_empty() {
            // A slot used for the first time starts like a fresh network: five power steps on
            // its first refresh.
            next = vec![None; self.layers.len()];
        }
        parked[now] = std::mem::replace(&mut *self.u.borrow_mut(), next);
        self.slot.set(slot);
    }

    fn grad_through(
        &self,
        theta: &Params,
        x: &Tensor<2>,
        arith: Option<Precision>,
        dv: &mut dyn FnMut(Tensor<2>) -> Tensor<2>,
    ) -> Option<Params> {
        if !self.host_kernel || self.head.is_none() {
            return None;
        }
        let own = match x.dtype() {
            DType::F64 => Precision::F64,
            DType::F32 => Precision::F32,
            _ => return None,
        };
        Some(match arith.unwrap_or(own) {
            Precision::F64 => self.host_route::<f64>(theta, x, dv),
            Precision::F32 => self.host_route::<f32>(theta, x, dv),
        })
    }
}

impl Net {
    /// [`InnerModel::grad_through`] on the host kernel computing in `T`: parameters, power-iteration
    /// vectors and inputs rounded to `T`, the prediction and gradients returned in `x`'s dtype.
    fn host_route<T: Real>(
        &self,
        theta: &Params,
        x: &Tensor<2>,
        dv: &mut dyn FnMut(Tensor<2>) -> Tensor<2>,
    ) -> Params {
        let host = |t: &Tensor<2>| -> Vec<T> {
            to_vec(&t.clone().detach()).into_iter().map(T::of).collect()
        };
        let params: Vec<Vec<T>> = theta.0.iter().map(host).collect();
        let u: Vec<Option<Vec<T>>> = self
            .u
            .borrow()
            .iter()
            .map(|u| u.as_ref().map(host))
            .collect();
        let net = HostNet::new(
            &self.widths,
            &self.layers,
            self.spectral_norm,
            self.output_dim(),
            &params,
            &u,
        );
        let n = x.dims()[0];
        let mut tape = net.forward(&host(x), n);
        let (device, dtype) = (x.device(), x.dtype());
        let make = |values: Vec<T>, r: usize, c: usize| {
            let values: Vec<f64> = values.into_iter().map(T::widen).collect();
            Tensor::<2>::from_data(TensorData::new(values, [r, c]), (&device, dtype))
        };
        let g = host(&dv(make(
            std::mem::take(&mut tape.output),
            n,
            self.output_dim(),
        )));
        let grads = net.backward(&tape, &g);
        Params::new(grads.into_iter().map(|(v, r, c)| make(v, r, c)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use funcrl_bilevel::Precision;
    use rand::SeedableRng;

    /// Two parameter sets on one `Net` (θ and FuncID's adjoint ψ) each keep their own
    /// power-iteration vectors: slot 1 behaves as a fresh network refreshed at ψ only, and going
    /// back to slot 0 finds θ's vectors untouched.
    #[test]
    fn each_state_slot_keeps_its_own_power_iteration() {
        let ctx = Ctx::flex(Precision::F64);
        let widths = vec![3, 8, 6, 4];
        let make = || Net::funcbo(widths.clone(), Act::Relu, true, Some(2));
        let net = make();
        let theta = net.init(&ctx, &mut StdRng::seed_from_u64(1));
        let psi = net.init(&ctx, &mut StdRng::seed_from_u64(2));
        let x = ctx.tensor2((0..15).map(|k| (k as f64 * 0.37).sin()).collect(), 5, 3);
        for _ in 0..3 {
            InnerModel::refresh(&net, &ctx, &theta);
        }
        let before = to_vec(&net.forward(&theta, &x).output);
        net.select_state(1);
        for _ in 0..3 {
            InnerModel::refresh(&net, &ctx, &psi);
        }
        let fresh = make();
        for _ in 0..3 {
            fresh.refresh(&ctx, &psi);
        }
        assert_eq!(
            to_vec(&net.forward(&psi, &x).output),
            to_vec(&fresh.forward(&psi, &x).output)
        );
        // The slots differ (ψ's spectral norms are not θ's).
        assert_ne!(
            to_vec(&net.forward(&theta, &x).output),
            before,
            "slot 1 should not use θ's vectors"
        );
        net.select_state(0);
        assert_eq!(to_vec(&net.forward(&theta, &x).output), before);
    }

    /// funcBO's layout: treatment net Lin-ReLU, Lin-ReLU-LN, Lin-ReLU, Lin-LN-Tanh. Recomputed
    /// on the host from the parameters (σ̂ from the stored power-iteration vectors): same output.
    #[test]
    fn funcbo_layout_matches_a_host_forward() {
        let ctx = Ctx::flex(Precision::F64);
        let widths = vec![6, 5, 7, 4, 3];
        let net = Net::funcbo(widths.clone(), Act::Tanh, true, None);
        let p = net.init(&ctx, &mut StdRng::seed_from_u64(2));
        for _ in 0..3 {
            net.refresh(&ctx, &p);
        }
        let x: Vec<f64> = (0..12).map(|k| (k as f64 * 0.71).cos()).collect();
        let got = to_vec(&net.run(&p, &ctx.tensor2(x.clone(), 2, 6)).0);
        let ln = |h: &mut [f64], g: &[f64], b: &[f64]| {
            let m = h.iter().sum::<f64>() / h.len() as f64;
            let v = h.iter().map(|y| (y - m).powi(2)).sum::<f64>() / h.len() as f64;
            for (i, y) in h.iter_mut().enumerate() {
                *y = (*y - m) / (v + 1e-5).sqrt() * g[i] + b[i];
            }
        };
        let mut at = 0;
        let mut h: Vec<Vec<f64>> = vec![x[..6].to_vec(), x[6..].to_vec()];
        for l in 0..4 {
            let (i, o) = (widths[l], widths[l + 1]);
            let w = to_vec(&p.0[at]);
            let b = to_vec(&p.0[at + 1]);
            let sigma = net.sigma_hat(&p, l);
            let has_ln = l == 1 || l == 3;
            for row in h.iter_mut() {
                let mut y: Vec<f64> = (0..o)
                    .map(|c| (0..i).map(|r| row[r] * w[r * o + c]).sum::<f64>() / sigma + b[c])
                    .collect();
                let (g, bb) = if has_ln {
                    (to_vec(&p.0[at + 2]), to_vec(&p.0[at + 3]))
                } else {
                    (vec![], vec![])
                };
                if l == 3 {
                    ln(&mut y, &g, &bb);
                    y.iter_mut().for_each(|v| *v = v.tanh());
                } else {
                    y.iter_mut().for_each(|v| *v = v.max(0.0));
                    if has_ln {
                        ln(&mut y, &g, &bb);
                    }
                }
                *row = y;
            }
            at += if has_ln { 4 } else { 2 };
        }
        assert_eq!(at, p.len());
        let want = h.concat();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-12, "{got:?} vs {want:?}");
        }
    }

    /// After power iteration σ̂ equals the top singular value (checked against ‖W‖₂ from the
    /// Gram matrix's power method), LayerNorm output has zero mean and unit variance per row.
    #[test]
    fn spectral_norm_and_layer_norm() {
        let ctx = Ctx::flex(Precision::F64);
        let net = Net::new(vec![5, 7, 3], Act::Tanh, true, true, None);
        let p = net.init(&ctx, &mut StdRng::seed_from_u64(0));
        for _ in 0..40 {
            net.refresh(&ctx, &p);
        }
        // Reference: power method on WᵀW on the host.
        let w = to_vec(&p.0[0]);
        let (i, o) = (5, 7);
        let mut v = vec![1.0; o];
        let mut s = 0.0;
        for _ in 0..500 {
            let wv: Vec<f64> = (0..i)
                .map(|r| (0..o).map(|c| w[r * o + c] * v[c]).sum())
                .collect();
            let wtwv: Vec<f64> = (0..o)
                .map(|c| (0..i).map(|r| w[r * o + c] * wv[r]).sum())
                .collect();
            let n = wtwv.iter().map(|x| x * x).sum::<f64>().sqrt();
            s = (wv.iter().map(|x| x * x).sum::<f64>()).sqrt()
                / v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v = wtwv.iter().map(|x| x / n).collect();
        }
        let sh = net.sigma_hat(&p, 0);
        assert!((sh - s).abs() < 1e-9 * s, "{sh} vs {s}");
        // LayerNorm before the activation: undo tanh on the second layer's output.
        let x = ctx.tensor2((0..20).map(|k| (k as f64 * 0.37).sin()).collect(), 4, 5);
        let (f, _) = net.run(&p, &x);
        let pre: Vec<f64> = to_vec(&f).iter().map(|y| y.atanh()).collect();
        for r in 0..4 {
            let row = &pre[r * 3..r * 3 + 3];
            let m = row.iter().sum::<f64>() / 3.0;
            let var = row.iter().map(|y| (y - m).powi(2)).sum::<f64>() / 3.0;
            // var/(var + 1e-5) < 1 by the LayerNorm epsilon.
            assert!(m.abs() < 1e-9 && (var - 1.0).abs() < 1e-3, "{m} {var}");
        }
    }
}

#[cfg(test)]
mod kernel_tests {
    //! The host kernel (`funcrl_kernels::normed`) against burn's autodiff.
    use super::*;
    use crate::problem::{IvProblem, Stage1, random_tensor};
    use burn::tensor::Tensor;
    use funcrl_bilevel::{
        Ctx, InnerModel, Params, Precision, ctx::to_vec, inner::inner_grad_theta,
    };
    use rand::{SeedableRng, rngs::StdRng};

    fn max_rel(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0.0_f64, |m, x| m.max(x.abs())).max(1e-300);
        a.iter()
            .zip(b)
            .fold(0.0_f64, |m, (x, y)| m.max((x - y).abs()))
            / scale
    }

    /// J_θᵀ g by burn's autodiff: the gradient of Σ ⟨h_θ(x), g⟩.
    fn autodiff(net: &Net, theta: &Params, x: &Tensor<2>, g: &Tensor<2>) -> Params {
        let th = theta.tracked();
        let v = net.forward(&th, x).output;
        th.grads(&(v * g.clone()).sum().backward())
    }

    /// Every layout the IV networks use — funcBO's instrument (LN after ReLU) and treatment
    /// (Tanh head) layouts, LN before the activation, identity output, with and without spectral
    /// norm, before and after the power-iteration vectors exist — gives the gradients of burn's
    /// autodiff, parameter by parameter, and the same prediction; computing in f32 (FuncID's
    /// `adjoint_precision`) gives them to f32 rounding.
    #[test]
    fn fused_gradient_equals_autodiff() {
        let ctx = Ctx::flex(Precision::F64);
        let nets = [
            Net::funcbo(vec![3, 9, 7, 6, 5], Act::Relu, true, Some(4)),
            Net::funcbo(vec![4, 8, 6, 5, 3], Act::Tanh, true, Some(2)),
            Net::funcbo(vec![2, 7, 5], Act::Identity, true, Some(3)),
            Net::new(vec![4, 6, 5], Act::Tanh, true, false, Some(2)),
            Net::new(vec![3, 6, 6, 4], Act::Relu, true, true, Some(3)),
        ];
        for (k, net) in nets.iter().enumerate() {
            let mut rng = StdRng::seed_from_u64(k as u64);
            let theta = net.init(&ctx, &mut rng);
            // Non-trivial LayerNorm gains and biases.
            let theta = theta.axpy(
                0.3,
                &Params::new(
                    theta
                        .0
                        .iter()
                        .map(|p| {
                            let [r, c] = p.dims();
                            random_tensor(&ctx, &mut rng, r, c)
                        })
                        .collect(),
                ),
            );
            let n = 13;
            let x = random_tensor(&ctx, &mut rng, n, net.widths[0]).mul_scalar(2.0);
            let g = random_tensor(&ctx, &mut rng, n, net.head.unwrap());
            for refreshed in [false, true] {
                if refreshed {
                    for _ in 0..3 {
                        net.refresh(&ctx, &theta);
                    }
                }
                let want = autodiff(net, &theta, &x, &g);
                // f32 rounds each input and product (relative 6e-8) through a few layers.
                for (arith, tol) in [(None, 1e-12_f64), (Some(Precision::F32), 1e-5)] {
                    let mut seen = None;
                    let got = net
                        .grad_through(&theta, &x, arith, &mut |v| {
                            seen = Some(to_vec(&v));
                            g.clone()
                        })
                        .expect("a net with a head uses the kernel");
                    let out = to_vec(&net.forward(&theta, &x).output);
                    let e = max_rel(&seen.unwrap(), &out);
                    assert!(e < tol.max(1e-13), "net {k} {arith:?}: prediction {e}");
                    assert_eq!(got.len(), want.len());
                    for (j, (a, b)) in got.0.iter().zip(&want.0).enumerate() {
                        assert_eq!(a.dims(), b.dims(), "net {k} param {j}");
                        assert_eq!(a.dtype(), DType::F64, "results keep the tensors' dtype");
                        let e = max_rel(&to_vec(a), &to_vec(b));
                        assert!(
                            e < tol,
                            "net {k} (refreshed {refreshed}, {arith:?}) param {j}: rel err {e}"
                        );
                        // f32 must actually round: an f64 route mislabelled as f32 fails here.
                        if arith.is_some() && a.dims()[0] * a.dims()[1] > 4 {
                            assert!(e > 1e-12, "net {k} param {j}: f32 route did not round");
                        }
                    }
                }
            }
        }
    }

    /// An f32 run goes through the kernel too, in f32, and matches burn's f32 autodiff.
    #[test]
    fn f32_tensors_use_the_kernel_in_f32() {
        let ctx = Ctx::flex(Precision::F32);
        let net = Net::funcbo(vec![3, 9, 7, 6, 5], Act::Relu, true, Some(4));
        let mut rng = StdRng::seed_from_u64(11);
        let theta = net.init(&ctx, &mut rng);
        for _ in 0..3 {
            net.refresh(&ctx, &theta);
        }
        let x = random_tensor(&ctx, &mut rng, 13, 3);
        let g = random_tensor(&ctx, &mut rng, 13, 4);
        let want = autodiff(&net, &theta, &x, &g);
        let got = net
            .grad_through(&theta, &x, None, &mut |_| g.clone())
            .expect("the kernel takes f32 tensors");
        for (j, (a, b)) in got.0.iter().zip(&want.0).enumerate() {
            assert_eq!(a.dtype(), DType::F32);
            let e = max_rel(&to_vec(a), &to_vec(b));
            assert!(e < 1e-5, "param {j}: rel err {e}");
        }
    }

    /// Through the solver: `inner_grad_theta` (G = L_in + ½λ‖[W; b]‖²) gives the same gradient
    /// and value with the kernel as with autodiff, at λ ≠ 0.
    #[test]
    fn inner_gradient_with_the_kernel_equals_autodiff() {
        let ctx = Ctx::flex(Precision::F64);
        let mut rng = StdRng::seed_from_u64(5);
        let (n, dz, dt, feat) = (17, 3, 6, 4);
        let tnet = Net::funcbo(vec![dt, 8, 5, feat], Act::Tanh, true, None);
        let omega = tnet.init(&ctx, &mut rng);
        tnet.refresh(&ctx, &omega);
        let problem = IvProblem::new(ctx.clone(), tnet, 0.1);
        let b = Stage1::new(
            random_tensor(&ctx, &mut rng, n, dz),
            random_tensor(&ctx, &mut rng, n, dt),
        );
        let mut fused = Net::funcbo(vec![dz, 9, 7, 5], Act::Relu, true, Some(feat));
        let theta = fused.init(&ctx, &mut rng);
        fused.refresh(&ctx, &theta);
        let (g1, v1) = inner_grad_theta(&problem, &fused, &omega, &theta, &b.z, &b, 0.3);
        fused.host_kernel = false;
        let (g0, v0) = inner_grad_theta(&problem, &fused, &omega, &theta, &b.z, &b, 0.3);
        assert!((v1 - v0).abs() < 1e-13 * v0.abs(), "{v1} vs {v0}");
        let e = max_rel(&g1.to_flat(), &g0.to_flat());
        assert!(e < 1e-12, "rel err {e}");
    }
}
