//! The agents. All share replay, the soft double-Q with its Polyak target, acting and the update's
//! first half (one Q step on model data — real data for `modelfree` — then Polyak); they differ
//! only in how the world model is learned ([`ModelLearning`]).

use burn::tensor::Tensor;
use funcrl_bilevel::{
    BilevelProblem, Ctx, HyperInput, HypergradientMethod, InnerModel, MethodConfig, Mlp, Optimizer,
    OptimizerConfig, Params, Precision,
    ctx::{scalar, to_vec},
    methods::total_from_adjoint,
};
use rand::{RngExt, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::nets::{DoubleQ, HostParams, Predict, WorldModel};
use crate::replay::Batch;
use crate::targets::{bellman_target_t, sample_index, soft_value_t, softmax_policy};

/// FuncID's model gradient −∂_ω⟨∂_v ℓ_in, a⟩ with a = the outer gradient (closed-form adjoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FuncidMode {
    /// Differentiate the model target r_ω + γ·m·V̄(s'_ω) through both heads (default: it is the
    /// gradient of the bilevel objective; the paper code's version ignores how s'_ω moves V̄).
    #[default]
    Full,
    /// The paper code's: the model-gradient term takes V̄ at the real next state, so only the
    /// reward head learns (Q still trains on the model's r_ω + γ·m·V̄(s'_ω)).
    Paper,
    /// A learned network adjoint (the bilevel solver's FuncID method, `adjoint_steps` Adam steps).
    Network,
}

/// OMD's inverse Hessian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OmdInverse {
    /// Identity (the OMD paper's choice).
    #[default]
    Identity,
    /// Conjugate gradient through the solver's AID (`cg_iterations`).
    Cg,
}

fn d_cg() -> usize {
    5
}
fn d_vep_functions() -> usize {
    5
}
fn d_vep_hidden() -> Vec<usize> {
    vec![32]
}
fn d_adjoint_steps() -> usize {
    5
}

/// How the world model is learned: the one thing the agents do not share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelLearning {
    /// Maximum likelihood: squared error on next state and reward.
    Mle,
    /// Functional implicit differentiation (closed-form adjoint by default).
    Funcid {
        #[serde(default)]
        mode: FuncidMode,
        #[serde(default = "d_adjoint_steps")]
        adjoint_steps: usize,
    },
    /// Parametric implicit differentiation (identity inverse Hessian by default).
    Omd {
        #[serde(default)]
        inverse: OmdInverse,
        #[serde(default = "d_cg")]
        cg_iterations: usize,
    },
    /// Value equivalence with fixed random value functions.
    Vep {
        #[serde(default = "d_vep_functions")]
        functions: usize,
        #[serde(default = "d_vep_hidden")]
        hidden: Vec<usize>,
    },
    /// No model: soft-Q on real data (reference).
    Modelfree,
}

impl ModelLearning {
    pub fn name(&self) -> &'static str {
        match self {
            ModelLearning::Mle => "mle",
            ModelLearning::Funcid { .. } => "funcid",
            ModelLearning::Omd { .. } => "omd",
            ModelLearning::Vep { .. } => "vep",
            ModelLearning::Modelfree => "modelfree",
        }
    }
}

fn d_q_hidden() -> Vec<usize> {
    vec![32, 32]
}
fn d_lr() -> f64 {
    1e-3
}
fn d_tau() -> f64 {
    0.01
}
fn d_gamma() -> f64 {
    0.99
}
fn d_alpha() -> f64 {
    0.01
}
fn d_eps() -> f64 {
    0.1
}
fn d_model_hidden() -> Vec<usize> {
    vec![3, 3]
}

/// Soft double-Q settings (SPEC §3 defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QConfig {
    #[serde(default = "d_q_hidden")]
    pub hidden: Vec<usize>,
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// Polyak rate: Q̄ ← (1 − τ)Q̄ + τQ.
    #[serde(default = "d_tau")]
    pub tau: f64,
    #[serde(default = "d_gamma")]
    pub gamma: f64,
    /// Entropy temperature of V̄ = α·logsumexp(min Q̄/α) and of the softmax policy.
    #[serde(default = "d_alpha")]
    pub alpha: f64,
    /// Behaviour: uniform action with probability ε, else a draw from softmax(Q/α).
    #[serde(default = "d_eps")]
    pub epsilon: f64,
}

