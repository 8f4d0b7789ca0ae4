//! Wrappers with gymnasium's names: truncation and episode statistics are not the env's job.

use std::time::Instant;

use crate::core::{Action, Env, EnvError, EpisodeStatistics, Info, Obs, Step};
use crate::space::Space;

/// Truncates an episode after `max_episode_steps` steps (gymnasium's `TimeLimit`): the step that
/// reaches the limit has `truncated = true`, possibly together with `terminated`. Stepping on
/// after that without a reset is an error.
#[derive(Clone, Debug)]
pub struct TimeLimit<E> {
    env: E,
    max_episode_steps: u64,
    elapsed_steps: Option<u64>,
}

impl<E: Env> TimeLimit<E> {
    pub fn new(env: E, max_episode_steps: u64) -> Self {
        TimeLimit {
            env,
            max_episode_steps,
            elapsed_steps: None,
        }
    }
    pub fn max_episode_steps(&self) -> u64 {
        self.max_episode_steps
    }
    pub fn elapsed_steps(&self) -> Option<u64> {
        self.elapsed_steps
    }
    pub fn inner(&self) -> &E {
        &self.env
    }
    pub fn into_inner(self) -> E {
        self.env
    }
}

impl<E: Env> Env for TimeLimit<E> {
    fn id(&self) -> &str {
        self.env.id()
    }
    fn observation_space(&self) -> Space {
        self.env.observation_space()
    }
    fn action_space(&self) -> Space {
        self.env.action_space()
    }
    fn reset(&mut self, seed: Option<u64>) -> (Obs, Info) {
        self.elapsed_steps = Some(0);
        self.env.reset(seed)
    }
    fn step(&mut self, action: Action<'_>) -> Result<Step, EnvError> {
        let elapsed = match self.elapsed_steps {
            Some(n) if n < self.max_episode_steps => n,
            Some(_) => {
                return Err(EnvError::ResetNeeded {
                    env: self.id().into(),
                    why: "truncated by the time limit",
                });
            }
            None => {
                return Err(EnvError::ResetNeeded {
                    env: self.id().into(),
                    why: "never reset",
                });
            }
        };
        let mut step = self.env.step(action)?;
        self.elapsed_steps = Some(elapsed + 1);
        if elapsed + 1 >= self.max_episode_steps {
            step.truncated = true;
        }
        Ok(step)
    }
    fn state(&self) -> &[f64] {
        self.env.state()
    }
    fn observation(&self) -> Obs {
        self.env.observation()
    }
    fn set_state(&mut self, state: &[f64]) -> Result<(), EnvError> {
        self.env.set_state(state)?;
        // A chosen state starts a fresh count if the previous episode was used up.
        if self
            .elapsed_steps
            .is_none_or(|n| n >= self.max_episode_steps)
        {
            self.elapsed_steps = Some(0);
        }
        Ok(())
    }
}

/// Adds `info.episode = {r, l, t}` on the step that ends an episode (gymnasium's
/// `RecordEpisodeStatistics`).
#[derive(Clone, Debug)]
pub struct RecordEpisodeStatistics<E> {
    env: E,
    episode_return: f64,
    episode_length: u64,
    episode_start: Instant,
}

impl<E: Env> RecordEpisodeStatistics<E> {
    pub fn new(env: E) -> Self {
        RecordEpisodeStatistics {
            env,
            episode_return: 0.0,
            episode_length: 0,
            episode_start: Instant::now(),
        }
    }
    pub fn inner(&self) -> &E {
        &self.env
    }
}

