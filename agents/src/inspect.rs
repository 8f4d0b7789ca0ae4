//! Model diagnostics: how good is a learned world model, and good at what? On held-out real
//! transitions (fresh episodes of the agent's own behaviour policy, never in its replay) it
//! measures the one-step state error, the reward error, the value error |V̄(ŝ′) − V̄(s′)| under the
//! agent's own target Q̄ — the error that reaches the Q-learning targets — and the open-loop error
//! of rolling the model forward h steps along the real actions. The environment itself, driven
//! through `set_state`/`step`, is the exact model ([`TrueDynamics`]), so every error is against
//! the true dynamics, and the true dynamics inspected in place of the model scores zero.
//!
//! A run that clips its model's outputs (`model.clip_next_state`, `model.clip_reward`) or its
//! targets (`q.clip_target`) is measured as its Q step uses the model ([`AsUsed`]): the raw heads
//! of such a run can be far off where the clip makes them irrelevant (a reward head left at 0
//! that the clip maps to CartPole's constant 1), and reporting them would misread the model.

use funcrl_envs::Env;
use rand::{RngExt, SeedableRng, rngs::StdRng};
use serde::Serialize;

use crate::agent::Agent;
use crate::replay::{Batch, ReplayBuffer};
use crate::targets::{sample_index, softmax_policy, value_range};
use crate::trainer::{ActionMap, make_env, obs_f64, step_with};

/// One real transition with the environment's internal state before it (what `set_state` takes;
/// Acrobot's differs from its observation).
#[derive(Debug, Clone)]
pub struct Record {
    pub state: Vec<f64>,
    pub obs: Vec<f64>,
    pub action: usize,
    pub reward: f64,
    pub next_obs: Vec<f64>,
    pub terminated: bool,
    /// Index of the episode it belongs to (open-loop rollouts stay inside one).
    pub episode: usize,
}

/// A one-step model of an environment, in observation space.
pub trait Dynamics {
    /// (ŝ′, r̂) for one step from `record`'s state/observation under `action`.
    fn predict(&self, record: &Record, action: usize) -> (Vec<f64>, f64);

    /// Open loop: the predicted observations after each of `actions`, starting from `start`
    /// and feeding the model its own predictions.
    fn rollout(&self, start: &Record, actions: &[usize]) -> Vec<Vec<f64>>;

    /// The interval Q targets built from this model are clipped to (None: not clipped).
    fn target_range(&self) -> Option<(f64, f64)> {
        None
    }

    /// The config keys of the clips applied to the predictions (empty: the raw model).
    fn clips(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A learned model's open loop: from `start`'s observation, each step fed the previous prediction.
fn open_loop(
    start: &Record,
    actions: &[usize],
    step: impl Fn(&[f64], usize) -> Vec<f64>,
) -> Vec<Vec<f64>> {
    let mut obs = start.obs.clone();
    actions
        .iter()
        .map(|&a| {
            obs = step(&obs, a);
            obs.clone()
        })
        .collect()
}

impl Dynamics for Agent {
    fn predict(&self, record: &Record, action: usize) -> (Vec<f64>, f64) {
        self.model_predict(&record.obs, action)
    }

    fn rollout(&self, start: &Record, actions: &[usize]) -> Vec<Vec<f64>> {
        open_loop(start, actions, |obs, a| self.model_predict(obs, a).0)
    }
}

/// An agent's model as its Q step uses it: ŝ′ and r̂ clipped to the replay buffer's ranges
/// where the config says so, targets clipped to the value range of the buffer's rewards with
/// `q.clip_target`. With no clip on, it predicts exactly what the raw model does.
pub struct AsUsed<'a> {
    agent: &'a Agent,
    /// The buffer's ranges, in the batch form the agent's clip functions read.
    ranges: Batch,
}

impl<'a> AsUsed<'a> {
    pub fn new(agent: &'a Agent, buffer: &ReplayBuffer) -> Self {
        // An empty buffer has no ranges (its bounds are still ±∞ the wrong way round).
        let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect();
        let (lo, hi) = buffer.next_range();
        let ranges = match buffer.is_empty() {
            true => Batch::default(),
            false => Batch {
                next_lo: f64s(lo),
                next_hi: f64s(hi),
                reward_range: Some(buffer.reward_range()),
                ..Batch::default()
            },
        };
        Self { agent, ranges }
    }