impl Default for QConfig {
    fn default() -> Self {
        Self {
            hidden: d_q_hidden(),
            lr: d_lr(),
            tau: d_tau(),
            gamma: d_gamma(),
            alpha: d_alpha(),
            epsilon: d_eps(),
        }
    }
}

/// World-model settings: two hidden layers of width 3 is the paper's misspecified model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(default = "d_model_hidden")]
    pub hidden: Vec<usize>,
    #[serde(default)]
    pub predict: Predict,
    #[serde(default = "d_lr")]
    pub lr: f64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            hidden: d_model_hidden(),
            predict: Predict::default(),
            lr: d_lr(),
        }
    }
}

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

/// Losses of one update (NaN/Inf in any of them stops a run).
#[derive(Debug, Clone, Copy, Default)]
pub struct UpdateStats {
    /// The Q step's loss (on model data; on real data for `modelfree`).
    pub q_loss: f64,
    /// What the model step minimised: MLE squared error, VEP value-equivalence loss, the outer loss
    /// for FuncID/OMD (0 for `modelfree`).
    pub model_loss: f64,
    /// ½Σᵢ mean_b (Qᵢ − y)² on real data after the Q step: the outer objective, for every agent.
    pub outer_loss: f64,
}

impl UpdateStats {
    /// The first non-finite loss, by its metric name.
    pub fn non_finite(&self) -> Option<(&'static str, f64)> {
        [
            ("losses/q_loss", self.q_loss),
            ("losses/model_loss", self.model_loss),
            ("losses/outer_loss", self.outer_loss),
        ]
        .into_iter()
        .find(|(_, v)| !v.is_finite())
    }
}

/// Agent settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub learning: ModelLearning,
    pub q: QConfig,
    pub model: ModelConfig,
    pub precision: Precision,
}

pub struct Agent {
    pub ctx: Ctx,
    pub cfg: AgentConfig,
    pub obs_dim: usize,
    pub n_actions: usize,
    pub qnet: DoubleQ,
    pub q: Params,
    pub q_target: Params,
    pub q_opt: Optimizer,
    pub model: WorldModel,
    pub omega: Params,
    pub model_opt: Optimizer,
    vep_net: Mlp,
    vep_values: Vec<Params>,
    method: Option<Box<dyn HypergradientMethod<RlProblem, DoubleQ>>>,
}

impl Agent {
    /// Fresh networks from `rng` (Q, target = Q, model, VEP value functions, in that order).
    pub fn new(cfg: AgentConfig, obs_dim: usize, n_actions: usize, rng: &mut StdRng) -> Self {
        let ctx = Ctx::flex(cfg.precision);
        let qnet = DoubleQ::new(obs_dim, cfg.q.hidden.clone(), n_actions);
        let q = qnet.init(&ctx, rng);
        let model = WorldModel::new(
            obs_dim,
            obs_dim + n_actions,
            cfg.model.hidden.clone(),
            cfg.model.predict,
        );
        let omega = model.init(&ctx, rng);
        let (vep_net, vep_values) = match &cfg.learning {
            ModelLearning::Vep { functions, hidden } => {
                let net = Mlp::new(obs_dim, hidden.clone(), 1, funcrl_bilevel::Activation::Relu);
                let vs = (0..*functions).map(|_| net.init(&ctx, rng)).collect();
                (net, vs)
            }
            _ => (
                Mlp::new(obs_dim, vec![], 1, funcrl_bilevel::Activation::Relu),
                vec![],
            ),
        };
        let method: Option<Box<dyn HypergradientMethod<RlProblem, DoubleQ>>> = match &cfg.learning {
            ModelLearning::Omd {
                inverse,
                cg_iterations,
            } => Some(match inverse {
                OmdInverse::Identity => MethodConfig::Identity { fd_step: None }.build(),
                OmdInverse::Cg => MethodConfig::Aid {
                    solver: funcrl_bilevel::LinearSolver::Cg,
                    iterations: *cg_iterations,
                    damping: 0.0,
                    // A warm start would be state outside the checkpoint.
                    warm_start: false,
                    neumann_lr: 0.01,
                    fd_step: None,
                }
                .build(),
            }),
            ModelLearning::Funcid {
                mode: FuncidMode::Network,
                adjoint_steps,
            } => Some(
                MethodConfig::Funcid {
                    steps: *adjoint_steps,
                    optimizer: OptimizerConfig::adam(1e-3),
                    warm_start: false,
                }
                .build(),
            ),
            _ => None,
        };
        Self {
            q_target: q.detached(),
            q_opt: Optimizer::new(OptimizerConfig::adam(cfg.q.lr)),
            model_opt: Optimizer::new(OptimizerConfig::adam(cfg.model.lr)),
            ctx,
            obs_dim,
            n_actions,
            qnet,
            q,
            model,
            omega,
            vep_net,
            vep_values,
            method,
            cfg,
        }
    }

