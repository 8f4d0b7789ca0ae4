//! CartPole (Barto, Sutton & Anderson 1983) with gymnasium 1.x's constants and operation order.

use std::f64::consts::PI;

use rand::{Rng, RngExt};

use crate::classic::{Dynamics, Kwargs, check_known_keys, kwarg, parse_bool, parse_discrete};
use crate::core::{Action, EnvError};
use crate::space::Space;

/// Gymnasium's `kinematics_integrator`: `"euler"` (default) or `"semi-implicit euler"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Integrator {
    Euler,
    SemiImplicitEuler,
}

/// Cart-pole physics. State `[x, x_dot, theta, theta_dot]`; action 0 pushes left, 1 right.
#[derive(Clone, Debug)]
pub struct CartPole {
    pub gravity: f64,
    pub masscart: f64,
    pub masspole: f64,
    pub length: f64,
    pub force_mag: f64,
    pub tau: f64,
    pub kinematics_integrator: Integrator,
    /// Reward 0 per step and −1 on termination instead of +1 per step.
    pub sutton_barto_reward: bool,
    pub theta_threshold_radians: f64,
    pub x_threshold: f64,
}

impl Default for CartPole {
    fn default() -> Self {
        CartPole {
            gravity: 9.8,
            masscart: 1.0,
            masspole: 0.1,
            length: 0.5,
            force_mag: 10.0,
            tau: 0.02,
            kinematics_integrator: Integrator::Euler,
            sutton_barto_reward: false,
            theta_threshold_radians: 12.0 * 2.0 * PI / 360.0,
            x_threshold: 2.4,
        }
    }
}

impl CartPole {
    /// Options as `gym.make("CartPole-v1", sutton_barto_reward=True)` takes them, plus the
    /// `kinematics_integrator` attribute gymnasium exposes on the unwrapped env.
    pub fn from_kwargs(env: &str, kwargs: &Kwargs) -> Result<Self, EnvError> {
        check_known_keys(
            env,
            kwargs,
            &["sutton_barto_reward", "kinematics_integrator"],
        )?;
        let mut c = CartPole {
            sutton_barto_reward: kwarg(
                env,
                kwargs,
                "sutton_barto_reward",
                false,
                "true, false",
                parse_bool,
            )?,
            ..CartPole::default()
        };
        c.kinematics_integrator = kwarg(
            env,
            kwargs,
            "kinematics_integrator",
            Integrator::Euler,
            "'euler', 'semi-implicit euler'",
            |s| match s {
                "euler" => Some(Integrator::Euler),
                "semi-implicit euler" | "semi-implicit-euler" => {
                    Some(Integrator::SemiImplicitEuler)
                }
                _ => None,
            },
        )?;
        Ok(c)
    }
}

impl Dynamics for CartPole {
    const STATE_DIM: usize = 4;
    const OBS_DIM: usize = 4;
    type Act = bool;

    fn name(&self) -> &'static str {
        "CartPole"
    }

    fn observation_space(&self) -> Space {
        let inf = f32::INFINITY;
        let high = vec![
            (self.x_threshold * 2.0) as f32,
            inf,
            (self.theta_threshold_radians * 2.0) as f32,
            inf,
        ];
        Space::bounded(high.iter().map(|h| -h).collect(), high)
    }

    fn action_space(&self) -> Space {
        Space::discrete(2)
    }

    fn parse_action(&self, action: Action<'_>) -> Result<bool, EnvError> {
        parse_discrete("CartPole", 2, action).map(|a| a == 1)
    }

    fn reset_state<R: Rng + ?Sized>(&self, rng: &mut R, state: &mut [f64]) {
        for s in state.iter_mut() {
            *s = rng.random_range(-0.05..0.05);
        }
    }

    #[inline]
    fn step_state(&self, state: &mut [f64], push_right: bool) -> (f64, bool) {
        let (mut x, mut x_dot, mut theta, mut theta_dot) = (state[0], state[1], state[2], state[3]);
        let total_mass = self.masspole + self.masscart;
        let polemass_length = self.masspole * self.length;
        let force = if push_right {
            self.force_mag
        } else {
            -self.force_mag
        };
        let costheta = theta.cos();
        let sintheta = theta.sin();
        // Same association as gymnasium, so results agree to the last bit.
        let temp = (force + polemass_length * (theta_dot * theta_dot) * sintheta) / total_mass;
        let thetaacc = (self.gravity * sintheta - costheta * temp)
            / (self.length * (4.0 / 3.0 - self.masspole * (costheta * costheta) / total_mass));
        let xacc = temp - polemass_length * thetaacc * costheta / total_mass;
        match self.kinematics_integrator {
            Integrator::Euler => {
                x += self.tau * x_dot;
                x_dot += self.tau * xacc;
                theta += self.tau * theta_dot;
                theta_dot += self.tau * thetaacc;
            }
            Integrator::SemiImplicitEuler => {
                x_dot += self.tau * xacc;
                x += self.tau * x_dot;
                theta_dot += self.tau * thetaacc;
                theta += self.tau * theta_dot;
            }
        }
        state[0] = x;
        state[1] = x_dot;
        state[2] = theta;
        state[3] = theta_dot;
        let terminated = x < -self.x_threshold
            || x > self.x_threshold
            || theta < -self.theta_threshold_radians
            || theta > self.theta_threshold_radians;
        let reward = match (terminated, self.sutton_barto_reward) {
            (false, false) | (true, false) => 1.0,
            (false, true) => 0.0,
            (true, true) => -1.0,
        };
        (reward, terminated)
    }

    #[inline]
    fn observe(&self, state: &[f64], out: &mut [f32]) {
        for (o, s) in out.iter_mut().zip(state) {
            *o = *s as f32;
        }
    }
}
