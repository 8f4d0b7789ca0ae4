//! The training loop (docs/protocols.md): random warm-up, then per env step one ε-softmax action and
//! `updates_per_step` updates; evaluation without ε; HDF5 checkpoints from which a resumed run
//! takes exactly the steps an uninterrupted one would.
//!
//! Randomness is a pure function of (seed, step, stream): every step draws from a generator seeded
//! by those, and every episode resets the environment with a seed from (seed, episode). So a
//! checkpoint needs no generator state, and resuming reproduces the same numbers.

use std::path::Path;

use funcrl_bilevel::Precision;
pub use funcrl_bilevel::seed::{derive_seed, rng_for};
use funcrl_envs::{Action, Env, EnvError, MakeOptions, Obs, Space, Step};
use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::agent::{Agent, UpdateStats};
use crate::config::{AgentConfig, ModelConfig, ModelLearning, QConfig};
use crate::h5io;
use crate::replay::{PerConfig, ReplayBuffer, ReplayError, Transition};
use crate::targets::Ending;

fn d_env() -> String {
    "CartPole-v1".into()
}
fn d_total() -> u64 {
    200_000
}
fn d_warmup() -> u64 {
    1_000
}
fn d_one() -> u64 {
    1
}
fn d_batch() -> usize {
    256
}
fn d_eval_every() -> u64 {
    1_000
}
fn d_eval_episodes() -> u64 {
    10
}
fn d_ckpt() -> u64 {
    10_000
}
fn d_log_every() -> u64 {
    100
}

/// Replay settings. `capacity` defaults to `total_steps` (the protocol: the buffer holds all steps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    #[serde(default)]
    pub capacity: Option<usize>,
    /// Prioritized replay (absent: uniform sampling without replacement).
    #[serde(default)]
    pub prioritized: Option<PerConfig>,
}

/// A whole training run; the TOML file of `funcrl train`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    #[serde(default = "d_env")]
    pub env: String,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "d_total")]
    pub total_steps: u64,
    /// Uniform random actions, no updates, for the first `warmup_steps` env steps.
    #[serde(default = "d_warmup")]
    pub warmup_steps: u64,
    #[serde(default = "d_one")]
    pub updates_per_step: u64,
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    #[serde(default = "d_eval_every")]
    pub eval_every: u64,
    #[serde(default = "d_eval_episodes")]
    pub eval_episodes: u64,
    /// Checkpoint every this many env steps (0: only at the end).
    #[serde(default = "d_ckpt")]
    pub checkpoint_every: u64,
    /// Loss rows in losses.csv: means over this many steps.
    #[serde(default = "d_log_every")]
    pub log_every: u64,
    #[serde(default)]
    pub precision: Precision,
    pub agent: ModelLearning,
    #[serde(default)]
    pub q: QConfig,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub replay: ReplayConfig,
    /// Continuous (one-dimensional) action spaces, e.g. Pendulum-v1: the soft-Q acts over this
    /// many evenly spaced actions from low to high (default 5), and the world model sees the
    /// action value itself rather than a one-hot code.
    #[serde(default)]
    pub action_bins: Option<usize>,
}

/// What the agent's action indices mean for the env.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionMap {
    /// Index k is `Discrete(k)`.
    Discrete(usize),
    /// Index k is the k-th of these values (a one-dimensional `Box`).
    Grid(Vec<f64>),
}

