//! OMD: parametric implicit differentiation with the identity as inverse Hessian (the OMD
//! paper's choice), or conjugate gradient through the bilevel solver (`inverse = "cg"`).

use funcrl_bilevel::HypergradientMethod;
use rand::rngs::StdRng;

use super::{LearningRule, StepData, solver_gradient};
use crate::agent::Agent;
use crate::config::OmdInverse;
use crate::nets::DoubleQ;
use crate::problem::RlProblem;

pub struct Omd {
    pub inverse: OmdInverse,
    /// The solver's AID method, for `inverse = "cg"`.
    pub solver: Option<Box<dyn HypergradientMethod<RlProblem, DoubleQ>>>,
}

impl LearningRule for Omd {
    fn model_step(
        &mut self,
        agent: &Agent,
        step: &StepData,
        rng: &mut StdRng,
    ) -> (Option<Vec<f64>>, f64) {
        if self.inverse == OmdInverse::Cg {
            let method = self.solver.as_deref_mut().expect("built with the rule");
            return solver_gradient(method, agent, step, rng);
        }
        // Identity inverse Hessian: −∂_ω⟨∇_θ L_in, u⟩ with u = ∇_θ L_out; ⟨∇_θ L_in, u⟩ =
        // mean_b Σᵢ (Qᵢ − y_ω,b)·(J_θ Qᵢ(s_b, a_b)·u), so it weighs ∇_ω y_ω,b by
        // Σᵢ (J_θ Qᵢ·u)_b / n (one JVP per network instead of finite differences).
        let batch = step.batch;
        let (n, na) = (batch.len(), agent.n_actions);
        let nf = n as f64;
        let kq = agent.qd.numel();
        let u = agent.q_param_grad(step.tapes, step.d_out);
        let j1 = agent.qd.jvp(&agent.q[..kq], &u[..kq], &step.tapes[0]);
        let j2 = agent.qd.jvp(&agent.q[kq..], &u[kq..], &step.tapes[1]);
        let c: Vec<f64> = (0..n)
            .map(|b| {
                let j = b * na + step.acts[b];
                (j1[j] + j2[j]) / nf
            })
            .collect();
        (
            Some(agent.model_target_vjp(batch, step.x, &c, true)),
            step.outer_loss,
        )
    }
}
