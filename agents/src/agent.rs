//! The agent. Every learning rule shares replay, the soft double-Q with its Polyak target, acting
//! and the update's first half (one Q step on model data — real data for `modelfree` — then
//! Polyak, then the outer loss on real data); they differ only in the model step, which each rule
//! computes in its own file under [`rules`](crate::rules).

use funcrl_bilevel::{Ctx, Mlp, Params};
use rand::{RngExt, rngs::StdRng};

use std::borrow::Cow;
use std::cell::RefCell;

use crate::config::{AgentConfig, PolicyQ};
use crate::nets::{DoubleQ, Predict, WorldModel};
use crate::problem::BatchTensors;
use crate::replay::Batch;
use crate::rules::{self, LearningRule, StepData};
use crate::targets::{sample_index, softmax_policy, value_range};
use funcrl_kernels::{Adam, Dense, Tape};

/// Losses of one update (NaN/Inf in any of them stops a run).
#[derive(Debug, Clone, Copy, Default)]
pub struct UpdateStats {
    /// The Q step's loss (on model data; on real data for `modelfree`).
    pub q_loss: f64,
    /// What the model step minimised: MLE squared error, VEP value-equivalence loss, the outer loss
    /// for FuncID/OMD (0 for `modelfree`).
    pub model_loss: f64,
    /// ½Σᵢ mean_b (Qᵢ − y)² on real data after the Q step: the outer objective, for every agent.
    pub outer_loss: f64,
}

impl UpdateStats {
    /// The first non-finite loss, by its metric name.
    pub fn non_finite(&self) -> Option<(&'static str, f64)> {
        [
            ("losses/q_loss", self.q_loss),
            ("losses/model_loss", self.model_loss),
            ("losses/outer_loss", self.outer_loss),
        ]
        .into_iter()
        .find(|(_, v)| !v.is_finite())
    }
}

/// An agent: the soft double-Q, its Polyak target, the world model and their optimisers, all as
/// flat host parameters (`Params::to_flat` order) updated by the host kernels
/// (`funcrl_kernels`).
/// The burn descriptions (`qnet`, `model`) serve the solver-based hypergradients (`funcid` with
/// a network adjoint, `omd` with CG) and the autodiff oracle in the tests.
pub struct Agent {
    pub ctx: Ctx,
    pub cfg: AgentConfig,
    pub obs_dim: usize,
    pub n_actions: usize,
    pub qnet: DoubleQ,
    pub model: WorldModel,
    /// [Q₁ | Q₂].
    pub q: Vec<f64>,
    pub q_target: Vec<f64>,
    /// ω = [next-state net | reward net].
    pub omega: Vec<f64>,
    pub q_opt: Adam,
    pub model_opt: Adam,
    /// How the model is learned (taken out during an update, which lends it `&self`).
    rule: Option<Box<dyn LearningRule>>,
    q_like: Params,
    omega_like: Params,
    /// Recycled activation tapes, so that an update allocates (almost) nothing.
    pool: RefCell<Vec<Tape>>,
    pub(crate) qd: Dense,
    pub(crate) sd: Dense,
    pub(crate) rd: Dense,
}

/// V̄ = α·logsumexp(min(Q̄₁, Q̄₂)/α) per row, and ∂V̄/∂Q̄₁, ∂V̄/∂Q̄₂ (`[n, A]`): the softmax weight
/// on whichever network attains the min.
fn soft_values(q1: &[f64], q2: &[f64], a: usize, alpha: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = q1.len() / a;
    let (mut v, mut d1, mut d2) = (Vec::with_capacity(n), vec![0.0; n * a], vec![0.0; n * a]);
    let mut m = vec![0.0; a];
    for b in 0..n {
        let row = b * a..(b + 1) * a;
        for ((mj, x), y) in m.iter_mut().zip(&q1[row.clone()]).zip(&q2[row.clone()]) {
            *mj = x.min(*y);
        }
        let mx = m.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = m
            .iter()
            .map(|mj| ((mj - mx) * (1.0 / alpha)).exp())
            .collect();
        let s: f64 = e.iter().sum();
        v.push(s.ln() * alpha + mx);
        for j in 0..a {
            let pi = e[j] / s;
            if q1[b * a + j] <= q2[b * a + j] {
                d1[b * a + j] = pi;
            } else {
                d2[b * a + j] = pi;
            }
        }
    }
    (v, d1, d2)
}