impl ActionMap {
    pub fn len(&self) -> usize {
        match self {
            ActionMap::Discrete(n) => *n,
            ActionMap::Grid(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The env's action space read through `bins` (None: the default 5 for continuous spaces).
    pub fn new(space: &Space, env: &str, bins: Option<usize>) -> Result<Self, String> {
        match space {
            Space::Discrete { n, .. } => match bins {
                None => Ok(ActionMap::Discrete(*n as usize)),
                Some(_) => Err(format!(
                    "action_bins: {env} has a discrete action space; action_bins only applies to continuous ones (Pendulum-v1)"
                )),
            },
            Space::Box { low, high } => {
                if low.len() != 1 {
                    return Err(format!(
                        "env: {env} has a {}-dimensional action space; the soft-Q agents handle one dimension",
                        low.len()
                    ));
                }
                let k = bins.unwrap_or(5);
                if !(2..=10_000).contains(&k) {
                    return Err(format!("action_bins must lie in 2..=10000, got {k}"));
                }
                let (lo, hi) = (low[0] as f64, high[0] as f64);
                Ok(ActionMap::Grid(
                    (0..k)
                        .map(|i| lo + (hi - lo) * i as f64 / (k - 1) as f64)
                        .collect(),
                ))
            }
        }
    }

    /// The model's encoding of actions: None for one-hot, the values for a grid.
    pub fn values(&self) -> Option<Vec<f64>> {
        match self {
            ActionMap::Discrete(_) => None,
            ActionMap::Grid(v) => Some(v.clone()),
        }
    }
}

impl TrainConfig {
    /// Checks what serde cannot; the message names the field and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        funcrl_envs::spec(&self.env).map_err(|e| format!("env: {e}"))?;
        let env = funcrl_envs::make(&self.env).map_err(|e| format!("env: {e}"))?;
        ActionMap::new(&env.action_space(), &self.env, self.action_bins)?;
        let pos = |name: &str, v: f64| {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(format!("{name} must be > 0, got {v}"))
            }
        };
        pos("total_steps", self.total_steps as f64)?;
        pos("batch_size", self.batch_size as f64)?;
        pos("eval_every", self.eval_every as f64)?;
        pos("eval_episodes", self.eval_episodes as f64)?;
        pos("log_every", self.log_every as f64)?;
        pos("q.lr", self.q.lr)?;
        pos("q.alpha", self.q.alpha)?;
        pos("model.lr", self.model.lr)?;
        if !(0.0..=1.0).contains(&self.q.tau) || !(0.0..=1.0).contains(&self.q.gamma) {
            return Err("q.tau and q.gamma must lie in [0, 1]".into());
        }
        if !(0.0..=1.0).contains(&self.q.epsilon) {
            return Err(format!(
                "q.epsilon must lie in [0, 1], got {}",
                self.q.epsilon
            ));
        }
        if self.warmup_steps < self.batch_size as u64 {
            return Err(format!(
                "warmup_steps ({}) must be at least batch_size ({}): batches are drawn without replacement",
                self.warmup_steps, self.batch_size
            ));
        }
        if self.replay.capacity.is_some_and(|c| c < self.batch_size) {
            return Err("replay.capacity must be at least batch_size".into());
        }
        let widths = |name: &str, h: &[usize]| {
            if h.contains(&0) {
                Err(format!(
                    "{name} = {h:?}: every hidden width must be at least 1"
                ))
            } else {
                Ok(())
            }
        };
        widths("q.hidden", &self.q.hidden)?;
        widths("model.hidden", &self.model.hidden)?;
        if let ModelLearning::Vep { hidden, .. } = &self.agent {
            widths("agent.hidden", hidden)?;
        }
        // Sanity bounds on counts that multiply the work of every step or evaluation, so that a
        // typo is an error instead of a run that never finishes.
        let at_most = |name: &str, v: u64, max: u64| {
            if v > max {
                Err(format!("{name} = {v} is above the sane bound {max}"))
            } else {
                Ok(())
            }
        };
        at_most("eval_episodes", self.eval_episodes, 100_000)?;
        at_most("updates_per_step", self.updates_per_step, 1_000)?;
        at_most("q.steps", self.q.steps as u64, 1_000)?;
        match &self.agent {
            ModelLearning::Funcid { adjoint_steps, .. } => {
                at_most("agent.adjoint_steps", *adjoint_steps as u64, 10_000)?
            }
            ModelLearning::Omd { cg_iterations, .. } => {
                at_most("agent.cg_iterations", *cg_iterations as u64, 10_000)?
            }
            ModelLearning::Vep { functions, .. } => {
                at_most("agent.functions", *functions as u64, 1_000)?
            }
            _ => {}
        }
        if self.total_steps <= self.warmup_steps {
            return Err(format!(
                "total_steps ({}) must exceed warmup_steps ({}): no update would run",
                self.total_steps, self.warmup_steps
            ));
        }
        if self.updates_per_step == 0 {
            return Err("updates_per_step must be at least 1".into());
        }
        self.check_memory(env.observation_space().flat_dim())?;
        if self.q.steps == 0 {
            return Err("q.steps must be at least 1".into());
        }
        if let Some(c) = self.model.grad_clip {
            pos("model.grad_clip", c)?;
        }
        for (on, field) in [
            (self.model.clip_next_state, "model.clip_next_state"),
            (self.model.clip_reward, "model.clip_reward"),
            (self.q.clip_target, "q.clip_target"),
        ] {
            if on && crate::rules::solver_method(&self.agent).is_some() {
                return Err(format!(
                    "{field} is implemented for the host-kernel agents only: not with funcid mode = \"network\" or omd inverse = \"cg\""
                ));
            }
        }
        if let ModelLearning::Vep { functions: 0, .. } = self.agent {
            return Err("agent.functions must be at least 1 for vep".into());
        }
        Ok(())
    }

    /// Refuses a run whose replay buffer and networks would not fit in the memory available
    /// (`MemAvailable` of /proc/meminfo; skipped where it cannot be read), before allocating.
    fn check_memory(&self, obs_dim: usize) -> Result<(), String> {
        let cap = self
            .replay
            .capacity
            .map_or(self.total_steps as f64, |c| c as f64);
        // obs, next_obs, action (f32), reward (f64), ending (u8), priority (f64).
        let replay = cap * ((2 * obs_dim + 1) as f64 * 4.0 + 17.0);
        let mlp = funcrl_bilevel::model::param_count;
        let (o, h) = (obs_dim + 8, &self.model.hidden);
        let params = 2.0 * mlp(obs_dim, &self.q.hidden, 8) + mlp(o, h, obs_dim) + mlp(o, h, 1);
        // Parameters, target, Adam moments, gradients and activations: a generous 16 copies.
        let need = replay + params * 8.0 * 16.0;
        let Some(avail) = funcrl_bilevel::ctx::mem_available_bytes() else {
            return Ok(());
        };
        if need > avail {
            let gib = |b: f64| b / (1u64 << 30) as f64;
            return Err(format!(
                "this run needs ≈ {:.1} GiB (replay buffer of {cap:.0} transitions: {:.1} GiB; networks: {:.1} GiB), more than the {:.1} GiB available: lower total_steps or replay.capacity, or q.hidden/model.hidden",
                gib(need),
                gib(replay),
                gib(need - replay),
                gib(avail)
            ));
        }
        Ok(())
    }

    pub fn agent_config(&self) -> AgentConfig {
        AgentConfig {
            learning: self.agent.clone(),
            q: self.q.clone(),
            model: self.model.clone(),
            precision: self.precision,
            action_values: None,
        }
    }
}

/// Random streams: one generator per (seed, counter, stream).
const STREAM_INIT: u64 = 1;
const STREAM_ACT: u64 = 2;
const STREAM_SAMPLE: u64 = 3;
const STREAM_EPISODE: u64 = 4;
const STREAM_EVAL: u64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error("checkpoint: {0}")]
    Hdf5(#[from] hdf5::Error),
    #[error("checkpoint {0}: {1}")]
    Checkpoint(String, String),
}

