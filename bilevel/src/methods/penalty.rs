use super::{HyperInput, Hypergradient, HypergradientMethod, outer_param_grads, profile::Profile};
use crate::{
    ctx::Ctx, error::BilevelError, inner::inner_grad_theta, model::InnerModel, optim::Optimizer,
    param_hvp::cross, params::Params, problem::BilevelProblem, state::State,
};

/// Single-level penalty.
///
/// Default: the ω-gradient of L_out(ω, h_θ) + λ ‖∇_θ G(ω, θ)‖² at the current θ,
/// = ∂_ω L_out + 2λ H_ωθ ∇_θ G (one finite-difference pair along ∇_θ G); θ itself is moved by
/// the solver's inner steps on G, not on the penalised objective.
///
/// `eliminate_head` (the authors' code): one joint descent on Φ(ω, u) = F(ω, u) + λ ‖∇_u g(ω, u)‖
/// (the norm, not its square) with the head solved exactly inside F and g (see `profile`): ω gets
/// ∂_ωΦ = ∂_ωF + λ g_ωu n̂ and the method moves u itself by `network` on ∂_uΦ = ∂_uF + λ g_uu n̂,
/// n̂ = ∇_u g / ‖∇_u g‖. Run it with no inner steps, so that nothing else moves u.
pub struct Penalty {
    pub lambda: f64,
    pub fd_step: Option<f64>,
    pub eliminate_head: bool,
    pub network: Optimizer,
}

impl<P: BilevelProblem, M: InnerModel> HypergradientMethod<P, M> for Penalty {
    fn name(&self) -> &'static str {
        "penalty"
    }

    // The optimiser that moves u with `eliminate_head` (its moments have the feature network's
    // shapes).
    fn save(&self, state: &mut State) {
        state.put_optimizer("method.network", &self.network);
    }

    fn restore(&mut self, ctx: &Ctx, state: &State, _theta: &Params) -> Result<(), BilevelError> {
        state.restore_optimizer(ctx, "method.network", &mut self.network, None)
    }

    fn total_gradient(&mut self, i: HyperInput<'_, P, M>) -> Result<Hypergradient, BilevelError> {
        if self.eliminate_head {
            return self.profiled(i);
        }
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
        Ok(Hypergradient::plain(
            direct.axpy(2.0 * self.lambda, &cross).detached(),
            outer_loss,
        ))
    }
}

/// The two gradients of Φ(ω, u) = F(ω, u) + λ ‖∇_u g(ω, u)‖ at a refitted θ: (∂_ωΦ, ∂_uΦ, F).
pub(crate) fn penalised_grads<P: BilevelProblem, M: InnerModel>(
    prof: &Profile<'_, P, M>,
    theta: &Params,
    x_out: &burn::tensor::Tensor<2>,
    outer: &P::OuterBatch,
    lambda: f64,
) -> Result<(Params, Params, f64), BilevelError> {
    let grads = prof.outer_grads(theta, x_out, outer)?;
    let (g, _) = prof.grad(theta);
    let norm = g.norm();
    if norm == 0.0 || !norm.is_finite() {
        return Ok((grads.d_omega, grads.d_u, grads.value));
    }
    let unit = g.scale(1.0 / norm);
    let d_omega = grads.d_omega.axpy(lambda, &prof.cross(theta, &unit));
    let d_u = grads.d_u.axpy(lambda, &prof.hvp(theta, &unit));
    prof.take_error()?;
    Ok((d_omega.detached(), d_u.detached(), grads.value))
}

impl Penalty {
    fn profiled<P: BilevelProblem, M: InnerModel>(
        &mut self,
        i: HyperInput<'_, P, M>,
    ) -> Result<Hypergradient, BilevelError> {
        let (x_in, x_out) = i.inputs();
        let prof = Profile::from_input(&i, &x_in, self.fd_step);
        let theta = prof.refit(i.theta)?;
        let (d_omega, d_u, outer_loss) =
            penalised_grads(&prof, &theta, &x_out, i.outer, self.lambda)?;
        *i.theta = prof.refit(&self.network.step(&theta, &d_u))?;
        Ok(Hypergradient::plain(d_omega, outer_loss))
    }
}
