//! The agents. All share replay, the soft double-Q with its Polyak target, acting and the update's
//! first half (one Q step on model data — real data for `modelfree` — then Polyak); they differ
//! only in how the world model is learned ([`ModelLearning`]).

use burn::tensor::Tensor;
use funcrl_bilevel::{
    BilevelProblem, Ctx, HyperInput, HypergradientMethod, InnerModel, MethodConfig, Mlp,
    OptimizerConfig, Params, Precision,
};
use rand::{RngExt, rngs::StdRng};
use serde::{Deserialize, Serialize};

use std::cell::RefCell;

use crate::dense::{Adam, Dense, Tape};
use crate::nets::{DoubleQ, Predict, WorldModel};
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
    /// Continuous actions on a grid: the model's input is (s, value) instead of (s, one_hot(a)).
    #[serde(default)]
    pub action_values: Option<Vec<f64>>,
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
            }
            .build(),
        ),
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
    }
}

/// An agent: the soft double-Q, its Polyak target, the world model and their optimisers, all as
/// flat host parameters (`Params::to_flat` order) updated by the [`dense`](crate::dense) kernels.
/// The burn descriptions (`qnet`, `model`, `vep_net`) serve the solver-based hypergradients
/// (`funcid` with a network adjoint, `omd` with CG) and the autodiff oracle in the tests.
pub struct Agent {
    pub ctx: Ctx,
    pub cfg: AgentConfig,
    pub obs_dim: usize,
    pub n_actions: usize,
    pub qnet: DoubleQ,
    pub model: WorldModel,
    pub vep_net: Mlp,
    /// [Q₁ | Q₂].
    pub q: Vec<f64>,
    pub q_target: Vec<f64>,
    /// ω = [next-state net | reward net].
    pub omega: Vec<f64>,
    pub q_opt: Adam,
    pub model_opt: Adam,
    /// VEP's fixed random value functions.
    pub vep_values: Vec<Vec<f64>>,
    q_like: Params,
    omega_like: Params,
    /// Recycled activation tapes, so that an update allocates (almost) nothing.
    pool: RefCell<Vec<Tape>>,
    qd: Dense,
    sd: Dense,
    rd: Dense,
    vd: Dense,
    method: Option<Box<dyn HypergradientMethod<RlProblem, DoubleQ>>>,
}

/// V̄ = α·logsumexp(min(Q̄₁, Q̄₂)/α) per row, and ∂V̄/∂Q̄₁, ∂V̄/∂Q̄₂ (`[n, A]`): the softmax weight
/// on whichever network attains the min.
fn soft_values(q1: &[f64], q2: &[f64], a: usize, alpha: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = q1.len() / a;
    let (mut v, mut d1, mut d2) = (Vec::with_capacity(n), vec![0.0; n * a], vec![0.0; n * a]);
    let mut m = vec![0.0; a];
    for b in 0..n {
        let row = b * a..(b + 1) * a;
        for ((mj, x), y) in m.iter_mut().zip(&q1[row.clone()]).zip(&q2[row.clone()]) {
            *mj = x.min(*y);
        }
        let mx = m.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = m
            .iter()
            .map(|mj| ((mj - mx) * (1.0 / alpha)).exp())
            .collect();
        let s: f64 = e.iter().sum();
        v.push(s.ln() * alpha + mx);
        for j in 0..a {
            let pi = e[j] / s;
            if q1[b * a + j] <= q2[b * a + j] {
                d1[b * a + j] = pi;
            } else {
                d2[b * a + j] = pi;
            }
        }
    }
    (v, d1, d2)
}

/// ½·mean_b w_b Σᵢ (Qᵢ(s_b, a_b) − y_b)² and its gradient w.r.t. each network's output.
fn q_loss_grad(
    tapes: &[Tape; 2],
    acts: &[usize],
    y: &[f64],
    w: &[f64],
    a: usize,
) -> (f64, [Vec<f64>; 2]) {
    let n = acts.len();
    let mut loss = 0.0;
    let mut d = [vec![0.0; n * a], vec![0.0; n * a]];
    for (i, t) in tapes.iter().enumerate() {
        let q = t.output();
        for b in 0..n {
            let j = b * a + acts[b];
            let e = q[j] - y[b];
            loss += e * e * w[b];
            d[i][j] = w[b] * e / n as f64;
        }
    }
    (loss * (0.5 / n as f64), d)
}