    fn clipped(&self, obs: &[f64], action: usize) -> (Vec<f64>, f64) {
        let (mut s2, r) = self.agent.model_predict(obs, action);
        self.agent.clip_next(&self.ranges, &mut s2);
        let mut r = [r];
        self.agent.clip_reward(&self.ranges, &mut r);
        (s2, r[0])
    }
}

impl Dynamics for AsUsed<'_> {
    fn predict(&self, record: &Record, action: usize) -> (Vec<f64>, f64) {
        self.clipped(&record.obs, action)
    }

    fn rollout(&self, start: &Record, actions: &[usize]) -> Vec<Vec<f64>> {
        open_loop(start, actions, |obs, a| self.clipped(obs, a).0)
    }

    fn target_range(&self) -> Option<(f64, f64)> {
        let q = &self.agent.cfg.q;
        let range = self.ranges.reward_range.filter(|_| q.clip_target)?;
        Some(value_range(range, q.gamma, q.alpha, self.agent.n_actions))
    }

    fn clips(&self) -> Vec<String> {
        let c = &self.agent.cfg;
        let on = [
            (
                c.model.clip_next_state && !self.ranges.next_lo.is_empty(),
                "model.clip_next_state",
            ),
            (
                c.model.clip_reward && self.ranges.reward_range.is_some(),
                "model.clip_reward",
            ),
            (self.target_range().is_some(), "q.clip_target"),
        ];
        on.iter()
            .filter(|(b, _)| *b)
            .map(|(_, k)| k.to_string())
            .collect()
    }
}

/// The environment as its own exact model (`set_state`, then `step`).
pub struct TrueDynamics {
    env: std::cell::RefCell<Box<dyn Env>>,
    actions: ActionMap,
}

impl TrueDynamics {
    pub fn new(env_id: &str, actions: ActionMap) -> Result<Self, String> {
        let (env, _) = make_env(env_id).map_err(|e| e.to_string())?;
        Ok(Self {
            env: std::cell::RefCell::new(env),
            actions,
        })
    }
}

impl Dynamics for TrueDynamics {
    fn predict(&self, record: &Record, action: usize) -> (Vec<f64>, f64) {
        let mut env = self.env.borrow_mut();
        env.reset(Some(0));
        env.set_state(&record.state)
            .expect("a state the env produced");
        let st = step_with(env.as_mut(), &self.actions, action).expect("a valid action");
        (obs_f64(&st.obs), st.reward)
    }

    fn rollout(&self, start: &Record, actions: &[usize]) -> Vec<Vec<f64>> {
        let mut env = self.env.borrow_mut();
        env.reset(Some(0));
        env.set_state(&start.state)
            .expect("a state the env produced");
        actions
            .iter()
            .map(|&a| {
                let st = step_with(env.as_mut(), &self.actions, a).expect("a valid action");
                obs_f64(&st.obs)
            })
            .collect()
    }
}

/// Collects `n` real transitions from fresh episodes (seeded from `seed`) of the agent's
/// behaviour policy: softmax(Q/α) with probability ε of a uniform action.
pub fn collect(
    agent: &Agent,
    env_id: &str,
    actions: &ActionMap,
    epsilon: f64,
    n: usize,
    seed: u64,
) -> Result<Vec<Record>, String> {
    let (mut env, limit) = make_env(env_id).map_err(|e| e.to_string())?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n);
    let mut episode = 0;
    while out.len() < n {
        let (mut obs, _) = env.reset(Some(rng.random::<u64>()));
        for _ in 0..limit {
            let o = obs_f64(&obs);
            let state = env.state().to_vec();
            let a = agent.act(&o, epsilon, &mut rng);
            let st = step_with(env.as_mut(), actions, a).map_err(|e| e.to_string())?;
            out.push(Record {
                state,
                obs: o,
                action: a,
                reward: st.reward,
                next_obs: obs_f64(&st.obs),
                terminated: st.terminated,
                episode,
            });
            obs = st.obs;
            if st.terminated || st.truncated || out.len() == n {
                break;
            }
        }
        episode += 1;
    }
    Ok(out)
}