    fn problem(&self, through_next_state: bool) -> RlProblem {
        RlProblem {
            model: self.model.clone(),
            qnet: self.qnet.clone(),
            target: self.q_target.detached(),
            gamma: self.cfg.q.gamma,
            alpha: self.cfg.q.alpha,
            through_next_state,
        }
    }

    /// The batch as tensors (actions are indices, one-hot encoded here).
    pub fn tensors(&self, b: &Batch) -> BatchTensors {
        let (n, s, a) = (b.len(), self.obs_dim, self.n_actions);
        let mut onehot = vec![0.0; n * a];
        let mut onehot2 = vec![0.0; n * 2 * a];
        let mut x = Vec::with_capacity(n * (s + a));
        for j in 0..n {
            let k = b.action[j] as usize;
            onehot[j * a + k] = 1.0;
            onehot2[j * 2 * a + k] = 1.0;
            onehot2[j * 2 * a + a + k] = 1.0;
            x.extend_from_slice(&b.obs[j * s..(j + 1) * s]);
            x.extend_from_slice(&onehot[j * a..(j + 1) * a]);
        }
        let c = &self.ctx;
        BatchTensors {
            s: c.tensor2(b.obs.clone(), n, s),
            x: c.tensor2(x, n, s + a),
            onehot2: c.tensor2(onehot2, n, 2 * a),
            r: c.tensor2(b.reward.clone(), n, 1),
            s_next: c.tensor2(b.next_obs.clone(), n, s),
            mask: c.tensor2(b.mask.clone(), n, 1),
            w: c.tensor2(b.weight.clone(), n, 1),
            n,
        }
    }