impl Agent {
    /// Fresh networks from `rng` (Q, target = Q, model, VEP value functions, in that order).
    pub fn new(cfg: AgentConfig, obs_dim: usize, n_actions: usize, rng: &mut StdRng) -> Self {
        let ctx = Ctx::flex(cfg.precision);
        let qnet = DoubleQ::new(obs_dim, cfg.q.hidden.clone(), n_actions);
        let q_like = qnet.init(&ctx, rng);
        if let Some(v) = &cfg.action_values {
            assert_eq!(v.len(), n_actions, "one value per action");
        }
        let action_width = if cfg.action_values.is_some() {
            1
        } else {
            n_actions
        };
        let model = WorldModel::new(
            obs_dim,
            obs_dim + action_width,
            cfg.model.hidden.clone(),
            cfg.model.predict,
        );
        let omega_like = model.init(&ctx, rng);
        let (vep_net, vep_values) = match &cfg.learning {
            ModelLearning::Vep { functions, hidden } => {
                let net = Mlp::new(obs_dim, hidden.clone(), 1, funcrl_bilevel::Activation::Relu);
                let vs = (0..*functions)
                    .map(|_| net.init(&ctx, rng).to_flat())
                    .collect();
                (net, vs)
            }
            _ => (
                Mlp::new(obs_dim, vec![], 1, funcrl_bilevel::Activation::Relu),
                vec![],
            ),
        };
        let method = solver_method(&cfg.learning);
        let q = q_like.to_flat();
        let omega = omega_like.to_flat();
        Self {
            q_target: q.clone(),
            q_opt: Adam::new(cfg.q.lr, q.len()),
            model_opt: Adam::new(cfg.model.lr, omega.len()),
            pool: RefCell::new(Vec::new()),
            qd: Dense::from_mlp(&qnet.net),
            sd: Dense::from_mlp(&model.state_net),
            rd: Dense::from_mlp(&model.reward_net),
            vd: Dense::from_mlp(&vep_net),
            ctx,
            obs_dim,
            n_actions,
            qnet,
            q,
            q_like,
            model,
            omega,
            omega_like,
            vep_net,
            vep_values,
            method,
            cfg,
        }
    }

    fn tapes(&self) -> [Tape; 2] {
        let mut p = self.pool.borrow_mut();
        [p.pop().unwrap_or_default(), p.pop().unwrap_or_default()]
    }

    fn recycle(&self, tapes: [Tape; 2]) {
        self.pool.borrow_mut().extend(tapes);
    }

    /// The flat parameters as burn [`Params`] shaped like Q (`q`, `q_target`) or ω (`omega`).
    pub fn q_params(&self, flat: &[f64]) -> Params {
        self.q_like.from_flat_like(&self.ctx, flat)
    }
    pub fn omega_params(&self, flat: &[f64]) -> Params {
        self.omega_like.from_flat_like(&self.ctx, flat)
    }

    /// The batch as tensors (actions are indices, one-hot encoded here).
    pub fn tensors(&self, b: &Batch) -> BatchTensors {
        let (n, s, a) = (b.len(), self.obs_dim, self.n_actions);
        let mut onehot2 = vec![0.0; n * 2 * a];
        for j in 0..n {
            let k = b.action[j] as usize;
            onehot2[j * 2 * a + k] = 1.0;
            onehot2[j * 2 * a + a + k] = 1.0;
        }
        let c = &self.ctx;
        BatchTensors {
            s: c.tensor2(b.obs.clone(), n, s),
            x: c.tensor2(self.model_input(b), n, self.model.state_net.input),
            onehot2: c.tensor2(onehot2, n, 2 * a),
            r: c.tensor2(b.reward.clone(), n, 1),
            s_next: c.tensor2(b.next_obs.clone(), n, s),
            mask: c.tensor2(b.mask.clone(), n, 1),
            w: c.tensor2(b.weight.clone(), n, 1),
            n,
        }
    }

