//! The shared machinery of the classic-control environments: each one only supplies its
//! [`Dynamics`]; [`ClassicEnv`] turns that into a single [`Env`] and
//! [`crate::vector::SyncVectorEnv`] into a vectorised one, so the physics is written once.

use rand::Rng;

use crate::core::{Action, Env, EnvError, Info, MAX_OBS_DIM, Obs, Step};
use crate::space::Space;

pub use crate::seeding::EnvRng;
use crate::seeding::{np_random, np_random_from_entropy};

/// Largest internal state of a built-in environment (CartPole and Acrobot: 4).
pub const MAX_STATE_DIM: usize = 4;

/// Option `key=value` pairs given to `make_with` (gymnasium's `gym.make(id, **kwargs)`).
pub type Kwargs = [(String, String)];

/// The physics of one environment, with no episode bookkeeping. Pure functions on a state
/// slice so that the single and the vectorised environment share them bit for bit.
pub trait Dynamics: Clone + Send + Sync + 'static {
    const STATE_DIM: usize;
    const OBS_DIM: usize;
    /// The validated action type (`i64` index or a clipped `f32`).
    type Act: Copy;

    fn name(&self) -> &'static str;
    fn observation_space(&self) -> Space;
    fn action_space(&self) -> Space;
    /// Checks an action against the action space; an invalid one is an error naming what is allowed.
    fn parse_action(&self, action: Action<'_>) -> Result<Self::Act, EnvError>;
    /// Draws an initial state as gymnasium's `reset` does: the same NumPy draws in the same order,
    /// so a seeded reset gives gymnasium's initial state.
    fn reset_state<R: Rng + ?Sized>(&self, rng: &mut R, state: &mut [f64]);
    /// Advances `state` in place and returns `(reward, terminated)`.
    fn step_state(&self, state: &mut [f64], action: Self::Act) -> (f64, bool);
    /// Writes the observation of `state` into `out` (length `OBS_DIM`).
    fn observe(&self, state: &[f64], out: &mut [f32]);

    /// Steps every copy `i` with `!skip[i]` of a structure-of-arrays batch: `state` holds
    /// `STATE_DIM` columns of length `n`. Writes `rewards[i]` and `terminated[i]` for the stepped
    /// copies and leaves the skipped ones untouched. The default goes copy by copy through
    /// [`Dynamics::step_state`]; an environment may override it with a vectorised kernel.
    fn step_batch(
        &self,
        state: &mut [f64],
        actions: &[Self::Act],
        skip: &[bool],
        rewards: &mut [f64],
        terminated: &mut [bool],
    ) {
        let n = actions.len();
        let mut s = [0.0; MAX_STATE_DIM];
        for i in 0..n {
            if skip[i] {
                continue;
            }
            for (d, v) in s.iter_mut().enumerate().take(Self::STATE_DIM) {
                *v = state[d * n + i];
            }
            let (r, t) = self.step_state(&mut s[..Self::STATE_DIM], actions[i]);
            for (d, v) in s.iter().enumerate().take(Self::STATE_DIM) {
                state[d * n + i] = *v;
            }
            rewards[i] = r;
            terminated[i] = t;
        }
    }

    /// Writes the observation of every copy of a structure-of-arrays batch into `obs`
    /// (`n × OBS_DIM`, row by row). The default goes copy by copy through [`Dynamics::observe`].
    fn observe_batch(&self, state: &[f64], obs: &mut [f32]) {
        let n = state.len() / Self::STATE_DIM;
        let mut s = [0.0; MAX_STATE_DIM];
        for (i, out) in obs.chunks_exact_mut(Self::OBS_DIM).enumerate().take(n) {
            for (d, v) in s.iter_mut().enumerate().take(Self::STATE_DIM) {
                *v = state[d * n + i];
            }
            self.observe(&s[..Self::STATE_DIM], out);
        }
    }
}

/// Where an episode stands; stepping is only allowed while `Running`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    NeedsReset,
    Running,
    Terminated,
}

/// A single environment built from its dynamics (gymnasium's unwrapped env plus the
/// order-enforcing check). Time limits are added by [`crate::wrappers::TimeLimit`].
#[derive(Clone, Debug)]
pub struct ClassicEnv<D: Dynamics> {
    id: &'static str,
    dynamics: D,
    state: [f64; MAX_STATE_DIM],
    phase: Phase,
    rng: EnvRng,
}

impl<D: Dynamics> ClassicEnv<D> {
    pub fn new(id: &'static str, dynamics: D) -> Self {
        ClassicEnv {
            id,
            dynamics,
            state: [0.0; MAX_STATE_DIM],
            phase: Phase::NeedsReset,
            // Like gymnasium, an environment never seeded draws its seed from the OS.
            rng: np_random_from_entropy(),
        }
    }

    pub fn dynamics(&self) -> &D {
        &self.dynamics
    }

    fn obs(&self) -> Obs {
        let mut out = [0.0f32; MAX_OBS_DIM];
        self.dynamics
            .observe(&self.state[..D::STATE_DIM], &mut out[..D::OBS_DIM]);
        Obs::from_slice(&out[..D::OBS_DIM])
    }
}

