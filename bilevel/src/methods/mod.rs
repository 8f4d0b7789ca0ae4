//! Hypergradient methods behind one trait, selected by a serde config.

mod aid;
mod closed_form;
mod funcid;
mod funcid_linear;
mod itd;
mod penalty;
mod profile;

pub use aid::{Aid, AidSolver};
pub use closed_form::ClosedForm;
pub use funcid::{AdjointInit, FuncId};
pub use funcid_linear::FuncIdLinear;
pub use itd::Itd;
pub use penalty::Penalty;
pub use profile::{OuterGrads, Profile, without_head};

use burn::tensor::Tensor;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::{
    ctx::{Ctx, Precision, scalar},
    error::BilevelError,
    model::InnerModel,
    optim::OptimizerConfig,
    params::Params,
    problem::BilevelProblem,
    state::State,
};

/// Everything a method may read at the current outer iterate. `theta` is mutable because ITD's
/// unrolled steps are inner steps too.
pub struct HyperInput<'a, P: BilevelProblem, M: InnerModel> {
    pub ctx: &'a Ctx,
    pub problem: &'a P,
    pub model: &'a M,
    pub omega: &'a Params,
    pub theta: &'a mut Params,
    pub inner: &'a P::InnerBatch,
    pub outer: &'a P::OuterBatch,
    /// Ridge on the inner head (part of the inner objective G).
    pub inner_ridge: f64,
    pub rng: &'a mut StdRng,
}

impl<P: BilevelProblem, M: InnerModel> HyperInput<'_, P, M> {
    /// The inner and outer inputs x of h, which every method needs first.
    pub fn inputs(&self) -> (Tensor<2>, Tensor<2>) {
        (
            self.problem.inner_inputs(self.inner),
            self.problem.outer_inputs(self.outer),
        )
    }
}

/// A total-gradient estimate and what was learned on the way.
#[derive(Debug, Clone)]
pub struct Hypergradient {
    /// Estimate of ∇F(ω), same shapes as ω.
    pub grad: Params,
    /// L_out at the current inner solution.
    pub outer_loss: f64,
    /// Value of the adjoint objective where the method has one (FuncID, FuncID-linear).
    pub adjoint_loss: Option<f64>,
    /// FuncID with `log_cosine`: cosine between the network adjoint and the linear adjoint on
    /// the inner rows (1: the network adds nothing the last features do not span; near 0 or
    /// negative: the two hypergradients disagree, typically a network adjoint far from optimal).
    pub adjoint_cosine: Option<f64>,
}

impl Hypergradient {
    /// A method with no adjoint objective (the parametric baselines).
    pub fn plain(grad: Params, outer_loss: f64) -> Self {
        Self {
            grad,
            outer_loss,
            adjoint_loss: None,
            adjoint_cosine: None,
        }
    }
}

/// A hypergradient method. Methods keep state between calls (warm starts).
pub trait HypergradientMethod<P: BilevelProblem, M: InnerModel> {
    fn name(&self) -> &'static str;
    fn total_gradient(
        &mut self,
        input: HyperInput<'_, P, M>,
    ) -> Result<Hypergradient, BilevelError>;

    /// Told the inner model's initial parameters θ₀ before the first inner solve (FuncID's
    /// adjoint may start as a copy of them). Default: ignored.
    fn begin(&mut self, _theta0: &Params) {}

    /// Puts what the method carries from one outer iteration to the next (warm starts, its own
    /// optimiser) into `state`, under `method.`. Default: nothing.
    fn save(&self, _state: &mut State) {}

    /// Restores what [`save`](Self::save) put; `theta` has the inner model's shapes. Default:
    /// nothing.
    fn restore(&mut self, _ctx: &Ctx, _state: &State, _theta: &Params) -> Result<(), BilevelError> {
        Ok(())
    }
}

fn default_true() -> bool {
    true
}
fn default_one() -> f64 {
    1.0
}
fn default_adjoint_steps() -> usize {
    20
}
fn default_adjoint_optimizer() -> OptimizerConfig {
    OptimizerConfig::adam(1e-3)
}
fn default_iterations() -> usize {
    10
}
fn default_neumann_lr() -> f64 {
    0.01
}

/// Linear solver of AID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LinearSolver {
    #[default]
    Cg,
    Neumann,
}

