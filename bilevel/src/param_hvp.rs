//! Second-order products w.r.t. the inner network's parameters, for the parametric baselines
//! (AID, identity, ITD, penalty). FuncID never calls this.
//!
//! Choice: central finite differences of first-order gradients. burn 0.22.1 offers second order
//! only at the backend-ops level (no `Module`, no fused `linear`), which would mean rewriting every
//! problem's losses on raw ops; finite differences work with any problem written on the public
//! Tensor API, and one pair of backwards at θ ± εu gives both products at once:
//!
//!   H_θθ u ≈ [∇_θ G(θ+εu) − ∇_θ G(θ−εu)] / 2ε,   H_ωθ u ≈ [∇_ω G(θ+εu) − ∇_ω G(θ−εu)] / 2ε.
//!
//! Exact up to rounding when G is quadratic in θ; otherwise O(ε²). ε = ε_rel (1 + ‖θ‖) / ‖u‖ with
//! ε_rel = cbrt(machine epsilon) by default (≈ 6e-6 in f64, 5e-3 in f32), the step that balances
//! truncation against rounding. Measured errors are in the README and the tests below.

use burn::tensor::Tensor;

use crate::{
    ctx::Ctx, inner::inner_grads, model::InnerModel, params::Params, problem::BilevelProblem,
};

/// The two products of G = inner objective along u.
pub struct SecondOrder {
    /// H_θθ u
    pub hvp: Params,
    /// H_ωθ u = ∂_ω ⟨∇_θ G, u⟩
    pub cross: Params,
}

/// Relative finite-difference step; `None` picks cbrt(machine epsilon).
pub fn fd_step(ctx: &Ctx, rel: Option<f64>, theta: &Params, u: &Params) -> Option<f64> {
    let u_norm = u.norm();
    if u_norm == 0.0 || !u_norm.is_finite() {
        return None;
    }
    let rel = rel.unwrap_or_else(|| ctx.precision.epsilon().cbrt());
    Some(rel * (1.0 + theta.norm()) / u_norm)
}

/// Both products along u by one central difference (two backwards).
#[allow(clippy::too_many_arguments)]
pub fn second_order<P: BilevelProblem, M: InnerModel>(
    ctx: &Ctx,
    problem: &P,
    model: &M,
    omega: &Params,
    theta: &Params,
    u: &Params,
    x: &Tensor<2>,
    batch: &P::InnerBatch,
    ridge: f64,
    rel_step: Option<f64>,
) -> SecondOrder {
    let Some(eps) = fd_step(ctx, rel_step, theta, u) else {
        return SecondOrder {
            hvp: u.zeros_like(),
            cross: omega.zeros_like(),
        };
    };
    let (gt_p, go_p) = inner_grads(
        problem,
        model,
        omega,
        &theta.axpy(eps, u).detached(),
        x,
        batch,
        ridge,
    );
    let (gt_m, go_m) = inner_grads(
        problem,
        model,
        omega,
        &theta.axpy(-eps, u).detached(),
        x,
        batch,
        ridge,
    );
    let s = 1.0 / (2.0 * eps);
    SecondOrder {
        hvp: gt_p.sub(&gt_m).scale(s).detached(),
        cross: go_p.sub(&go_m).scale(s).detached(),
    }
}
