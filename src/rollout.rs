//! `funcrl rollout`: play actions (given, or from a seeded random policy) in a real environment
//! from a seed or a chosen state, and print the transitions — the ground truth a model-based user
//! compares a learned model against.

use std::collections::BTreeMap;
use std::io::Write;

use funcrl_envs::{
    Action, Env, EnvError, EnvRng, MakeOptions, RecordEpisodeStatistics, Space, SpaceSample, Step,
    make_with,
};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::config::UsageError;

/// How actions are chosen when none are given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Uniform samples from the action space (gymnasium's `action_space.sample()`).
    #[default]
    Random,
}

/// Output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Human-readable: a row per step when replaying actions, a row per episode otherwise.
    #[default]
    Table,
    /// One JSON object per line: the reset (t = 0, reward null) then every step.
    Jsonl,
}

/// A rollout, as read from a TOML file (`--config`) and/or flags. Flags override the file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutConfig {
    /// Registered environment id, e.g. "CartPole-v1".
    pub env: String,
    /// Seeds the environment's reset and the random policy.
    #[serde(default)]
    pub seed: u64,
    /// Start every episode from this internal state instead of the seeded reset state.
    pub state: Option<Vec<f64>>,
    /// Actions to replay in one episode (integers for discrete spaces, numbers for Box spaces,
    /// one action per `action_dim` numbers).
    pub actions: Option<Vec<f64>>,
    #[serde(default)]
    pub policy: Policy,
    /// Episodes to run with the policy (ignored when actions are given).
    #[serde(default = "default_episodes")]
    pub episodes: u64,
    /// Overrides the registered time limit (gymnasium's `max_episode_steps`).
    pub max_steps: Option<u64>,
    #[serde(default)]
    pub format: Format,
    /// Environment options, e.g. `sutton_barto_reward = true`.
    #[serde(default)]
    pub kwargs: BTreeMap<String, toml::Value>,
}

fn default_episodes() -> u64 {
    1
}

/// Summary of one finished (or action-exhausted) episode.
#[derive(Clone, Debug, PartialEq)]
pub struct EpisodeSummary {
    pub episode_return: f64,
    pub length: u64,
    pub terminated: bool,
    pub truncated: bool,
}

#[derive(Serialize)]
struct JsonStep<'a> {
    episode: u64,
    t: u64,
    action: Option<JsonAction<'a>>,
    obs: &'a [f32],
    reward: Option<f64>,
    terminated: bool,
    truncated: bool,
}

#[derive(Serialize)]
#[serde(untagged)]
enum JsonAction<'a> {
    Discrete(i64),
    Continuous(&'a [f32]),
}

fn usage(e: EnvError) -> UsageError {
    UsageError::new(e.to_string())
}

/// Parses the flat action list into per-step actions for `space`.
fn parse_actions(env: &str, space: &Space, raw: &[f64]) -> Result<Vec<SpaceSample>, UsageError> {
    match space {
        Space::Discrete { n, start } => raw
            .iter()
            .enumerate()
            .map(|(i, &a)| {
                if a.fract() == 0.0 && space.contains_discrete(a as i64) {
                    Ok(SpaceSample::Discrete(a as i64))
                } else {
                    Err(UsageError::new(format!(
                        "action #{} ({a}) is invalid: {env} takes Discrete({n}), integers {start}..={}",
                        i + 1,
                        start + *n as i64 - 1
                    )))
                }
            })
            .collect(),
        Space::Box { low, .. } => {
            let d = low.len();
            if !raw.len().is_multiple_of(d) {
                return Err(UsageError::new(format!(
                    "{} action numbers given, but {env} takes actions of {d} numbers each",
                    raw.len()
                )));
            }
            if let Some(i) = raw.iter().position(|x| !x.is_finite()) {
                return Err(UsageError::new(format!(
                    "action number #{} ({}) is not finite: {env} takes finite numbers",
                    i + 1,
                    raw[i]
                )));
            }
            Ok(raw
                .chunks(d)
                .map(|c| SpaceSample::Box(c.iter().map(|x| *x as f32).collect()))
                .collect())
        }
    }
}

