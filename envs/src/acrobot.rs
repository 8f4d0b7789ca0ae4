//! Acrobot (Sutton 1996) as gymnasium 1.x's `Acrobot-v1`: RK4 over one 0.2 s step, angles
//! wrapped to [−π, π], velocities bounded, `book_or_nips` dynamics variant.

use std::f64::consts::PI;

use rand::Rng;

use crate::classic::{
    Dynamics, Kwargs, check_known_keys, kwarg, parse_discrete, parse_finite, py_square,
};
use crate::core::{Action, EnvError};
use crate::seeding::uniform;
use crate::space::Space;

/// Which equations of motion: the book's (default) or the NIPS paper's, which drops one term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcrobotVariant {
    Book,
    Nips,
}

/// Two-link pendulum actuated at the joint. State `[theta1, theta2, dtheta1, dtheta2]`;
/// actions 0, 1, 2 apply torque −1, 0, +1.
#[derive(Clone, Debug)]
pub struct Acrobot {
    pub dt: f64,
    pub book_or_nips: AcrobotVariant,
}

const LINK_LENGTH_1: f64 = 1.0;
const LINK_MASS_1: f64 = 1.0;
const LINK_MASS_2: f64 = 1.0;
const LINK_COM_POS_1: f64 = 0.5;
const LINK_COM_POS_2: f64 = 0.5;
const LINK_MOI: f64 = 1.0;
const MAX_VEL_1: f64 = 4.0 * PI;
const MAX_VEL_2: f64 = 9.0 * PI;
const AVAIL_TORQUE: [f64; 3] = [-1.0, 0.0, 1.0];

impl Default for Acrobot {
    fn default() -> Self {
        Acrobot {
            dt: 0.2,
            book_or_nips: AcrobotVariant::Book,
        }
    }
}

impl Acrobot {
    pub fn from_kwargs(env: &str, kwargs: &Kwargs) -> Result<Self, EnvError> {
        check_known_keys(env, kwargs, &["book_or_nips", "dt"])?;
        Ok(Acrobot {
            book_or_nips: kwarg(
                env,
                kwargs,
                "book_or_nips",
                AcrobotVariant::Book,
                "'book', 'nips'",
                |s| match s {
                    "book" => Some(AcrobotVariant::Book),
                    "nips" => Some(AcrobotVariant::Nips),
                    _ => None,
                },
            )?,
            dt: kwarg(env, kwargs, "dt", 0.2, "a positive number", |s| {
                parse_finite(s).filter(|v| *v > 0.0)
            })?,
        })
    }

    /// Time derivative of `[theta1, theta2, dtheta1, dtheta2]` under torque `a`, written in
    /// gymnasium's operation order.
    #[inline]
    fn dsdt(&self, s: [f64; 4], a: f64) -> [f64; 4] {
        let (m1, m2, l1, lc1, lc2) = (
            LINK_MASS_1,
            LINK_MASS_2,
            LINK_LENGTH_1,
            LINK_COM_POS_1,
            LINK_COM_POS_2,
        );
        let (i1, i2) = (LINK_MOI, LINK_MOI);
        let g = 9.8;
        let [theta1, theta2, dtheta1, dtheta2] = s;
        let d1 = m1 * py_square(lc1)
            + m2 * (py_square(l1) + py_square(lc2) + 2.0 * l1 * lc2 * theta2.cos())
            + i1
            + i2;
        let d2 = m2 * (py_square(lc2) + l1 * lc2 * theta2.cos()) + i2;
        let phi2 = m2 * lc2 * g * (theta1 + theta2 - PI / 2.0).cos();
        let phi1 = -m2 * l1 * lc2 * py_square(dtheta2) * theta2.sin()
            - 2.0 * m2 * l1 * lc2 * dtheta2 * dtheta1 * theta2.sin()
            + (m1 * lc1 + m2 * l1) * g * (theta1 - PI / 2.0).cos()
            + phi2;
        let denom = m2 * py_square(lc2) + i2 - py_square(d2) / d1;
        let ddtheta2 = match self.book_or_nips {
            AcrobotVariant::Nips => (a + d2 / d1 * phi1 - phi2) / denom,
            AcrobotVariant::Book => {
                (a + d2 / d1 * phi1 - m2 * l1 * lc2 * py_square(dtheta1) * theta2.sin() - phi2)
                    / denom
            }
        };
        let ddtheta1 = -(d2 * ddtheta2 + phi1) / d1;
        [dtheta1, dtheta2, ddtheta1, ddtheta2]
    }
}

fn wrap(mut x: f64, m: f64, big_m: f64) -> f64 {
    let diff = big_m - m;
    while x > big_m {
        x -= diff;
    }
    while x < m {
        x += diff;
    }
    x
}

fn bound(x: f64, m: f64, big_m: f64) -> f64 {
    // Python's min(max(x, m), M).
    let lo = if m > x { m } else { x };
    if big_m < lo { big_m } else { lo }
}

fn axpy(y: [f64; 4], a: f64, k: [f64; 4]) -> [f64; 4] {
    std::array::from_fn(|i| y[i] + a * k[i])
}

impl Dynamics for Acrobot {
    const STATE_DIM: usize = 4;
    const OBS_DIM: usize = 6;
    type Act = i64;

    fn name(&self) -> &'static str {
        "Acrobot"
    }

    fn observation_space(&self) -> Space {
        let high = vec![1.0, 1.0, 1.0, 1.0, MAX_VEL_1 as f32, MAX_VEL_2 as f32];
        Space::bounded(high.iter().map(|h| -h).collect(), high)
    }

    fn action_space(&self) -> Space {
        Space::discrete(3)
    }

    fn parse_action(&self, action: Action<'_>) -> Result<i64, EnvError> {
        parse_discrete("Acrobot", 3, action)
    }

    fn reset_state<R: Rng + ?Sized>(&self, rng: &mut R, state: &mut [f64]) {
        // gymnasium draws in f64 and stores the initial state as float32.
        for s in state.iter_mut() {
            *s = uniform(rng, -0.1, 0.1) as f32 as f64;
        }
    }

    #[inline]
    fn step_state(&self, state: &mut [f64], action: i64) -> (f64, bool) {
        let torque = AVAIL_TORQUE[action as usize];
        let y0 = [state[0], state[1], state[2], state[3]];
        let (dt, dt2) = (self.dt, self.dt / 2.0);
        let k1 = self.dsdt(y0, torque);
        let k2 = self.dsdt(axpy(y0, dt2, k1), torque);
        let k3 = self.dsdt(axpy(y0, dt2, k2), torque);
        let k4 = self.dsdt(axpy(y0, dt, k3), torque);
        let mut ns: [f64; 4] =
            std::array::from_fn(|i| y0[i] + dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]));
        ns[0] = wrap(ns[0], -PI, PI);
        ns[1] = wrap(ns[1], -PI, PI);
        ns[2] = bound(ns[2], -MAX_VEL_1, MAX_VEL_1);
        ns[3] = bound(ns[3], -MAX_VEL_2, MAX_VEL_2);
        state.copy_from_slice(&ns);
        let terminated = -ns[0].cos() - (ns[1] + ns[0]).cos() > 1.0;
        (if terminated { 0.0 } else { -1.0 }, terminated)
    }

    #[inline]
    fn observe(&self, s: &[f64], out: &mut [f32]) {
        let v = [s[0].cos(), s[0].sin(), s[1].cos(), s[1].sin(), s[2], s[3]];
        for (o, x) in out.iter_mut().zip(v) {
            *o = x as f32;
        }
    }
}