/// The Q the policy softmaxes: min(Q₁, Q₂) or ½(Q₁ + Q₂), per action.
fn policy_q(q1: &[f64], q2: &[f64], policy: PolicyQ) -> Vec<f64> {
    q1.iter()
        .zip(q2)
        .map(|(a, b)| match policy {
            PolicyQ::Min => a.min(*b),
            PolicyQ::Mean => 0.5 * (a + b),
        })
        .collect()
}

/// ½·mean_b w_b Σᵢ (Qᵢ(s_b, a_b) − y_b)² and its gradient w.r.t. each network's output.
fn q_loss_grad(
    tapes: &[Tape; 2],
    acts: &[usize],
    y: &[f64],
    w: &[f64],
    a: usize,
) -> (f64, [Vec<f64>; 2]) {
    let n = acts.len();
    let mut loss = 0.0;
    let mut d = [vec![0.0; n * a], vec![0.0; n * a]];
    for (i, t) in tapes.iter().enumerate() {
        let q = t.output();
        for b in 0..n {
            let j = b * a + acts[b];
            let e = q[j] - y[b];
            loss += e * e * w[b];
            d[i][j] = w[b] * e / n as f64;
        }
    }
    (loss * (0.5 / n as f64), d)
}

/// The host kernel of a burn [`Mlp`] description (ReLU hidden layers, same parameter layout).
pub fn dense(m: &Mlp) -> Dense {
    Dense::new(m.input, &m.hidden, m.output)
}

impl Agent {
    /// Fresh networks from `rng` (Q, target = Q, model, VEP value functions, in that order).
    pub fn new(cfg: AgentConfig, obs_dim: usize, n_actions: usize, rng: &mut StdRng) -> Self {
        let ctx = Ctx::flex(cfg.precision);
        let qnet = DoubleQ::new(obs_dim, cfg.q.hidden.clone(), n_actions);
        let q_like = qnet.init_with(cfg.q.init.scheme(), &ctx, rng);
        if let Some(v) = &cfg.action_values {
            assert_eq!(v.len(), n_actions, "one value per action");
        }
        let action_width = if cfg.action_values.is_some() {
            1
        } else {
            n_actions
        };
        let model = WorldModel::new(
            obs_dim,
            obs_dim + action_width,
            cfg.model.hidden.clone(),
            cfg.model.predict,
        );
        let omega_like = model.init_with(cfg.model.init.scheme(), &ctx, rng);
        let rule = rules::build(&cfg.learning, &ctx, obs_dim, cfg.q.init.scheme(), rng);
        let q = q_like.to_flat();
        let omega = omega_like.to_flat();
        Self {
            q_target: q.clone(),
            q_opt: Adam::new(cfg.q.lr, q.len()),
            model_opt: Adam::new(cfg.model.lr, omega.len()),
            pool: RefCell::new(Vec::new()),
            qd: dense(&qnet.net),
            sd: dense(&model.state_net),
            rd: dense(&model.reward_net),
            rule: Some(rule),
            ctx,
            obs_dim,
            n_actions,
            qnet,
            q,
            q_like,
            model,
            omega,
            omega_like,
            cfg,
        }
    }

    pub(crate) fn tapes(&self) -> [Tape; 2] {
        let mut p = self.pool.borrow_mut();
        [p.pop().unwrap_or_default(), p.pop().unwrap_or_default()]
    }

    pub(crate) fn recycle(&self, tapes: [Tape; 2]) {
        self.pool.borrow_mut().extend(tapes);
    }

    /// The flat parameters as burn [`Params`] shaped like Q (`q`, `q_target`) or ω (`omega`).
    pub fn q_params(&self, flat: &[f64]) -> Params {
        self.q_like.from_flat_like(&self.ctx, flat)
    }
    pub fn omega_params(&self, flat: &[f64]) -> Params {
        self.omega_like.from_flat_like(&self.ctx, flat)
    }

    /// The batch as tensors (actions are indices, one-hot encoded here).
    pub fn tensors(&self, b: &Batch) -> BatchTensors {
        let (n, s, a) = (b.len(), self.obs_dim, self.n_actions);
        let mut onehot2 = vec![0.0; n * 2 * a];
        for j in 0..n {
            let k = b.action[j] as usize;
            onehot2[j * 2 * a + k] = 1.0;
            onehot2[j * 2 * a + a + k] = 1.0;
        }
        let c = &self.ctx;
        BatchTensors {
            s: c.tensor2(b.obs.clone(), n, s),
            x: c.tensor2(self.model_input(b), n, self.model.state_net.input),
            onehot2: c.tensor2(onehot2, n, 2 * a),
            r: c.tensor2(b.reward.clone(), n, 1),
            s_next: c.tensor2(b.next_obs.clone(), n, s),
            mask: c.tensor2(b.mask.clone(), n, 1),
            w: c.tensor2(b.weight.clone(), n, 1),
            n,
        }
    }

