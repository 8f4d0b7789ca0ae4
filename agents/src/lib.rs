//! Model-based agents for control-oriented RL (SPEC §3): replay, world models, a soft double-Q,
//! and agents that differ only in how the model is learned — `mle`, `funcid`, `omd`, `vep`, and a
//! model-free soft-Q reference — plus the training loop with HDF5 checkpoints.

pub mod agent;
pub mod dense;
pub mod h5io;
pub mod nets;
pub mod replay;
pub mod targets;
pub mod trainer;

pub use agent::{
    Agent, AgentConfig, FuncidMode, ModelConfig, ModelLearning, OmdInverse, QConfig, UpdateStats,
};
pub use replay::{Batch, PerConfig, ReplayBuffer, Transition};
pub use targets::Ending;
pub use trainer::{ActionMap, ReplayConfig, TrainConfig, Trainer};
