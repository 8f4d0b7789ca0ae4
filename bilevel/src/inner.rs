//! The inner problem: G(ω, θ) = L_in(ω, h_θ) + ½ λ ‖[W; b]‖² (ridge on the head only), solved by
//! warm-started optimiser steps and, optionally, an exact ridge solve of the head.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::{
    ctx::{Ctx, scalar, to_vec},
    error::BilevelError,
    linalg::weighted_ridge_solve,
    model::InnerModel,
    optim::{Optimizer, OptimizerConfig},
    params::Params,
    problem::BilevelProblem,
};

fn default_true() -> bool {
    true
}
fn default_inner_optimizer() -> OptimizerConfig {
    OptimizerConfig::adam(1e-3)
}

/// How the inner problem is solved at each outer iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InnerConfig {
    /// Optimiser steps per outer iteration (warm-started from the previous θ).
    pub steps: usize,
    #[serde(default = "default_inner_optimizer")]
    pub optimizer: OptimizerConfig,
    /// Keep the optimiser's moments across outer iterations (else reset them every time).
    #[serde(default = "default_true")]
    pub keep_optimizer_state: bool,
    /// Ridge λ on the head [W; b].
    #[serde(default)]
    pub ridge: f64,
    /// After the steps, solve the head exactly (one Newton step on [W; b], exact for losses
    /// quadratic in v). Needs the problem's `inner_hessian_diag`.
    #[serde(default)]
    pub closed_form_head: bool,
    /// Train the features through the exact head: the head is solved before every step, so each
    /// step is the gradient of G profiled over the head (envelope theorem), and once more after
    /// the last one. This is the reference code's `CompositeSolver`. Implies `closed_form_head`.
    #[serde(default)]
    pub head_through_closed_form: bool,
    /// Call the model's `refresh` (spectral norm's power step) before every step, as PyTorch's
    /// `spectral_norm` does on every training-mode forward; otherwise the caller refreshes once
    /// per outer iteration.
    #[serde(default)]
    pub refresh_every_step: bool,
}

impl Default for InnerConfig {
    fn default() -> Self {
        Self {
            steps: 20,
            optimizer: default_inner_optimizer(),
            keep_optimizer_state: true,
            ridge: 0.0,
            closed_form_head: false,
            head_through_closed_form: false,
            refresh_every_step: false,
        }
    }
}

/// G(ω, θ) as a one-element tensor (differentiable in whichever of ω, θ are tracked).
pub fn inner_objective<P: BilevelProblem, M: InnerModel>(
    problem: &P,
    model: &M,
    omega: &Params,
    theta: &Params,
    x: &Tensor<2>,
    batch: &P::InnerBatch,
    ridge: f64,
) -> Tensor<1> {
    let v = model.forward(theta, x).output;
    let loss = problem.inner_loss(omega, v, batch);
    if ridge == 0.0 {
        return loss;
    }
    let k = theta.len();
    let head = theta.0[k - 2].clone().square().sum() + theta.0[k - 1].clone().square().sum();
    loss + head.mul_scalar(0.5 * ridge)
}

/// (∇_θ G, ∇_ω G) from one backward.
pub fn inner_grads<P: BilevelProblem, M: InnerModel>(
    problem: &P,
    model: &M,
    omega: &Params,
    theta: &Params,
    x: &Tensor<2>,
    batch: &P::InnerBatch,
    ridge: f64,
) -> (Params, Params) {
    let (om, th) = (omega.tracked(), theta.tracked());
    let grads = inner_objective(problem, model, &om, &th, x, batch, ridge).backward();
    (th.grads(&grads), om.grads(&grads))
}