    /// The model's input rows: (s, one_hot(a)), or (s, action value) for continuous actions.
    pub(crate) fn model_input(&self, b: &Batch) -> Vec<f64> {
        let (s, a) = (self.obs_dim, self.n_actions);
        let mut x = Vec::with_capacity(b.len() * (s + a));
        for j in 0..b.len() {
            x.extend_from_slice(&b.obs[j * s..(j + 1) * s]);
            let k = b.action[j] as usize;
            match &self.cfg.action_values {
                Some(v) => x.push(v[k]),
                None => x.extend((0..a).map(|i| if i == k { 1.0 } else { 0.0 })),
            }
        }
        x
    }

    pub(crate) fn q_forward(&self, theta: &[f64], s: &[f64], n: usize, tapes: &mut [Tape; 2]) {
        let k = self.qd.numel();
        self.qd.forward(&theta[..k], s, n, &mut tapes[0]);
        self.qd.forward(&theta[k..], s, n, &mut tapes[1]);
    }

    /// ∇_θ of a loss over [Q₁ | Q₂] given its output gradients, from the tapes of the last
    /// forward at θ = `self.q`.
    pub(crate) fn q_param_grad(&self, tapes: &[Tape; 2], dout: &[Vec<f64>; 2]) -> Vec<f64> {
        let k = self.qd.numel();
        let mut grad = vec![0.0; self.q.len()];
        let (g1, g2) = grad.split_at_mut(k);
        self.qd
            .backward(&self.q[..k], &tapes[0], &dout[0], Some(g1), None);
        self.qd
            .backward(&self.q[k..], &tapes[1], &dout[1], Some(g2), None);
        grad
    }

    /// r + γ·m·V̄(s') under the target network, per row (clipped to the value range of the
    /// batch's rewards with `q.clip_target`).
    pub(crate) fn target(&self, b: &Batch, r: &[f64], s_next: &[f64]) -> Vec<f64> {
        self.target_marked(b, r, s_next).0
    }

    /// The targets of [`Agent::target`] and, with `q.clip_target`, where one was clipped to the
    /// value range of the batch's rewards (empty when off or without a range).
    pub(crate) fn target_marked(
        &self,
        b: &Batch,
        r: &[f64],
        s_next: &[f64],
    ) -> (Vec<f64>, Vec<bool>) {
        let mut t = self.tapes();
        self.q_forward(&self.q_target, s_next, r.len(), &mut t);
        let (v, _, _) = soft_values(
            t[0].output(),
            t[1].output(),
            self.n_actions,
            self.cfg.q.alpha,
        );
        self.recycle(t);
        self.targets_from_values(b, r, &v)
    }

    /// r + γ·m·v per row, clipped as [`Agent::target_marked`] says, given V̄(s') = `v`.
    fn targets_from_values(&self, b: &Batch, r: &[f64], v: &[f64]) -> (Vec<f64>, Vec<bool>) {
        let q = &self.cfg.q;
        let mut y: Vec<f64> = (0..r.len())
            .map(|i| r[i] + b.mask[i] * v[i] * q.gamma)
            .collect();
        let marks = match b.reward_range.filter(|_| q.clip_target) {
            Some(range) => {
                let (lo, hi) = value_range(range, q.gamma, q.alpha, self.n_actions);
                y.iter_mut().map(|x| clamp_marked(x, lo, hi)).collect()
            }
            None => Vec::new(),
        };
        (y, marks)
    }

    /// (ŝ', r̂) and the tapes of both heads.
    pub(crate) fn model_forward(
        &self,
        b: &Batch,
        x: &[f64],
        tapes: &mut [Tape; 2],
    ) -> (Vec<f64>, Vec<f64>) {
        let ks = self.sd.numel();
        let n = b.len();
        self.sd.forward(&self.omega[..ks], x, n, &mut tapes[0]);
        self.rd.forward(&self.omega[ks..], x, n, &mut tapes[1]);
        let mut s2 = tapes[0].output().to_vec();
        if self.cfg.model.predict == Predict::Delta {
            for (o, s) in s2.iter_mut().zip(&b.obs) {
                *o += s;
            }
        }
        (s2, tapes[1].output().to_vec())
    }

