//! Inverted pendulum swing-up with a continuous torque, as gymnasium 1.x's `Pendulum-v1`.

use std::f64::consts::PI;

use rand::Rng;

use crate::classic::{
    Dynamics, Kwargs, check_known_keys, kwarg, parse_finite, py_square, py_square_f32,
};
use crate::core::{Action, EnvError};
use crate::seeding::uniform;
use crate::space::Space;

/// State `[theta, theta_dot]` (theta = 0 is upright); action `[torque]` in [−2, 2], clipped.
#[derive(Clone, Debug)]
pub struct Pendulum {
    pub max_speed: f64,
    pub max_torque: f32,
    pub dt: f64,
    pub g: f64,
    pub m: f64,
    pub l: f64,
}

impl Default for Pendulum {
    fn default() -> Self {
        Pendulum {
            max_speed: 8.0,
            max_torque: 2.0,
            dt: 0.05,
            g: 10.0,
            m: 1.0,
            l: 1.0,
        }
    }
}

impl Pendulum {
    pub fn from_kwargs(env: &str, kwargs: &Kwargs) -> Result<Self, EnvError> {
        check_known_keys(env, kwargs, &["g"])?;
        Ok(Pendulum {
            g: kwarg(env, kwargs, "g", 10.0, "a finite number", parse_finite)?,
            ..Pendulum::default()
        })
    }
}

/// gymnasium's `angle_normalize`: NumPy's floored modulo, so the result lies in [−π, π).
fn angle_normalize(x: f64) -> f64 {
    (x + PI).rem_euclid(2.0 * PI) - PI
}

impl Dynamics for Pendulum {
    const STATE_DIM: usize = 2;
    const OBS_DIM: usize = 3;
    /// The torque, already clipped to the action bounds (as `f32`, the action space's dtype).
    type Act = f32;

    fn name(&self) -> &'static str {
        "Pendulum"
    }

    fn observation_space(&self) -> Space {
        let high = vec![1.0, 1.0, self.max_speed as f32];
        Space::bounded(high.iter().map(|h| -h).collect(), high)
    }

    fn action_space(&self) -> Space {
        Space::bounded(vec![-self.max_torque], vec![self.max_torque])
    }

    fn parse_action(&self, action: Action<'_>) -> Result<f32, EnvError> {
        match action {
            // gymnasium clips out-of-range torques rather than rejecting them; NaN has no clip.
            Action::Continuous([u]) if u.is_finite() => {
                Ok(u.clamp(-self.max_torque, self.max_torque))
            }
            other => Err(EnvError::InvalidAction {
                env: "Pendulum".into(),
                action: format!("{other:?}"),
                expected: format!(
                    "Box([-{0}], [{0}], (1,), float32): one finite number (out-of-range torques are clipped)",
                    self.max_torque
                ),
            }),
        }
    }

    fn reset_state<R: Rng + ?Sized>(&self, rng: &mut R, state: &mut [f64]) {
        state[0] = uniform(rng, -PI, PI);
        state[1] = uniform(rng, -1.0, 1.0);
    }

    #[inline]
    fn step_state(&self, state: &mut [f64], u: f32) -> (f64, bool) {
        let (th, thdot) = (state[0], state[1]);
        // NumPy promotes `python_float * float32` to float32: those products are f32 here too,
        // and `x ** 2` is libm's pow, as in gymnasium.
        let u_cost = 0.001f32 * py_square_f32(u);
        let u_acc = (3.0 / (self.m * py_square(self.l))) as f32 * u;
        let costs = py_square(angle_normalize(th)) + 0.1 * py_square(thdot) + u_cost as f64;
        let newthdot = thdot + (3.0 * self.g / (2.0 * self.l) * th.sin() + u_acc as f64) * self.dt;
        let newthdot = newthdot.clamp(-self.max_speed, self.max_speed);
        let newth = th + newthdot * self.dt;
        state[0] = newth;
        state[1] = newthdot;
        (-costs, false)
    }

    #[inline]
    fn observe(&self, s: &[f64], out: &mut [f32]) {
        out[0] = s[0].cos() as f32;
        out[1] = s[0].sin() as f32;
        out[2] = s[1] as f32;
    }
}
