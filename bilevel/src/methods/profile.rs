//! The inner objective profiled over the head, for the parametric baselines in the parametrisation
//! of the authors' code (`eliminate_head`): the inner variable is the feature network u alone and
//! the linear head W = [W; b] is solved exactly wherever the network is evaluated,
//!
//!   g(ω, u) = G(ω, u, W*(ω, u)),   F(ω, u) = L_out(ω, h_{u, W*(ω, u)}).
//!
//! Only first-order gradients and finite differences are needed:
//! - ∇_u g = ∂_u G at W* (envelope theorem: ∂_W G = 0 there);
//! - g_uu·d is a central difference of ∇_u g along d, the head refitted at u ± εd;
//! - g_ωu·d = ∂_ω mean_b ⟨∂_v ℓ_in(ω, v_b), J·d⟩ where J·d is the central difference of the
//!   refitted prediction v(u ± εd, W*(u ± εd)) (the ω-side of ∇_u g, again by the envelope);
//! - ∂_ω F is FuncID-linear's gradient at the refitted head (implicit differentiation of the
//!   ridge head), and ∂_u F = ∂_u [L_out + ⟨∂_W G, Λ⟩] with W* and the linear adjoint Λ held
//!   fixed (Λ solves G_WW Λ = −∂_W L_out, so this is the chain rule through W*).
//!
//! Directions in u are parameter sets whose head entries are zero.

use std::cell::RefCell;

use burn::tensor::Tensor;

use super::{
    HyperInput, funcid_linear::linear_adjoint, outer_value_and_grad_v, total_from_adjoint,
};
use crate::{
    ctx::Ctx,
    error::BilevelError,
    inner::{inner_grad_theta, solve_head},
    model::InnerModel,
    param_hvp::fd_step,
    params::Params,
    problem::{BilevelProblem, cross_vjp},
};

/// The profiled inner objective at one ω, on the inner batch.
pub struct Profile<'a, P: BilevelProblem, M: InnerModel> {
    pub ctx: &'a Ctx,
    pub problem: &'a P,
    pub model: &'a M,
    pub omega: &'a Params,
    pub x_in: &'a Tensor<2>,
    pub inner: &'a P::InnerBatch,
    pub ridge: f64,
    pub rel_step: Option<f64>,
    /// The first failed head solve inside a closure that cannot return it (CG's products).
    error: RefCell<Option<BilevelError>>,
}

/// F's gradients at a refitted θ.
pub struct OuterGrads {
    /// ∂_u F (head entries zero).
    pub d_u: Params,
    /// ∂_ω F, the head refitted with ω (FuncID-linear's gradient).
    pub d_omega: Params,
    /// F(ω, u).
    pub value: f64,
}

/// `p` with its head (the last two tensors) set to zero: a direction in u alone.
pub fn without_head(p: &Params) -> Params {
    let mut out = p.detached();
    let k = out.len();
    for j in [k - 2, k - 1] {
        out.0[j] = out.0[j].zeros_like();
    }
    out
}