    /// `model.clip_next_state`: ŝ' clipped in place to the batch's range of next states seen
    /// in replay; true where an entry was clipped (its derivative is zero there). Empty when off.
    pub(crate) fn clip_next(&self, b: &Batch, s2: &mut [f64]) -> Vec<bool> {
        if !self.cfg.model.clip_next_state || b.next_lo.len() != self.obs_dim {
            return Vec::new();
        }
        let d = self.obs_dim;
        s2.iter_mut()
            .enumerate()
            .map(|(j, x)| clamp_marked(x, b.next_lo[j % d], b.next_hi[j % d]))
            .collect()
    }

    /// `model.clip_reward`: r̂ clipped in place to the batch's range of rewards seen in replay;
    /// true where an entry was clipped (its derivative is zero there). Empty when off.
    pub(crate) fn clip_reward(&self, b: &Batch, r: &mut [f64]) -> Vec<bool> {
        let Some((lo, hi)) = b.reward_range.filter(|_| self.cfg.model.clip_reward) else {
            return Vec::new();
        };
        r.iter_mut().map(|x| clamp_marked(x, lo, hi)).collect()
    }

    /// ∇_ω of a loss given its gradients w.r.t. the next-state head's output (`ds`) and the
    /// reward head's (`dr`), from the tapes of [`Agent::model_forward`] (then recycled).
    pub(crate) fn model_param_grad(&self, tapes: [Tape; 2], ds: &[f64], dr: &[f64]) -> Vec<f64> {
        let ks = self.sd.numel();
        let mut g = vec![0.0; self.omega.len()];
        let (gs, gr) = g.split_at_mut(ks);
        self.sd
            .backward(&self.omega[..ks], &tapes[0], ds, Some(gs), None);
        self.rd
            .backward(&self.omega[ks..], &tapes[1], dr, Some(gr), None);
        self.recycle(tapes);
        g
    }

    /// ∇_ω Σ_b c_b·y_ω,b with y_ω = r_ω + γ·m·V̄(s'_ω) (V̄ at the real s' unless `through`): the
    /// model gradient of FuncID (c from the closed-form adjoint) and OMD (c from a JVP).
    pub(crate) fn model_target_vjp(
        &self,
        b: &Batch,
        x: &[f64],
        c: &[f64],
        through: bool,
    ) -> Vec<f64> {
        let ks = self.sd.numel();
        let (n, a) = (b.len(), self.n_actions);
        let mut mt = self.tapes();
        let (mut s2, mut r) = self.model_forward(b, x, &mut mt);
        let clipped = self.clip_next(b, &mut s2);
        // A clipped reward, or a clipped target, does not move with ω.
        let r_clipped = self.clip_reward(b, &mut r);
        // One Q̄ forward at ŝ' serves both the target clip and the gradient through V̄.
        let mut t = self.tapes();
        let soft = (through || self.cfg.q.clip_target).then(|| {
            self.q_forward(&self.q_target, &s2, n, &mut t);
            soft_values(t[0].output(), t[1].output(), a, self.cfg.q.alpha)
        });
        let y_clipped = match &soft {
            Some((v, _, _)) => self.targets_from_values(b, &r, v).1,
            None => Vec::new(),
        };
        let c = zero_where(c, &y_clipped);
        let c_r = zero_where(&c, &r_clipped);
        let mut g = vec![0.0; self.omega.len()];
        let (gs, gr) = g.split_at_mut(ks);
        self.rd
            .backward(&self.omega[ks..], &mt[1], &c_r, Some(gr), None);
        if let (true, Some((_, mut d1, mut d2))) = (through, soft) {
            for ((r1, r2), (cb, m)) in d1
                .chunks_exact_mut(a)
                .zip(d2.chunks_exact_mut(a))
                .zip(c.iter().zip(&b.mask))
            {
                let k = cb * self.cfg.q.gamma * m;
                r1.iter_mut().chain(r2.iter_mut()).for_each(|d| *d *= k);
            }
            let kq = self.qd.numel();
            let mut ds = vec![0.0; n * self.obs_dim];
            let mut dx = vec![0.0; n * self.obs_dim];
            self.qd
                .backward(&self.q_target[..kq], &t[0], &d1, None, Some(&mut ds));
            self.qd
                .backward(&self.q_target[kq..], &t[1], &d2, None, Some(&mut dx));
            for (p, q) in ds.iter_mut().zip(&dx) {
                *p += q;
            }
            for (p, _) in ds.iter_mut().zip(&clipped).filter(|(_, c)| **c) {
                *p = 0.0;
            }
            // ŝ' = out or s + out: the same gradient reaches the state net's output.
            self.sd
                .backward(&self.omega[..ks], &mt[0], &ds, Some(gs), None);
        }
        self.recycle(t);
        self.recycle(mt);
        g
    }

