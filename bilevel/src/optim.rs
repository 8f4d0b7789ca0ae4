//! First-order optimisers on a [`Params`] (SGD and Adam), with their state kept outside the
//! parameters so that the solver can warm-start or reset it.

use serde::{Deserialize, Serialize};

use crate::params::Params;

fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}

/// An optimiser and its hyperparameters. `weight_decay` is added to the gradient (L2, as in
/// PyTorch's Adam).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    Sgd {
        lr: f64,
        #[serde(default)]
        weight_decay: f64,
    },
    Adam {
        lr: f64,
        #[serde(default = "default_beta1")]
        beta1: f64,
        #[serde(default = "default_beta2")]
        beta2: f64,
        #[serde(default = "default_eps")]
        eps: f64,
        #[serde(default)]
        weight_decay: f64,
    },
}

impl OptimizerConfig {
    /// Refuses values no optimiser can use, naming `field`: a learning rate that is not a finite
    /// positive number, a negative or non-finite weight decay, betas outside [0, 1), ε ≤ 0.
    pub fn check(&self, field: &str) -> Result<(), String> {
        let (lr, wd) = match self {
            OptimizerConfig::Sgd { lr, weight_decay } => (*lr, *weight_decay),
            OptimizerConfig::Adam {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                for (name, b) in [("beta1", beta1), ("beta2", beta2)] {
                    if !(0.0..1.0).contains(b) {
                        return Err(format!("{field}.{name} = {b}: must lie in [0, 1)"));
                    }
                }
                if !(eps.is_finite() && *eps > 0.0) {
                    return Err(format!("{field}.eps = {eps}: must be a finite number > 0"));
                }
                (*lr, *weight_decay)
            }
        };
        if !(lr.is_finite() && lr > 0.0) {
            return Err(format!("{field}.lr = {lr}: must be a finite number > 0"));
        }
        if !(wd.is_finite() && wd >= 0.0) {
            return Err(format!(
                "{field}.weight_decay = {wd}: must be a finite number ≥ 0"
            ));
        }
        Ok(())
    }

    pub fn adam(lr: f64) -> Self {
        OptimizerConfig::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }

    pub fn sgd(lr: f64) -> Self {
        OptimizerConfig::Sgd {
            lr,
            weight_decay: 0.0,
        }
    }
}

/// An optimiser with its running state.
#[derive(Debug, Clone)]
pub struct Optimizer {
    pub config: OptimizerConfig,
    moments: Option<(Params, Params)>,
    t: i32,
}

impl Optimizer {
    pub fn new(config: OptimizerConfig) -> Self {
        Self {
            config,
            moments: None,
            t: 0,
        }
    }

    /// Forget the moments and the step count.
    pub fn reset(&mut self) {
        self.moments = None;
        self.t = 0;
    }

    /// Adam's moments (m, v) and step count, for checkpoints (`None` before the first Adam step).
    pub fn state(&self) -> (Option<(&Params, &Params)>, i32) {
        (self.moments.as_ref().map(|(m, v)| (m, v)), self.t)
    }

    /// Restores what [`state`](Self::state) returned, so a resumed run takes the same steps.
    pub fn set_state(&mut self, moments: Option<(Params, Params)>, t: i32) {
        self.moments = moments;
        self.t = t;
    }

    /// One step: returns the updated parameters (detached).
    pub fn step(&mut self, params: &Params, grad: &Params) -> Params {
        match self.config {
            OptimizerConfig::Sgd { lr, weight_decay } => {
                let g = if weight_decay != 0.0 {
                    grad.axpy(weight_decay, params)
                } else {
                    grad.clone()
                };
                params.axpy(-lr, &g).detached()
            }
            OptimizerConfig::Adam {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                let g = if weight_decay != 0.0 {
                    grad.axpy(weight_decay, params)
                } else {
                    grad.clone()
                };
                let (m, v) = self
                    .moments
                    .take()
                    .unwrap_or_else(|| (params.zeros_like(), params.zeros_like()));
                let m = Params(
                    m.0.iter()
                        .zip(&g.0)
                        .map(|(m, g)| {
                            m.clone().mul_scalar(beta1) + g.clone().mul_scalar(1.0 - beta1)
                        })
                        .collect(),
                );
                let v = Params(
                    v.0.iter()
                        .zip(&g.0)
                        .map(|(v, g)| {
                            v.clone().mul_scalar(beta2) + g.clone().square().mul_scalar(1.0 - beta2)
                        })
                        .collect(),
                );
                self.t += 1;
                let c1 = 1.0 - beta1.powi(self.t);
                let c2 = 1.0 - beta2.powi(self.t);
                let out = Params(
                    params
                        .0
                        .iter()
                        .zip(m.0.iter().zip(&v.0))
                        .map(|(p, (m, v))| {
                            let step = m.clone().mul_scalar(1.0 / c1)
                                / (v.clone().mul_scalar(1.0 / c2).sqrt().add_scalar(eps));
                            (p.clone() - step.mul_scalar(lr)).detach()
                        })
                        .collect(),
                );
                self.moments = Some((m.detached(), v.detached()));
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::{Ctx, Precision};

    #[test]
    fn adam_first_step_moves_each_coordinate_by_lr() {
        // Bias correction makes Adam's first step lr·sign(g) (up to eps).
        let ctx = Ctx::from_env(Precision::F64);
        let p = Params::new(vec![ctx.tensor2(vec![1.0, 1.0], 1, 2)]);
        let g = Params::new(vec![ctx.tensor2(vec![3.0, -0.01], 1, 2)]);
        let out = Optimizer::new(OptimizerConfig::adam(0.1))
            .step(&p, &g)
            .to_flat();
        assert!(
            (out[0] - 0.9).abs() < 1e-6 && (out[1] - 1.1).abs() < 1e-5,
            "{out:?}"
        );
    }

    #[test]
    fn sgd_minimises_a_quadratic() {
        let ctx = Ctx::from_env(Precision::F64);
        let mut p = Params::new(vec![ctx.tensor2(vec![4.0], 1, 1)]);
        let mut opt = Optimizer::new(OptimizerConfig::sgd(0.25));
        for _ in 0..60 {
            let g = p.scale(2.0); // d/dp p²
            p = opt.step(&p, &g);
        }
        assert!(p.to_flat()[0].abs() < 1e-12);
    }
}