/// The checkpoint format this build writes and reads (1: datasets under agent/, buffer/, state/
/// with a CRC-32 of them in meta/checksum).
pub const CHECKPOINT_VERSION: u64 = 1;
const CHECKSUMMED: [&str; 3] = ["agent", "buffer", "state"];

/// What one env step did.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepOutcome {
    /// Losses of the updates of this step (the last one when several).
    pub update: Option<UpdateStats>,
    /// Return of a training episode that ended on this step.
    pub episode_return: Option<f64>,
}

pub struct Trainer {
    pub cfg: TrainConfig,
    pub agent: Agent,
    pub buffer: ReplayBuffer,
    env: Box<dyn Env>,
    max_episode_steps: u64,
    /// Env steps taken so far.
    pub step: u64,
    pub episode: u64,
    ep_return: f64,
    ep_len: u64,
    obs: Obs,
    actions: ActionMap,
}

/// Steps `env` with the agent's action index `k`.
pub(crate) fn step_with(
    env: &mut dyn Env,
    actions: &ActionMap,
    k: usize,
) -> Result<Step, EnvError> {
    match actions {
        ActionMap::Discrete(_) => env.step(Action::Discrete(k as i64)),
        ActionMap::Grid(v) => env.step(Action::Continuous(&[v[k] as f32])),
    }
}