/// ∇_θ G only (ω held constant), through the model's [`InnerModel::grad_through`] where it has
/// one.
pub fn inner_grad_theta<P: BilevelProblem, M: InnerModel>(
    problem: &P,
    model: &M,
    omega: &Params,
    theta: &Params,
    x: &Tensor<2>,
    batch: &P::InnerBatch,
    ridge: f64,
) -> (Params, f64) {
    let om = omega.detached();
    // A model with its own gradient route: ∂L_in/∂v by a backward of L_in alone (v a leaf: one
    // evaluation of the loss serves its value and its gradient), then the ridge on the head.
    let mut value = 0.0;
    let fused = model.grad_through(theta, x, None, &mut |v| {
        let v = Params::new(vec![v]).tracked();
        let loss = problem.inner_loss(&om, v.0[0].clone(), batch);
        value = scalar(loss.clone().detach());
        v.grads(&loss.backward()).0.remove(0)
    });
    if let Some(mut g) = fused {
        if ridge != 0.0 {
            let k = theta.len();
            for j in [k - 2, k - 1] {
                let p = theta.0[j].clone().detach();
                value += 0.5 * ridge * scalar(p.clone().square().sum());
                g.0[j] = g.0[j].clone() + p.mul_scalar(ridge);
            }
        }
        return (g, value);
    }
    let th = theta.tracked();
    let loss = inner_objective(problem, model, &om, &th, x, batch, ridge);
    let value = scalar(loss.clone().detach());
    (th.grads(&loss.backward()), value)
}

/// `[Φ, 1]` on the host, row-major n×(p+1).
pub fn augmented_features(features: &Tensor<2>) -> (Vec<f64>, usize, usize) {
    let [n, p] = features.dims();
    let f = to_vec(features);
    let mut out = Vec::with_capacity(n * (p + 1));
    for r in 0..n {
        out.extend_from_slice(&f[r * p..(r + 1) * p]);
        out.push(1.0);
    }
    (out, n, p + 1)
}

/// Exact head for a loss quadratic in v: one Newton step on [W; b] with the features fixed,
/// (Φ̃ᵀ diag(H_c) Φ̃ / n + λI) Δ_c = −(Φ̃ᵀ g_c / n + λ [W; b]_c) for every output c.
#[allow(clippy::too_many_arguments)]
pub fn solve_head<P: BilevelProblem, M: InnerModel>(
    ctx: &Ctx,
    problem: &P,
    model: &M,
    omega: &Params,
    theta: &Params,
    x: &Tensor<2>,
    batch: &P::InnerBatch,
    ridge: f64,
) -> Result<Params, BilevelError> {
    let omega = omega.detached();
    let fwd = model.forward(&theta.detached(), x);
    let v = fwd.output.detach();
    let h = problem
        .inner_hessian_diag(&omega, v.clone(), batch)
        .ok_or(BilevelError::MissingCurvature("closed_form_head"))?;
    let g = to_vec(&problem.inner_grad_v(&omega, v.clone(), batch));
    let (phi, n, q) = augmented_features(&fwd.features);
    let dv = v.dims()[1];
    let k = theta.len();
    let head: Vec<f64> = to_vec(&theta.0[k - 2])
        .into_iter()
        .chain(to_vec(&theta.0[k - 1]))
        .collect();
    // rhs = −(Φ̃ᵀ g / n + λ head)
    let mut rhs: Vec<f64> = head.iter().map(|w| -ridge * w).collect();
    for s in 0..n {
        for i in 0..q {
            let f = phi[s * q + i] / n as f64;
            for c in 0..dv {
                rhs[i * dv + c] -= f * g[s * dv + c];
            }
        }
    }
    let delta = weighted_ridge_solve(&phi, &to_vec(&h), &rhs, n, q, dv, ridge)
        .ok_or_else(|| BilevelError::failed_solve("closed-form head", &[&phi, &rhs]))?;
    let new: Vec<f64> = head.iter().zip(&delta).map(|(a, b)| a + b).collect();
    let mut out = theta.detached();
    out.0[k - 2] = ctx.tensor2(new[..(q - 1) * dv].to_vec(), q - 1, dv);
    out.0[k - 1] = ctx.tensor2(new[(q - 1) * dv..].to_vec(), 1, dv);
    Ok(out)
}

/// The inner solver: θ and its optimiser, kept across outer iterations.
pub struct InnerSolver {
    pub config: InnerConfig,
    pub optimizer: Optimizer,
}

impl InnerSolver {
    pub fn new(config: InnerConfig) -> Self {
        let optimizer = Optimizer::new(config.optimizer.clone());
        Self { config, optimizer }
    }

