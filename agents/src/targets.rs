//! Small pure functions shared by every agent: how a transition ended, Bellman targets, soft
//! values and the softmax policy. Host (`f64`) versions are the oracles for the tensor versions.

use burn::tensor::Tensor;

/// How a transition ended. Termination (the MDP reached a terminal state) stops bootstrapping;
/// truncation (a time limit) does not, because the state after it still has a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Ending {
    Continues = 0,
    Terminated = 1,
    Truncated = 2,
}

impl Ending {
    /// Gymnasium's flags; both set (a terminal state reached on the last allowed step) is a
    /// termination: there is nothing to bootstrap from.
    pub fn from_flags(terminated: bool, truncated: bool) -> Self {
        if terminated {
            Ending::Terminated
        } else if truncated {
            Ending::Truncated
        } else {
            Ending::Continues
        }
    }

    /// m in r + γ·m·V(s'): 0 after termination, 1 otherwise (truncation bootstraps).
    pub fn bootstrap_mask(self) -> f64 {
        match self {
            Ending::Terminated => 0.0,
            Ending::Continues | Ending::Truncated => 1.0,
        }
    }

    /// True when the episode is over for either reason (reset the environment).
    pub fn episode_over(self) -> bool {
        self != Ending::Continues
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Ending::Continues),
            1 => Some(Ending::Terminated),
            2 => Some(Ending::Truncated),
            _ => None,
        }
    }
}

/// α·logsumexp(q/α), computed stably (shifted by the max). α → 0 gives max(q).
pub fn soft_value(q: &[f64], alpha: f64) -> f64 {
    let m = q.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let s: f64 = q.iter().map(|v| ((v - m) / alpha).exp()).sum();
    m + alpha * s.ln()
}

/// V̄(s) = α·logsumexp(min(Q̄₁, Q̄₂)(s)/α) for one state.
pub fn soft_value_double(q1: &[f64], q2: &[f64], alpha: f64) -> f64 {
    let m: Vec<f64> = q1.iter().zip(q2).map(|(a, b)| a.min(*b)).collect();
    soft_value(&m, alpha)
}

/// y = r + γ·m·V(s').
pub fn bellman_target(reward: f64, gamma: f64, mask: f64, v_next: f64) -> f64 {
    reward + gamma * mask * v_next
}

/// The interval every soft Q-value lies in when rewards lie in `[r_lo, r_hi]`, with discount γ,
/// temperature α and `n_actions` actions: V = α·logsumexp(Q/α) exceeds max Q by at most α·ln|A|,
/// so Q ≤ r_hi + γ(Q_max + α·ln|A|) gives the upper end, Q ≥ r_lo + γ·m·Q_min the lower; a
/// terminal target is r itself, hence the min/max with the rewards.
pub fn value_range(reward: (f64, f64), gamma: f64, alpha: f64, n_actions: usize) -> (f64, f64) {
    let (r_lo, r_hi) = reward;
    let entropy = alpha * (n_actions as f64).ln();
    (
        r_lo.min(r_lo / (1.0 - gamma)),
        r_hi.max((r_hi + gamma * entropy) / (1.0 - gamma)),
    )
}

