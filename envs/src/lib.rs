//! Gymnasium-faithful classic-control environments for funcrl.
//!
//! Every environment matches Python `gymnasium` 1.x step for step from the same state and actions
//! (the conformance tests replay trajectories recorded from gymnasium), keeps its state in `f64`
//! and returns `f32` observations, and never allocates on a step.
//!
//! ```
//! use funcrl_envs::{make, Action, Env};
//! let mut env = make("CartPole-v1").unwrap();
//! let (obs, _info) = env.reset(Some(42));
//! assert_eq!(obs.len(), 4);
//! let step = env.step(Action::Discrete(1)).unwrap();
//! assert_eq!(step.reward, 1.0);
//! ```

pub mod acrobot;
pub mod cartpole;
pub mod classic;
pub mod core;
pub mod mountain_car;
pub mod pendulum;
pub mod registry;
pub mod seeding;
pub mod space;
pub mod trig;
pub mod vector;
pub mod wrappers;

pub use crate::classic::{ClassicEnv, Dynamics, EnvRng};
pub use crate::core::{Action, Env, EnvError, EpisodeStatistics, Info, MAX_OBS_DIM, Obs, Step};
pub use crate::registry::{EnvSpec, MakeOptions, SPECS, make, make_vec, make_with, spec};
pub use crate::space::{Space, SpaceSample};
pub use crate::vector::{SyncVectorEnv, VecAction, VecStep, VectorEnv};
pub use crate::wrappers::{RecordEpisodeStatistics, TimeLimit};
