//! funcrl: control-oriented model-based reinforcement learning and deep instrumental-variable
//! regression on a functional bilevel solver (FuncID, NeurIPS 2024).
//!
//! This crate is the facade and the CLI; the environments live in [`funcrl_envs`].

pub mod cli;
pub mod config;
pub mod iv;
pub mod memory;
pub mod rollout;
pub mod train;

pub use funcrl_envs as envs;
pub mod plot;
pub mod rundir;