/// How decisive a run's policy is, and what sampling from it costs: the evaluation policy
/// (softmax(Q/α) without ε, what `evals.csv` logs) against the greedy policy argmax Q on the same
/// episode seeds. A policy whose action gaps are small against α samples a wrong action now and
/// then, and on CartPole one wrong push near the edge ends an episode: evaluation then dips
/// although the greedy policy still balances.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PolicyReport {
    pub episodes: usize,
    /// Mean and (population) standard deviation of the episode returns.
    pub softmax_return_mean: f64,
    pub softmax_return_std: f64,
    pub greedy_return_mean: f64,
    pub greedy_return_std: f64,
    /// Over the states the softmax episodes visit: mean probability of the most likely action.
    pub mean_top_probability: f64,
    /// Fraction of those states where the most likely action has probability below 0.9.
    pub undecided_fraction: f64,
    /// Median over those states of (best − second-best action value) / α.
    pub median_gap_over_alpha: f64,
}

/// Index of the largest value (the first on ties).
fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .fold(0, |best, (i, x)| if *x > v[best] { i } else { best })
}

/// `episodes` episodes of the softmax and of the greedy policy, episode j of both starting from
/// the same seed (derived from `seed`); see [`PolicyReport`].
pub fn policy_report(
    agent: &Agent,
    env_id: &str,
    actions: &ActionMap,
    episodes: usize,
    seed: u64,
) -> Result<PolicyReport, String> {
    let (mut env, limit) = make_env(env_id).map_err(|e| e.to_string())?;
    let mut seeds = StdRng::seed_from_u64(seed);
    let starts: Vec<u64> = (0..episodes).map(|_| seeds.random()).collect();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let (mut top, mut gaps) = (Vec::new(), Vec::new());
    let mut returns = [Vec::new(), Vec::new()];
    for (greedy, out) in [false, true].into_iter().zip(returns.iter_mut()) {
        for &start in &starts {
            let (mut obs, _) = env.reset(Some(start));
            let mut total = 0.0;
            for _ in 0..limit {
                let mut q = agent.policy_values(&obs_f64(&obs));
                let a = if greedy {
                    argmax(&q)
                } else {
                    // The policy `Agent::policy` gives, from the one Q evaluation.
                    let p = softmax_policy(&q, agent.cfg.q.alpha);
                    top.push(p.iter().cloned().fold(0.0, f64::max));
                    q.sort_by(|a, b| b.total_cmp(a));
                    gaps.push((q[0] - q.get(1).copied().unwrap_or(q[0])) / agent.cfg.q.alpha);
                    sample_index(&p, rng.random::<f64>())
                };
                let st = step_with(env.as_mut(), actions, a).map_err(|e| e.to_string())?;
                total += st.reward;
                obs = st.obs;
                if st.terminated || st.truncated {
                    break;
                }
            }
            out.push(total);
        }
    }
    let mean_std = |v: &[f64]| {
        let n = v.len().max(1) as f64;
        let m = v.iter().sum::<f64>() / n;
        (
            m,
            (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt(),
        )
    };
    let (sm, ss) = mean_std(&returns[0]);
    let (gm, gs) = mean_std(&returns[1]);
    gaps.sort_by(f64::total_cmp);
    Ok(PolicyReport {
        episodes,
        softmax_return_mean: sm,
        softmax_return_std: ss,
        greedy_return_mean: gm,
        greedy_return_std: gs,
        mean_top_probability: mean_std(&top).0,
        undecided_fraction: top.iter().filter(|&&p| p < 0.9).count() as f64
            / top.len().max(1) as f64,
        median_gap_over_alpha: gaps.get(gaps.len() / 2).copied().unwrap_or(f64::NAN),
    })
}

/// What `inspect` measures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelReport {
    pub transitions: usize,
    /// √mean over transitions and dimensions of (ŝ′ − s′)².
    pub state_rmse: f64,
    /// The same per observation dimension.
    pub state_rmse_per_dim: Vec<f64>,
    /// mean |r̂ − r|.
    pub reward_mae: f64,
    /// mean |V̄(ŝ′) − V̄(s′)| over non-terminal transitions, under the agent's target Q̄.
    pub value_mae: f64,
    /// mean |ŷ − y| with y = r + γ·m·V̄(s′): the error of the Q step's targets.
    pub target_mae: f64,
    /// RMSE of the open-loop prediction h = 1, 2, … steps ahead along the real actions.
    pub open_loop_rmse: Vec<f64>,
    /// The clips applied, as the run's Q step applies them (empty: the raw model).
    pub clips: Vec<String>,
    /// The run's policy, where measured ([`policy_report`]; `funcrl inspect --episodes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyReport>,
}