    /// The model's input rows: (s, one_hot(a)), or (s, action value) for continuous actions.
    fn model_input(&self, b: &Batch) -> Vec<f64> {
        let (s, a) = (self.obs_dim, self.n_actions);
        let mut x = Vec::with_capacity(b.len() * (s + a));
        for j in 0..b.len() {
            x.extend_from_slice(&b.obs[j * s..(j + 1) * s]);
            let k = b.action[j] as usize;
            match &self.cfg.action_values {
                Some(v) => x.push(v[k]),
                None => x.extend((0..a).map(|i| if i == k { 1.0 } else { 0.0 })),
            }
        }
        x
    }

    fn q_forward(&self, theta: &[f64], s: &[f64], n: usize, tapes: &mut [Tape; 2]) {
        let k = self.qd.numel();
        self.qd.forward(&theta[..k], s, n, &mut tapes[0]);
        self.qd.forward(&theta[k..], s, n, &mut tapes[1]);
    }

    /// ∇_θ of a loss over [Q₁ | Q₂] given its output gradients, from the tapes of the last
    /// forward at θ = `self.q`.
    fn q_param_grad(&self, tapes: &[Tape; 2], dout: &[Vec<f64>; 2]) -> Vec<f64> {
        let k = self.qd.numel();
        let mut grad = vec![0.0; self.q.len()];
        let (g1, g2) = grad.split_at_mut(k);
        self.qd
            .backward(&self.q[..k], &tapes[0], &dout[0], Some(g1), None);
        self.qd
            .backward(&self.q[k..], &tapes[1], &dout[1], Some(g2), None);
        grad
    }

    /// r + γ·m·V̄(s') under the target network, per row.
    fn target(&self, r: &[f64], s_next: &[f64], mask: &[f64]) -> Vec<f64> {
        let mut t = self.tapes();
        self.q_forward(&self.q_target, s_next, r.len(), &mut t);
        let (v, _, _) = soft_values(
            t[0].output(),
            t[1].output(),
            self.n_actions,
            self.cfg.q.alpha,
        );
        self.recycle(t);
        let g = self.cfg.q.gamma;
        (0..r.len()).map(|b| r[b] + mask[b] * v[b] * g).collect()
    }

    /// (ŝ', r̂) and the tapes of both heads.
    fn model_forward(&self, b: &Batch, x: &[f64], tapes: &mut [Tape; 2]) -> (Vec<f64>, Vec<f64>) {
        let ks = self.sd.numel();
        let n = b.len();
        self.sd.forward(&self.omega[..ks], x, n, &mut tapes[0]);
        self.rd.forward(&self.omega[ks..], x, n, &mut tapes[1]);
        let mut s2 = tapes[0].output().to_vec();
        if self.cfg.model.predict == Predict::Delta {
            for (o, s) in s2.iter_mut().zip(&b.obs) {
                *o += s;
            }
        }
        (s2, tapes[1].output().to_vec())
    }

