//! The `Env` trait and the values that cross it: observations, actions, steps, infos and errors.

use std::fmt;
use std::ops::Deref;

use crate::space::Space;

/// Largest observation any built-in environment returns (Acrobot: 6). Observations live inline
/// so that a step never touches the heap.
pub const MAX_OBS_DIM: usize = 8;

/// An observation as the environment returns it: `f32`, like gymnasium's `Box(dtype=float32)`.
/// Stored inline (no allocation); dereferences to `&[f32]`.
#[derive(Clone, Copy, PartialEq)]
pub struct Obs {
    buf: [f32; MAX_OBS_DIM],
    len: u8,
}

impl Obs {
    /// Copies `values` into an observation. Panics if longer than [`MAX_OBS_DIM`], which
    /// would be a bug in an environment, not a user error.
    pub fn from_slice(values: &[f32]) -> Self {
        assert!(
            values.len() <= MAX_OBS_DIM,
            "observation longer than MAX_OBS_DIM"
        );
        let mut buf = [0.0; MAX_OBS_DIM];
        buf[..values.len()].copy_from_slice(values);
        Obs {
            buf,
            len: values.len() as u8,
        }
    }
}

impl Deref for Obs {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[..self.len as usize]
    }
}

impl fmt::Debug for Obs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// An action: an integer for `Discrete` spaces, a slice of `f32` for `Box` spaces.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action<'a> {
    Discrete(i64),
    Continuous(&'a [f32]),
}

/// Statistics of a finished episode, as gymnasium's `RecordEpisodeStatistics` reports them
/// in `info["episode"]`: return `r`, length `l` and wall time `t` in seconds.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct EpisodeStatistics {
    pub r: f64,
    pub l: u64,
    pub t: f64,
}

/// Typed step/reset info. The classic-control environments return an empty info dict in
/// gymnasium; the only key the wrappers add is `episode`. A struct, not a map, so that a
/// step allocates nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Info {
    pub episode: Option<EpisodeStatistics>,
}

/// What `step` returns. `terminated` (the MDP reached a terminal state: do not bootstrap) and
/// `truncated` (a time limit cut the episode: bootstrap) are never merged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    pub obs: Obs,
    pub reward: f64,
    pub terminated: bool,
    pub truncated: bool,
    pub info: Info,
}

impl Step {
    /// True when the episode is over for either reason.
    pub fn done(&self) -> bool {
        self.terminated || self.truncated
    }
}

/// Everything that can go wrong when driving an environment.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnvError {
    #[error(
        "{env}: step() called before reset() or after the episode ended ({why}); call reset() first"
    )]
    ResetNeeded { env: String, why: &'static str },
    #[error("{env}: invalid action {action}: expected {expected}")]
    InvalidAction {
        env: String,
        action: String,
        expected: String,
    },
    #[error("{env}: invalid state {state:?}: {why}")]
    InvalidState {
        env: String,
        state: Vec<f64>,
        why: String,
    },
    #[error("unknown environment id '{id}'{hint}; known ids: {known}")]
    UnknownEnv {
        id: String,
        hint: String,
        known: String,
    },
    #[error("{env}: invalid option '{key}': {why}")]
    InvalidOption {
        env: String,
        key: String,
        why: String,
    },
}

/// A Gymnasium-style environment. Dyn-compatible, so `make("CartPole-v1")` can return any
/// environment behind a `Box<dyn Env>`.
pub trait Env {
    /// Registered id, e.g. `"CartPole-v1"`.
    fn id(&self) -> &str;
    fn observation_space(&self) -> Space;
    fn action_space(&self) -> Space;
    /// Starts an episode. `Some(seed)` reseeds the environment's generator (gymnasium's
    /// `reset(seed=...)`); `None` continues the current stream.
    fn reset(&mut self, seed: Option<u64>) -> (Obs, Info);
    /// Advances one step. Errors (and changes nothing) on an invalid action or when the episode
    /// has ended without a reset.
    fn step(&mut self, action: Action<'_>) -> Result<Step, EnvError>;
    /// The full internal state (`f64`, as gymnasium keeps it): the physical state, not the
    /// observation (Acrobot's state is angles, its observation their sines and cosines).
    fn state(&self) -> &[f64];
    /// The observation of the current internal state (what `reset`/`step` returned last, or
    /// what a `set_state` state looks like).
    fn observation(&self) -> Obs;
    /// Puts the environment in `state` and makes it steppable, for evaluating learned models
    /// from chosen states. Wrappers' counters are not touched: call `reset` first for a new episode.
    fn set_state(&mut self, state: &[f64]) -> Result<(), EnvError>;
}

impl<E: Env + ?Sized> Env for Box<E> {
    fn id(&self) -> &str {
        (**self).id()
    }
    fn observation_space(&self) -> Space {
        (**self).observation_space()
    }
    fn action_space(&self) -> Space {
        (**self).action_space()
    }
    fn reset(&mut self, seed: Option<u64>) -> (Obs, Info) {
        (**self).reset(seed)
    }
    fn step(&mut self, action: Action<'_>) -> Result<Step, EnvError> {
        (**self).step(action)
    }
    fn state(&self) -> &[f64] {
        (**self).state()
    }
    fn observation(&self) -> Obs {
        (**self).observation()
    }
    fn set_state(&mut self, state: &[f64]) -> Result<(), EnvError> {
        (**self).set_state(state)
    }
}