impl<D: Dynamics> Env for ClassicEnv<D> {
    fn id(&self) -> &str {
        self.id
    }
    fn observation_space(&self) -> Space {
        self.dynamics.observation_space()
    }
    fn action_space(&self) -> Space {
        self.dynamics.action_space()
    }

    fn reset(&mut self, seed: Option<u64>) -> (Obs, Info) {
        if let Some(seed) = seed {
            self.rng = np_random(seed);
        }
        self.dynamics
            .reset_state(&mut self.rng, &mut self.state[..D::STATE_DIM]);
        self.phase = Phase::Running;
        (self.obs(), Info::default())
    }

    fn step(&mut self, action: Action<'_>) -> Result<Step, EnvError> {
        match self.phase {
            Phase::Running => {}
            Phase::NeedsReset => {
                return Err(EnvError::ResetNeeded {
                    env: self.id.into(),
                    why: "never reset",
                });
            }
            Phase::Terminated => {
                return Err(EnvError::ResetNeeded {
                    env: self.id.into(),
                    why: "terminated",
                });
            }
        }
        let act = self.dynamics.parse_action(action)?;
        let (reward, terminated) = self
            .dynamics
            .step_state(&mut self.state[..D::STATE_DIM], act);
        if terminated {
            self.phase = Phase::Terminated;
        }
        Ok(Step {
            obs: self.obs(),
            reward,
            terminated,
            truncated: false,
            info: Info::default(),
        })
    }

    fn state(&self) -> &[f64] {
        &self.state[..D::STATE_DIM]
    }

    fn observation(&self) -> Obs {
        self.obs()
    }

    fn set_state(&mut self, state: &[f64]) -> Result<(), EnvError> {
        validate_state(self.id, D::STATE_DIM, state)?;
        self.state[..D::STATE_DIM].copy_from_slice(state);
        self.phase = Phase::Running;
        Ok(())
    }
}

/// A state for `set_state` must have the environment's dimension and finite values.
pub(crate) fn validate_state(env: &str, dim: usize, state: &[f64]) -> Result<(), EnvError> {
    let why = if state.len() != dim {
        format!("expected {dim} values, got {}", state.len())
    } else if state.iter().any(|v| !v.is_finite()) {
        "values must be finite".to_string()
    } else {
        return Ok(());
    };
    Err(EnvError::InvalidState {
        env: env.into(),
        state: state.to_vec(),
        why,
    })
}

/// Validates a discrete action against `0..n`. Inlined: it runs once per copy per vector step.
#[inline]
pub(crate) fn parse_discrete(env: &str, n: i64, action: Action<'_>) -> Result<i64, EnvError> {
    match action {
        Action::Discrete(a) if (0..n).contains(&a) => Ok(a),
        other => Err(invalid_discrete(env, n, other)),
    }
}

#[cold]
#[inline(never)]
fn invalid_discrete(env: &str, n: i64, action: Action<'_>) -> EnvError {
    EnvError::InvalidAction {
        env: env.into(),
        action: format!("{action:?}"),
        expected: format!("Discrete({n}): an integer in 0..={}", n - 1),
    }
}

/// Reads `key` from `kwargs` with `parse`, or returns `default`; unknown keys are rejected by
/// [`check_known_keys`].
pub(crate) fn kwarg<T>(
    env: &str,
    kwargs: &Kwargs,
    key: &str,
    default: T,
    allowed: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T, EnvError> {
    match kwargs.iter().rev().find(|(k, _)| k == key) {
        None => Ok(default),
        Some((_, v)) => parse(v.trim()).ok_or_else(|| EnvError::InvalidOption {
            env: env.into(),
            key: key.into(),
            why: format!("got '{v}', allowed: {allowed}"),
        }),
    }
}

pub(crate) fn check_known_keys(env: &str, kwargs: &Kwargs, known: &[&str]) -> Result<(), EnvError> {
    for (k, _) in kwargs {
        if !known.contains(&k.as_str()) {
            let allowed = if known.is_empty() {
                "this environment takes no options".to_string()
            } else {
                format!("known options: {}", known.join(", "))
            };
            return Err(EnvError::InvalidOption {
                env: env.into(),
                key: k.clone(),
                why: allowed,
            });
        }
    }
    Ok(())
}

pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "True" | "1" => Some(true),
        "false" | "False" | "0" => Some(false),
        _ => None,
    }
}

pub(crate) fn parse_finite(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// `x ** 2` as Python/NumPy evaluate it on a float scalar: a call to libm's `pow`, which is not
/// always the correctly rounded `x * x` (about 1 value in 1,000 differs by an ulp). The exponent
/// goes through `black_box` so the compiler cannot turn the call back into a multiplication.
#[inline]
pub(crate) fn py_square(x: f64) -> f64 {
    x.powf(std::hint::black_box(2.0))
}

/// [`py_square`] for NumPy `float32` scalars (libm's `powf`).
#[inline]
pub(crate) fn py_square_f32(x: f32) -> f32 {
    x.powf(std::hint::black_box(2.0))
}