    /// The world model's (ŝ', r̂) for one observation and action index.
    pub fn model_predict(&self, obs: &[f64], action: usize) -> (Vec<f64>, f64) {
        let mut x = obs.to_vec();
        match &self.cfg.action_values {
            Some(v) => x.push(v[action]),
            None => x.extend((0..self.n_actions).map(|i| if i == action { 1.0 } else { 0.0 })),
        }
        let ks = self.sd.numel();
        let mut s2 = self.sd.forward_one(&self.omega[..ks], &x);
        if self.cfg.model.predict == Predict::Delta {
            s2.iter_mut().zip(obs).for_each(|(o, s)| *o += s);
        }
        let r = self.rd.forward_one(&self.omega[ks..], &x)[0];
        (s2, r)
    }

    /// V̄(s) = α·logsumexp(min(Q̄₁, Q̄₂)/α) under the target network.
    pub fn target_value(&self, obs: &[f64]) -> f64 {
        let k = self.qd.numel();
        let q1 = self.qd.forward_one(&self.q_target[..k], obs);
        let q2 = self.qd.forward_one(&self.q_target[k..], obs);
        soft_values(&q1, &q2, self.n_actions, self.cfg.q.alpha).0[0]
    }

    /// The learning rule (VEP's value functions, for instance, live there).
    pub fn rule(&self) -> &dyn LearningRule {
        self.rule
            .as_deref()
            .expect("the rule is back after every update")
    }

    /// One update on a real batch: a Q step, Polyak, then the model step of this agent's rule.
    /// Returns the losses and the per-sample real TD errors (for prioritized replay).
    pub fn update(&mut self, batch: &Batch, rng: &mut StdRng) -> (UpdateStats, Vec<f64>) {
        let (n, na) = (batch.len(), self.n_actions);
        let acts: Vec<usize> = batch.action.iter().map(|&a| a as usize).collect();
        let x = self.model_input(batch);
        let mut rule = self.rule.take().expect("one update at a time");

        // 1. Inner step: `q.steps` Adam steps (each followed by Polyak) of both Q-networks toward
        // model targets r_ω + γ·m·V̄(s'_ω) (real targets for a rule without a model).
        if self.cfg.q.reset_optimizer {
            self.q_opt = Adam::new(self.cfg.q.lr, self.q.len());
        }
        let mut tapes = self.tapes();
        let mut q_loss = 0.0;
        let mut model_next = None;
        for _ in 0..self.cfg.q.steps {
            let (y_in, w_in) = if rule.q_on_model_data() {
                // The model's (ŝ', r̂) do not change during the Q steps; V̄ does.
                let (s2, r) = model_next.get_or_insert_with(|| {
                    let mut mt = self.tapes();
                    let mut out = self.model_forward(batch, &x, &mut mt);
                    self.recycle(mt);
                    self.clip_next(batch, &mut out.0);
                    self.clip_reward(batch, &mut out.1);
                    out
                });
                (self.target(batch, r, s2), vec![1.0; n])
            } else {
                (
                    self.target(batch, &batch.reward, &batch.next_obs),
                    batch.weight.clone(),
                )
            };
            self.q_forward(&self.q, &batch.obs, n, &mut tapes);
            let (loss, dq) = q_loss_grad(&tapes, &acts, &y_in, &w_in, na);
            q_loss = loss;
            let grad = self.q_param_grad(&tapes, &dq);
            self.q_opt.step(&mut self.q, &grad);
            let tau = self.cfg.q.tau;
            for (t, q) in self.q_target.iter_mut().zip(&self.q) {
                *t = *t * (1.0 - tau) + q * tau;
            }
        }

        // 2. The outer objective on real data, at the new Q and Q̄.
        let y = self.target(batch, &batch.reward, &batch.next_obs);
        self.q_forward(&self.q, &batch.obs, n, &mut tapes);
        let (outer_loss, d_out) = q_loss_grad(&tapes, &acts, &y, &batch.weight, na);
        // Σᵢ (Qᵢ(s, a) − y) per row.
        let err: Vec<f64> = (0..n)
            .map(|b| {
                let j = b * na + acts[b];
                (tapes[0].output()[j] - y[b]) + (tapes[1].output()[j] - y[b])
            })
            .collect();
        let td: Vec<f64> = err.iter().map(|e| e * 0.5).collect();

        // 3. The model step: the only part that differs between rules.
        let step = StepData {
            batch,
            x: &x,
            acts: &acts,
            tapes: &tapes,
            d_out: &d_out,
            err: &err,
            y: &y,
            outer_loss,
        };
        let (model_grad, model_loss) = rule.model_step(self, &step, rng);
        self.rule = Some(rule);
        self.recycle(tapes);
        if let Some(mut g) = model_grad {
            if let Some(max) = self.cfg.model.grad_clip {
                let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
                if norm > max {
                    g.iter_mut().for_each(|v| *v *= max / norm);
                }
            }
            self.model_opt.step(&mut self.omega, &g);
        }
        (
            UpdateStats {
                q_loss,
                model_loss,
                outer_loss,
            },
            td,
        )
    }

