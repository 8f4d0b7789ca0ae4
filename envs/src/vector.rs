//! Vectorised environments: N copies of one dynamics stored as structure-of-arrays, stepped in one
//! call, with gymnasium 1.x's default autoreset mode (`AutoresetMode.NEXT_STEP`).
//!
//! Next-step autoreset: when copy `i` terminates or truncates, that step returns its final
//! observation; the *next* `step` resets copy `i` (its action is ignored) and returns the reset
//! observation with reward 0 and both flags false.

use std::time::Instant;

use crate::classic::{Dynamics, EnvRng, MAX_STATE_DIM, validate_state};
use crate::core::{Action, EnvError, EpisodeStatistics};
use crate::seeding::{np_random, np_random_from_entropy};
use crate::space::Space;

/// Actions for all copies: one index per copy, or `num_envs × action_dim` floats row by row.
#[derive(Clone, Copy, Debug)]
pub enum VecAction<'a> {
    Discrete(&'a [i64]),
    Continuous(&'a [f32]),
}

/// The result of one vector step, borrowed from buffers the env reuses (no allocation per step).
/// `obs` is `num_envs × obs_dim`, row by row. `episode[i]` is set on the step that ends copy
/// `i`'s episode (gymnasium's `RecordEpisodeStatistics`, always on here).
#[derive(Debug)]
pub struct VecStep<'a> {
    pub obs: &'a [f32],
    pub rewards: &'a [f64],
    pub terminated: &'a [bool],
    pub truncated: &'a [bool],
    pub episode: &'a [Option<EpisodeStatistics>],
}

/// A vector environment, dyn-compatible so `make_vec` can return any of them.
pub trait VectorEnv {
    fn id(&self) -> &str;
    fn num_envs(&self) -> usize;
    fn single_observation_space(&self) -> Space;
    fn single_action_space(&self) -> Space;
    /// Resets every copy; `Some(seed)` seeds copy `i` with `seed + i`, as gymnasium does.
    /// Returns the `num_envs × obs_dim` observations.
    fn reset(&mut self, seed: Option<u64>) -> &[f32];
    /// Steps every copy. Invalid actions are an error and change nothing.
    fn step(&mut self, actions: VecAction<'_>) -> Result<VecStep<'_>, EnvError>;
    /// Internal state of copy `i`.
    fn state(&self, i: usize) -> Vec<f64>;
    /// Puts copy `i` in `state` (its episode counters are kept; a pending autoreset is cancelled).
    fn set_state(&mut self, i: usize, state: &[f64]) -> Result<(), EnvError>;
}

/// N copies of `D` in structure-of-arrays layout: state dimension `d` of every copy is
/// contiguous, so a step streams through memory.
pub struct SyncVectorEnv<D: Dynamics> {
    id: &'static str,
    dynamics: D,
    n: usize,
    action_dim: usize,
    max_episode_steps: Option<u64>,
    /// `STATE_DIM` columns of length `n`.
    state: Vec<f64>,
    rngs: Vec<EnvRng>,
    elapsed: Vec<u64>,
    autoreset: Vec<bool>,
    episode_return: Vec<f64>,
    episode_start: Vec<Instant>,
    actions: Vec<D::Act>,
    obs: Vec<f32>,
    rewards: Vec<f64>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
    episode: Vec<Option<EpisodeStatistics>>,
    was_reset: bool,
}

impl<D: Dynamics> SyncVectorEnv<D> {
    pub fn new(
        id: &'static str,
        dynamics: D,
        num_envs: usize,
        max_episode_steps: Option<u64>,
    ) -> Self {
        assert!(num_envs > 0, "a vector env needs at least one copy");
        let action_dim = dynamics.action_space().flat_dim();
        SyncVectorEnv {
            id,
            n: num_envs,
            action_dim,
            max_episode_steps,
            state: vec![0.0; D::STATE_DIM * num_envs],
            rngs: (0..num_envs).map(|_| np_random_from_entropy()).collect(),
            elapsed: vec![0; num_envs],
            autoreset: vec![false; num_envs],
            episode_return: vec![0.0; num_envs],
            episode_start: vec![Instant::now(); num_envs],
            actions: Vec::with_capacity(num_envs),
            obs: vec![0.0; D::OBS_DIM * num_envs],
            rewards: vec![0.0; num_envs],
            terminated: vec![false; num_envs],
            truncated: vec![false; num_envs],
            episode: vec![None; num_envs],
            was_reset: false,
            dynamics,
        }
    }

    #[inline]
    fn gather(&self, i: usize) -> [f64; MAX_STATE_DIM] {
        let mut s = [0.0; MAX_STATE_DIM];
        for (d, v) in s.iter_mut().enumerate().take(D::STATE_DIM) {
            *v = self.state[d * self.n + i];
        }
        s
    }

