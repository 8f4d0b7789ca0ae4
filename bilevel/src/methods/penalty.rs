use super::{HyperInput, Hypergradient, HypergradientMethod, outer_param_grads};
use crate::{
    error::BilevelError, inner::inner_grad_theta, model::InnerModel, param_hvp::cross,
    problem::BilevelProblem,
};

/// Single-level penalty: the ω-gradient of L_out(ω, h_θ) + λ ‖∇_θ G(ω, θ)‖² at the current θ,
/// = ∂_ω L_out + 2λ H_ωθ ∇_θ G (one finite-difference pair along ∇_θ G).
/// θ itself is moved by the solver's inner steps on G, not on the penalised objective.
pub struct Penalty {
    pub lambda: f64,
    pub fd_step: Option<f64>,
}

impl<P: BilevelProblem, M: InnerModel> HypergradientMethod<P, M> for Penalty {
    fn name(&self) -> &'static str {
        "penalty"
    }

    fn total_gradient(&mut self, i: HyperInput<'_, P, M>) -> Result<Hypergradient, BilevelError> {
        let theta = i.theta.detached();
        let (x_in, x_out) = i.inputs();
        let (_, direct, outer_loss) =
            outer_param_grads(i.problem, i.model, i.omega, &theta, &x_out, i.outer);
        let (g, _) = inner_grad_theta(
            i.problem,
            i.model,
            i.omega,
            &theta,
            &x_in,
            i.inner,
            i.inner_ridge,
        );
        let cross = cross(
            i.ctx,
            i.problem,
            i.model,
            i.omega,
            &theta,
            &g,
            &x_in,
            i.inner,
            self.fd_step,
        );
        Ok(Hypergradient {
            grad: direct.axpy(2.0 * self.lambda, &cross).detached(),
            outer_loss,
            adjoint_loss: None,
            adjoint_cosine: None,
        })
    }
}