    /// ε-greedy around softmax(Q/α) with Q = min(Q₁,Q₂) or ½(Q₁+Q₂) (`q.policy`): with
    /// probability ε a uniform action, else a draw from the softmax. Evaluation passes ε = 0.
    pub fn act(&self, obs: &[f64], epsilon: f64, rng: &mut StdRng) -> usize {
        if epsilon > 0.0 && rng.random::<f64>() < epsilon {
            return rng.random_range(0..self.n_actions);
        }
        sample_index(&self.policy(obs), rng.random::<f64>())
    }

    /// The softmax policy's action probabilities at `obs` (no ε).
    pub fn policy(&self, obs: &[f64]) -> Vec<f64> {
        softmax_policy(&self.policy_values(obs), self.cfg.q.alpha)
    }

    /// The action values the policy is a softmax of: min or mean of the two Q's (`q.policy`).
    pub fn policy_values(&self, obs: &[f64]) -> Vec<f64> {
        let k = self.qd.numel();
        let q1 = self.qd.forward_one(&self.q[..k], obs);
        let q2 = self.qd.forward_one(&self.q[k..], obs);
        policy_q(&q1, &q2, self.cfg.q.policy)
    }
}

/// `c` with zeros where `marks` is true (borrowed when nothing is marked).
fn zero_where<'a>(c: &'a [f64], marks: &[bool]) -> Cow<'a, [f64]> {
    if !marks.contains(&true) {
        return Cow::Borrowed(c);
    }
    let mut c = c.to_vec();
    for (v, _) in c.iter_mut().zip(marks).filter(|(_, k)| **k) {
        *v = 0.0;
    }
    Cow::Owned(c)
}

