//! The networks: a deterministic world model (next-state and reward nets on (s, a)) and a soft
//! double Q-function, both on `funcrl_bilevel::{Params, Mlp}` (the host kernels in `dense` share
//! their parameter layout).

use burn::tensor::Tensor;
use funcrl_bilevel::{Activation, Ctx, Forward, Init, InnerModel, Mlp, Params};
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

/// What the next-state net predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Predict {
    /// s' itself (the reference code's choice, docs/protocols.md).
    #[default]
    NextState,
    /// s' − s, added back to s.
    Delta,
}

/// ω: two MLPs on x = (s, a-encoding): s' (or s' − s) and r. Their parameters are one [`Params`]
/// (the next-state net's first) so that ω is a single outer variable.
#[derive(Debug, Clone)]
pub struct WorldModel {
    pub state_net: Mlp,
    pub reward_net: Mlp,
    pub predict: Predict,
}

impl WorldModel {
    /// `input` = obs_dim + action encoding width (one-hot for discrete actions).
    pub fn new(obs_dim: usize, input: usize, hidden: Vec<usize>, predict: Predict) -> Self {
        Self {
            state_net: Mlp::new(input, hidden.clone(), obs_dim, Activation::Relu),
            reward_net: Mlp::new(input, hidden, 1, Activation::Relu),
            predict,
        }
    }

    pub fn init(&self, ctx: &Ctx, rng: &mut StdRng) -> Params {
        self.init_with(Init::Uniform, ctx, rng)
    }

    pub fn init_with(&self, scheme: Init, ctx: &Ctx, rng: &mut StdRng) -> Params {
        let mut p = self.state_net.init_with(scheme, ctx, rng).0;
        p.extend(self.reward_net.init_with(scheme, ctx, rng).0);
        Params::new(p)
    }

    fn split(&self, omega: &Params) -> (Params, Params) {
        let k = 2 * (self.state_net.hidden.len() + 1);
        (
            Params::new(omega.0[..k].to_vec()),
            Params::new(omega.0[k..].to_vec()),
        )
    }

    /// (ŝ' `[B, S]`, r̂ `[B, 1]`) at `s` with input `x` = (s, a-encoding).
    pub fn forward(&self, omega: &Params, s: &Tensor<2>, x: &Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        let (ps, pr) = self.split(omega);
        let out = self.state_net.forward(&ps, x).output;
        let s_next = match self.predict {
            Predict::NextState => out,
            Predict::Delta => s.clone() + out,
        };
        (s_next, self.reward_net.forward(&pr, x).output)
    }
}

/// Two Q-networks s ↦ Q_i(s, ·) ∈ R^A; as an [`InnerModel`] the prediction is v = [Q₁ | Q₂]
/// (`[B, 2A]`), so the bilevel solver sees one function of s.
#[derive(Debug, Clone)]
pub struct DoubleQ {
    pub net: Mlp,
}

impl DoubleQ {
    pub fn new(obs_dim: usize, hidden: Vec<usize>, n_actions: usize) -> Self {
        Self {
            net: Mlp::new(obs_dim, hidden, n_actions, Activation::Relu),
        }
    }

    pub fn n_actions(&self) -> usize {
        self.net.output
    }

    fn split(&self, theta: &Params) -> (Params, Params) {
        let k = theta.len() / 2;
        (
            Params::new(theta.0[..k].to_vec()),
            Params::new(theta.0[k..].to_vec()),
        )
    }

    /// Both networks drawn by `scheme`, Q₁'s first.
    pub fn init_with(&self, scheme: Init, ctx: &Ctx, rng: &mut StdRng) -> Params {
        let mut p = self.net.init_with(scheme, ctx, rng).0;
        p.extend(self.net.init_with(scheme, ctx, rng).0);
        Params::new(p)
    }

    /// (Q₁(s, ·), Q₂(s, ·)), each `[B, A]`.
    pub fn pair(&self, theta: &Params, s: &Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        let (a, b) = self.split(theta);
        (
            self.net.forward(&a, s).output,
            self.net.forward(&b, s).output,
        )
    }
}

impl InnerModel for DoubleQ {
    fn init(&self, ctx: &Ctx, rng: &mut StdRng) -> Params {
        self.init_with(Init::Uniform, ctx, rng)
    }

    fn forward(&self, theta: &Params, x: &Tensor<2>) -> Forward {
        let (a, b) = self.split(theta);
        let (fa, fb) = (self.net.forward(&a, x), self.net.forward(&b, x));
        Forward {
            features: Tensor::cat(vec![fa.features, fb.features], 1),
            output: Tensor::cat(vec![fa.output, fb.output], 1),
        }
    }

    fn output_dim(&self) -> usize {
        2 * self.net.output
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use funcrl_bilevel::{Precision, ctx::to_vec};
    use rand::SeedableRng;

    #[test]
    fn world_model_shapes_and_delta() {
        let ctx = Ctx::flex(Precision::F64);
        let m = WorldModel::new(4, 6, vec![3, 3], Predict::Delta);
        let omega = m.init(&ctx, &mut StdRng::seed_from_u64(0));
        let s = ctx.tensor2(vec![1.0; 8], 2, 4);
        let x = ctx.tensor2(
            vec![1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0],
            2,
            6,
        );
        let (s2, r) = m.forward(&omega, &s, &x);
        assert_eq!((s2.dims(), r.dims()), ([2, 4], [2, 1]));
        let m2 = WorldModel {
            predict: Predict::NextState,
            ..m.clone()
        };
        let (s2b, _) = m2.forward(&omega, &s, &x);
        let d: Vec<f64> = to_vec(&s2)
            .iter()
            .zip(to_vec(&s2b))
            .map(|(a, b)| a - b)
            .collect();
        assert!(d.iter().all(|v| (v - 1.0).abs() < 1e-12));
    }
}