impl<'a, P: BilevelProblem, M: InnerModel> Profile<'a, P, M> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &'a Ctx,
        problem: &'a P,
        model: &'a M,
        omega: &'a Params,
        x_in: &'a Tensor<2>,
        inner: &'a P::InnerBatch,
        ridge: f64,
        rel_step: Option<f64>,
    ) -> Self {
        Self {
            ctx,
            problem,
            model,
            omega,
            x_in,
            inner,
            ridge,
            rel_step,
            error: RefCell::new(None),
        }
    }

    /// The profile at a method's current iterate, on the inner inputs `x_in`.
    pub fn from_input(
        i: &'a HyperInput<'a, P, M>,
        x_in: &'a Tensor<2>,
        rel_step: Option<f64>,
    ) -> Self {
        Self::new(
            i.ctx,
            i.problem,
            i.model,
            i.omega,
            x_in,
            i.inner,
            i.inner_ridge,
            rel_step,
        )
    }

    /// θ with its head replaced by W*(ω, u).
    pub fn refit(&self, theta: &Params) -> Result<Params, BilevelError> {
        solve_head(
            self.ctx,
            self.problem,
            self.model,
            self.omega,
            theta,
            self.x_in,
            self.inner,
            self.ridge,
        )
    }

    /// θ + s·d with the head refitted, for the central differences. A failed solve is kept for
    /// [`take_error`](Self::take_error) (the products run inside CG's infallible closure) and θ
    /// stands in for the result meanwhile.
    fn refit_along(&self, theta: &Params, d: &Params, s: f64) -> Params {
        self.refit(&theta.axpy(s, d)).unwrap_or_else(|e| {
            self.error.borrow_mut().get_or_insert(e);
            theta.detached()
        })
    }

    /// The first failed head solve kept by [`refit_along`](Self::refit_along) since the last call.
    pub fn take_error(&self) -> Result<(), BilevelError> {
        match self.error.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// ∇_u g at a refitted θ, and g there.
    pub fn grad(&self, theta: &Params) -> (Params, f64) {
        let (g, value) = inner_grad_theta(
            self.problem,
            self.model,
            self.omega,
            theta,
            self.x_in,
            self.inner,
            self.ridge,
        );
        (without_head(&g), value)
    }

    /// g_uu·d, central difference of ∇_u g along `d` with the head refitted on each side.
    pub fn hvp(&self, theta: &Params, d: &Params) -> Params {
        let Some(eps) = fd_step(self.ctx, self.rel_step, theta, d) else {
            return d.zeros_like();
        };
        let side = |s: f64| self.grad(&self.refit_along(theta, d, s)).0;
        side(eps)
            .sub(&side(-eps))
            .scale(1.0 / (2.0 * eps))
            .detached()
    }

    /// The pair (v(θ), J·d) whose [`cross_vjp`] is g_ωu·d; `None` when d = 0.
    pub fn cross_pair(&self, theta: &Params, d: &Params) -> Option<(Tensor<2>, Tensor<2>)> {
        let eps = fd_step(self.ctx, self.rel_step, theta, d)?;
        let out = |t: &Params| self.model.forward(t, self.x_in).output.detach();
        let side = |s: f64| out(&self.refit_along(theta, d, s));
        let jvp = (side(eps) - side(-eps)).mul_scalar(1.0 / (2.0 * eps));
        Some((out(&theta.detached()), jvp))
    }

    /// g_ωu·d (one backward in ω).
    pub fn cross(&self, theta: &Params, d: &Params) -> Params {
        match self.cross_pair(theta, d) {
            Some(pair) => cross_vjp(self.problem, self.omega, &[pair], self.inner),
            None => self.omega.zeros_like(),
        }
    }

    /// F's gradients at a refitted θ on the outer inputs `x_out`.
    pub fn outer_grads(
        &self,
        theta: &Params,
        x_out: &Tensor<2>,
        outer: &P::OuterBatch,
    ) -> Result<OuterGrads, BilevelError> {
        let th = theta.detached();
        let (f_in, f_out) = (
            self.model.forward(&th, self.x_in),
            self.model.forward(&th, x_out),
        );
        let (v_in, v_out) = (f_in.output.clone().detach(), f_out.output.clone().detach());
        let (value, d) = outer_value_and_grad_v(self.problem, self.omega, &v_out, outer);
        let lin = linear_adjoint(
            self.ctx,
            self.problem,
            self.omega,
            self.inner,
            &f_in,
            &f_out,
            &d,
            self.ridge,
        )?;
        let d_omega = total_from_adjoint(
            self.problem,
            self.omega,
            &v_in,
            &lin.a_in,
            &v_out,
            self.inner,
            outer,
        );
        // ∂_u [L_out(ω, h_θ(x_out)) + mean_b ⟨∂_v ℓ_in(ω, h_θ(x_b)), [φ_θ(x_b); 1]·Λ⟩], Λ and
        // the head constant (their u-dependence is what the Lagrangian term accounts for).
        let om = self.omega.detached();
        let tracked = theta.tracked();
        let (g_in, g_out) = (
            self.model.forward(&tracked, self.x_in),
            self.model.forward(&tracked, x_out),
        );
        let [q, dv] = lin.v.dims();
        let lambda = lin.v.clone().detach();
        let a = g_in
            .features
            .matmul(lambda.clone().slice([0..q - 1, 0..dv]))
            + lambda.slice([q - 1..q, 0..dv]);
        let n = self.x_in.dims()[0] as f64;
        let lagrangian = self.problem.outer_loss(&om, g_out.output, outer)
            + (self.problem.inner_grad_v(&om, g_in.output, self.inner) * a)
                .sum()
                .mul_scalar(1.0 / n);
        let d_u = without_head(&tracked.grads(&lagrangian.backward()));
        Ok(OuterGrads {
            d_u,
            d_omega,
            value,
        })
    }
}
