//! funcrl: control-oriented model-based reinforcement learning and deep instrumental-variable
//! regression on a functional bilevel solver (FuncID, NeurIPS 2024).
//!
//! This crate is the CLI and its run infrastructure (configs, run directories, logs, plots); the
//! libraries are [`funcrl_envs`], `funcrl_bilevel`, `funcrl_kernels`, [`funcrl_agents`] and
//! [`funcrl_iv`], `funcrl_stats`.

pub mod children;
pub mod cli;
pub mod compare;
pub mod config;
pub mod inspect;
pub mod iv;
pub mod rollout;
pub mod train;

pub use funcrl_envs as envs;
pub mod plot;
pub mod rundir;
pub mod signals;
pub mod slurm;
pub mod tb;
