//! The inner prediction function h_θ: features φ_θ(x) followed by a linear head, v = φW + b.

use burn::tensor::{Tensor, activation};
use rand::{RngExt, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::{
    ctx::{Ctx, Precision},
    params::Params,
};

/// Output of a forward pass: the last hidden features and the prediction v = features·W + b.
pub struct Forward {
    pub features: Tensor<2>,
    pub output: Tensor<2>,
}

/// A prediction network with parameters held outside it (a [`Params`]).
///
/// Contract used by FuncID-linear and the closed-form ridge head: the last two parameters are the
/// head `W` (`[p, d_v]`) and `b` (`[1, d_v]`), and `output = features · W + b`.
pub trait InnerModel {
    fn init(&self, ctx: &Ctx, rng: &mut StdRng) -> Params;
    fn forward(&self, theta: &Params, x: &Tensor<2>) -> Forward;
    /// d_v, the width of a prediction.
    fn output_dim(&self) -> usize;

    /// ∇_θ Σ_b ⟨h_θ(x_b), g_b⟩ with g = `dv(h_θ(x))`, for a model with a faster route than burn's
    /// backward (a fused host kernel): it makes its forward, hands the prediction to `dv` (which
    /// returns ∂L/∂v, detached) and returns the parameter gradient, detached, in `θ`'s order.
    /// `arith`: the precision the route computes in (`None`: the tensors' own); inputs and results
    /// keep the tensors' precision, so f32 arithmetic in an f64 run only rounds this product.
    /// `None` (default): the solver differentiates the forward with burn's autodiff.
    fn grad_through(
        &self,
        _theta: &Params,
        _x: &Tensor<2>,
        _arith: Option<Precision>,
        _dv: &mut dyn FnMut(Tensor<2>) -> Tensor<2>,
    ) -> Option<Params> {
        None
    }

    /// Updates what the model keeps beside its parameters (spectral norm's power-iteration
    /// vectors) at `params`, for the parameter set selected by [`InnerModel::select_state`].
    /// Default: nothing to update.
    fn refresh(&self, _ctx: &Ctx, _params: &Params) {}

    /// Which parameter set's side state `forward`, `grad_through` and `refresh` use from now on:
    /// 0 for θ (the default), 1 for a second network of the same architecture (FuncID's
    /// adjoint), so that each keeps its own power-iteration vectors as two PyTorch modules do.
    fn select_state(&self, _slot: usize) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    #[default]
    Relu,
    Tanh,
}

/// How an [`Mlp`]'s parameters are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// PyTorch's default: weights and biases U(±1/√fan_in).
    #[default]
    Uniform,
    /// (Semi-)orthogonal weights scaled by `hidden_gain` (hidden layers) or `final_gain` (the
    /// output layer), zero biases: haiku's `Orthogonal` initialiser as the model-based RL
    /// reference code uses it (gains √2 and 1e-2), so a fresh network outputs ≈ 0.
    Orthogonal { hidden_gain: f64, final_gain: f64 },
}

impl Init {
    /// The reference code's orthogonal scheme: gain √2 on hidden layers, 1e-2 on the output.
    pub fn reference_orthogonal() -> Self {
        Init::Orthogonal {
            hidden_gain: std::f64::consts::SQRT_2,
            final_gain: 1e-2,
        }
    }
}

/// A `rows × cols` matrix (row-major) with orthonormal columns when rows ≥ cols, orthonormal rows
/// otherwise, times `gain`: Gram–Schmidt (done twice, for round-off) on a Gaussian draw, whose
/// result is Haar-distributed like QR with the sign fix that haiku and PyTorch apply.
pub fn orthogonal(rows: usize, cols: usize, gain: f64, rng: &mut StdRng) -> Vec<f64> {
    use rand_distr::{Distribution, StandardNormal};
    let (long, short) = (rows.max(cols), rows.min(cols));
    // `short` orthonormal vectors of length `long`.
    let mut q: Vec<Vec<f64>> = Vec::with_capacity(short);
    while q.len() < short {
        let mut v: Vec<f64> = (0..long).map(|_| StandardNormal.sample(rng)).collect();
        for _ in 0..2 {
            for u in &q {
                let d: f64 = u.iter().zip(&v).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(u).for_each(|(x, y)| *x -= d * y);
            }
        }
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        // A (measure-zero) dependent draw is drawn again.
        if n > 1e-10 {
            q.push(v.into_iter().map(|x| x / n).collect());
        }
    }
    let mut w = vec![0.0; rows * cols];
    for (k, u) in q.iter().enumerate() {
        for (i, x) in u.iter().enumerate() {
            // Columns when rows ≥ cols, rows otherwise.
            let (r, c) = if rows >= cols { (i, k) } else { (k, i) };
            w[r * cols + c] = x * gain;
        }
    }
    w
}

/// Weights and biases of an MLP `input → hidden… → output`, as f64 so that absurd widths are
/// counted (to be refused) rather than overflowing.
pub fn param_count(input: usize, hidden: &[usize], output: usize) -> f64 {
    let mut w = vec![input as f64];
    w.extend(hidden.iter().map(|&h| h as f64));
    w.push(output as f64);
    w.windows(2).map(|p| (p[0] + 1.0) * p[1]).sum()
}

/// A multilayer perceptron. With no hidden layers the features are the inputs themselves and the
/// model is linear (the setting of the linear-quadratic oracles).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mlp {
    pub input: usize,
    #[serde(default)]
    pub hidden: Vec<usize>,
    pub output: usize,
    #[serde(default)]
    pub activation: Activation,
}