/// The env without a wrapper time limit: the trainer counts episode steps itself, so that a
/// resumed episode keeps its count.
pub(crate) fn make_env(id: &str) -> Result<(Box<dyn Env>, u64), EnvError> {
    let spec = funcrl_envs::spec(id)?;
    let env = funcrl_envs::make_with(
        id,
        &MakeOptions {
            max_episode_steps: Some(u64::MAX),
            kwargs: vec![],
        },
    )?;
    Ok((env, spec.max_episode_steps))
}

pub(crate) fn obs_f64(o: &[f32]) -> Vec<f64> {
    o.iter().map(|&x| x as f64).collect()
}

impl Trainer {
    pub fn new(cfg: TrainConfig) -> Result<Self, TrainError> {
        cfg.validate().map_err(TrainError::Config)?;
        let (mut env, max_episode_steps) = make_env(&cfg.env)?;
        let obs_dim = env.observation_space().flat_dim();
        let actions = ActionMap::new(&env.action_space(), &cfg.env, cfg.action_bins)
            .map_err(TrainError::Config)?;
        let mut agent_cfg = cfg.agent_config();
        agent_cfg.action_values = actions.values();
        let agent = Agent::new(
            agent_cfg,
            obs_dim,
            actions.len(),
            &mut rng_for(cfg.seed, 0, STREAM_INIT),
        );
        let buffer = ReplayBuffer::new(
            cfg.replay.capacity.unwrap_or(cfg.total_steps as usize),
            obs_dim,
            1,
            cfg.replay.prioritized,
        );
        let (obs, _) = env.reset(Some(derive_seed(cfg.seed, 0, STREAM_EPISODE)));
        Ok(Self {
            cfg,
            agent,
            buffer,
            env,
            max_episode_steps,
            step: 0,
            episode: 0,
            ep_return: 0.0,
            ep_len: 0,
            obs,
            actions,
        })
    }

    pub fn done(&self) -> bool {
        self.step >= self.cfg.total_steps
    }

    /// One env step, then the updates (after warm-up).
    pub fn env_step(&mut self) -> Result<StepOutcome, TrainError> {
        let mut out = StepOutcome::default();
        let mut rng = rng_for(self.cfg.seed, self.step, STREAM_ACT);
        let action = if self.step < self.cfg.warmup_steps {
            rng.random_range(0..self.agent.n_actions)
        } else {
            self.agent
                .act(&obs_f64(&self.obs), self.cfg.q.epsilon, &mut rng)
        };
        let st = step_with(self.env.as_mut(), &self.actions, action)?;
        self.ep_len += 1;
        self.ep_return += st.reward;
        let ending = Ending::from_flags(
            st.terminated,
            st.truncated || self.ep_len >= self.max_episode_steps,
        );
        self.buffer.push(Transition {
            obs: &self.obs,
            action: &[action as f32],
            reward: st.reward,
            next_obs: &st.obs,
            ending,
        });
        self.obs = st.obs;
        if ending.episode_over() {
            out.episode_return = Some(self.ep_return);
            self.episode += 1;
            self.ep_return = 0.0;
            self.ep_len = 0;
            self.obs = self
                .env
                .reset(Some(derive_seed(
                    self.cfg.seed,
                    self.episode,
                    STREAM_EPISODE,
                )))
                .0;
        }
        self.step += 1;
        if self.step > self.cfg.warmup_steps {
            let progress = self.step as f64 / self.cfg.total_steps as f64;
            for k in 0..self.cfg.updates_per_step {
                let mut rng = rng_for(
                    self.cfg.seed,
                    self.step * self.cfg.updates_per_step + k,
                    STREAM_SAMPLE,
                );
                let batch = self
                    .buffer
                    .sample(self.cfg.batch_size, progress, &mut rng)?;
                let (stats, td) = self.agent.update(&batch, &mut rng);
                self.buffer.update_priorities(&batch.indices, &td);
                out.update = Some(stats);
                if stats.non_finite().is_some() {
                    return Ok(out); // the caller stops the run
                }
            }
        }
        Ok(out)
    }

