//! MountainCar (Moore 1990) with discrete actions, as gymnasium 1.x's `MountainCar-v0`.

use rand::Rng;

use crate::classic::{Dynamics, Kwargs, check_known_keys, kwarg, parse_discrete, parse_finite};
use crate::core::{Action, EnvError};
use crate::seeding::uniform;
use crate::space::Space;

/// Car in a valley. State `[position, velocity]`; actions 0 (push left), 1 (none), 2 (push right).
#[derive(Clone, Debug)]
pub struct MountainCar {
    pub min_position: f64,
    pub max_position: f64,
    pub max_speed: f64,
    pub goal_position: f64,
    pub goal_velocity: f64,
    pub force: f64,
    pub gravity: f64,
}

impl Default for MountainCar {
    fn default() -> Self {
        MountainCar {
            min_position: -1.2,
            max_position: 0.6,
            max_speed: 0.07,
            goal_position: 0.5,
            goal_velocity: 0.0,
            force: 0.001,
            gravity: 0.0025,
        }
    }
}

impl MountainCar {
    pub fn from_kwargs(env: &str, kwargs: &Kwargs) -> Result<Self, EnvError> {
        check_known_keys(env, kwargs, &["goal_velocity"])?;
        Ok(MountainCar {
            goal_velocity: kwarg(
                env,
                kwargs,
                "goal_velocity",
                0.0,
                "a finite number",
                parse_finite,
            )?,
            ..MountainCar::default()
        })
    }
}

impl Dynamics for MountainCar {
    const STATE_DIM: usize = 2;
    const OBS_DIM: usize = 2;
    type Act = i64;

    fn name(&self) -> &'static str {
        "MountainCar"
    }

    fn observation_space(&self) -> Space {
        Space::bounded(
            vec![self.min_position as f32, -self.max_speed as f32],
            vec![self.max_position as f32, self.max_speed as f32],
        )
    }

    fn action_space(&self) -> Space {
        Space::discrete(3)
    }

    fn parse_action(&self, action: Action<'_>) -> Result<i64, EnvError> {
        parse_discrete("MountainCar", 3, action)
    }

    fn reset_state<R: Rng + ?Sized>(&self, rng: &mut R, state: &mut [f64]) {
        state[0] = uniform(rng, -0.6, -0.4);
        state[1] = 0.0;
    }

    #[inline]
    fn step_state(&self, state: &mut [f64], action: i64) -> (f64, bool) {
        let (mut position, mut velocity) = (state[0], state[1]);
        velocity += (action - 1) as f64 * self.force + (3.0 * position).cos() * (-self.gravity);
        velocity = velocity.clamp(-self.max_speed, self.max_speed);
        position += velocity;
        position = position.clamp(self.min_position, self.max_position);
        if position == self.min_position && velocity < 0.0 {
            velocity = 0.0;
        }
        state[0] = position;
        state[1] = velocity;
        let terminated = position >= self.goal_position && velocity >= self.goal_velocity;
        (-1.0, terminated)
    }

    #[inline]
    fn observe(&self, state: &[f64], out: &mut [f32]) {
        out[0] = state[0] as f32;
        out[1] = state[1] as f32;
    }
}
