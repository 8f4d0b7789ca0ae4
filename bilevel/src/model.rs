//! The inner prediction function h_θ: features φ_θ(x) followed by a linear head, v = φW + b.

use burn::tensor::{Tensor, activation};
use rand::{RngExt, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::{ctx::Ctx, params::Params};

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
    /// `None` (default): the solver differentiates the forward with burn's autodiff.
    fn grad_through(
        &self,
        _theta: &Params,
        _x: &Tensor<2>,
        _dv: &mut dyn FnMut(Tensor<2>) -> Tensor<2>,
    ) -> Option<Params> {
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    #[default]
    Relu,
    Tanh,
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

impl InnerModel for Mlp {
    /// PyTorch's default: weights and biases U(±1/√fan_in).
    fn init(&self, ctx: &Ctx, rng: &mut StdRng) -> Params {
        let w = self.widths();
        let mut out = Vec::new();
        for l in 0..w.len() - 1 {
            let bound = 1.0 / (w[l] as f64).sqrt();
            let mut draw = |n: usize| -> Vec<f64> {
                (0..n)
                    .map(|_| bound * (2.0 * rng.random::<f64>() - 1.0))
                    .collect()
            };
            out.push(ctx.tensor2(draw(w[l] * w[l + 1]), w[l], w[l + 1]));
            out.push(ctx.tensor2(draw(w[l + 1]), 1, w[l + 1]));
        }
        Params::new(out)
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