    /// One update on a real batch: a Q step, Polyak, then the model step of this agent.
    /// Returns the losses and the per-sample real TD errors (for prioritized replay).
    pub fn update(&mut self, batch: &Batch, rng: &mut StdRng) -> (UpdateStats, Vec<f64>) {
        let d = self.tensors(batch);
        let learning = self.cfg.learning.clone();
        let full = !matches!(
            learning,
            ModelLearning::Funcid {
                mode: FuncidMode::Paper,
                ..
            }
        );

        // 1. Inner step: one Adam step of both Q-networks toward model targets r_ω + γ·m·V̄(s'_ω)
        // (real targets for modelfree). Every mode trains Q on model data; the paper mode differs
        // only in the model-gradient term below.
        let problem = self.problem(true);
        let (y_in, w_in) = match learning {
            ModelLearning::Modelfree => (problem.real_target(&d), d.w.clone()),
            _ => (
                problem.model_target(&self.omega.detached(), &d).detach(),
                d.w.ones_like(),
            ),
        };
        let th = self.q.tracked();
        let v = self.qnet.forward(&th, &d.s).output;
        let q_loss = q_loss_t(v, y_in, &d.onehot2, &w_in);
        let q_loss_value = scalar(q_loss.clone().detach());
        let grad = th.grads(&q_loss.backward());
        self.q = self.q_opt.step(&self.q, &grad);
        let tau = self.cfg.q.tau;
        self.q_target = self.q_target.scale(1.0 - tau).axpy(tau, &self.q).detached();

        // 2. The outer objective on real data, at the new Q and Q̄. `full` only changes how the
        // model-gradient term differentiates y_ω (through V̄(s'_ω), or V̄ at the real s').
        let problem = self.problem(full);
        let outer = OuterData {
            s: d.s.clone(),
            onehot2: d.onehot2.clone(),
            y: problem.real_target(&d),
            w: d.w.clone(),
        };
        let v_out = self.qnet.forward(&self.q, &d.s).output.detach();
        let outer_loss = scalar(
            problem
                .outer_loss(&self.omega, v_out.clone(), &outer)
                .detach(),
        );
        let td_sel = (v_out.clone() - outer.y.clone()) * d.onehot2.clone();
        let td = to_vec(&td_sel.clone().sum_dim(1).mul_scalar(0.5));

        // 3. The model step: the only part that differs between agents.
        let (model_grad, model_loss) = match learning {
            ModelLearning::Modelfree => (None, 0.0),
            ModelLearning::Mle => {
                let om = self.omega.tracked();
                let (s2, r) = self.model.forward(&om, &d.s, &d.x);
                let err = (s2 - d.s_next.clone()).square().sum_dim(1) + (r - d.r.clone()).square();
                let loss = err.mul(d.w.clone()).sum().mul_scalar(0.5 / d.n as f64);
                let value = scalar(loss.clone().detach());
                (Some(om.grads(&loss.backward())), value)
            }
            ModelLearning::Vep { .. } => {
                let om = self.omega.tracked();
                let (s2, r) = self.model.forward(&om, &d.s, &d.x);
                let g = self.cfg.q.gamma;
                let mut loss: Option<Tensor<1>> = None;
                for vk in &self.vep_values {
                    let model_side = r.clone()
                        + (d.mask.clone() * self.vep_net.forward(vk, &s2).output).mul_scalar(g);
                    let real_side = d.r.clone()
                        + (d.mask.clone() * self.vep_net.forward(vk, &d.s_next).output)
                            .mul_scalar(g);
                    let l = (model_side - real_side.detach())
                        .square()
                        .mul(d.w.clone())
                        .sum()
                        .mul_scalar(0.5 / d.n as f64);
                    loss = Some(match loss {
                        None => l,
                        Some(acc) => acc + l,
                    });
                }
                let loss = loss.expect("VEP needs at least one value function");
                let value = scalar(loss.clone().detach());
                (Some(om.grads(&loss.backward())), value)
            }
            ModelLearning::Funcid {
                mode: FuncidMode::Full | FuncidMode::Paper,
                ..
            } => {
                // ℓ_in is quadratic in v with curvature 1 on the taken action: the adjoint is
                // minus the pointwise outer gradient, a = −w·(v − y)·onehot.
                let a = td_sel.mul(d.w.clone()).neg();
                let g = total_from_adjoint(&problem, &self.omega, &v_out, &a, &v_out, &d, &outer);
                (Some(g), outer_loss)
            }
            ModelLearning::Funcid { .. } | ModelLearning::Omd { .. } => {
                let method = self.method.as_mut().expect("method built in new()");
                let mut theta = self.q.clone();
                let h = method
                    .total_gradient(HyperInput {
                        ctx: &self.ctx,
                        problem: &problem,
                        model: &self.qnet,
                        omega: &self.omega,
                        theta: &mut theta,
                        inner: &d,
                        outer: &outer,
                        inner_ridge: 0.0,
                        rng,
                    })
                    .map(|h| h.grad);
                match h {
                    Ok(g) => (Some(g), outer_loss),
                    Err(_) => (None, f64::NAN),
                }
            }
        };
        if let Some(g) = model_grad {
            self.omega = self.model_opt.step(&self.omega, &g);
        }
        (
            UpdateStats {
                q_loss: q_loss_value,
                model_loss,
                outer_loss,
            },
            td,
        )
    }

    /// Host copy of Q for acting (refresh after every update).
    pub fn host_q(&self) -> HostParams {
        HostParams::from(&self.q)
    }

    /// ε-greedy around softmax(min(Q₁,Q₂)/α): with probability ε a uniform action, else a draw
    /// from the softmax. Evaluation passes ε = 0.
    pub fn act(&self, host: &HostParams, obs: &[f64], epsilon: f64, rng: &mut StdRng) -> usize {
        if epsilon > 0.0 && rng.random::<f64>() < epsilon {
            return rng.random_range(0..self.n_actions);
        }
        let q = self.qnet.host_min_q(host, obs);
        sample_index(&softmax_policy(&q, self.cfg.q.alpha), rng.random::<f64>())
    }
}