    /// Returns of `eval_episodes` episodes of the softmax policy without ε, on a separate env
    /// seeded from (seed, step); the training episode is not disturbed.
    pub fn evaluate(&self) -> Result<Vec<f64>, TrainError> {
        let (mut env, limit) = make_env(&self.cfg.env)?;
        let mut rng = rng_for(self.cfg.seed, self.step, STREAM_EVAL);
        let mut returns = Vec::new();
        for j in 0..self.cfg.eval_episodes {
            let (mut obs, _) = env.reset(Some(derive_seed(
                self.cfg.seed,
                self.step * 1_000 + j,
                STREAM_EVAL,
            )));
            let mut total = 0.0;
            for _ in 0..limit {
                let a = self.agent.act(&obs_f64(&obs), 0.0, &mut rng);
                let st = step_with(env.as_mut(), &self.actions, a)?;
                total += st.reward;
                obs = st.obs;
                if st.terminated || st.truncated {
                    break;
                }
            }
            returns.push(total);
        }
        Ok(returns)
    }

    /// Writes everything a resume needs into one HDF5 file at `path`.
    pub fn save_checkpoint(&self, path: &Path) -> Result<(), TrainError> {
        let f = hdf5::File::create(path)?;
        let a = f.create_group("agent")?;
        let ag = &self.agent;
        h5io::put(&a, "q", &ag.q)?;
        h5io::put(&a, "q_target", &ag.q_target)?;
        h5io::put(&a, "omega", &ag.omega)?;
        for (name, opt) in [("q_opt", &ag.q_opt), ("model_opt", &ag.model_opt)] {
            h5io::put_u64(&a, &format!("{name}_t"), opt.t as u64)?;
            h5io::put(&a, &format!("{name}_m"), &opt.m)?;
            h5io::put(&a, &format!("{name}_v"), &opt.v)?;
        }
        self.buffer.save_group(&f.create_group("buffer")?)?;
        let s = f.create_group("state")?;
        h5io::put(
            &s,
            "counters",
            &[self.step, self.episode, self.ep_len, self.cfg.seed],
        )?;
        h5io::put(&s, "ep_return", &[self.ep_return])?;
        h5io::put(&s, "obs", &self.obs)?;
        h5io::put(&s, "env_state", self.env.state())?;
        let sum = h5io::digest(&f, &CHECKSUMMED)?;
        let m = f.create_group("meta")?;
        h5io::put_u64(&m, "format_version", CHECKPOINT_VERSION)?;
        h5io::put_u64(&m, "checksum", sum as u64)?;
        Ok(())
    }

    /// Rebuilds the trainer of `cfg` and restores the state saved by [`save_checkpoint`], after
    /// checking the format version, the checksum of every dataset and the invariants of what it
    /// holds (sizes, counters, finite parameters and optimiser states). Any failure is
    /// [`TrainError::Checkpoint`], naming the file and what is wrong.
    pub fn load_checkpoint(cfg: TrainConfig, path: &Path) -> Result<Self, TrainError> {
        Self::load_verified(cfg, path, false)
    }