fn as_action(a: &SpaceSample) -> Action<'_> {
    match a {
        SpaceSample::Discrete(i) => Action::Discrete(*i),
        SpaceSample::Box(v) => Action::Continuous(v),
    }
}

/// Runs the rollout and writes its transitions to `out`; returns the episode summaries.
pub fn run(cfg: &RolloutConfig, out: &mut dyn Write) -> anyhow::Result<Vec<EpisodeSummary>> {
    let kwargs = cfg
        .kwargs
        .iter()
        .map(|(k, v)| {
            let s = match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), s)
        })
        .collect();
    let options = MakeOptions {
        max_episode_steps: cfg.max_steps,
        kwargs,
    };
    if cfg.max_steps == Some(0) {
        return Err(UsageError::new("max_steps must be at least 1").into());
    }
    let mut env = RecordEpisodeStatistics::new(make_with(&cfg.env, &options).map_err(usage)?);
    let space = env.action_space();
    let replay = cfg
        .actions
        .as_deref()
        .map(|raw| parse_actions(&cfg.env, &space, raw))
        .transpose()?;
    let episodes = if replay.is_some() { 1 } else { cfg.episodes };
    if episodes == 0 {
        return Err(UsageError::new("episodes must be at least 1").into());
    }
    // The policy's generator is derived from the seed but distinct from the env's stream.
    let mut policy_rng = EnvRng::seed_from_u64(cfg.seed ^ 0x9E37_79B9_7F4A_7C15);
    let mut printer = Printer::new(cfg.format, replay.is_some(), &cfg.env, out);
    let mut summaries = Vec::new();
    for ep in 0..episodes {
        let (mut obs, _) = env.reset(if ep == 0 { Some(cfg.seed) } else { None });
        if let Some(state) = &cfg.state {
            env.set_state(state).map_err(usage)?;
            obs = env.observation();
        }
        printer.reset(ep, &obs)?;
        let mut t = 0u64;
        let mut last: Option<Step> = None;
        loop {
            let action = match &replay {
                Some(list) => match list.get(t as usize) {
                    Some(a) => a.clone(),
                    None => break,
                },
                None => space.sample(&mut policy_rng),
            };
            let step = env.step(as_action(&action)).map_err(|e| match e {
                EnvError::InvalidAction { .. } => {
                    UsageError::new(format!("action #{}: {e}", t + 1))
                }
                other => UsageError::new(other.to_string()),
            })?;
            t += 1;
            printer.step(ep, t, &action, &step)?;
            last = Some(step);
            if step.done() {
                break;
            }
        }
        let (terminated, truncated) = last.map_or((false, false), |s| (s.terminated, s.truncated));
        let summary = EpisodeSummary {
            episode_return: last
                .and_then(|s| s.info.episode)
                .map_or_else(|| printer.partial_return, |e| e.r),
            length: t,
            terminated,
            truncated,
        };
        if let Some(list) = &replay
            && (t as usize) < list.len()
        {
            eprintln!(
                "note: the episode ended after {t} steps; the remaining {} actions were not used",
                list.len() - t as usize
            );
        }
        printer.episode_end(ep, &summary)?;
        summaries.push(summary);
    }
    printer.finish(&summaries)?;
    Ok(summaries)
}

struct Printer<'a> {
    format: Format,
    per_step: bool,
    env: String,
    out: &'a mut dyn Write,
    partial_return: f64,
}

impl<'a> Printer<'a> {
    fn new(format: Format, per_step: bool, env: &str, out: &'a mut dyn Write) -> Self {
        Printer {
            format,
            per_step,
            env: env.to_string(),
            out,
            partial_return: 0.0,
        }
    }