/// softmax(q/α), stable.
pub fn softmax_policy(q: &[f64], alpha: f64) -> Vec<f64> {
    let m = q.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = q.iter().map(|v| ((v - m) / alpha).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// Index drawn from `probs` with the uniform number `u` ∈ [0, 1) (inverse CDF).
pub fn sample_index(probs: &[f64], u: f64) -> usize {
    let mut acc = 0.0;
    for (i, p) in probs.iter().enumerate() {
        acc += p;
        if u < acc {
            return i;
        }
    }
    probs.len() - 1
}

/// Tensor version of [`soft_value_double`]: `[B, A]` × 2 → `[B, 1]`. The max shift is detached:
/// logsumexp does not depend on it, so its gradient is exactly zero.
pub fn soft_value_t(q1: Tensor<2>, q2: Tensor<2>, alpha: f64) -> Tensor<2> {
    let m = q1.min_pair(q2);
    let mx = m.clone().max_dim(1).detach();
    let lse = (m - mx.clone())
        .mul_scalar(1.0 / alpha)
        .exp()
        .sum_dim(1)
        .log();
    lse.mul_scalar(alpha) + mx
}

/// Tensor version of [`bellman_target`]: `[B, 1]` each.
pub fn bellman_target_t(
    reward: Tensor<2>,
    gamma: f64,
    mask: Tensor<2>,
    v_next: Tensor<2>,
) -> Tensor<2> {
    reward + (mask * v_next).mul_scalar(gamma)
}

#[cfg(test)]
mod tests {
    use super::*;
    use funcrl_bilevel::{Ctx, Precision, ctx::to_vec};

    #[test]
    fn masks_by_hand() {
        assert_eq!(Ending::from_flags(true, false).bootstrap_mask(), 0.0);
        assert_eq!(Ending::from_flags(false, true).bootstrap_mask(), 1.0);
        assert_eq!(Ending::from_flags(false, false).bootstrap_mask(), 1.0);
        // terminal state on the last allowed step: no bootstrap
        assert_eq!(Ending::from_flags(true, true), Ending::Terminated);
        assert!(Ending::Truncated.episode_over() && !Ending::Continues.episode_over());
        for e in [Ending::Continues, Ending::Terminated, Ending::Truncated] {
            assert_eq!(Ending::from_u8(e as u8), Some(e));
        }
        assert_eq!(Ending::from_u8(7), None);
    }

    #[test]
    fn bellman_targets_by_hand() {
        // r = 1, γ = 0.9, V(s') = 10: continuing/truncated 1 + 9 = 10, terminated 1.
        assert_eq!(
            bellman_target(1.0, 0.9, Ending::Truncated.bootstrap_mask(), 10.0),
            10.0
        );
        assert_eq!(
            bellman_target(1.0, 0.9, Ending::Terminated.bootstrap_mask(), 10.0),
            1.0
        );
        assert_eq!(bellman_target(-2.0, 0.5, 1.0, 4.0), 0.0);
    }

    #[test]
    fn soft_values_by_hand() {
        // α·ln(e^{1/α} + e^{1/α}) = 1 + α ln 2
        let v = soft_value(&[1.0, 1.0], 0.5);
        assert!((v - (1.0 + 0.5 * 2f64.ln())).abs() < 1e-15);
        // α = 1: ln(e^0 + e^{ln 3}) = ln 4
        assert!((soft_value(&[0.0, 3f64.ln()], 1.0) - 4f64.ln()).abs() < 1e-15);
        // small α: close to the max, no overflow at q/α = 1e4
        assert!((soft_value(&[100.0, 0.0], 0.01) - 100.0).abs() < 1e-12);
        // double: min per action first, min(3,1)=1, min(0,2)=0 → ln(e + 1) at α = 1
        let v = soft_value_double(&[3.0, 0.0], &[1.0, 2.0], 1.0);
        assert!((v - (1f64.exp() + 1.0).ln()).abs() < 1e-15);
        let p = softmax_policy(&[0.0, 2f64.ln()], 1.0);
        assert!((p[0] - 1.0 / 3.0).abs() < 1e-15 && (p[1] - 2.0 / 3.0).abs() < 1e-15);
        assert_eq!(sample_index(&p, 0.3), 0);
        assert_eq!(sample_index(&p, 0.34), 1);
    }

    #[test]
    fn tensor_versions_match_host() {
        let ctx = Ctx::flex(Precision::F64);
        let q1 = vec![3.0, 0.0, 0.5, 0.7, -1.0, 200.0];
        let q2 = vec![1.0, 2.0, 0.6, 0.1, -3.0, 100.0];
        let v = to_vec(&soft_value_t(
            ctx.tensor2(q1.clone(), 3, 2),
            ctx.tensor2(q2.clone(), 3, 2),
            0.3,
        ));
        for b in 0..3 {
            let want = soft_value_double(&q1[2 * b..2 * b + 2], &q2[2 * b..2 * b + 2], 0.3);
            assert!((v[b] - want).abs() < 1e-12, "{b}: {} vs {want}", v[b]);
        }
        let y = to_vec(&bellman_target_t(
            ctx.tensor2(vec![1.0, 1.0], 2, 1),
            0.9,
            ctx.tensor2(vec![1.0, 0.0], 2, 1),
            ctx.tensor2(vec![10.0, 10.0], 2, 1),
        ));
        assert_eq!(y, vec![10.0, 1.0]);
    }

    /// Soft value iteration as the oracle: on random MDPs (rewards in [r_lo, r_hi], some
    /// transitions terminal) the fixed point Q* lies in `value_range`, and a one-state MDP that
    /// always pays r_hi and never ends reaches its upper end exactly; its lower end for r_lo < 0.
    #[test]
    fn value_range_contains_soft_fixed_points_and_is_attained() {
        use rand::{RngExt, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(3);
        for (gamma, alpha, na, r_lo, r_hi) in [
            (0.9, 0.1, 2usize, 1.0, 1.0),
            (0.8, 0.5, 3, -2.0, 0.5),
            (0.5, 0.0, 4, -1.0, -0.2),
        ] {
            let (lo, hi) = value_range((r_lo, r_hi), gamma, alpha, na);
            let soft = |q: &[f64]| {
                if alpha == 0.0 {
                    q.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                } else {
                    soft_value(q, alpha)
                }
            };
            // One state, reward r, never terminal: Q = r + γ·(Q + α ln|A|) for every action.
            let fixed = |r: f64| {
                let mut q = vec![0.0; na];
                for _ in 0..2000 {
                    let v = soft(&q);
                    q = vec![r + gamma * v; na];
                }
                q[0]
            };
            // The upper end is the never-ending chain's value, or r_hi itself (a terminal
            // target) when that is larger (r_hi < 0 with little entropy).
            let e = alpha * (na as f64).ln();
            let want = if (r_hi + gamma * e) / (1.0 - gamma) >= r_hi {
                fixed(r_hi)
            } else {
                r_hi
            };
            assert!((want - hi).abs() < 1e-9, "{want} vs {hi}");
            if alpha == 0.0 || r_lo >= 0.0 {
                // Without entropy (or with r_lo ≥ 0 and the terminal bound) the lower end too.
                let want = if r_lo < 0.0 { fixed(r_lo) } else { r_lo };
                assert!((want - lo).abs() < 1e-9, "{want} vs {lo}");
            }
            // Random MDPs: 5 states, rewards and next states per (s, a), 30 % terminal.
            for _ in 0..20 {
                let (ns, k) = (5, 5 * na);
                let r: Vec<f64> = (0..k)
                    .map(|_| r_lo + (r_hi - r_lo) * rng.random::<f64>())
                    .collect();
                let next: Vec<usize> = (0..k).map(|_| rng.random_range(0..ns)).collect();
                let term: Vec<bool> = (0..k).map(|_| rng.random::<f64>() < 0.3).collect();
                let mut q = vec![0.0; k];
                for _ in 0..3000 {
                    let v: Vec<f64> = (0..ns).map(|s| soft(&q[s * na..(s + 1) * na])).collect();
                    q = (0..k)
                        .map(|j| r[j] + if term[j] { 0.0 } else { gamma * v[next[j]] })
                        .collect();
                }
                for x in q {
                    assert!(x >= lo - 1e-9 && x <= hi + 1e-9, "{x} outside [{lo}, {hi}]");
                }
            }
        }
    }
}