impl Mlp {
    pub fn new(input: usize, hidden: Vec<usize>, output: usize, activation: Activation) -> Self {
        Self {
            input,
            hidden,
            output,
            activation,
        }
    }

    fn widths(&self) -> Vec<usize> {
        let mut w = vec![self.input];
        w.extend(&self.hidden);
        w.push(self.output);
        w
    }
}

impl Mlp {
    /// Parameters drawn by `scheme` (`[fan_in, fan_out]` weights, `[1, fan_out]` biases).
    pub fn init_with(&self, scheme: Init, ctx: &Ctx, rng: &mut StdRng) -> Params {
        let w = self.widths();
        let last = w.len() - 2;
        let mut out = Vec::new();
        for l in 0..=last {
            let (weights, bias) = match scheme {
                Init::Uniform => {
                    let bound = 1.0 / (w[l] as f64).sqrt();
                    let mut draw = |n: usize| -> Vec<f64> {
                        (0..n)
                            .map(|_| bound * (2.0 * rng.random::<f64>() - 1.0))
                            .collect()
                    };
                    (draw(w[l] * w[l + 1]), draw(w[l + 1]))
                }
                Init::Orthogonal {
                    hidden_gain,
                    final_gain,
                } => {
                    let g = if l == last { final_gain } else { hidden_gain };
                    (orthogonal(w[l], w[l + 1], g, rng), vec![0.0; w[l + 1]])
                }
            };
            out.push(ctx.tensor2(weights, w[l], w[l + 1]));
            out.push(ctx.tensor2(bias, 1, w[l + 1]));
        }
        Params::new(out)
    }
}

impl InnerModel for Mlp {
    /// PyTorch's default: weights and biases U(±1/√fan_in).
    fn init(&self, ctx: &Ctx, rng: &mut StdRng) -> Params {
        self.init_with(Init::Uniform, ctx, rng)
    }

    fn forward(&self, theta: &Params, x: &Tensor<2>) -> Forward {
        let layers = theta.len() / 2;
        assert_eq!(
            layers,
            self.hidden.len() + 1,
            "parameter set does not fit this MLP"
        );
        let mut h = x.clone();
        for l in 0..layers - 1 {
            h = h.matmul(theta.0[2 * l].clone()) + theta.0[2 * l + 1].clone();
            h = match self.activation {
                Activation::Relu => activation::relu(h),
                Activation::Tanh => h.tanh(),
            };
        }
        let output =
            h.clone().matmul(theta.0[2 * layers - 2].clone()) + theta.0[2 * layers - 1].clone();
        Forward {
            features: h,
            output,
        }
    }

    fn output_dim(&self) -> usize {
        self.output
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::{Precision, to_vec};
    use rand::SeedableRng;

    #[test]
    fn linear_mlp_is_xw_plus_b() {
        let ctx = Ctx::from_env(Precision::F64);
        let m = Mlp::new(2, vec![], 1, Activation::Relu);
        let theta = Params::new(vec![
            ctx.tensor2(vec![2.0, -1.0], 2, 1),
            ctx.tensor2(vec![0.5], 1, 1),
        ]);
        let x = ctx.tensor2(vec![1.0, 3.0, -1.0, 0.0], 2, 2);
        assert_eq!(
            to_vec(&m.forward(&theta, &x).output),
            vec![2.0 - 3.0 + 0.5, -2.0 + 0.5]
        );
    }

    /// WᵀW = g²I (orthonormal columns, g the layer's gain) when fan_in ≥ fan_out, WWᵀ = g²I
    /// otherwise; biases zero.
    #[test]
    fn orthogonal_init_is_orthogonal_with_the_gains() {
        let ctx = Ctx::from_env(Precision::F64);
        let m = Mlp::new(6, vec![32, 3], 2, Activation::Relu);
        let theta = m.init_with(
            Init::reference_orthogonal(),
            &ctx,
            &mut StdRng::seed_from_u64(3),
        );
        let dims = [(6, 32), (32, 3), (3, 2)];
        let gains = [2f64.sqrt(), 2f64.sqrt(), 1e-2];
        for (l, ((r, c), g)) in dims.iter().zip(gains).enumerate() {
            let w = to_vec(&theta.0[2 * l]);
            assert!(to_vec(&theta.0[2 * l + 1]).iter().all(|&b| b == 0.0));
            let k = (*r).min(*c);
            for i in 0..k {
                for j in 0..k {
                    let dot: f64 = if r >= c {
                        (0..*r).map(|t| w[t * c + i] * w[t * c + j]).sum()
                    } else {
                        (0..*c).map(|t| w[i * c + t] * w[j * c + t]).sum()
                    };
                    let want = if i == j { g * g } else { 0.0 };
                    assert!(
                        (dot - want).abs() < 1e-12 * g * g.max(1.0),
                        "layer {l} ({i},{j}): {dot}"
                    );
                }
            }
        }
    }

    #[test]
    fn init_shapes_and_relu_features() {
        let ctx = Ctx::from_env(Precision::F32);
        let m = Mlp::new(3, vec![8, 4], 2, Activation::Relu);
        let theta = m.init(&ctx, &mut StdRng::seed_from_u64(0));
        assert_eq!(theta.numel(), 3 * 8 + 8 + 8 * 4 + 4 + 4 * 2 + 2);
        let f = m.forward(&theta, &ctx.ones2(5, 3));
        assert_eq!(f.features.dims(), [5, 4]);
        assert_eq!(f.output.dims(), [5, 2]);
        assert!(to_vec(&f.features).iter().all(|&v| v >= 0.0));
    }
}