    /// ∇_ω Σ_b c_b·y_ω,b with y_ω = r_ω + γ·m·V̄(s'_ω) (V̄ at the real s' unless `through`): the
    /// model gradient of FuncID (c from the closed-form adjoint) and OMD (c from a JVP).
    fn model_target_vjp(&self, b: &Batch, x: &[f64], c: &[f64], through: bool) -> Vec<f64> {
        let ks = self.sd.numel();
        let (n, a) = (b.len(), self.n_actions);
        let mut mt = self.tapes();
        let (s2, _) = self.model_forward(b, x, &mut mt);
        let mut g = vec![0.0; self.omega.len()];
        let (gs, gr) = g.split_at_mut(ks);
        self.rd
            .backward(&self.omega[ks..], &mt[1], c, Some(gr), None);
        if through {
            let mut t = self.tapes();
            self.q_forward(&self.q_target, &s2, n, &mut t);
            let (_, mut d1, mut d2) =
                soft_values(t[0].output(), t[1].output(), a, self.cfg.q.alpha);
            for ((r1, r2), (cb, m)) in d1
                .chunks_exact_mut(a)
                .zip(d2.chunks_exact_mut(a))
                .zip(c.iter().zip(&b.mask))
            {
                let k = cb * self.cfg.q.gamma * m;
                r1.iter_mut().chain(r2.iter_mut()).for_each(|d| *d *= k);
            }
            let kq = self.qd.numel();
            let mut ds = vec![0.0; n * self.obs_dim];
            let mut dx = vec![0.0; n * self.obs_dim];
            self.qd
                .backward(&self.q_target[..kq], &t[0], &d1, None, Some(&mut ds));
            self.qd
                .backward(&self.q_target[kq..], &t[1], &d2, None, Some(&mut dx));
            for (p, q) in ds.iter_mut().zip(&dx) {
                *p += q;
            }
            // ŝ' = out or s + out: the same gradient reaches the state net's output.
            self.sd
                .backward(&self.omega[..ks], &mt[0], &ds, Some(gs), None);
            self.recycle(t);
        }
        self.recycle(mt);
        g
    }

