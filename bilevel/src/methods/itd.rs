use super::{HyperInput, Hypergradient, HypergradientMethod, outer_param_grads};
use crate::{
    error::BilevelError, inner::inner_grad_theta, model::InnerModel, param_hvp::second_order,
    problem::BilevelProblem,
};

/// Iterative differentiation through `unroll` plain gradient steps θ_{t+1} = θ_t − η ∇_θ G(ω, θ_t)
/// taken from the current θ (they are inner steps too: θ moves). Reverse mode:
/// λ ← ∇_θ L_out(θ_k); for t = k−1..0: g_ω −= η H_ωθ(θ_t) λ; λ ← λ − η H_θθ(θ_t) λ.
/// Each backward step is one finite-difference pair (see `param_hvp`). Unrolled steps are plain
/// gradient steps whatever the inner optimiser is, so that the reverse pass is exact.
pub struct Itd {
    pub unroll: usize,
    pub lr: f64,
    pub fd_step: Option<f64>,
}

impl<P: BilevelProblem, M: InnerModel> HypergradientMethod<P, M> for Itd {
    fn name(&self) -> &'static str {
        "itd"
    }

    fn total_gradient(&mut self, i: HyperInput<'_, P, M>) -> Result<Hypergradient, BilevelError> {
        let (x_in, x_out) = i.inputs();
        let mut trajectory = Vec::with_capacity(self.unroll);
        let mut theta = i.theta.detached();
        for _ in 0..self.unroll {
            let (g, _) = inner_grad_theta(
                i.problem,
                i.model,
                i.omega,
                &theta,
                &x_in,
                i.inner,
                i.inner_ridge,
            );
            let next = theta.axpy(-self.lr, &g).detached();
            trajectory.push(theta);
            theta = next;
        }
        let (mut lambda, mut grad, outer_loss) =
            outer_param_grads(i.problem, i.model, i.omega, &theta, &x_out, i.outer);
        for theta_t in trajectory.iter().rev() {
            let so = second_order(
                i.ctx,
                i.problem,
                i.model,
                i.omega,
                theta_t,
                &lambda,
                &x_in,
                i.inner,
                i.inner_ridge,
                self.fd_step,
            );
            grad = grad.axpy(-self.lr, &so.cross).detached();
            lambda = lambda.axpy(-self.lr, &so.hvp).detached();
        }
        *i.theta = theta;
        Ok(Hypergradient {
            grad,
            outer_loss,
            adjoint_loss: None,
        })
    }
}
