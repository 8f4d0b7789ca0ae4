//! The RL bilevel problem on burn tensors: ω = world model (outer), Q = soft double-Q (inner).
//! The reference the host-kernel agents are checked against, and what the solver-based options
//! (`funcid` `mode = "network"`, `omd` `inverse = "cg"`) run on.

use burn::tensor::Tensor;
use funcrl_bilevel::{BilevelProblem, Params};

use crate::nets::{DoubleQ, WorldModel};
use crate::targets::{bellman_target_t, soft_value_t};

/// The RL bilevel problem for the solver: ω = world model, v = [Q₁ | Q₂](s) (`[B, 2A]`),
/// ℓ_in = ½Σᵢ(Qᵢ(s,a) − y_ω)², ℓ_out = ½Σᵢ(Qᵢ(s,a) − y)², y_ω = r_ω + γ·m·V̄(s'_ω), y = r + γ·m·V̄(s').
/// Owns clones of what it needs (tensors are reference-counted), so solver methods can hold it.
#[derive(Clone)]
pub struct RlProblem {
    pub model: WorldModel,
    pub qnet: DoubleQ,
    pub target: Params,
    pub gamma: f64,
    pub alpha: f64,
    /// false: the paper code's target at the real next state (only the reward head learns).
    pub through_next_state: bool,
}

/// Everything a batch needs as tensors.
#[derive(Clone)]
pub struct BatchTensors {
    pub s: Tensor<2>,
    /// (s, one_hot(a)): the model's input.
    pub x: Tensor<2>,
    /// [one_hot(a) | one_hot(a)]: selects Qᵢ(s, a) in v = [Q₁ | Q₂].
    pub onehot2: Tensor<2>,
    pub r: Tensor<2>,
    pub s_next: Tensor<2>,
    pub mask: Tensor<2>,
    /// Importance weights (ones without prioritized replay).
    pub w: Tensor<2>,
    pub n: usize,
}

/// Outer data: the taken actions and the real Bellman target y (constant in ω).
#[derive(Clone)]
pub struct OuterData {
    pub s: Tensor<2>,
    pub onehot2: Tensor<2>,
    pub y: Tensor<2>,
    pub w: Tensor<2>,
}

impl RlProblem {
    /// y_ω = r_ω(s,a) + γ·m·V̄(s'_ω(s,a)) (or V̄ at the real s' in the paper mode), `[B, 1]`.
    pub fn model_target(&self, omega: &Params, b: &BatchTensors) -> Tensor<2> {
        let (s2, r) = self.model.forward(omega, &b.s, &b.x);
        let s2 = if self.through_next_state {
            s2
        } else {
            b.s_next.clone()
        };
        let (q1, q2) = self.qnet.pair(&self.target, &s2);
        bellman_target_t(
            r,
            self.gamma,
            b.mask.clone(),
            soft_value_t(q1, q2, self.alpha),
        )
    }

    /// y = r + γ·m·V̄(s') on real data, `[B, 1]`, detached.
    pub fn real_target(&self, b: &BatchTensors) -> Tensor<2> {
        let (q1, q2) = self.qnet.pair(&self.target, &b.s_next);
        bellman_target_t(
            b.r.clone(),
            self.gamma,
            b.mask.clone(),
            soft_value_t(q1, q2, self.alpha),
        )
        .detach()
    }
}

/// ½·mean_b w_b Σᵢ (vᵢ[a_b] − y_b)², the Q loss of both networks.
pub fn q_loss_t(v: Tensor<2>, y: Tensor<2>, onehot2: &Tensor<2>, w: &Tensor<2>) -> Tensor<1> {
    let n = v.dims()[0] as f64;
    ((v - y) * onehot2.clone())
        .square()
        .mul(w.clone())
        .sum()
        .mul_scalar(0.5 / n)
}

impl BilevelProblem for RlProblem {
    type InnerBatch = BatchTensors;
    type OuterBatch = OuterData;

    fn inner_inputs(&self, b: &BatchTensors) -> Tensor<2> {
        b.s.clone()
    }
    fn outer_inputs(&self, b: &OuterData) -> Tensor<2> {
        b.s.clone()
    }
    fn inner_loss(&self, omega: &Params, v: Tensor<2>, b: &BatchTensors) -> Tensor<1> {
        let y = self.model_target(omega, b);
        q_loss_t(v, y, &b.onehot2, &b.onehot2.ones_like())
    }
    fn outer_loss(&self, _omega: &Params, v: Tensor<2>, b: &OuterData) -> Tensor<1> {
        q_loss_t(v, b.y.clone(), &b.onehot2, &b.w)
    }
    fn inner_grad_v(&self, omega: &Params, v: Tensor<2>, b: &BatchTensors) -> Tensor<2> {
        (v - self.model_target(omega, b)) * b.onehot2.clone()
    }
    fn inner_hessian_diag(
        &self,
        _omega: &Params,
        _v: Tensor<2>,
        b: &BatchTensors,
    ) -> Option<Tensor<2>> {
        Some(b.onehot2.clone())
    }
}