/// Measures `model` against held-out `records`, valuing states with `critic`'s target Q̄.
pub fn inspect(
    model: &dyn Dynamics,
    critic: &Agent,
    records: &[Record],
    horizon: usize,
) -> ModelReport {
    let dim = records.first().map_or(0, |r| r.obs.len());
    let gamma = critic.cfg.q.gamma;
    let (mut se, mut r_err, mut v_err, mut y_err, mut nv) = (vec![0.0; dim], 0.0, 0.0, 0.0, 0);
    for rec in records {
        let (s2, r) = model.predict(rec, rec.action);
        for (acc, (a, b)) in se.iter_mut().zip(s2.iter().zip(&rec.next_obs)) {
            *acc += (a - b).powi(2);
        }
        r_err += (r - rec.reward).abs();
        let m = if rec.terminated { 0.0 } else { 1.0 };
        let (v_hat, v) = if rec.terminated {
            (0.0, 0.0)
        } else {
            nv += 1;
            (critic.target_value(&s2), critic.target_value(&rec.next_obs))
        };
        v_err += (v_hat - v).abs();
        // Both targets as the Q step builds them (clipped with `q.clip_target`).
        let clip = |y: f64| model.target_range().map_or(y, |(lo, hi)| y.clamp(lo, hi));
        y_err += (clip(r + gamma * m * v_hat) - clip(rec.reward + gamma * m * v)).abs();
    }
    let n = records.len().max(1) as f64;
    let per_dim: Vec<f64> = se.iter().map(|s| (s / n).sqrt()).collect();
    // Open loop from every start that has `h` more steps in its episode.
    let mut open = vec![(0.0, 0usize); horizon];
    for (t, start) in records.iter().enumerate() {
        let len = records[t..]
            .iter()
            .take_while(|r| r.episode == start.episode)
            .count()
            .min(horizon);
        if len == 0 {
            continue;
        }
        let acts: Vec<usize> = records[t..t + len].iter().map(|r| r.action).collect();
        let pred = model.rollout(start, &acts);
        for (h, p) in pred.iter().enumerate() {
            let real = &records[t + h].next_obs;
            let e: f64 = p.iter().zip(real).map(|(a, b)| (a - b).powi(2)).sum();
            open[h].0 += e / dim.max(1) as f64;
            open[h].1 += 1;
        }
    }
    ModelReport {
        transitions: records.len(),
        state_rmse: (se.iter().sum::<f64>() / (n * dim.max(1) as f64)).sqrt(),
        state_rmse_per_dim: per_dim,
        reward_mae: r_err / n,
        value_mae: v_err / (nv.max(1) as f64),
        target_mae: y_err / n,
        open_loop_rmse: open
            .iter()
            .filter(|(_, c)| *c > 0)
            .map(|(s, c)| (s / *c as f64).sqrt())
            .collect(),
        clips: model.clips(),
        policy: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TrainConfig;
    use crate::trainer::Trainer;

    fn trainer(env: &str) -> Trainer {
        let mut cfg: TrainConfig = toml::from_str(&format!(
            "env = \"{env}\"\nseed = 3\ntotal_steps = 400\nwarmup_steps = 300\nbatch_size = 32\n\
             eval_every = 400\neval_episodes = 1\n[agent]\nkind = \"mle\"\n"
        ))
        .expect("config");
        cfg.replay.capacity = Some(400);
        let mut t = Trainer::new(cfg).expect("trainer");
        while !t.done() {
            t.env_step().expect("step");
        }
        t
    }

    /// The oracle: the true dynamics inspected as the model has zero state, reward, value and
    /// open-loop error (Acrobot too, whose state is not its observation); the learned model
    /// has not.
    #[test]
    fn the_true_dynamics_score_zero() {
        for env in ["CartPole-v1", "Acrobot-v1"] {
            let t = trainer(env);
            let actions =
                ActionMap::new(&funcrl_envs::make(env).unwrap().action_space(), env, None).unwrap();
            let records = collect(&t.agent, env, &actions, 0.1, 300, 7).unwrap();
            assert_eq!(records.len(), 300);
            let truth = TrueDynamics::new(env, actions).unwrap();
            let r = inspect(&truth, &t.agent, &records, 10);
            assert_eq!(r.state_rmse, 0.0, "{env}");
            assert_eq!(r.reward_mae, 0.0, "{env}");
            assert_eq!(r.value_mae, 0.0, "{env}");
            assert_eq!(r.target_mae, 0.0, "{env}");
            assert_eq!(r.open_loop_rmse.len(), 10);
            assert!(r.open_loop_rmse.iter().all(|&e| e == 0.0), "{env}");
            let learned = inspect(&t.agent, &t.agent, &records, 10);
            assert!(
                learned.state_rmse > 1e-3 && learned.value_mae > 0.0,
                "{env}"
            );
        }
    }

    /// A run's clips, applied as its Q step applies them: with CartPole's constant reward 1 the
    /// clipped reward error is exactly 0 whatever the head predicts, every predicted state lies
    /// in the buffer's range, and targets are clipped to the value range; with no clip on, the
    /// report equals the raw model's.
    #[test]
    fn as_used_applies_the_runs_clips() {
        let mut t = trainer("CartPole-v1");
        let env = "CartPole-v1";
        let actions =
            ActionMap::new(&funcrl_envs::make(env).unwrap().action_space(), env, None).unwrap();
        let records = collect(&t.agent, env, &actions, 0.1, 300, 7).unwrap();
        let raw = inspect(&t.agent, &t.agent, &records, 5);
        let plain = inspect(&AsUsed::new(&t.agent, &t.buffer), &t.agent, &records, 5);
        assert_eq!(plain, raw);
        assert!(raw.clips.is_empty());
        assert!(raw.reward_mae > 1e-6, "the raw reward head is not exact");

        t.agent.cfg.model.clip_next_state = true;
        t.agent.cfg.model.clip_reward = true;
        t.agent.cfg.q.clip_target = true;
        let used = AsUsed::new(&t.agent, &t.buffer);
        let r = inspect(&used, &t.agent, &records, 5);
        assert_eq!(r.reward_mae, 0.0);
        assert_eq!(
            r.clips,
            [
                "model.clip_next_state",
                "model.clip_reward",
                "q.clip_target"
            ]
        );
        let (lo, hi) = t.buffer.next_range();
        for rec in &records {
            let (s2, rw) = used.predict(rec, rec.action);
            assert_eq!(rw, 1.0);
            for (j, x) in s2.iter().enumerate() {
                assert!(*x >= lo[j] as f64 && *x <= hi[j] as f64, "{j}: {x}");
            }
        }
        let q = &t.agent.cfg.q;
        let top = (1.0 + q.gamma * q.alpha * 2f64.ln()) / (1.0 - q.gamma);
        let (tlo, thi) = used.target_range().unwrap();
        assert_eq!(tlo, 1.0);
        assert!((thi - top).abs() < 1e-12, "{thi} vs {top}");
    }

    /// By hand: a model that predicts s′ + 1 in every dimension has state RMSE 1, and its
    /// open-loop error grows by 1 per step when the true dynamics are the identity.
    #[test]
    fn errors_by_hand() {
        struct Shift;
        impl Dynamics for Shift {
            fn predict(&self, r: &Record, _: usize) -> (Vec<f64>, f64) {
                (r.next_obs.iter().map(|x| x + 1.0).collect(), r.reward + 0.5)
            }
            fn rollout(&self, start: &Record, actions: &[usize]) -> Vec<Vec<f64>> {
                (1..=actions.len())
                    .map(|h| start.obs.iter().map(|x| x + h as f64).collect())
                    .collect()
            }
        }
        let t = trainer("CartPole-v1");
        let rec = |i: usize| Record {
            state: vec![0.0; 4],
            obs: vec![0.1; 4],
            action: 0,
            reward: 1.0,
            next_obs: vec![0.1; 4],
            terminated: false,
            episode: i / 5,
        };
        let records: Vec<Record> = (0..10).map(rec).collect();
        let r = inspect(&Shift, &t.agent, &records, 3);
        assert!(r.clips.is_empty());
        assert!((r.state_rmse - 1.0).abs() < 1e-12);
        assert!((r.reward_mae - 0.5).abs() < 1e-12);
        for (h, e) in r.open_loop_rmse.iter().enumerate() {
            assert!((e - (h + 1) as f64).abs() < 1e-12, "{h}: {e}");
        }
    }

    /// Oracles for the policy report: with Q ≡ 0 both actions tie, so the softmax is uniform
    /// (top probability ½, gap 0) and the greedy policy always pushes left, whose returns are
    /// those of stepping the env with action 0 from the same seeds; with α → 0 the softmax is
    /// the greedy policy and both return the same on every episode.
    #[test]
    fn policy_report_against_hand_cases() {
        let env = "CartPole-v1";
        let actions =
            ActionMap::new(&funcrl_envs::make(env).unwrap().action_space(), env, None).unwrap();
        let mut t = trainer(env);
        let (episodes, seed) = (6, 11);

        let alpha = t.agent.cfg.q.alpha;
        t.agent.cfg.q.alpha = 1e-300;
        let r = policy_report(&t.agent, env, &actions, episodes, seed).unwrap();
        assert_eq!(r.mean_top_probability, 1.0);
        assert_eq!(r.undecided_fraction, 0.0);
        assert_eq!(r.softmax_return_mean, r.greedy_return_mean);
        assert_eq!(r.softmax_return_std, r.greedy_return_std);

        t.agent.cfg.q.alpha = alpha;
        t.agent.q.iter_mut().for_each(|w| *w = 0.0);
        let r = policy_report(&t.agent, env, &actions, episodes, seed).unwrap();
        assert_eq!(r.mean_top_probability, 0.5);
        assert_eq!(r.undecided_fraction, 1.0);
        assert_eq!(r.median_gap_over_alpha, 0.0);
        let (mut e, limit) = make_env(env).unwrap();
        let mut seeds = StdRng::seed_from_u64(seed);
        let left: Vec<f64> = (0..episodes)
            .map(|_| {
                e.reset(Some(seeds.random::<u64>()));
                let mut total = 0.0;
                for _ in 0..limit {
                    let st = step_with(e.as_mut(), &actions, 0).unwrap();
                    total += st.reward;
                    if st.terminated || st.truncated {
                        break;
                    }
                }
                total
            })
            .collect();
        let mean = left.iter().sum::<f64>() / episodes as f64;
        assert_eq!(r.greedy_return_mean, mean);
        assert!(mean < 20.0, "always left falls fast: {mean}");
    }
}
