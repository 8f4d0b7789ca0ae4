//! Learning rules: how the world model is learned, one file each. The Q step, its targets and
//! Polyak averaging are shared (`Agent::update`); a rule computes the model step from what that
//! shared part left behind ([`StepData`]). Adding an agent is adding a file here and a variant
//! of [`ModelLearning`](crate::config::ModelLearning).

mod funcid;
mod mle;
mod modelfree;
mod omd;
mod vep;

pub use vep::Vep;

use funcrl_bilevel::{Ctx, HyperInput, HypergradientMethod, Init, MethodConfig, OptimizerConfig};
use rand::rngs::StdRng;

use crate::agent::Agent;
use crate::config::{FuncidMode, ModelLearning, OmdInverse};
use crate::nets::DoubleQ;
use crate::problem::{OuterData, RlProblem};
use crate::replay::Batch;
use funcrl_kernels::Tape;

/// What the shared part of an update hands the model step: the real batch, the model's inputs,
/// and the double-Q after its step, evaluated on the batch.
pub struct StepData<'a> {
    pub batch: &'a Batch,
    /// The model's input rows: (s, one_hot(a)) or (s, action value).
    pub x: &'a [f64],
    /// The taken actions as indices.
    pub acts: &'a [usize],
    /// The forward tapes of Q₁, Q₂ at the new θ on the batch's states.
    pub tapes: &'a [Tape; 2],
    /// ∂(outer loss)/∂ of each network's outputs.
    pub d_out: &'a [Vec<f64>; 2],
    /// Σᵢ (Qᵢ(s, a) − y) per row, y the real Bellman target.
    pub err: &'a [f64],
    /// The real Bellman target y = r + γ·m·V̄(s′) per row, under the new Q̄.
    pub y: &'a [f64],
    /// The outer loss ½Σᵢ mean_b w_b (Qᵢ − y)² on real data.
    pub outer_loss: f64,
}

/// One way of learning the world model.
pub trait LearningRule {
    /// Whether the Q step trains on the model's targets (every model-based rule) or on real ones.
    fn q_on_model_data(&self) -> bool {
        true
    }

    /// The model's gradient (None: no model step) and the loss logged as `losses/model_loss`.
    fn model_step(
        &mut self,
        agent: &Agent,
        step: &StepData,
        rng: &mut StdRng,
    ) -> (Option<Vec<f64>>, f64);

    /// VEP's fixed value functions, where the rule has them.
    fn vep(&self) -> Option<&Vep> {
        None
    }
}

/// The rule a config asks for. Draws from `rng` only what the rule owns (VEP's value functions),
/// after the Q-function and the model have been drawn.
pub fn build(
    learning: &ModelLearning,
    ctx: &Ctx,
    obs_dim: usize,
    value_init: Init,
    rng: &mut StdRng,
) -> Box<dyn LearningRule> {
    let solver = solver_method(learning);
    match learning {
        ModelLearning::Mle => Box::new(mle::Mle),
        ModelLearning::Modelfree => Box::new(modelfree::Modelfree),
        ModelLearning::Vep { functions, hidden } => {
            Box::new(Vep::new(ctx, obs_dim, *functions, hidden, value_init, rng))
        }
        ModelLearning::Funcid { mode, adjoint, .. } => Box::new(funcid::Funcid {
            mode: *mode,
            adjoint: *adjoint,
            solver,
        }),
        ModelLearning::Omd { inverse, .. } => Box::new(omd::Omd {
            inverse: *inverse,
            solver,
        }),
    }
}

/// The bilevel solver's hypergradient method behind the options that run on burn
/// (`funcid` `mode = "network"`, `omd` `inverse = "cg"`); None for the host-kernel agents.
pub fn solver_method(
    learning: &ModelLearning,
) -> Option<Box<dyn HypergradientMethod<RlProblem, DoubleQ>>> {
    match learning {
        ModelLearning::Omd {
            inverse: OmdInverse::Cg,
            cg_iterations,
        } => Some(
            MethodConfig::Aid {
                solver: funcrl_bilevel::LinearSolver::Cg,
                iterations: *cg_iterations,
                damping: 0.0,
                // A warm start would be state outside the checkpoint.
                warm_start: false,
                neumann_lr: 0.01,
                fd_step: None,
                eliminate_head: false,
            }
            .build(),
        ),
        ModelLearning::Funcid {
            mode: FuncidMode::Network,
            adjoint_steps,
            ..
        } => Some(MethodConfig::funcid(*adjoint_steps, OptimizerConfig::adam(1e-3), false).build()),
        _ => None,
    }
}

/// The model gradient by the bilevel solver's method on burn tensors (FuncID with a network
/// adjoint, OMD with CG); a failed solve gives no step and a NaN loss, which stops the run.
fn solver_gradient(
    method: &mut dyn HypergradientMethod<RlProblem, DoubleQ>,
    agent: &Agent,
    step: &StepData,
    rng: &mut StdRng,
) -> (Option<Vec<f64>>, f64) {
    let d = agent.tensors(step.batch);
    let problem = RlProblem {
        model: agent.model.clone(),
        qnet: agent.qnet.clone(),
        target: agent.q_params(&agent.q_target),
        gamma: agent.cfg.q.gamma,
        alpha: agent.cfg.q.alpha,
        through_next_state: true,
    };
    let outer = OuterData {
        s: d.s.clone(),
        onehot2: d.onehot2.clone(),
        y: problem.real_target(&d),
        w: d.w.clone(),
    };
    let omega = agent.omega_params(&agent.omega);
    let mut theta = agent.q_params(&agent.q);
    let h = method.total_gradient(HyperInput {
        ctx: &agent.ctx,
        problem: &problem,
        model: &agent.qnet,
        omega: &omega,
        theta: &mut theta,
        inner: &d,
        outer: &outer,
        inner_ridge: 0.0,
        rng,
    });
    match h {
        Ok(h) => (Some(h.grad.to_flat()), step.outer_loss),
        Err(_) => (None, f64::NAN),
    }
}
