//! CartPole (Barto, Sutton & Anderson 1983) with gymnasium 1.x's constants and operation order.

use std::f64::consts::PI;

use rand::Rng;

use crate::classic::{Dynamics, Kwargs, check_known_keys, kwarg, parse_bool, parse_discrete};
use crate::core::{Action, EnvError};
use crate::seeding::uniform;
use crate::space::Space;
use crate::trig::{SMALL_ANGLE, sin_cos_small};

/// Copies stepped together by the vectorised kernel (two AVX2 registers of f64).
const LANES: usize = 8;

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

impl CartPole {
    /// One step of the equations of motion given sin and cos of the angle, in gymnasium's operation
    /// order; returns `(reward, terminated)`.
    #[inline(always)]
    fn advance(
        &self,
        s: &mut [f64; 4],
        sintheta: f64,
        costheta: f64,
        push_right: bool,
    ) -> (f64, bool) {
        let [mut x, mut x_dot, mut theta, mut theta_dot] = *s;
        let total_mass = self.masspole + self.masscart;
        let polemass_length = self.masspole * self.length;
        let force = if push_right {
            self.force_mag
        } else {
            -self.force_mag
        };
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
        *s = [x, x_dot, theta, theta_dot];
        let terminated = x < -self.x_threshold
            || x > self.x_threshold
            || theta < -self.theta_threshold_radians
            || theta > self.theta_threshold_radians;
        let reward = match (terminated, self.sutton_barto_reward) {
            (_, false) => 1.0,
            (false, true) => 0.0,
            (true, true) => -1.0,
        };
        (reward, terminated)
    }