/// Which hypergradient method, with its own options. A TOML table `[method]` with
/// `method = "funcid"` etc.; unknown names and fields are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum MethodConfig {
    /// Network adjoint a_ψ (same architecture as h) trained on the adjoint objective.
    Funcid {
        #[serde(default = "default_adjoint_steps")]
        steps: usize,
        #[serde(default = "default_adjoint_optimizer")]
        optimizer: OptimizerConfig,
        /// Start from the previous ψ (else re-initialise every outer iteration).
        #[serde(default = "default_true")]
        warm_start: bool,
        /// Where ψ starts (see [`AdjointInit`]).
        #[serde(default)]
        init: AdjointInit,
        /// κ in J(a) = ½κ mean_P aᵀHa + Σ_Q aᵀD; the hypergradient uses κ·a, so κ changes how
        /// the adjoint is trained, not what it estimates. The reference code's weighting is
        /// κ = 4 (a summed squared loss, Hessian 2, and no ½ in its dual loss).
        #[serde(default = "default_one")]
        curvature_scale: f64,
        /// ψ keeps its own spectral-norm power-iteration vectors (refreshed at ψ once per outer
        /// iteration) instead of borrowing θ's.
        #[serde(default)]
        own_norm_state: bool,
        /// Log the cosine between the network adjoint and the linear adjoint on the inner rows
        /// every iteration (`adjoint_cosine`; one small ridge solve).
        #[serde(default)]
        log_cosine: bool,
        /// Precision of the adjoint steps' forward and backward where the model has a fused
        /// route (`"f32"`: single-precision products, about half the adjoint's cost; the adjoint
        /// objective, its optimiser and everything else stay at the run's precision). Default:
        /// the run's precision.
        #[serde(default)]
        adjoint_precision: Option<Precision>,
    },
    /// Closed-form adjoint a(x) = V[φ(x); 1] on the inner network's last features.
    FuncidLinear {
        /// Ridge on V; `None` uses the inner ridge (then it equals implicit differentiation of
        /// the ridge-regularised head exactly).
        #[serde(default)]
        ridge: Option<f64>,
    },
    /// Parametric implicit differentiation: (H_θθ + δI) q = ∇_θ L_out by CG or Neumann.
    Aid {
        #[serde(default)]
        solver: LinearSolver,
        #[serde(default = "default_iterations")]
        iterations: usize,
        /// δ added to the Hessian.
        #[serde(default)]
        damping: f64,
        #[serde(default = "default_true")]
        warm_start: bool,
        /// Step η of the Neumann series.
        #[serde(default = "default_neumann_lr")]
        neumann_lr: f64,
        /// Relative finite-difference step for Hessian-vector products (`None`: cbrt(eps)).
        #[serde(default)]
        fd_step: Option<f64>,
        /// The authors' parametrisation: the head solved exactly inside the inner and the outer
        /// loss, the linear system on the feature network alone, ∂_ωF through the refitted head
        /// as the direct term (0 iterations: FuncID-linear). Needs the problem's curvature.
        #[serde(default)]
        eliminate_head: bool,
    },
    /// Back-propagation through the last k inner steps (plain gradient steps of size `lr`).
    Itd {
        unroll: usize,
        lr: f64,
        #[serde(default)]
        fd_step: Option<f64>,
        /// The authors' parametrisation: the unrolled steps move the feature network alone, the
        /// head solved exactly at each step and inside the outer loss.
        #[serde(default)]
        eliminate_head: bool,
    },
    /// AID with the inverse Hessian replaced by the identity (what OMD does).
    Identity {
        #[serde(default)]
        fd_step: Option<f64>,
    },
    /// Single-level: ∂_ω [L_out + λ ‖∇_θ G‖²] at the current θ.
    Penalty {
        lambda: f64,
        #[serde(default)]
        fd_step: Option<f64>,
        /// The authors' parametrisation: one joint descent of ω and the feature network on
        /// F + λ‖∇_u g‖ (the norm), the head solved exactly inside both; the method moves the
        /// network itself with `network_optimizer` (set `inner.steps = 0`).
        #[serde(default)]
        eliminate_head: bool,
        /// The feature network's optimiser under `eliminate_head`.
        #[serde(default = "default_adjoint_optimizer")]
        network_optimizer: OptimizerConfig,
    },
    /// The problem's exact total gradient (test oracle).
    ClosedForm,
}

impl MethodConfig {
    /// FuncID with a network adjoint and the other options at their defaults.
    pub fn funcid(steps: usize, optimizer: OptimizerConfig, warm_start: bool) -> Self {
        MethodConfig::Funcid {
            steps,
            optimizer,
            warm_start,
            init: AdjointInit::default(),
            curvature_scale: 1.0,
            own_norm_state: false,
            log_cosine: false,
            adjoint_precision: None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            MethodConfig::Funcid { .. } => "funcid",
            MethodConfig::FuncidLinear { .. } => "funcid_linear",
            MethodConfig::Aid { .. } => "aid",
            MethodConfig::Itd { .. } => "itd",
            MethodConfig::Identity { .. } => "identity",
            MethodConfig::Penalty { .. } => "penalty",
            MethodConfig::ClosedForm => "closed_form",
        }
    }

