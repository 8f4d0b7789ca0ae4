//! funcrl-agents: model-based agents for control-oriented RL — replay, world models, a soft
//! double-Q, and learning rules that differ only in how the model is learned (`mle`, `funcid`,
//! `omd`, `vep`, and a model-free soft-Q reference, one file each under [`rules`]) — plus the
//! training loop with HDF5 checkpoints. The protocol is in the repository's `docs/protocols.md`.

pub mod agent;
pub mod config;
pub mod h5io;
pub mod inspect;
pub mod nets;
pub mod problem;
pub mod replay;
pub mod rules;
pub mod targets;
pub mod trainer;

pub use agent::{Agent, UpdateStats};
pub use config::{
    AgentConfig, FuncidAdjoint, FuncidMode, ModelConfig, ModelLearning, NetInit, OmdInverse,
    PolicyQ, QConfig,
};
pub use replay::{Batch, PerConfig, ReplayBuffer, Transition};
pub use targets::Ending;
pub use trainer::{ActionMap, ReplayConfig, TrainConfig, Trainer};
