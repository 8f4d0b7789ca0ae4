//! `make("CartPole-v1")`: ids, episode limits and reward thresholds as gymnasium registers them.

use crate::acrobot::Acrobot;
use crate::cartpole::CartPole;
use crate::classic::{ClassicEnv, Dynamics, Kwargs};
use crate::core::{Env, EnvError};
use crate::mountain_car::MountainCar;
use crate::pendulum::Pendulum;
use crate::vector::{SyncVectorEnv, VectorEnv};
use crate::wrappers::TimeLimit;

/// A registered environment (gymnasium's `EnvSpec`, the fields funcrl uses).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EnvSpec {
    pub id: &'static str,
    pub max_episode_steps: u64,
    pub reward_threshold: Option<f64>,
}

/// All registered ids, with gymnasium 1.x's limits and thresholds.
pub const SPECS: &[EnvSpec] = &[
    EnvSpec {
        id: "CartPole-v0",
        max_episode_steps: 200,
        reward_threshold: Some(195.0),
    },
    EnvSpec {
        id: "CartPole-v1",
        max_episode_steps: 500,
        reward_threshold: Some(475.0),
    },
    EnvSpec {
        id: "Acrobot-v1",
        max_episode_steps: 500,
        reward_threshold: Some(-100.0),
    },
    EnvSpec {
        id: "MountainCar-v0",
        max_episode_steps: 200,
        reward_threshold: Some(-110.0),
    },
    EnvSpec {
        id: "Pendulum-v1",
        max_episode_steps: 200,
        reward_threshold: None,
    },
];

/// What `gym.make(id, max_episode_steps=..., **kwargs)` takes.
#[derive(Clone, Debug, Default)]
pub struct MakeOptions {
    /// Overrides the registered episode limit.
    pub max_episode_steps: Option<u64>,
    /// Environment options such as `sutton_barto_reward=true`.
    pub kwargs: Vec<(String, String)>,
}

/// Looks up a registered id; an unknown one is an error listing the known ids.
pub fn spec(id: &str) -> Result<&'static EnvSpec, EnvError> {
    SPECS.iter().find(|s| s.id == id).ok_or_else(|| {
        let lower = id.to_ascii_lowercase();
        let base = lower.split("-v").next().unwrap_or("");
        let close: Vec<&str> = SPECS
            .iter()
            .filter(|s| !base.is_empty() && s.id.to_ascii_lowercase().starts_with(base))
            .map(|s| s.id)
            .collect();
        EnvError::UnknownEnv {
            id: id.into(),
            hint: if close.is_empty() {
                String::new()
            } else {
                format!(" (did you mean {}?)", close.join(" or "))
            },
            known: SPECS.iter().map(|s| s.id).collect::<Vec<_>>().join(", "),
        }
    })
}

/// `gym.make(id)`: the environment with its registered time limit.
pub fn make(id: &str) -> Result<Box<dyn Env>, EnvError> {
    make_with(id, &MakeOptions::default())
}

/// `gym.make(id, max_episode_steps=..., **kwargs)`.
pub fn make_with(id: &str, options: &MakeOptions) -> Result<Box<dyn Env>, EnvError> {
    let spec = spec(id)?;
    let limit = options.max_episode_steps.unwrap_or(spec.max_episode_steps);
    fn boxed<D: Dynamics>(id: &'static str, d: D, limit: u64) -> Box<dyn Env> {
        Box::new(TimeLimit::new(ClassicEnv::new(id, d), limit))
    }
    let kw: &Kwargs = &options.kwargs;
    Ok(match spec.id {
        "CartPole-v0" | "CartPole-v1" => boxed(spec.id, CartPole::from_kwargs(spec.id, kw)?, limit),
        "Acrobot-v1" => boxed(spec.id, Acrobot::from_kwargs(spec.id, kw)?, limit),
        "MountainCar-v0" => boxed(spec.id, MountainCar::from_kwargs(spec.id, kw)?, limit),
        "Pendulum-v1" => boxed(spec.id, Pendulum::from_kwargs(spec.id, kw)?, limit),
        _ => unreachable!("every spec has a constructor"),
    })
}

/// `gym.make_vec(id, num_envs)`: `num_envs` copies in one structure-of-arrays vector env with
/// the registered time limit and next-step autoreset.
pub fn make_vec(
    id: &str,
    num_envs: usize,
    options: &MakeOptions,
) -> Result<Box<dyn VectorEnv>, EnvError> {
    let spec = spec(id)?;
    let limit = options.max_episode_steps.unwrap_or(spec.max_episode_steps);
    fn boxed<D: Dynamics>(id: &'static str, d: D, n: usize, limit: u64) -> Box<dyn VectorEnv> {
        Box::new(SyncVectorEnv::new(id, d, n, Some(limit)))
    }
    let kw: &Kwargs = &options.kwargs;
    Ok(match spec.id {
        "CartPole-v0" | "CartPole-v1" => boxed(
            spec.id,
            CartPole::from_kwargs(spec.id, kw)?,
            num_envs,
            limit,
        ),
        "Acrobot-v1" => boxed(spec.id, Acrobot::from_kwargs(spec.id, kw)?, num_envs, limit),
        "MountainCar-v0" => boxed(
            spec.id,
            MountainCar::from_kwargs(spec.id, kw)?,
            num_envs,
            limit,
        ),
        "Pendulum-v1" => boxed(
            spec.id,
            Pendulum::from_kwargs(spec.id, kw)?,
            num_envs,
            limit,
        ),
        _ => unreachable!("every spec has a constructor"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Action;

    #[test]
    fn every_spec_makes_an_env_with_its_limit() {
        for s in SPECS {
            let mut env = make(s.id).unwrap();
            assert_eq!(env.id(), s.id);
            let (obs, _) = env.reset(Some(0));
            assert_eq!(obs.len(), env.observation_space().flat_dim());
            assert!(
                env.observation_space().contains_box(&obs),
                "{}: {obs:?}",
                s.id
            );
        }
    }

    #[test]
    fn unknown_ids_and_options_are_clear_errors() {
        let err = make("CartPole-v2").err().unwrap().to_string();
        assert!(
            err.contains("unknown environment id 'CartPole-v2'"),
            "{err}"
        );
        assert!(
            err.contains("did you mean CartPole-v0 or CartPole-v1"),
            "{err}"
        );
        let opts = MakeOptions {
            kwargs: vec![("sutton_barto".into(), "true".into())],
            ..Default::default()
        };
        let err = make_with("CartPole-v1", &opts).err().unwrap().to_string();
        assert!(
            err.contains("'sutton_barto'") && err.contains("sutton_barto_reward"),
            "{err}"
        );
        let opts = MakeOptions {
            kwargs: vec![("book_or_nips".into(), "paper".into())],
            ..Default::default()
        };
        let err = make_with("Acrobot-v1", &opts).err().unwrap().to_string();
        assert!(err.contains("'book', 'nips'"), "{err}");
    }

    #[test]
    fn max_episode_steps_override_applies() {
        let opts = MakeOptions {
            max_episode_steps: Some(3),
            ..Default::default()
        };
        let mut env = make_with("Pendulum-v1", &opts).unwrap();
        env.reset(Some(0));
        let flags: Vec<bool> = (0..3)
            .map(|_| env.step(Action::Continuous(&[0.0])).unwrap().truncated)
            .collect();
        assert_eq!(flags, [false, false, true]);
    }
}
