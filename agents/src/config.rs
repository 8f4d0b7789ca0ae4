//! Agent settings: the Q-function, the world model, and how the model is learned.

use funcrl_bilevel::{Init, Precision};
use serde::{Deserialize, Serialize};

use crate::nets::Predict;

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

/// Which Q the closed-form adjoint is taken at (`full` and `paper` modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FuncidAdjoint {
    /// The current Q after its one step: a = −w·(Q − y). Q lags behind the model target y_ω,
    /// and that lag enters the model gradient (the reference code's choice).
    #[default]
    CurrentQ,
    /// The functional inner solution Q*_ω = y_ω: a = −w·(y_ω − y), so the model step is the exact
    /// gradient of ½Σᵢ mean_b w_b (y_ω,b − y_b)², the outer loss at the inner optimum.
    InnerSolution,
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
        /// `full`/`paper`: the Q the closed-form adjoint is taken at.
        #[serde(default)]
        adjoint: FuncidAdjoint,
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

/// How a network's parameters are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NetInit {
    /// PyTorch's default, U(±1/√fan_in) weights and biases (this project's default).
    #[default]
    Uniform,
    /// The reference code's: orthogonal weights with gain √2 on hidden layers and 1e-2 on the
    /// output layer, zero biases, so a fresh network outputs ≈ 0 (a fresh model predicts s′ ≈ 0).
    Orthogonal,
}

impl NetInit {
    pub fn scheme(self) -> Init {
        match self {
            NetInit::Uniform => Init::Uniform,
            NetInit::Orthogonal => Init::reference_orthogonal(),
        }
    }
}

/// Which function of the two Q-networks the behaviour and evaluation policy softmaxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PolicyQ {
    /// softmax(min(Q₁, Q₂)/α): the same pessimistic Q as the target V̄ (this project's default).
    #[default]
    Min,
    /// softmax(½(Q₁ + Q₂)/α): the reference code's policy.
    Mean,
}

fn d_one() -> usize {
    1
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

/// Soft double-Q settings (the protocol's defaults, docs/protocols.md).
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
    /// Initialisation of both Q-networks (and of VEP's value functions).
    #[serde(default)]
    pub init: NetInit,
    /// Re-initialise the Q optimiser's Adam state before every update's Q step (the reference
    /// code does for FuncID and OMD, whose inner solver restarts at each outer step; its MLE and
    /// VEP keep the state). Default false.
    #[serde(default)]
    pub reset_optimizer: bool,
    /// The policy's Q: `min` (default) or `mean` (the reference code's) of the two networks.
    #[serde(default)]
    pub policy: PolicyQ,
    /// Q steps (each followed by Polyak averaging) per update, before the model step: the
    /// reference's `num_Q_steps` (1). More steps shrink Q's lag behind the model target.
    #[serde(default = "d_one")]
    pub steps: usize,
    /// Clip every Q target r + γ·m·V̄(s′) (model and real) to the values a soft Q-function can
    /// take given the rewards seen in replay, [r_lo, r_hi]: from min(r_lo, r_lo/(1−γ)) to
    /// max(r_hi, (r_hi + γ·α·ln|A|)/(1−γ)). A target outside cannot be a value, so bootstrapping
    /// cannot run away past it; a clipped model target does not move with the model (zero
    /// model gradient). Off by default; the reference clips nothing.
    #[serde(default)]
    pub clip_target: bool,
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
            init: NetInit::default(),
            reset_optimizer: false,
            policy: PolicyQ::default(),
            steps: 1,
            clip_target: false,
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
    /// Initialisation of both heads (`orthogonal`: the reference code's).
    #[serde(default)]
    pub init: NetInit,
    /// Rescale the model gradient to at most this Euclidean norm before its Adam step (none by
    /// default, as in the reference).
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// Clip the model's next states to the range of next states seen in replay, per dimension,
    /// wherever the Q-function is evaluated at them (the Q targets and FuncID/OMD's model
    /// gradient, which is zero in a clipped coordinate). The model's own fit (MLE's loss,
    /// `funcrl inspect`) sees the unclipped prediction. Off by default, as in the reference.
    #[serde(default)]
    pub clip_next_state: bool,
    /// Clip the model's reward to the range of rewards seen in replay wherever it enters a Q
    /// target (the Q step and FuncID/OMD's model gradient, which is zero where it is clipped).
    /// With a constant reward (CartPole's 1) the model's reward is then that constant and only
    /// its next states are learned. Off by default, as in the reference.
    #[serde(default)]
    pub clip_reward: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            hidden: d_model_hidden(),
            predict: Predict::default(),
            lr: d_lr(),
            init: NetInit::default(),
            grad_clip: None,
            clip_next_state: false,
            clip_reward: false,
        }
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
