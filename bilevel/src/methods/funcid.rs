use super::{
    HyperInput, Hypergradient, HypergradientMethod, outer_value_and_grad_v, total_from_adjoint,
};
use crate::{
    ctx::scalar,
    error::BilevelError,
    model::InnerModel,
    optim::{Optimizer, OptimizerConfig},
    params::Params,
    problem::{BilevelProblem, inner_hvp_v},
};

/// FuncID with a network adjoint a_ψ (same architecture as h), trained for `steps` optimiser
/// steps on J(a) = ½ mean_P aᵀ (∂²_v ℓ_in) a + Σ_Q aᵀ D, D = ∂L_out/∂v.
/// The curvature is taken w.r.t. the prediction only, so no second derivative goes through a
/// network: the gradient of J w.r.t. the outputs is (H a / n, D), and backpropagating the
/// surrogate ⟨a_P, sg(H a_P)⟩/n + ⟨a_Q, D⟩ gives ∇_ψ J in one first-order backward.
pub struct FuncId {
    pub steps: usize,
    pub warm_start: bool,
    optimizer: Optimizer,
    psi: Option<Params>,
}

impl FuncId {
    pub fn new(steps: usize, optimizer: OptimizerConfig, warm_start: bool) -> Self {
        Self {
            steps,
            warm_start,
            optimizer: Optimizer::new(optimizer),
            psi: None,
        }
    }
}

impl<P: BilevelProblem, M: InnerModel> HypergradientMethod<P, M> for FuncId {
    fn name(&self) -> &'static str {
        "funcid"
    }

    fn total_gradient(&mut self, i: HyperInput<'_, P, M>) -> Result<Hypergradient, BilevelError> {
        let theta = i.theta.detached();
        let (x_in, x_out) = i.inputs();
        let v_in = i.model.forward(&theta, &x_in).output.detach();
        let v_out = i.model.forward(&theta, &x_out).output.detach();
        let (outer_loss, d) = outer_value_and_grad_v(i.problem, i.omega, &v_out, i.outer);
        let n = v_in.dims()[0] as f64;

        let mut psi = match (&self.psi, self.warm_start) {
            (Some(psi), true) => psi.detached(),
            _ => {
                self.optimizer.reset();
                i.model.init(i.ctx, i.rng)
            }
        };
        let mut adjoint_loss = f64::NAN;
        for _ in 0..self.steps {
            // A model with its own gradient route: ∂J/∂a_P = H a_P / n and ∂J/∂a_Q = D.
            let (mut quad, mut lin) = (0.0, 0.0);
            let fused = i
                .model
                .grad_through(&psi, &x_in, &mut |a| {
                    let ha = inner_hvp_v(i.ctx, i.problem, i.omega, &v_in, &a, i.inner);
                    quad = scalar((a * ha.clone()).sum()) / n;
                    ha.mul_scalar(1.0 / n)
                })
                .and_then(|g_in| {
                    let g_out = i.model.grad_through(&psi, &x_out, &mut |a| {
                        lin = scalar((a * d.clone()).sum());
                        d.clone()
                    })?;
                    Some(g_in.add(&g_out))
                });
            if let Some(g) = fused {
                adjoint_loss = 0.5 * quad + lin;
                psi = self.optimizer.step(&psi, &g);
                continue;
            }
            let ps = psi.tracked();
            let a_in = i.model.forward(&ps, &x_in).output;
            let a_out = i.model.forward(&ps, &x_out).output;
            let ha = inner_hvp_v(i.ctx, i.problem, i.omega, &v_in, &a_in, i.inner);
            let quad = (a_in * ha).sum().mul_scalar(1.0 / n);
            let lin = (a_out * d.clone()).sum();
            adjoint_loss = scalar(quad.clone().detach()) * 0.5 + scalar(lin.clone().detach());
            let g = ps.grads(&(quad + lin).backward());
            psi = self.optimizer.step(&psi, &g);
        }
        let a_in = i.model.forward(&psi, &x_in).output.detach();
        let grad = total_from_adjoint(i.problem, i.omega, &v_in, &a_in, &v_out, i.inner, i.outer);
        self.psi = Some(psi);
        Ok(Hypergradient {
            grad,
            outer_loss,
            adjoint_loss: Some(adjoint_loss),
        })
    }
}
