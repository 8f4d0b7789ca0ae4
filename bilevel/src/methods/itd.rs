use super::{HyperInput, Hypergradient, HypergradientMethod, outer_param_grads, profile::Profile};
use crate::{
    error::BilevelError,
    inner::inner_grad_theta,
    model::InnerModel,
    param_hvp::{cross_pair, hvp},
    problem::{BilevelProblem, cross_vjp},
};

/// Iterative differentiation through `unroll` plain gradient steps θ_{t+1} = θ_t − η ∇_θ G(ω, θ_t)
/// taken from the current θ (they are inner steps too: θ moves). Reverse mode:
/// λ ← ∇_θ L_out(θ_k); for t = k−1..0: g_ω −= η H_ωθ(θ_t) λ; λ ← λ − η H_θθ(θ_t) λ.
/// Each backward step is one finite-difference pair in θ (see `param_hvp`); the mixed products
/// of all steps share one backward in ω. Unrolled steps are plain
/// gradient steps whatever the inner optimiser is, so that the reverse pass is exact.
pub struct Itd {
    pub unroll: usize,
    pub lr: f64,
    pub fd_step: Option<f64>,
    /// The authors' parametrisation: the unrolled steps move the feature network alone, the head
    /// solved exactly at every step and in the outer loss (see `profile`).
    pub eliminate_head: bool,
}

impl<P: BilevelProblem, M: InnerModel> HypergradientMethod<P, M> for Itd {
    fn name(&self) -> &'static str {
        "itd"
    }

    fn total_gradient(&mut self, i: HyperInput<'_, P, M>) -> Result<Hypergradient, BilevelError> {
        if self.eliminate_head {
            return self.profiled(i);
        }
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
        // The ω-sides of the mixed products −η H_ωθ(θ_t) λ_t are summed in one cross_vjp.
        let mut pairs = Vec::with_capacity(self.unroll);
        for theta_t in trajectory.iter().rev() {
            if let Some((v, jvp)) =
                cross_pair(i.ctx, i.model, theta_t, &lambda, &x_in, self.fd_step)
            {
                pairs.push((v, jvp.mul_scalar(-self.lr)));
            }
            let h = hvp(
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
            lambda = lambda.axpy(-self.lr, &h).detached();
        }
        if !pairs.is_empty() {
            grad = grad
                .add(&cross_vjp(i.problem, i.omega, &pairs, i.inner))
                .detached();
        }
        *i.theta = theta;
        Ok(Hypergradient::plain(grad, outer_loss))
    }
}

impl Itd {
    /// The exact derivative of ω ↦ F(ω, u_k(ω)), u_{t+1} = u_t − η ∇_u g(ω, u_t), on the
    /// head-profiled objective: λ ← ∂_uF(u_k); g_ω = ∂_ωF; for t = k−1..0:
    /// g_ω −= η g_ωu(u_t) λ, λ ← λ − η g_uu(u_t) λ.
    fn profiled<P: BilevelProblem, M: InnerModel>(
        &mut self,
        i: HyperInput<'_, P, M>,
    ) -> Result<Hypergradient, BilevelError> {
        let (x_in, x_out) = i.inputs();
        let prof = Profile::from_input(&i, &x_in, self.fd_step);
        let mut trajectory = Vec::with_capacity(self.unroll);
        let mut theta = prof.refit(i.theta)?;
        for _ in 0..self.unroll {
            let (g, _) = prof.grad(&theta);
            let next = prof.refit(&theta.axpy(-self.lr, &g))?;
            trajectory.push(theta);
            theta = next;
        }
        let outer = prof.outer_grads(&theta, &x_out, i.outer)?;
        let (mut lambda, mut grad) = (outer.d_u, outer.d_omega);
        let mut pairs = Vec::with_capacity(self.unroll);
        for theta_t in trajectory.iter().rev() {
            if let Some((v, jvp)) = prof.cross_pair(theta_t, &lambda) {
                pairs.push((v, jvp.mul_scalar(-self.lr)));
            }
            lambda = lambda
                .axpy(-self.lr, &prof.hvp(theta_t, &lambda))
                .detached();
        }
        prof.take_error()?;
        if !pairs.is_empty() {
            grad = grad
                .add(&cross_vjp(i.problem, i.omega, &pairs, i.inner))
                .detached();
        }
        *i.theta = theta;
        Ok(Hypergradient::plain(grad, outer.value))
    }
}
