//! funcrl-bilevel: a functional bilevel solver (FuncID, Petrulionyte, Mairal & Arbel, NeurIPS 2024)
//! with its parametric baselines (AID, ITD, identity/OMD, penalty) and a closed-form oracle.
//!
//! It knows nothing of RL or IV. A caller implements [`BilevelProblem`] (pointwise losses as
//! functions of the prediction v, with ∂_v ℓ_in as a tensor expression), picks an [`InnerModel`]
//! (e.g. [`Mlp`]) and a [`MethodConfig`], and drives a [`Solver`]. See README.md.

pub mod ctx;
pub mod driver;
pub mod error;
pub mod inner;
pub mod linalg;
pub mod methods;
pub mod model;
pub mod optim;
pub mod param_hvp;
pub mod params;
pub mod problem;
pub mod seed;
pub mod state;
pub mod toy;

pub use ctx::{Ctx, Precision};
pub use driver::{OuterLog, Solver, SolverConfig};
pub use error::BilevelError;
pub use inner::InnerConfig;
pub use methods::{
    AdjointInit, HyperInput, Hypergradient, HypergradientMethod, LinearSolver, MethodConfig,
};
pub use model::{Activation, Forward, Init, InnerModel, Mlp};
pub use optim::{Optimizer, OptimizerConfig};
pub use params::Params;
pub use problem::{BilevelProblem, check_inner_grad_v, inner_hvp_v};
pub use state::State;