    /// For reading only (`funcrl inspect`): like [`Trainer::load_checkpoint`], but a checkpoint
    /// written before checkpoints carried a format version and checksum is accepted unverified
    /// (its invariants are still checked). Returns whether it was such a legacy file.
    pub fn load_checkpoint_for_reading(
        cfg: TrainConfig,
        path: &Path,
    ) -> Result<(Self, bool), TrainError> {
        let legacy = hdf5::File::open(path)
            .map(|f| !f.link_exists("meta"))
            .unwrap_or(false);
        Ok((Self::load_verified(cfg, path, legacy)?, legacy))
    }

    fn load_verified(cfg: TrainConfig, path: &Path, legacy: bool) -> Result<Self, TrainError> {
        let src = path.display().to_string();
        let bad = |why: String| TrainError::Checkpoint(src.clone(), why);
        let t = Self::load_unchecked(cfg, path, legacy).map_err(|e| match e {
            TrainError::Checkpoint(..) | TrainError::Config(_) => e,
            other => bad(format!("unreadable or damaged ({other})")),
        })?;
        t.check_invariants().map_err(bad)?;
        Ok(t)
    }

    /// Every parameter and optimiser state is finite: what a checkpoint must hold to be worth
    /// keeping (the NaN guard never replaces a good checkpoint with one that fails this).
    pub fn finite_state(&self) -> Result<(), String> {
        let ag = &self.agent;
        for (name, v) in [
            ("agent/q", &ag.q),
            ("agent/q_target", &ag.q_target),
            ("agent/omega", &ag.omega),
            ("agent/q_opt_m", &ag.q_opt.m),
            ("agent/q_opt_v", &ag.q_opt.v),
            ("agent/model_opt_m", &ag.model_opt.m),
            ("agent/model_opt_v", &ag.model_opt.v),
        ] {
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(format!("{name}[{i}] = {} is not finite", v[i]));
            }
        }
        Ok(())
    }

    /// What a consistent checkpoint satisfies.
    fn check_invariants(&self) -> Result<(), String> {
        self.finite_state()?;
        if self.episode > self.step || self.ep_len > self.step {
            return Err(format!(
                "counters out of range (step {}, episode {}, episode length {})",
                self.step, self.episode, self.ep_len
            ));
        }
        let want = (self.step as usize).min(self.buffer.capacity());
        if self.buffer.len() != want {
            return Err(format!(
                "the replay buffer holds {} transitions after {} steps (capacity {}): expected {want}",
                self.buffer.len(),
                self.step,
                self.buffer.capacity()
            ));
        }
        if !self.ep_return.is_finite() || self.obs.iter().any(|x| !x.is_finite()) {
            return Err("the episode state is not finite".into());
        }
        Ok(())
    }

    fn load_unchecked(cfg: TrainConfig, path: &Path, legacy: bool) -> Result<Self, TrainError> {
        let mut t = Trainer::new(cfg)?;
        let src = path.display().to_string();
        let bad = |why: String| TrainError::Checkpoint(src.clone(), why);
        let f = hdf5::File::open(path)?;
        if !legacy {
            Self::verify(&f, &bad)?;
        }
        Self::restore(&mut t, &f, &bad, &src)?;
        Ok(t)
    }

    /// The format version and the checksum of every dataset.
    fn verify(f: &hdf5::File, bad: &dyn Fn(String) -> TrainError) -> Result<(), TrainError> {
        let version = f
            .group("meta")
            .and_then(|m| h5io::get_u64(&m, "format_version"))
            .map_err(|_| {
                bad("no format version: damaged, or written by a funcrl before checkpoints carried a checksum".into())
            })?;
        if version != CHECKPOINT_VERSION {
            return Err(bad(format!(
                "format version {version}; this funcrl reads version {CHECKPOINT_VERSION}"
            )));
        }
        let stored = h5io::get_u64(&f.group("meta")?, "checksum")?;
        let sum = h5io::digest(f, &CHECKSUMMED)? as u64;
        if sum != stored {
            return Err(bad(format!(
                "checksum mismatch (stored {stored:#010x}, contents {sum:#010x}): the file is damaged"
            )));
        }
        Ok(())
    }

    /// The trainer's state from an opened checkpoint.
    fn restore(
        t: &mut Trainer,
        f: &hdf5::File,
        bad: &dyn Fn(String) -> TrainError,
        src: &str,
    ) -> Result<(), TrainError> {
        let a = f.group("agent")?;
        let load = |len: usize, name: &str| -> Result<Vec<f64>, TrainError> {
            let v = h5io::get::<f64>(&a, name)?;
            if v.len() != len {
                return Err(bad(format!(
                    "{name} has {} values, the config's networks {len} (config changed since the checkpoint?)",
                    v.len(),
                )));
            }
            Ok(v)
        };
        let (nq, nw) = (t.agent.q.len(), t.agent.omega.len());
        t.agent.q = load(nq, "q")?;
        t.agent.q_target = load(nq, "q_target")?;
        t.agent.omega = load(nw, "omega")?;
        for (name, len) in [("q_opt", nq), ("model_opt", nw)] {
            let step = h5io::get_u64(&a, &format!("{name}_t"))? as i32;
            let (m, v) = (
                load(len, &format!("{name}_m"))?,
                load(len, &format!("{name}_v"))?,
            );
            let opt = if name == "q_opt" {
                &mut t.agent.q_opt
            } else {
                &mut t.agent.model_opt
            };
            (opt.t, opt.m, opt.v) = (step, m, v);
        }
        t.buffer = ReplayBuffer::load_group(&f.group("buffer")?, src)?;
        let s = f.group("state")?;
        let c = h5io::get::<u64>(&s, "counters")?;
        if c.len() != 4 {
            return Err(bad("state/counters must hold 4 values".into()));
        }
        if c[3] != t.cfg.seed {
            return Err(bad(format!(
                "checkpoint has seed {}, the config {}",
                c[3], t.cfg.seed
            )));
        }
        (t.step, t.episode, t.ep_len) = (c[0], c[1], c[2]);
        t.ep_return = h5io::get::<f64>(&s, "ep_return")?[0];
        t.obs = Obs::from_slice(&h5io::get::<f32>(&s, "obs")?);
        // Same episode seed as the original reset, then the saved physical state.
        t.env
            .reset(Some(derive_seed(t.cfg.seed, t.episode, STREAM_EPISODE)));
        t.env.set_state(&h5io::get::<f64>(&s, "env_state")?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state whose losses are finite but whose optimiser moment overflowed is named, so that
    /// the NaN guard never keeps it as a checkpoint.
    #[test]
    fn finite_state_names_the_first_non_finite_value() {
        let cfg: TrainConfig = toml::from_str(
            "env = \"CartPole-v1\"\nseed = 1\ntotal_steps = 400\nwarmup_steps = 300\n\
             batch_size = 32\neval_every = 400\neval_episodes = 1\n[agent]\nkind = \"mle\"\n",
        )
        .unwrap();
        let mut t = Trainer::new(cfg).unwrap();
        assert!(t.finite_state().is_ok());
        t.agent.q_opt.v[3] = f64::INFINITY;
        assert_eq!(
            t.finite_state().unwrap_err(),
            "agent/q_opt_v[3] = inf is not finite"
        );
    }

    #[test]
    fn action_grid_spans_the_box() {
        let space = Space::Box {
            low: vec![-2.0],
            high: vec![2.0],
        };
        let m = ActionMap::new(&space, "Pendulum-v1", Some(3)).unwrap();
        assert_eq!(m, ActionMap::Grid(vec![-2.0, 0.0, 2.0]));
        assert_eq!(
            ActionMap::new(&space, "Pendulum-v1", None).unwrap().len(),
            5
        );
        let two_d = Space::Box {
            low: vec![-1.0; 2],
            high: vec![1.0; 2],
        };
        assert!(
            ActionMap::new(&two_d, "X", None)
                .unwrap_err()
                .contains("2-dimensional")
        );
        let d = ActionMap::new(&Space::discrete(2), "CartPole-v1", None).unwrap();
        assert_eq!((d.len(), d.values()), (2, None));
    }
}
