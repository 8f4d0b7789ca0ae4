use super::{
    HyperInput, Hypergradient, HypergradientMethod, LinearSolver, outer_param_grads,
    profile::Profile,
};
use crate::{
    ctx::Ctx,
    error::BilevelError,
    linalg::{conjugate_gradient, neumann},
    model::InnerModel,
    param_hvp::{cross, hvp},
    params::Params,
    problem::BilevelProblem,
    state::State,
};

/// How AID approximates q = (H_θθ + δI)⁻¹ ∇_θ L_out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AidSolver {
    Cg {
        iterations: usize,
    },
    Neumann {
        iterations: usize,
        lr: f64,
    },
    /// q = ∇_θ L_out (OMD's choice).
    Identity,
}

impl AidSolver {
    pub fn from_config(solver: LinearSolver, iterations: usize, lr: f64) -> Self {
        match solver {
            LinearSolver::Cg => AidSolver::Cg { iterations },
            LinearSolver::Neumann => AidSolver::Neumann { iterations, lr },
        }
    }
}

/// Parametric implicit differentiation: ∇F ≈ ∂_ω L_out − H_ωθ q, with q from `solver`.
/// Hessian-vector products are finite differences of gradients (see `param_hvp`).
pub struct Aid {
    pub solver: AidSolver,
    pub damping: f64,
    pub warm_start: bool,
    pub fd_step: Option<f64>,
    pub previous: Option<Params>,
    /// The authors' parametrisation: the head solved exactly inside both losses, the linear
    /// system on the feature network alone (see `profile`).
    pub eliminate_head: bool,
}

impl<P: BilevelProblem, M: InnerModel> HypergradientMethod<P, M> for Aid {
    fn name(&self) -> &'static str {
        match self.solver {
            AidSolver::Identity => "identity",
            _ => "aid",
        }
    }

    // The warm start q; its shapes are θ's, or the feature network's alone with `eliminate_head`.
    fn save(&self, state: &mut State) {
        if let Some(q) = &self.previous {
            state.put("method.previous", q);
        }
    }

    fn restore(&mut self, ctx: &Ctx, state: &State, _theta: &Params) -> Result<(), BilevelError> {
        self.previous = state.get(ctx, "method.previous")?;
        Ok(())
    }

    fn total_gradient(&mut self, i: HyperInput<'_, P, M>) -> Result<Hypergradient, BilevelError> {
        if self.eliminate_head {
            return self.profiled(i);
        }
        let theta = i.theta.detached();
        let (x_in, x_out) = i.inputs();
        let (b, direct, outer_loss) =
            outer_param_grads(i.problem, i.model, i.omega, &theta, &x_out, i.outer);
        let q = self.solve(
            |u| {
                hvp(
                    i.ctx,
                    i.problem,
                    i.model,
                    i.omega,
                    &theta,
                    u,
                    &x_in,
                    i.inner,
                    i.inner_ridge,
                    self.fd_step,
                )
            },
            &b,
        );
        let cross = cross(
            i.ctx,
            i.problem,
            i.model,
            i.omega,
            &theta,
            &q,
            &x_in,
            i.inner,
            self.fd_step,
        );
        self.previous = Some(q.detached());
        Ok(Hypergradient::plain(
            direct.sub(&cross).detached(),
            outer_loss,
        ))
    }
}

impl Aid {
    /// q ≈ (H + δI)⁻¹ b with the configured solver, warm-started from the last q if asked.
    fn solve(&self, hvp: impl Fn(&Params) -> Params, b: &Params) -> Params {
        let damped = |u: &Params| {
            let h = hvp(u);
            if self.damping != 0.0 {
                h.axpy(self.damping, u)
            } else {
                h
            }
        };
        match self.solver {
            AidSolver::Identity => b.clone(),
            AidSolver::Cg { iterations } => {
                let x0 = match (&self.previous, self.warm_start) {
                    (Some(q), true) => q.clone(),
                    _ => b.zeros_like(),
                };
                conjugate_gradient(damped, b, x0, iterations, 0.0)
            }
            AidSolver::Neumann { iterations, lr } => neumann(damped, b, lr, iterations),
        }
    }

    /// ∇F = ∂_ωF − g_ωu q with g_uu q = ∂_uF, on the head-profiled objective: with no linear
    /// iterations it is FuncID-linear's gradient.
    fn profiled<P: BilevelProblem, M: InnerModel>(
        &mut self,
        i: HyperInput<'_, P, M>,
    ) -> Result<Hypergradient, BilevelError> {
        let (x_in, x_out) = i.inputs();
        let prof = Profile::from_input(&i, &x_in, self.fd_step);
        let theta = prof.refit(i.theta)?;
        let outer = prof.outer_grads(&theta, &x_out, i.outer)?;
        let q = self.solve(|u| prof.hvp(&theta, u), &outer.d_u);
        prof.take_error()?;
        let cross = prof.cross(&theta, &q);
        prof.take_error()?;
        self.previous = Some(q.detached());
        *i.theta = theta;
        Ok(Hypergradient::plain(
            outer.d_omega.sub(&cross).detached(),
            outer.value,
        ))
    }
}