    #[inline]
    fn scatter(&mut self, i: usize, s: &[f64; MAX_STATE_DIM]) {
        for (d, v) in s.iter().enumerate().take(D::STATE_DIM) {
            self.state[d * self.n + i] = *v;
        }
    }

    fn reset_copy(&mut self, i: usize, now: Instant) {
        let mut s = [0.0; MAX_STATE_DIM];
        self.dynamics
            .reset_state(&mut self.rngs[i], &mut s[..D::STATE_DIM]);
        self.scatter(i, &s);
        self.elapsed[i] = 0;
        self.episode_return[i] = 0.0;
        self.episode_start[i] = now;
        self.observe_copy(i, &s);
    }

    #[inline]
    fn observe_copy(&mut self, i: usize, s: &[f64; MAX_STATE_DIM]) {
        let od = D::OBS_DIM;
        self.dynamics
            .observe(&s[..D::STATE_DIM], &mut self.obs[i * od..(i + 1) * od]);
    }

    fn parse_actions(&mut self, actions: VecAction<'_>) -> Result<(), EnvError> {
        let expected_len = match actions {
            VecAction::Discrete(a) => a.len(),
            VecAction::Continuous(a) => a.len() / self.action_dim.max(1),
        };
        let len_ok = match actions {
            VecAction::Discrete(a) => a.len() == self.n,
            VecAction::Continuous(a) => a.len() == self.n * self.action_dim,
        };
        if !len_ok {
            return Err(EnvError::InvalidAction {
                env: self.id.into(),
                action: format!("{expected_len} actions"),
                expected: format!("{} actions of {:?}", self.n, self.dynamics.action_space()),
            });
        }
        self.actions.clear();
        // An autoresetting copy ignores its action, but a malformed one is still a caller bug.
        let id = self.id;
        let relabel = |i: usize, e: EnvError| match e {
            EnvError::InvalidAction {
                action, expected, ..
            } => EnvError::InvalidAction {
                env: format!("{id} (copy {i})"),
                action,
                expected,
            },
            other => other,
        };
        match actions {
            VecAction::Discrete(a) => {
                for (i, &ai) in a.iter().enumerate() {
                    let act = self
                        .dynamics
                        .parse_action(Action::Discrete(ai))
                        .map_err(|e| relabel(i, e))?;
                    self.actions.push(act);
                }
            }
            VecAction::Continuous(a) => {
                for (i, ai) in a.chunks_exact(self.action_dim).enumerate() {
                    let act = self
                        .dynamics
                        .parse_action(Action::Continuous(ai))
                        .map_err(|e| relabel(i, e))?;
                    self.actions.push(act);
                }
            }
        }
        Ok(())
    }
}

impl<D: Dynamics> VectorEnv for SyncVectorEnv<D> {
    fn id(&self) -> &str {
        self.id
    }
    fn num_envs(&self) -> usize {
        self.n
    }
    fn single_observation_space(&self) -> Space {
        self.dynamics.observation_space()
    }
    fn single_action_space(&self) -> Space {
        self.dynamics.action_space()
    }

    fn reset(&mut self, seed: Option<u64>) -> &[f32] {
        if let Some(seed) = seed {
            for (i, rng) in self.rngs.iter_mut().enumerate() {
                *rng = np_random(seed.wrapping_add(i as u64));
            }
        }
        let now = Instant::now();
        for i in 0..self.n {
            self.reset_copy(i, now);
            self.autoreset[i] = false;
            self.episode[i] = None;
        }
        self.was_reset = true;
        &self.obs
    }