    fn reset(&mut self, ep: u64, obs: &[f32]) -> std::io::Result<()> {
        self.partial_return = 0.0;
        match self.format {
            Format::Jsonl => {
                let line = JsonStep {
                    episode: ep,
                    t: 0,
                    action: None,
                    obs,
                    reward: None,
                    terminated: false,
                    truncated: false,
                };
                writeln!(
                    self.out,
                    "{}",
                    serde_json::to_string(&line).expect("serializable")
                )
            }
            Format::Table if self.per_step => {
                writeln!(self.out, "{}: replaying actions", self.env)?;
                writeln!(
                    self.out,
                    "{:>5}  {:>8}  {:>9}  {:>5}  {:>5}  obs",
                    "t", "action", "reward", "term", "trunc"
                )?;
                writeln!(
                    self.out,
                    "{:>5}  {:>8}  {:>9}  {:>5}  {:>5}  {}",
                    0,
                    "-",
                    "-",
                    "-",
                    "-",
                    fmt_obs(obs)
                )
            }
            Format::Table => {
                if ep == 0 {
                    writeln!(self.out, "{}: random policy", self.env)?;
                    writeln!(
                        self.out,
                        "{:>7}  {:>12}  {:>7}  end",
                        "episode", "return", "length"
                    )?;
                }
                Ok(())
            }
        }
    }

    fn step(&mut self, ep: u64, t: u64, action: &SpaceSample, step: &Step) -> std::io::Result<()> {
        self.partial_return += step.reward;
        let act = match action {
            SpaceSample::Discrete(i) => JsonAction::Discrete(*i),
            SpaceSample::Box(v) => JsonAction::Continuous(v),
        };
        match self.format {
            Format::Jsonl => {
                let line = JsonStep {
                    episode: ep,
                    t,
                    action: Some(act),
                    obs: &step.obs,
                    reward: Some(step.reward),
                    terminated: step.terminated,
                    truncated: step.truncated,
                };
                writeln!(
                    self.out,
                    "{}",
                    serde_json::to_string(&line).expect("serializable")
                )
            }
            Format::Table if self.per_step => {
                let a = serde_json::to_string(&act).expect("serializable");
                writeln!(
                    self.out,
                    "{t:>5}  {a:>8}  {:>9.4}  {:>5}  {:>5}  {}",
                    step.reward,
                    step.terminated,
                    step.truncated,
                    fmt_obs(&step.obs)
                )
            }
            Format::Table => Ok(()),
        }
    }

    fn episode_end(&mut self, ep: u64, s: &EpisodeSummary) -> std::io::Result<()> {
        if self.format == Format::Table && !self.per_step {
            let end = match (s.terminated, s.truncated) {
                (true, true) => "terminated+truncated",
                (true, false) => "terminated",
                (false, true) => "truncated",
                (false, false) => "-",
            };
            writeln!(
                self.out,
                "{ep:>7}  {:>12.3}  {:>7}  {end}",
                s.episode_return, s.length
            )?;
        }
        Ok(())
    }

    fn finish(&mut self, all: &[EpisodeSummary]) -> std::io::Result<()> {
        if self.format == Format::Table && all.len() > 1 {
            let n = all.len() as f64;
            let mean = all.iter().map(|s| s.episode_return).sum::<f64>() / n;
            let var = all
                .iter()
                .map(|s| (s.episode_return - mean).powi(2))
                .sum::<f64>()
                / (n - 1.0);
            writeln!(
                self.out,
                "mean return {mean:.3} ± {:.3} (sd) over {} episodes",
                var.sqrt(),
                all.len()
            )?;
        }
        self.out.flush()
    }
}

fn fmt_obs(obs: &[f32]) -> String {
    let parts: Vec<String> = obs.iter().map(|x| format!("{x:>10.6}")).collect();
    format!("[{}]", parts.join(", "))
}