    /// One update on a real batch: a Q step, Polyak, then the model step of this agent.
    /// Returns the losses and the per-sample real TD errors (for prioritized replay).
    pub fn update(&mut self, batch: &Batch, rng: &mut StdRng) -> (UpdateStats, Vec<f64>) {
        let (n, na) = (batch.len(), self.n_actions);
        let acts: Vec<usize> = batch.action.iter().map(|&a| a as usize).collect();
        let x = self.model_input(batch);
        let learning = self.cfg.learning.clone();

        // 1. Inner step: one Adam step of both Q-networks toward model targets r_ω + γ·m·V̄(s'_ω)
        // (real targets for modelfree). Every mode trains Q on model data; the paper mode differs
        // only in the model-gradient term below.
        let (y_in, w_in) = match learning {
            ModelLearning::Modelfree => (
                self.target(&batch.reward, &batch.next_obs, &batch.mask),
                batch.weight.clone(),
            ),
            _ => {
                let mut mt = self.tapes();
                let (s2, r) = self.model_forward(batch, &x, &mut mt);
                self.recycle(mt);
                (self.target(&r, &s2, &batch.mask), vec![1.0; n])
            }
        };
        let mut tapes = self.tapes();
        self.q_forward(&self.q, &batch.obs, n, &mut tapes);
        let (q_loss, dq) = q_loss_grad(&tapes, &acts, &y_in, &w_in, na);
        let kq = self.qd.numel();
        let grad = self.q_param_grad(&tapes, &dq);
        self.q_opt.step(&mut self.q, &grad);
        let tau = self.cfg.q.tau;
        for (t, q) in self.q_target.iter_mut().zip(&self.q) {
            *t = *t * (1.0 - tau) + q * tau;
        }

        // 2. The outer objective on real data, at the new Q and Q̄.
        let y = self.target(&batch.reward, &batch.next_obs, &batch.mask);
        self.q_forward(&self.q, &batch.obs, n, &mut tapes);
        let (outer_loss, d_out) = q_loss_grad(&tapes, &acts, &y, &batch.weight, na);
        // Σᵢ (Qᵢ(s, a) − y) per row.
        let err: Vec<f64> = (0..n)
            .map(|b| {
                let j = b * na + acts[b];
                (tapes[0].output()[j] - y[b]) + (tapes[1].output()[j] - y[b])
            })
            .collect();
        let td: Vec<f64> = err.iter().map(|e| e * 0.5).collect();

        // 3. The model step: the only part that differs between agents.
        let full = !matches!(
            learning,
            ModelLearning::Funcid {
                mode: FuncidMode::Paper,
                ..
            }
        );
        let nf = n as f64;
        let (model_grad, model_loss) = match learning {
            ModelLearning::Modelfree => (None, 0.0),
            ModelLearning::Mle => {
                let ks = self.sd.numel();
                let mut mt = self.tapes();
                let (s2, r) = self.model_forward(batch, &x, &mut mt);
                let s = self.obs_dim;
                let (mut ds, mut dr) = (vec![0.0; n * s], vec![0.0; n]);
                let mut loss = 0.0;
                for b in 0..n {
                    let w = batch.weight[b];
                    let mut sq = 0.0;
                    for j in b * s..(b + 1) * s {
                        let e = s2[j] - batch.next_obs[j];
                        sq += e * e;
                        ds[j] = w * e / nf;
                    }
                    let e = r[b] - batch.reward[b];
                    dr[b] = w * e / nf;
                    loss += (sq + e * e) * w;
                }
                let mut g = vec![0.0; self.omega.len()];
                let (gs, gr) = g.split_at_mut(ks);
                self.sd
                    .backward(&self.omega[..ks], &mt[0], &ds, Some(gs), None);
                self.rd
                    .backward(&self.omega[ks..], &mt[1], &dr, Some(gr), None);
                self.recycle(mt);
                (Some(g), loss * (0.5 / nf))
            }
            ModelLearning::Vep { .. } => {
                let ks = self.sd.numel();
                let mut mt = self.tapes();
                let (s2, r) = self.model_forward(batch, &x, &mut mt);
                let (s, g) = (self.obs_dim, self.cfg.q.gamma);
                let (mut ds, mut dr) = (vec![0.0; n * s], vec![0.0; n]);
                let mut dx = vec![0.0; n * s];
                let mut loss = 0.0;
                let [mut tm, mut tr] = self.tapes();
                for vk in &self.vep_values {
                    self.vd.forward(vk, &s2, n, &mut tm);
                    self.vd.forward(vk, &batch.next_obs, n, &mut tr);
                    let mut dv = vec![0.0; n];
                    let mut l = 0.0;
                    for b in 0..n {
                        let m = batch.mask[b];
                        let e = (r[b] + m * tm.output()[b] * g)
                            - (batch.reward[b] + m * tr.output()[b] * g);
                        let w = batch.weight[b];
                        l += e * e * w;
                        dr[b] += w * e / nf;
                        dv[b] = w * e * g * m / nf;
                    }
                    loss += l * (0.5 / nf);
                    self.vd.backward(vk, &tm, &dv, None, Some(&mut dx));
                    for (p, q) in ds.iter_mut().zip(&dx) {
                        *p += q;
                    }
                }
                let mut gw = vec![0.0; self.omega.len()];
                let (gs, gr) = gw.split_at_mut(ks);
                self.sd
                    .backward(&self.omega[..ks], &mt[0], &ds, Some(gs), None);
                self.rd
                    .backward(&self.omega[ks..], &mt[1], &dr, Some(gr), None);
                self.recycle(mt);
                self.recycle([tm, tr]);
                (Some(gw), loss)
            }
            ModelLearning::Funcid {
                mode: FuncidMode::Full | FuncidMode::Paper,
                ..
            } => {
                // ℓ_in is quadratic in v with curvature 1 on the taken action: the adjoint is
                // minus the pointwise outer gradient, a = −w·(v − y)·onehot, so the model
                // gradient ∂_ω mean_b⟨∂_v ℓ_in, a⟩ weighs ∇_ω y_ω,b by w_b·Σᵢ(Qᵢ − y_b)/n.
                let c: Vec<f64> = (0..n).map(|b| batch.weight[b] * err[b] / nf).collect();
                (Some(self.model_target_vjp(batch, &x, &c, full)), outer_loss)
            }
            ModelLearning::Omd {
                inverse: OmdInverse::Identity,
                ..
            } => {
                // Identity inverse Hessian: −∂_ω⟨∇_θ L_in, u⟩ with u = ∇_θ L_out; ⟨∇_θ L_in, u⟩ =
                // mean_b Σᵢ (Qᵢ − y_ω,b)·(J_θ Qᵢ(s_b, a_b)·u), so it weighs ∇_ω y_ω,b by
                // Σᵢ (J_θ Qᵢ·u)_b / n (one JVP per network instead of finite differences).
                let u = self.q_param_grad(&tapes, &d_out);
                let j1 = self.qd.jvp(&self.q[..kq], &u[..kq], &tapes[0]);
                let j2 = self.qd.jvp(&self.q[kq..], &u[kq..], &tapes[1]);
                let c: Vec<f64> = (0..n)
                    .map(|b| {
                        let j = b * na + acts[b];
                        (j1[j] + j2[j]) / nf
                    })
                    .collect();
                (Some(self.model_target_vjp(batch, &x, &c, true)), outer_loss)
            }
            ModelLearning::Funcid { .. } | ModelLearning::Omd { .. } => {
                // Network adjoint or CG: the bilevel solver's methods, on burn tensors.
                let d = self.tensors(batch);
                let problem = RlProblem {
                    model: self.model.clone(),
                    qnet: self.qnet.clone(),
                    target: self.q_params(&self.q_target),
                    gamma: self.cfg.q.gamma,
                    alpha: self.cfg.q.alpha,
                    through_next_state: true,
                };
                let outer = OuterData {
                    s: d.s.clone(),
                    onehot2: d.onehot2.clone(),
                    y: problem.real_target(&d),
                    w: d.w.clone(),
                };
                let omega = self.omega_params(&self.omega);
                let mut theta = self.q_params(&self.q);
                let method = self.method.as_mut().expect("method built in new()");
                let h = method.total_gradient(HyperInput {
                    ctx: &self.ctx,
                    problem: &problem,
                    model: &self.qnet,
                    omega: &omega,
                    theta: &mut theta,
                    inner: &d,
                    outer: &outer,
                    inner_ridge: 0.0,
                    rng,
                });
                match h {
                    Ok(h) => (Some(h.grad.to_flat()), outer_loss),
                    Err(_) => (None, f64::NAN),
                }
            }
        };
        self.recycle(tapes);
        if let Some(g) = model_grad {
            self.model_opt.step(&mut self.omega, &g);
        }
        (
            UpdateStats {
                q_loss,
                model_loss,
                outer_loss,
            },
            td,
        )
    }