    fn step(&mut self, actions: VecAction<'_>) -> Result<VecStep<'_>, EnvError> {
        if !self.was_reset {
            return Err(EnvError::ResetNeeded {
                env: self.id.into(),
                why: "never reset",
            });
        }
        self.parse_actions(actions)?;
        // One clock read per call, not per copy: episode wall times share it.
        let now = Instant::now();
        // Copies that ended last step reset now and ignore their action (next-step autoreset).
        for i in 0..self.n {
            if self.autoreset[i] {
                self.reset_copy(i, now);
                self.rewards[i] = 0.0;
                self.terminated[i] = false;
                self.truncated[i] = false;
                self.episode[i] = None;
            }
        }
        // Physics for all other copies in one call, so an environment can vectorise it.
        self.dynamics.step_batch(
            &mut self.state,
            &self.actions,
            &self.autoreset,
            &mut self.rewards,
            &mut self.terminated,
        );
        // Counters and truncation, branch-free over all copies; a copy reset above has
        // `autoreset` set and is left as the reset made it.
        let max = self.max_episode_steps.unwrap_or(u64::MAX);
        let counters = self.elapsed.iter_mut().zip(self.truncated.iter_mut());
        let sums = self
            .episode_return
            .iter_mut()
            .zip(&self.rewards)
            .zip(&self.autoreset);
        for ((elapsed, truncated), ((ret, reward), reset)) in counters.zip(sums) {
            let stepped = !*reset;
            *elapsed += u64::from(stepped);
            *truncated = stepped & (*elapsed >= max);
            *ret += if stepped { *reward } else { 0.0 };
        }
        // Observations are a function of the state, so reset copies can be observed again.
        self.dynamics.observe_batch(&self.state, &mut self.obs);
        // Episode ends (rare): record statistics and schedule the next-step reset. Other copies
        // keep `episode = None`: only a copy that ended holds Some, and it was cleared above.
        for i in 0..self.n {
            let ended = !self.autoreset[i] & (self.terminated[i] | self.truncated[i]);
            if ended {
                self.episode[i] = Some(EpisodeStatistics {
                    r: self.episode_return[i],
                    l: self.elapsed[i],
                    t: now.duration_since(self.episode_start[i]).as_secs_f64(),
                });
            }
            self.autoreset[i] = ended;
        }
        Ok(VecStep {
            obs: &self.obs,
            rewards: &self.rewards,
            terminated: &self.terminated,
            truncated: &self.truncated,
            episode: &self.episode,
        })
    }

    fn state(&self, i: usize) -> Vec<f64> {
        self.gather(i)[..D::STATE_DIM].to_vec()
    }

    fn set_state(&mut self, i: usize, state: &[f64]) -> Result<(), EnvError> {
        if i >= self.n {
            return Err(EnvError::InvalidState {
                env: self.id.into(),
                state: state.to_vec(),
                why: format!("copy {i} does not exist (num_envs = {})", self.n),
            });
        }
        validate_state(self.id, D::STATE_DIM, state)?;
        let mut s = [0.0; MAX_STATE_DIM];
        s[..D::STATE_DIM].copy_from_slice(state);
        self.scatter(i, &s);
        self.observe_copy(i, &s);
        self.autoreset[i] = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cartpole::CartPole;
    use crate::classic::ClassicEnv;
    use crate::core::Env;
    use crate::pendulum::Pendulum;
    use crate::wrappers::TimeLimit;

    use crate::acrobot::Acrobot;
    use crate::classic::Dynamics;
    use crate::mountain_car::MountainCar;

    /// Copy `i` of a vector env seeded with `s` must follow a single env seeded with `s + i` under
    /// the same actions, through terminations, truncations and next-step autoresets: state within
    /// `tol` (0 = bit for bit), identical rewards and flags. Returns (episode ends, autoresets).
    fn check_against_singles<D: Dynamics>(
        id: &'static str,
        d: D,
        n: usize,
        steps: usize,
        limit: u64,
        tol: f64,
    ) -> (usize, usize) {
        let mut venv = SyncVectorEnv::new(id, d.clone(), n, Some(limit));
        let mut singles: Vec<_> = (0..n)
            .map(|_| TimeLimit::new(ClassicEnv::new(id, d.clone()), limit))
            .collect();
        let od = D::OBS_DIM;
        let obs0 = venv.reset(Some(100)).to_vec();
        for (i, env) in singles.iter_mut().enumerate() {
            let (o, _) = env.reset(Some(100 + i as u64));
            assert_eq!(&obs0[i * od..(i + 1) * od], &o[..]);
        }
        let n_act = venv.single_action_space().flat_dim() as i64;
        let mut pending_reset = vec![false; n];
        let (mut ends, mut autoresets) = (0, 0);
        for t in 0..steps {
            // A fixed pseudo-random action pattern, different per copy.
            let actions: Vec<i64> = (0..n)
                .map(|i| ((t * 7 + i * 3) % 5) as i64 % n_act)
                .collect();
            let out = venv.step(VecAction::Discrete(&actions)).unwrap();
            let (obs, rewards, term, trunc) = (
                out.obs.to_vec(),
                out.rewards.to_vec(),
                out.terminated.to_vec(),
                out.truncated.to_vec(),
            );
            let has_episode: Vec<bool> = out.episode.iter().map(Option::is_some).collect();
            for (i, env) in singles.iter_mut().enumerate() {
                let ctx = format!("{id} t={t} copy={i}");
                if pending_reset[i] {
                    // After an end a copy resets from its own stream: the same as reset(None).
                    let (o, _) = env.reset(None);
                    assert_eq!(&obs[i * od..(i + 1) * od], &o[..], "{ctx}");
                    assert_eq!(rewards[i], 0.0);
                    assert!(!term[i] && !trunc[i] && !has_episode[i], "{ctx}");
                    pending_reset[i] = false;
                    autoresets += 1;
                    continue;
                }
                let s = env.step(Action::Discrete(actions[i])).unwrap();
                for (a, b) in venv.state(i).iter().zip(env.state()) {
                    assert!(
                        (a - b).abs() <= tol * b.abs().max(1.0),
                        "{ctx}: {:?} vs {:?}",
                        venv.state(i),
                        env.state()
                    );
                }
                if tol == 0.0 {
                    assert_eq!(&obs[i * od..(i + 1) * od], &s.obs[..], "{ctx}");
                }
                assert_eq!(rewards[i], s.reward, "{ctx}");
                assert_eq!((term[i], trunc[i]), (s.terminated, s.truncated), "{ctx}");
                assert_eq!(has_episode[i], s.done(), "{ctx}");
                if s.done() {
                    pending_reset[i] = true;
                    ends += 1;
                }
            }
        }
        (ends, autoresets)
    }

    #[test]
    fn generic_vector_path_is_bit_identical_to_single_envs() {
        let (ends, resets) =
            check_against_singles("Acrobot-v1", Acrobot::default(), 5, 200, 30, 0.0);
        assert!(ends >= 25 && resets >= 25, "{ends} {resets}");
        let (ends, resets) =
            check_against_singles("MountainCar-v0", MountainCar::default(), 11, 200, 25, 0.0);
        assert!(ends >= 50 && resets >= 50, "{ends} {resets}");
    }

    /// The vectorised CartPole kernel (blocks of 8 plus a scalar tail: 19 copies) stays within
    /// 1e-12 of the single env; it differs at all only through one-ulp sines and cosines.
    #[test]
    fn cartpole_kernel_tracks_single_envs() {
        let (ends, resets) =
            check_against_singles("CartPole-v1", CartPole::default(), 19, 400, 40, 1e-12);
        assert!(
            ends > 100 && resets > 100,
            "ends {ends}, autoresets {resets}"
        );
        let semi = CartPole {
            kinematics_integrator: crate::cartpole::Integrator::SemiImplicitEuler,
            sutton_barto_reward: true,
            ..CartPole::default()
        };
        check_against_singles("CartPole-v1", semi, 16, 200, 40, 1e-12);
    }

    /// A block with an angle beyond the polynomial range falls back to libm: bit-identical.
    #[test]
    fn cartpole_kernel_large_angles_use_libm() {
        let mut venv = SyncVectorEnv::new("CartPole-v1", CartPole::default(), 8, Some(500));
        venv.reset(Some(0));
        let states: Vec<[f64; 4]> = (0..8)
            .map(|i| [0.1 * i as f64, -0.3, 0.02 * i as f64 - 0.05, 0.4])
            .collect();
        let mut states = states;
        states[5][2] = 1.3;
        for (i, s) in states.iter().enumerate() {
            venv.set_state(i, s).unwrap();
        }
        let actions: Vec<i64> = (0..8).map(|i| i % 2).collect();
        venv.step(VecAction::Discrete(&actions)).unwrap();
        for (i, s) in states.iter().enumerate() {
            let mut single = ClassicEnv::new("CartPole-v1", CartPole::default());
            single.set_state(s).unwrap();
            single.step(Action::Discrete(actions[i])).unwrap();
            assert_eq!(venv.state(i), single.state(), "copy {i}");
        }
        assert!(venv.set_state(8, &[0.0; 4]).is_err());
        assert!(venv.set_state(0, &[0.0; 3]).is_err());
    }

    #[test]
    fn continuous_vector_actions_and_errors() {
        let mut venv = SyncVectorEnv::new("Pendulum-v1", Pendulum::default(), 3, Some(200));
        assert!(
            venv.step(VecAction::Continuous(&[0.0; 3])).is_err(),
            "step before reset"
        );
        venv.reset(Some(0));
        let before: Vec<Vec<f64>> = (0..3).map(|i| venv.state(i)).collect();
        let err = venv
            .step(VecAction::Continuous(&[0.0, f32::NAN, 0.0]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("copy 1"), "{err}");
        assert!(venv.step(VecAction::Continuous(&[0.0; 2])).is_err());
        assert!(venv.step(VecAction::Discrete(&[0, 0, 0])).is_err());
        let after: Vec<Vec<f64>> = (0..3).map(|i| venv.state(i)).collect();
        assert_eq!(before, after, "a rejected step must not move any copy");
        let out = venv.step(VecAction::Continuous(&[2.0, -2.0, 9.0])).unwrap();
        assert_eq!(out.obs.len(), 9);
    }
}
