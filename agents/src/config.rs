//! Agent settings: the Q-function, the world model, and how the model is learned.

use funcrl_bilevel::Precision;
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
