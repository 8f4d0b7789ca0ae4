//! Maximum likelihood: the model fits next state and reward by squared error,
//! ½·mean_b w_b (‖ŝ′ − s′‖² + (r̂ − r)²).

use rand::rngs::StdRng;

use super::{LearningRule, StepData};
use crate::agent::Agent;

pub struct Mle;

impl LearningRule for Mle {
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
        let s = agent.obs_dim;
        let (mut ds, mut dr) = (vec![0.0; n * s], vec![0.0; n]);
        let mut loss = 0.0;
        for b in 0..n {
            let w = batch.weight[b];
            let mut sq = 0.0;
            for j in b * s..(b + 1) * s {
                let e = s2[j] - batch.next_obs[j];
                sq += e * e;
                ds[j] = w * e / nf;
            }
            let e = r[b] - batch.reward[b];
            dr[b] = w * e / nf;
            loss += (sq + e * e) * w;
        }
        (
            Some(agent.model_param_grad(mt, &ds, &dr)),
            loss * (0.5 / nf),
        )
    }
}