/// Clamps `x` to [lo, hi] in place; true if it was outside (its derivative is then zero).
fn clamp_marked(x: &mut f64, lo: f64, hi: f64) -> bool {
    let outside = *x < lo || *x > hi;
    *x = x.clamp(lo, hi);
    outside
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::soft_value_double;

    /// The policy against softmax(Q/α) computed by hand from each network's output, for both
    /// choices of Q.
    #[test]
    fn policy_softmaxes_the_min_or_the_mean_of_the_two_q_networks() {
        use crate::config::{ModelLearning, QConfig};
        use rand::SeedableRng;
        for policy in [PolicyQ::Min, PolicyQ::Mean] {
            let cfg = AgentConfig {
                learning: ModelLearning::Mle,
                q: QConfig {
                    hidden: vec![8],
                    alpha: 0.5,
                    policy,
                    ..QConfig::default()
                },
                model: Default::default(),
                precision: funcrl_bilevel::Precision::F64,
                action_values: None,
            };
            let agent = Agent::new(cfg, 4, 3, &mut StdRng::seed_from_u64(1));
            let obs = [0.3, -1.2, 0.8, 2.0];
            let k = agent.qd.numel();
            let (q1, q2) = (
                agent.qd.forward_one(&agent.q[..k], &obs),
                agent.qd.forward_one(&agent.q[k..], &obs),
            );
            assert!(q1.iter().zip(&q2).any(|(a, b)| (a - b).abs() > 1e-3));
            let q: Vec<f64> = (0..3)
                .map(|j| match policy {
                    PolicyQ::Min => q1[j].min(q2[j]),
                    PolicyQ::Mean => (q1[j] + q2[j]) / 2.0,
                })
                .collect();
            let z: f64 = q.iter().map(|v| (v / 0.5).exp()).sum();
            for (p, v) in agent.policy(&obs).iter().zip(&q) {
                assert!((p - (v / 0.5).exp() / z).abs() < 1e-12, "{policy:?}");
            }
        }
    }

    #[test]
    fn soft_values_match_the_host_oracle_and_finite_differences() {
        let q1 = [0.3, -0.2, 1.1, 0.5];
        let q2 = [0.1, 0.4, 1.0, 0.9];
        let (v, d1, d2) = soft_values(&q1, &q2, 2, 0.1);
        for b in 0..2 {
            let want = soft_value_double(&q1[2 * b..2 * b + 2], &q2[2 * b..2 * b + 2], 0.1);
            assert!((v[b] - want).abs() < 1e-14);
        }
        let h = 1e-6;
        for j in 0..4 {
            for (which, d) in [(0, &d1), (1, &d2)] {
                let at = |s: f64| {
                    let (mut a, mut b) = (q1, q2);
                    if which == 0 {
                        a[j] += s * h
                    } else {
                        b[j] += s * h
                    }
                    soft_values(&a, &b, 2, 0.1).0[j / 2]
                };
                let fd = (at(1.0) - at(-1.0)) / (2.0 * h);
                assert!((fd - d[j]).abs() < 1e-7, "{which} {j}: {fd} vs {}", d[j]);
            }
        }
    }

    /// With `model.clip_next_state`, FuncID/OMD's model gradient ∇_ω Σ_b c_b·y_ω,b is the
    /// gradient of the clipped target r_ω + γ·m·V̄(clip(ŝ'_ω)): checked against central finite
    /// differences, with bounds between predictions so that about half of the entries are
    /// clipped (and none sits on a bound), and against the unclipped gradient, which differs.
    /// Twice: with the model's rewards clipped (`model.clip_reward`), and with the targets
    /// clipped to the value range (`q.clip_target`, its reward range chosen so that about half
    /// of the targets fall outside).
    #[test]
    fn clipped_model_gradient_is_the_finite_difference_gradient() {
        use crate::config::{FuncidAdjoint, FuncidMode, ModelConfig, ModelLearning, QConfig};
        let (s_dim, n) = (4, 32);
        for predict in [Predict::NextState, Predict::Delta] {
            for clip in ["reward", "target"] {
                let cfg = AgentConfig {
                    learning: ModelLearning::Funcid {
                        mode: FuncidMode::Full,
                        adjoint_steps: 3,
                        adjoint: FuncidAdjoint::InnerSolution,
                    },
                    q: QConfig {
                        hidden: vec![16, 16],
                        clip_target: clip == "target",
                        ..QConfig::default()
                    },
                    model: ModelConfig {
                        hidden: vec![8, 8],
                        predict,
                        clip_next_state: true,
                        clip_reward: clip == "reward",
                        ..ModelConfig::default()
                    },
                    precision: funcrl_bilevel::Precision::F64,
                    action_values: None,
                };
                check_clipped_gradient(cfg, clip, s_dim, n);
            }
        }
    }

    /// Bounds halfway between the 25 % / 75 % values of `v` and their neighbours.
    fn quartile_bounds(mut v: Vec<f64>) -> (f64, f64) {
        v.sort_by(f64::total_cmp);
        let (lo, hi) = (v.len() / 4, 3 * v.len() / 4);
        ((v[lo] + v[lo + 1]) / 2.0, (v[hi] + v[hi + 1]) / 2.0)
    }

    fn check_clipped_gradient(cfg: AgentConfig, clip: &str, s_dim: usize, n: usize) {
        use rand::{RngExt, SeedableRng};
        let predict = cfg.model.predict;
        let mut agent = Agent::new(cfg, s_dim, 2, &mut StdRng::seed_from_u64(5));
        let mut rng = StdRng::seed_from_u64(6);
        let mut normal = || rng.random::<f64>() * 2.0 - 1.0;
        let obs: Vec<f64> = (0..n * s_dim).map(|_| normal()).collect();
        let mut b = Batch {
            indices: (0..n).collect(),
            action: (0..n).map(|i| (i % 2) as f64).collect(),
            next_obs: obs.iter().map(|x| x + 0.1).collect(),
            obs,
            reward: vec![1.0; n],
            mask: (0..n).map(|i| if i % 7 == 3 { 0.0 } else { 1.0 }).collect(),
            weight: vec![1.0; n],
            ..Batch::default()
        };
        let c: Vec<f64> = (0..n).map(|_| normal()).collect();
        let x = agent.model_input(&b);
        let mut mt = agent.tapes();
        let (s2, r) = agent.model_forward(&b, &x, &mut mt);
        agent.recycle(mt);
        // Per dimension, bounds halfway between the 25 % / 75 % predictions and their
        // neighbours.
        for j in 0..s_dim {
            let (lo, hi) = quartile_bounds(s2.iter().skip(j).step_by(s_dim).copied().collect());
            b.next_lo.push(lo);
            b.next_hi.push(hi);
        }
        let mut s2c = s2.clone();
        let clipped = agent.clip_next(&b, &mut s2c);
        let k = clipped.iter().filter(|c| **c).count();
        assert!(k > n && k < 3 * n, "{k} of {} entries clipped", s2.len());
        if clip == "reward" {
            // Rewards likewise: bounds between the 25 % / 75 % predicted rewards' neighbours.
            b.reward_range = Some(quartile_bounds(r.clone()));
            let k = agent
                .clip_reward(&b, &mut r.clone())
                .iter()
                .filter(|c| **c)
                .count();
            assert!(k > n / 4 && k < 3 * n / 4, "{k} of {n} rewards clipped");
        } else {
            // The reward range whose value range is the targets' quartile bounds (inverting
            // `value_range`; checked below).
            let (l, h) = quartile_bounds(agent.target(&b, &r, &s2c));
            let q = &agent.cfg.q;
            let e = q.alpha * 2f64.ln();
            let r_lo = if l >= 0.0 { l } else { l * (1.0 - q.gamma) };
            let r_hi = if h >= -e {
                h * (1.0 - q.gamma) - q.gamma * e
            } else {
                h
            };
            let (lo, hi) = value_range((r_lo, r_hi), q.gamma, q.alpha, 2);
            assert!((lo - l).abs() < 1e-12 && (hi - h).abs() < 1e-12);
            b.reward_range = Some((r_lo, r_hi));
            let k = agent
                .target_marked(&b, &r, &s2c)
                .1
                .iter()
                .filter(|c| **c)
                .count();
            assert!(k > n / 4 && k < 3 * n / 4, "{k} of {n} targets clipped");
        }
        let objective = |agent: &Agent| {
            let mut mt = agent.tapes();
            let (mut s2, mut r) = agent.model_forward(&b, &x, &mut mt);
            agent.recycle(mt);
            agent.clip_next(&b, &mut s2);
            agent.clip_reward(&b, &mut r);
            let y = agent.target(&b, &r, &s2);
            y.iter().zip(&c).map(|(y, c)| y * c).sum::<f64>()
        };
        let g = agent.model_target_vjp(&b, &x, &c, true);
        let omega = agent.omega.clone();
        let mut dir_rng = StdRng::seed_from_u64(7);
        for _ in 0..4 {
            let u: Vec<f64> = (0..omega.len())
                .map(|_| dir_rng.random::<f64>() - 0.5)
                .collect();
            let mut at = |h: f64| {
                agent.omega = omega.iter().zip(&u).map(|(w, d)| w + h * d).collect();
                objective(&agent)
            };
            let h = 1e-6;
            let fd = (at(h) - at(-h)) / (2.0 * h);
            agent.omega = omega.clone();
            let an: f64 = g.iter().zip(&u).map(|(x, d)| x * d).sum();
            assert!(
                (fd - an).abs() <= 1e-6 * an.abs().max(1e-3),
                "{predict:?}, {clip}: finite difference {fd} vs gradient {an}"
            );
        }
        // Each clip changes the gradient on its own.
        for field in [clip, "next state"] {
            let flag = |a: &mut Agent, on: bool| match field {
                "reward" => a.cfg.model.clip_reward = on,
                "target" => a.cfg.q.clip_target = on,
                _ => a.cfg.model.clip_next_state = on,
            };
            flag(&mut agent, false);
            let unclipped = agent.model_target_vjp(&b, &x, &c, true);
            flag(&mut agent, true);
            let diff: f64 = g.iter().zip(&unclipped).map(|(a, b)| (a - b).abs()).sum();
            assert!(
                diff > 1e-3,
                "{predict:?}: {field} clipping did not change the gradient"
            );
        }
    }
}