impl<E: Env> Env for RecordEpisodeStatistics<E> {
    fn id(&self) -> &str {
        self.env.id()
    }
    fn observation_space(&self) -> Space {
        self.env.observation_space()
    }
    fn action_space(&self) -> Space {
        self.env.action_space()
    }
    fn reset(&mut self, seed: Option<u64>) -> (Obs, Info) {
        self.episode_return = 0.0;
        self.episode_length = 0;
        self.episode_start = Instant::now();
        self.env.reset(seed)
    }
    fn step(&mut self, action: Action<'_>) -> Result<Step, EnvError> {
        let mut step = self.env.step(action)?;
        self.episode_return += step.reward;
        self.episode_length += 1;
        if step.done() {
            step.info.episode = Some(EpisodeStatistics {
                r: self.episode_return,
                l: self.episode_length,
                t: self.episode_start.elapsed().as_secs_f64(),
            });
        }
        Ok(step)
    }
    fn state(&self) -> &[f64] {
        self.env.state()
    }
    fn observation(&self) -> Obs {
        self.env.observation()
    }
    fn set_state(&mut self, state: &[f64]) -> Result<(), EnvError> {
        self.env.set_state(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cartpole::CartPole;
    use crate::classic::ClassicEnv;

    fn cartpole(limit: u64) -> RecordEpisodeStatistics<TimeLimit<ClassicEnv<CartPole>>> {
        RecordEpisodeStatistics::new(TimeLimit::new(
            ClassicEnv::new("CartPole-v1", CartPole::default()),
            limit,
        ))
    }

    #[test]
    fn time_limit_truncates_at_the_limit_and_then_refuses_to_step() {
        let mut env = cartpole(5);
        env.reset(Some(0));
        // Upright at rest with alternating pushes: nothing terminates in 5 steps.
        env.set_state(&[0.0; 4]).unwrap();
        for t in 1..=5 {
            let step = env.step(Action::Discrete(t % 2)).unwrap();
            assert!(!step.terminated);
            assert_eq!(step.truncated, t == 5, "t={t}");
            assert_eq!(step.info.episode.is_some(), t == 5);
            if t == 5 {
                let ep = step.info.episode.unwrap();
                assert_eq!((ep.r, ep.l), (5.0, 5));
            }
        }
        let err = env.step(Action::Discrete(0)).unwrap_err();
        assert!(matches!(err, EnvError::ResetNeeded { why, .. } if why.contains("time limit")));
        env.reset(None);
        assert!(env.step(Action::Discrete(0)).is_ok());
    }

    #[test]
    fn step_before_reset_and_after_termination_are_errors() {
        let mut env = cartpole(500);
        assert!(matches!(
            env.step(Action::Discrete(0)),
            Err(EnvError::ResetNeeded {
                why: "never reset",
                ..
            })
        ));
        env.reset(Some(1));
        env.set_state(&[2.39, 1.0, 0.0, 0.0]).unwrap();
        let step = env.step(Action::Discrete(1)).unwrap();
        assert!(step.terminated && !step.truncated);
        assert_eq!(step.reward, 1.0);
        assert_eq!(step.info.episode.unwrap().l, 1);
        assert!(matches!(
            env.step(Action::Discrete(0)),
            Err(EnvError::ResetNeeded {
                why: "terminated",
                ..
            })
        ));
    }

    #[test]
    fn invalid_actions_and_states_are_rejected_without_side_effects() {
        let mut env = cartpole(500);
        env.reset(Some(2));
        let before = env.state().to_vec();
        assert!(matches!(
            env.step(Action::Discrete(2)),
            Err(EnvError::InvalidAction { .. })
        ));
        assert!(matches!(
            env.step(Action::Continuous(&[0.0])),
            Err(EnvError::InvalidAction { .. })
        ));
        assert_eq!(env.state(), &before[..]);
        assert!(matches!(
            env.set_state(&[0.0; 3]),
            Err(EnvError::InvalidState { .. })
        ));
        assert!(matches!(
            env.set_state(&[0.0, f64::NAN, 0.0, 0.0]),
            Err(EnvError::InvalidState { .. })
        ));
        assert_eq!(env.state(), &before[..]);
    }

    #[test]
    fn same_seed_same_episode() {
        let run = |seed| {
            let mut env = cartpole(500);
            let (obs, _) = env.reset(Some(seed));
            let mut trace = vec![obs.to_vec()];
            for t in 0..20 {
                let s = env.step(Action::Discrete(t % 2)).unwrap();
                trace.push(s.obs.to_vec());
            }
            trace
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
    }
}