    /// The method, ready to use.
    pub fn build<P: BilevelProblem + 'static, M: InnerModel + 'static>(
        &self,
    ) -> Box<dyn HypergradientMethod<P, M>> {
        match self.clone() {
            MethodConfig::Funcid {
                steps,
                optimizer,
                warm_start,
                init,
                curvature_scale,
                own_norm_state,
                log_cosine,
                adjoint_precision,
            } => {
                let mut f = FuncId::new(steps, optimizer, warm_start);
                f.init = init;
                f.curvature_scale = curvature_scale;
                f.own_norm_state = own_norm_state;
                f.log_cosine = log_cosine;
                f.adjoint_precision = adjoint_precision;
                Box::new(f)
            }
            MethodConfig::FuncidLinear { ridge } => Box::new(FuncIdLinear { ridge }),
            MethodConfig::Aid {
                solver,
                iterations,
                damping,
                warm_start,
                neumann_lr,
                fd_step,
                eliminate_head,
            } => Box::new(Aid {
                solver: AidSolver::from_config(solver, iterations, neumann_lr),
                damping,
                warm_start,
                fd_step,
                previous: None,
                eliminate_head,
            }),
            MethodConfig::Itd {
                unroll,
                lr,
                fd_step,
                eliminate_head,
            } => Box::new(Itd {
                unroll,
                lr,
                fd_step,
                eliminate_head,
            }),
            MethodConfig::Identity { fd_step } => Box::new(Aid {
                solver: AidSolver::Identity,
                damping: 0.0,
                warm_start: false,
                fd_step,
                previous: None,
                eliminate_head: false,
            }),
            MethodConfig::Penalty {
                lambda,
                fd_step,
                eliminate_head,
                network_optimizer,
            } => Box::new(Penalty {
                lambda,
                fd_step,
                eliminate_head,
                network: crate::optim::Optimizer::new(network_optimizer),
            }),
            MethodConfig::ClosedForm => Box::new(ClosedForm),
        }
    }
}

/// L_out at v = h_θ(x_out) and D = ∂L_out/∂v (mean-scaled, `[m, d_v]`), ω held constant.
pub fn outer_value_and_grad_v<P: BilevelProblem>(
    problem: &P,
    omega: &Params,
    v_out: &Tensor<2>,
    outer: &P::OuterBatch,
) -> (f64, Tensor<2>) {
    let v = v_out.clone().detach().require_grad();
    let loss = problem.outer_loss(&omega.detached(), v.clone(), outer);
    let value = scalar(loss.clone().detach());
    let d = v
        .grad(&loss.backward())
        .expect("outer loss depends on the prediction");
    (value, d.autodiff().detach())
}

/// The functional total gradient once an adjoint is known (docs/method.md, FuncID step 4):
/// ∂_ω L_out(ω, v_out) + ∂_ω mean_b ⟨∂_v ℓ_in(ω, v_b), a_b⟩ with v and a held fixed — one backward.
pub fn total_from_adjoint<P: BilevelProblem>(
    problem: &P,
    omega: &Params,
    v_in: &Tensor<2>,
    a_in: &Tensor<2>,
    v_out: &Tensor<2>,
    inner: &P::InnerBatch,
    outer: &P::OuterBatch,
) -> Params {
    let pair = [(v_in.clone().detach(), a_in.clone().detach())];
    if let Some(cross) = problem.inner_cross_vjp(omega, &pair, inner) {
        // The problem's own cross term; the direct term is then a backward of L_out alone.
        let om = omega.tracked();
        let loss = problem.outer_loss(&om, v_out.clone().detach(), outer);
        // `is_tracked`, not `is_require_grad`: the latter is true only for leaves.
        if !loss.is_tracked() {
            // L_out does not involve ω directly (deep IV without covariates): no backward at all.
            return cross;
        }
        return om.grads(&loss.backward()).add(&cross).detached();
    }
    let om = omega.tracked();
    let n = v_in.dims()[0] as f64;
    let direct = problem.outer_loss(&om, v_out.clone().detach(), outer);
    let cross = (problem.inner_grad_v(&om, v_in.clone().detach(), inner) * a_in.clone().detach())
        .sum()
        .mul_scalar(1.0 / n);
    om.grads(&(direct + cross).backward()).detached()
}

/// (∇_θ L_out, ∂_ω L_out, L_out) at (ω, θ), one backward.
pub fn outer_param_grads<P: BilevelProblem, M: InnerModel>(
    problem: &P,
    model: &M,
    omega: &Params,
    theta: &Params,
    x_out: &Tensor<2>,
    outer: &P::OuterBatch,
) -> (Params, Params, f64) {
    let (om, th) = (omega.tracked(), theta.tracked());
    let loss = problem.outer_loss(&om, model.forward(&th, x_out).output, outer);
    let value = scalar(loss.clone().detach());
    let grads = loss.backward();
    (
        th.grads(&grads).detached(),
        om.grads(&grads).detached(),
        value,
    )
}