    /// Runs the configured steps from `theta`; returns the new θ and the last inner objective.
    pub fn solve<P: BilevelProblem, M: InnerModel>(
        &mut self,
        ctx: &Ctx,
        problem: &P,
        model: &M,
        omega: &Params,
        theta: &Params,
        batch: &P::InnerBatch,
    ) -> Result<(Params, f64), BilevelError> {
        if !self.config.keep_optimizer_state {
            self.optimizer.reset();
        }
        let x = problem.inner_inputs(batch);
        let ridge = self.config.ridge;
        let mut theta = theta.detached();
        let through = self.config.head_through_closed_form;
        for _ in 0..self.config.steps {
            if self.config.refresh_every_step {
                model.refresh(ctx, &theta);
            }
            if through {
                // The step the optimiser takes on the head itself is overwritten by the next
                // solve: only the features' step counts.
                theta = solve_head(ctx, problem, model, omega, &theta, &x, batch, ridge)?;
            }
            let (g, _) = inner_grad_theta(problem, model, omega, &theta, &x, batch, ridge);
            theta = self.optimizer.step(&theta, &g);
        }
        if self.config.closed_form_head || through {
            theta = solve_head(ctx, problem, model, omega, &theta, &x, batch, ridge)?;
        }
        let value = scalar(
            inner_objective(problem, model, &omega.detached(), &theta, &x, batch, ridge).detach(),
        );
        Ok((theta, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ctx::Precision,
        model::{Activation, Mlp},
        toy::{LqDims, LqOracle, generate},
    };
    use rand::{SeedableRng, rngs::StdRng};

    const DIMS: LqDims = LqDims {
        d_z: 3,
        d_t: 2,
        d_v: 2,
        d_y: 2,
    };

    /// With the state reset, a second solve equals a fresh solver's solve from the same θ;
    /// with the state kept, it does not (the moments carry over).
    #[test]
    fn optimizer_state_is_kept_or_reset_by_option() {
        let ctx = Ctx::from_env(Precision::F64);
        let inst = generate(&ctx, DIMS, 30, 10, 1.0, 0.0, LqOracle::Pointwise, false, 1);
        let model = Mlp::new(DIMS.d_z, vec![4], DIMS.d_v, Activation::Tanh);
        let theta0 = model.init(&ctx, &mut StdRng::seed_from_u64(0));
        for keep in [false, true] {
            let cfg = InnerConfig {
                steps: 3,
                optimizer: OptimizerConfig::adam(0.05),
                keep_optimizer_state: keep,
                ..InnerConfig::default()
            };
            let mut s = InnerSolver::new(cfg.clone());
            let (t1, _) = s
                .solve(
                    &ctx,
                    &inst.problem,
                    &model,
                    &inst.omega0,
                    &theta0,
                    &inst.inner,
                )
                .unwrap();
            let (t2, _) = s
                .solve(&ctx, &inst.problem, &model, &inst.omega0, &t1, &inst.inner)
                .unwrap();
            let (fresh, _) = InnerSolver::new(cfg)
                .solve(&ctx, &inst.problem, &model, &inst.omega0, &t1, &inst.inner)
                .unwrap();
            let diff = t2.sub(&fresh).norm();
            assert_eq!(
                diff == 0.0,
                !keep,
                "keep={keep}: distance to a fresh solve {diff}"
            );
        }
    }

    /// The closed-form head minimises G over [W; b]: its gradient there is zero.
    #[test]
    fn closed_form_head_zeroes_the_head_gradient() {
        let ctx = Ctx::from_env(Precision::F64);
        let inst = generate(&ctx, DIMS, 40, 10, 1.7, 0.0, LqOracle::Pointwise, false, 2);
        let model = Mlp::new(DIMS.d_z, vec![8], DIMS.d_v, Activation::Relu);
        let theta0 = model.init(&ctx, &mut StdRng::seed_from_u64(1));
        let ridge = 0.3;
        let theta = solve_head(
            &ctx,
            &inst.problem,
            &model,
            &inst.omega0,
            &theta0,
            &inst.inner.z,
            &inst.inner,
            ridge,
        )
        .unwrap();
        let (g, _) = inner_grad_theta(
            &inst.problem,
            &model,
            &inst.omega0,
            &theta,
            &inst.inner.z,
            &inst.inner,
            ridge,
        );
        let (g0, _) = inner_grad_theta(
            &inst.problem,
            &model,
            &inst.omega0,
            &theta0,
            &inst.inner.z,
            &inst.inner,
            ridge,
        );
        let head = |p: &Params| Params::new(p.0[p.len() - 2..].to_vec()).norm();
        assert!(
            head(&g) < 1e-12 * head(&g0).max(1.0),
            "{} vs {}",
            head(&g),
            head(&g0)
        );
    }

    /// Training through the exact head (`head_through_closed_form`): the gradient taken at the
    /// re-solved head is the gradient of G profiled over the head, min_head G (envelope theorem),
    /// checked against central differences of the profiled objective along a random direction
    /// of the feature layers.
    #[test]
    fn gradient_at_the_exact_head_is_the_profiled_gradient() {
        let ctx = Ctx::from_env(Precision::F64);
        let inst = generate(&ctx, DIMS, 40, 10, 1.3, 0.0, LqOracle::Pointwise, false, 4);
        let model = Mlp::new(DIMS.d_z, vec![6], DIMS.d_v, Activation::Tanh);
        let theta0 = model.init(&ctx, &mut StdRng::seed_from_u64(3));
        let ridge = 0.2;
        let z = &inst.inner.z;
        let profiled = |theta: &Params| {
            let t = solve_head(
                &ctx,
                &inst.problem,
                &model,
                &inst.omega0,
                theta,
                z,
                &inst.inner,
                ridge,
            )
            .unwrap();
            scalar(inner_objective(
                &inst.problem,
                &model,
                &inst.omega0,
                &t,
                z,
                &inst.inner,
                ridge,
            ))
        };
        let at_head = solve_head(
            &ctx,
            &inst.problem,
            &model,
            &inst.omega0,
            &theta0,
            z,
            &inst.inner,
            ridge,
        )
        .unwrap();
        let (g, _) = inner_grad_theta(
            &inst.problem,
            &model,
            &inst.omega0,
            &at_head,
            z,
            &inst.inner,
            ridge,
        );
        // A direction on the feature layers only (the head is re-solved anyway).
        let k = theta0.len();
        let mut flat: Vec<f64> = (0..theta0.numel())
            .map(|i| ((i * 37 % 11) as f64 - 5.0) / 5.0)
            .collect();
        let head_len: usize = theta0.0[k - 2..]
            .iter()
            .map(|t| t.dims().iter().product::<usize>())
            .sum();
        let n = flat.len();
        flat[n - head_len..].iter_mut().for_each(|x| *x = 0.0);
        let dir = theta0.from_flat_like(&ctx, &flat);
        let eps = 1e-5;
        let fd =
            (profiled(&theta0.axpy(eps, &dir)) - profiled(&theta0.axpy(-eps, &dir))) / (2.0 * eps);
        let analytic = g.dot(&dir);
        let err = (analytic - fd).abs() / fd.abs();
        assert!(fd.abs() > 1e-3, "direction too flat: {fd}");
        assert!(
            err < 1e-6,
            "profiled gradient {analytic} vs central differences {fd}: {err:e}"
        );
        // The solver with the option ends at an exact head too.
        let mut s = InnerSolver::new(InnerConfig {
            steps: 3,
            optimizer: OptimizerConfig::adam(0.05),
            ridge,
            head_through_closed_form: true,
            ..InnerConfig::default()
        });
        let (t, _) = s
            .solve(
                &ctx,
                &inst.problem,
                &model,
                &inst.omega0,
                &theta0,
                &inst.inner,
            )
            .unwrap();
        let (g, _) = inner_grad_theta(
            &inst.problem,
            &model,
            &inst.omega0,
            &t,
            z,
            &inst.inner,
            ridge,
        );
        let head = Params::new(g.0[k - 2..].to_vec()).norm();
        assert!(head < 1e-10, "head gradient after the solve: {head}");
    }
}