    /// [`CartPole::advance`] on [`LANES`] copies, one operation at a time across the copies so that
    /// every line becomes a SIMD instruction. Copies with `skip` keep their state.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn block(
        &self,
        x: &mut [f64; LANES],
        xd: &mut [f64; LANES],
        th: &mut [f64; LANES],
        thd: &mut [f64; LANES],
        act: &[bool; LANES],
        skip: &[bool; LANES],
    ) -> ([f64; LANES], [bool; LANES]) {
        let (mut sn, mut cs) = ([0.0; LANES], [0.0; LANES]);
        if th.iter().all(|t| t.abs() <= SMALL_ANGLE) {
            for k in 0..LANES {
                (sn[k], cs[k]) = sin_cos_small(th[k]);
            }
        } else {
            for k in 0..LANES {
                (sn[k], cs[k]) = (th[k].sin(), th[k].cos());
            }
        }
        let total_mass = self.masspole + self.masscart;
        let polemass_length = self.masspole * self.length;
        let (g, l, mp, tau, fm) = (
            self.gravity,
            self.length,
            self.masspole,
            self.tau,
            self.force_mag,
        );
        // One statement per loop: the compiler's SLP vectoriser handles these reliably.
        let sign: [f64; LANES] = std::array::from_fn(|k| 2.0 * f64::from(u8::from(act[k])) - 1.0);
        let mut temp = [0.0; LANES];
        for k in 0..LANES {
            temp[k] = (fm * sign[k] + polemass_length * (thd[k] * thd[k]) * sn[k]) / total_mass;
        }
        let mut thacc = [0.0; LANES];
        for k in 0..LANES {
            thacc[k] = (g * sn[k] - cs[k] * temp[k])
                / (l * (4.0 / 3.0 - mp * (cs[k] * cs[k]) / total_mass));
        }
        let mut xacc = [0.0; LANES];
        for k in 0..LANES {
            xacc[k] = temp[k] - polemass_length * thacc[k] * cs[k] / total_mass;
        }
        let (mut nx, mut nxd, mut nth, mut nthd) = (*x, *xd, *th, *thd);
        match self.kinematics_integrator {
            Integrator::Euler => {
                for k in 0..LANES {
                    nx[k] = x[k] + tau * xd[k];
                    nxd[k] = xd[k] + tau * xacc[k];
                    nth[k] = th[k] + tau * thd[k];
                    nthd[k] = thd[k] + tau * thacc[k];
                }
            }
            Integrator::SemiImplicitEuler => {
                for k in 0..LANES {
                    nxd[k] = xd[k] + tau * xacc[k];
                    nx[k] = x[k] + tau * nxd[k];
                    nthd[k] = thd[k] + tau * thacc[k];
                    nth[k] = th[k] + tau * nthd[k];
                }
            }
        }
        let (xt, tt) = (self.x_threshold, self.theta_threshold_radians);
        let (r_alive, r_end) = if self.sutton_barto_reward {
            (0.0, -1.0)
        } else {
            (1.0, 1.0)
        };
        let (mut rew, mut term) = ([0.0; LANES], [false; LANES]);
        for k in 0..LANES {
            term[k] = (nx[k] < -xt) | (nx[k] > xt) | (nth[k] < -tt) | (nth[k] > tt);
            rew[k] = if term[k] { r_end } else { r_alive };
            if !skip[k] {
                (x[k], xd[k], th[k], thd[k]) = (nx[k], nxd[k], nth[k], nthd[k]);
            }
        }
        (rew, term)
    }

    // The block body compiled twice: for the baseline target and, chosen at run time, for AVX2.
    // Kept out of line: inlined into the big loop the compiler stops vectorising it.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn block_base(
        &self,
        x: &mut [f64; LANES],
        xd: &mut [f64; LANES],
        th: &mut [f64; LANES],
        thd: &mut [f64; LANES],
        act: &[bool; LANES],
        skip: &[bool; LANES],
    ) -> ([f64; LANES], [bool; LANES]) {
        self.block(x, xd, th, thd, act, skip)
    }

    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    #[target_feature(enable = "avx2")]
    fn block_avx2(
        &self,
        x: &mut [f64; LANES],
        xd: &mut [f64; LANES],
        th: &mut [f64; LANES],
        thd: &mut [f64; LANES],
        act: &[bool; LANES],
        skip: &[bool; LANES],
    ) -> ([f64; LANES], [bool; LANES]) {
        self.block(x, xd, th, thd, act, skip)
    }

    fn step_batch_lanes(
        &self,
        state: &mut [f64],
        actions: &[bool],
        skip: &[bool],
        rewards: &mut [f64],
        terminated: &mut [bool],
        avx2: bool,
    ) {
        let n = actions.len();
        let (xs, rest) = state.split_at_mut(n);
        let (xds, rest) = rest.split_at_mut(n);
        let (ths, thds) = rest.split_at_mut(n);
        let full = n - n % LANES;
        for base in (0..full).step_by(LANES) {
            let r = base..base + LANES;
            let mut x: [f64; LANES] = xs[r.clone()].try_into().expect("block");
            let mut xd: [f64; LANES] = xds[r.clone()].try_into().expect("block");
            let mut th: [f64; LANES] = ths[r.clone()].try_into().expect("block");
            let mut thd: [f64; LANES] = thds[r.clone()].try_into().expect("block");
            let act: &[bool; LANES] = actions[r.clone()].try_into().expect("block");
            let skp: &[bool; LANES] = skip[r.clone()].try_into().expect("block");
            #[cfg(target_arch = "x86_64")]
            let (rew, term) = if avx2 {
                // SAFETY: `avx2` is true only when the CPU was detected to support AVX2.
                unsafe { self.block_avx2(&mut x, &mut xd, &mut th, &mut thd, act, skp) }
            } else {
                self.block_base(&mut x, &mut xd, &mut th, &mut thd, act, skp)
            };
            #[cfg(not(target_arch = "x86_64"))]
            let (rew, term) = {
                let _ = avx2;
                self.block_base(&mut x, &mut xd, &mut th, &mut thd, act, skp)
            };
            xs[r.clone()].copy_from_slice(&x);
            xds[r.clone()].copy_from_slice(&xd);
            ths[r.clone()].copy_from_slice(&th);
            thds[r.clone()].copy_from_slice(&thd);
            for k in 0..LANES {
                if !skp[k] {
                    rewards[base + k] = rew[k];
                    terminated[base + k] = term[k];
                }
            }
        }
        for i in full..n {
            if !skip[i] {
                let mut s = [xs[i], xds[i], ths[i], thds[i]];
                let (sn, cs) = (s[2].sin(), s[2].cos());
                (rewards[i], terminated[i]) = self.advance(&mut s, sn, cs, actions[i]);
                [xs[i], xds[i], ths[i], thds[i]] = s;
            }
        }
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

    #[inline]
    fn parse_action(&self, action: Action<'_>) -> Result<bool, EnvError> {
        parse_discrete("CartPole", 2, action).map(|a| a == 1)
    }

    fn reset_state<R: Rng + ?Sized>(&self, rng: &mut R, state: &mut [f64]) {
        for s in state.iter_mut() {
            *s = uniform(rng, -0.05, 0.05);
        }
    }

    #[inline]
    fn step_state(&self, state: &mut [f64], push_right: bool) -> (f64, bool) {
        let (sintheta, costheta) = (state[2].sin(), state[2].cos());
        let mut s = [state[0], state[1], state[2], state[3]];
        let out = self.advance(&mut s, sintheta, costheta, push_right);
        state.copy_from_slice(&s);
        out
    }

    /// The same physics as `step_state` on blocks of [`LANES`] copies: plain loops over fixed-size
    /// arrays that the compiler turns into SIMD code (AVX2 when the CPU has it). Sine and cosine
    /// come from [`sin_cos_small`] when every angle of the block is below [`SMALL_ANGLE`] (always,
    /// for non-terminated CartPole states), else from libm; the rest is the same IEEE arithmetic as
    /// the single env, so a copy differs from it only through a rare one-ulp sine or cosine.
    fn step_batch(
        &self,
        state: &mut [f64],
        actions: &[bool],
        skip: &[bool],
        rewards: &mut [f64],
        terminated: &mut [bool],
    ) {
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::arch::is_x86_feature_detected!("avx2");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        self.step_batch_lanes(state, actions, skip, rewards, terminated, avx2);
    }

    /// The observation is the state in f32: a transpose from columns to rows.
    fn observe_batch(&self, state: &[f64], obs: &mut [f32]) {
        let n = state.len() / 4;
        let (xs, rest) = state.split_at(n);
        let (xds, rest) = rest.split_at(n);
        let (ths, thds) = rest.split_at(n);
        for (i, o) in obs.chunks_exact_mut(4).enumerate().take(n) {
            o[0] = xs[i] as f32;
            o[1] = xds[i] as f32;
            o[2] = ths[i] as f32;
            o[3] = thds[i] as f32;
        }
    }

    #[inline]
    fn observe(&self, state: &[f64], out: &mut [f32]) {
        for (o, s) in out.iter_mut().zip(state) {
            *o = *s as f32;
        }
    }
}
