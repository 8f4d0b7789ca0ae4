//! FuncID: functional implicit differentiation. ℓ_in is quadratic in the Q-values, so the adjoint
//! is the outer gradient itself (closed form) and the model gradient is −∂_ω⟨∂_v ℓ_in, a⟩; or a
//! learned network adjoint through the bilevel solver (`mode = "network"`).

use funcrl_bilevel::HypergradientMethod;
use rand::rngs::StdRng;

use super::{LearningRule, StepData, solver_gradient};
use crate::agent::Agent;
use crate::config::{FuncidAdjoint, FuncidMode};
use crate::nets::DoubleQ;
use crate::problem::RlProblem;

pub struct Funcid {
    pub mode: FuncidMode,
    pub adjoint: FuncidAdjoint,
    /// The solver's FuncID method, for `mode = "network"`.
    pub solver: Option<Box<dyn HypergradientMethod<RlProblem, DoubleQ>>>,
}

impl LearningRule for Funcid {
    fn model_step(
        &mut self,
        agent: &Agent,
        step: &StepData,
        rng: &mut StdRng,
    ) -> (Option<Vec<f64>>, f64) {
        let through = match self.mode {
            FuncidMode::Full => true,
            // The paper code's: V̄ at the real next state, so only the reward head learns.
            FuncidMode::Paper => false,
            FuncidMode::Network => {
                let method = self.solver.as_deref_mut().expect("built with the rule");
                return solver_gradient(method, agent, step, rng);
            }
        };
        // ℓ_in is quadratic in v with curvature 1 on the taken action: the adjoint is minus the
        // pointwise outer gradient, a = −w·(v − y)·onehot, so the model gradient
        // ∂_ω mean_b⟨∂_v ℓ_in, a⟩ weighs ∇_ω y_ω,b by w_b·Σᵢ(Qᵢ − y_b)/n.
        let batch = step.batch;
        let nf = batch.len() as f64;
        let c: Vec<f64> = match self.adjoint {
            FuncidAdjoint::CurrentQ => (0..batch.len())
                .map(|b| batch.weight[b] * step.err[b] / nf)
                .collect(),
            // Q*_ω = y_ω in both networks: Σᵢ (Q*ᵢ − y) = 2(y_ω − y).
            FuncidAdjoint::InnerSolution => {
                let mut mt = agent.tapes();
                let (mut s2, mut r) = agent.model_forward(batch, step.x, &mut mt);
                agent.recycle(mt);
                agent.clip_next(batch, &mut s2);
                agent.clip_reward(batch, &mut r);
                let y_model = agent.target(batch, &r, &s2);
                (0..batch.len())
                    .map(|b| batch.weight[b] * 2.0 * (y_model[b] - step.y[b]) / nf)
                    .collect()
            }
        };
        (
            Some(agent.model_target_vjp(batch, step.x, &c, through)),
            step.outer_loss,
        )
    }
}