    /// ε-greedy around softmax(min(Q₁,Q₂)/α): with probability ε a uniform action, else a draw
    /// from the softmax. Evaluation passes ε = 0.
    pub fn act(&self, obs: &[f64], epsilon: f64, rng: &mut StdRng) -> usize {
        if epsilon > 0.0 && rng.random::<f64>() < epsilon {
            return rng.random_range(0..self.n_actions);
        }
        let k = self.qd.numel();
        let q1 = self.qd.forward_one(&self.q[..k], obs);
        let q2 = self.qd.forward_one(&self.q[k..], obs);
        let m: Vec<f64> = q1.iter().zip(&q2).map(|(a, b)| a.min(*b)).collect();
        sample_index(&softmax_policy(&m, self.cfg.q.alpha), rng.random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::soft_value_double;

    #[test]
    fn soft_values_match_the_host_oracle_and_finite_differences() {
        let q1 = [0.3, -0.2, 1.1, 0.5];
        let q2 = [0.1, 0.4, 1.0, 0.9];
        let (v, d1, d2) = soft_values(&q1, &q2, 2, 0.1);
        for b in 0..2 {
            let want = soft_value_double(&q1[2 * b..2 * b + 2], &q2[2 * b..2 * b + 2], 0.1);
            assert!((v[b] - want).abs() < 1e-14);
        }
        let h = 1e-6;
        for j in 0..4 {
            for (which, d) in [(0, &d1), (1, &d2)] {
                let at = |s: f64| {
                    let (mut a, mut b) = (q1, q2);
                    if which == 0 {
                        a[j] += s * h
                    } else {
                        b[j] += s * h
                    }
                    soft_values(&a, &b, 2, 0.1).0[j / 2]
                };
                let fd = (at(1.0) - at(-1.0)) / (2.0 * h);
                assert!((fd - d[j]).abs() < 1e-7, "{which} {j}: {fd} vs {}", d[j]);
            }
        }
    }
}
