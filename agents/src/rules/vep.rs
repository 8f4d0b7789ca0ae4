//! VEP: value equivalence with fixed random value functions V_k — the model's Bellman backup
//! r̂ + γ·m·V_k(ŝ′) matches the real r + γ·m·V_k(s′) for every k.

use funcrl_bilevel::{Activation, Ctx, Init, Mlp};
use funcrl_kernels::Dense;
use rand::rngs::StdRng;

use super::{LearningRule, StepData};
use crate::agent::{Agent, dense};

pub struct Vep {
    /// The value functions' architecture.
    pub net: Mlp,
    /// Their fixed parameters, drawn once.
    pub values: Vec<Vec<f64>>,
    kernel: Dense,
}

impl Vep {
    pub fn new(
        ctx: &Ctx,
        obs_dim: usize,
        functions: usize,
        hidden: &[usize],
        init: Init,
        rng: &mut StdRng,
    ) -> Self {
        let net = Mlp::new(obs_dim, hidden.to_vec(), 1, Activation::Relu);
        let values = (0..functions)
            .map(|_| net.init_with(init, ctx, rng).to_flat())
            .collect();
        Self {
            kernel: dense(&net),
            net,
            values,
        }
    }
}

impl LearningRule for Vep {
    fn vep(&self) -> Option<&Vep> {
        Some(self)
    }

    fn model_step(
        &mut self,
        agent: &Agent,
        step: &StepData,
        _: &mut StdRng,
    ) -> (Option<Vec<f64>>, f64) {
        let batch = step.batch;
        let n = batch.len();
        let nf = n as f64;
        let mut mt = agent.tapes();
        let (s2, r) = agent.model_forward(batch, step.x, &mut mt);
        let (s, g) = (agent.obs_dim, agent.cfg.q.gamma);
        let (mut ds, mut dr) = (vec![0.0; n * s], vec![0.0; n]);
        let mut dx = vec![0.0; n * s];
        let mut loss = 0.0;
        let [mut tm, mut tr] = agent.tapes();
        for vk in &self.values {
            self.kernel.forward(vk, &s2, n, &mut tm);
            self.kernel.forward(vk, &batch.next_obs, n, &mut tr);
            let mut dv = vec![0.0; n];
            let mut l = 0.0;
            for b in 0..n {
                let m = batch.mask[b];
                let e =
                    (r[b] + m * tm.output()[b] * g) - (batch.reward[b] + m * tr.output()[b] * g);
                let w = batch.weight[b];
                l += e * e * w;
                dr[b] += w * e / nf;
                dv[b] = w * e * g * m / nf;
            }
            loss += l * (0.5 / nf);
            self.kernel.backward(vk, &tm, &dv, None, Some(&mut dx));
            for (p, q) in ds.iter_mut().zip(&dx) {
                *p += q;
            }
        }
        agent.recycle([tm, tr]);
        (Some(agent.model_param_grad(mt, &ds, &dr)), loss)
    }
}
