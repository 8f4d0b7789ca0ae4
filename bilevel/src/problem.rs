//! The problem interface, in the functional form of docs/method.md.
//!
//! A problem knows the outer variable ω (a [`Params`]), the data, and the pointwise losses as
//! functions of the *prediction* v = h(x). It never sees the inner network: the solver owns it.

use burn::tensor::Tensor;

use crate::{ctx::Ctx, params::Params};

/// A functional bilevel problem: min_ω L_out(ω, h*_ω) with h*_ω = argmin_h L_in(ω, h).
pub trait BilevelProblem {
    /// Inner data P (whatever the losses need besides the inner inputs: targets, actions, ...).
    type InnerBatch;
    /// Outer data Q.
    type OuterBatch;

    /// Inputs x of the inner prediction function on the inner data, `[n, d_x]`.
    fn inner_inputs(&self, batch: &Self::InnerBatch) -> Tensor<2>;
    /// Inputs x of the inner prediction function on the outer data, `[m, d_x]`.
    fn outer_inputs(&self, batch: &Self::OuterBatch) -> Tensor<2>;

    /// L_in(ω, v) = mean_b ℓ_in(ω, v_b): a one-element tensor, differentiable in ω and v.
    /// Scale by `mul_scalar(1.0 / n)`, not `div_scalar(n)`: in burn 0.22.1 the backward of
    /// `div_scalar` rounds the scalar to f32 (measured relative error 4e-8 in f64).
    fn inner_loss(&self, omega: &Params, v: Tensor<2>, batch: &Self::InnerBatch) -> Tensor<1>;

    /// L_out(ω, v) = mean_b ℓ_out(ω, v_b), differentiable in ω and v.
    fn outer_loss(&self, omega: &Params, v: Tensor<2>, batch: &Self::OuterBatch) -> Tensor<1>;

    /// Pointwise ∂_v ℓ_in(ω, v_b), `[n, d_v]`, written as a tensor expression in ω so that the
    /// cross term ∂_ω mean_b⟨∂_v ℓ_in(ω, v_b), a_b⟩ is one first-order backward.
    /// It must equal n · ∂L_in/∂v (checked by [`check_inner_grad_v`]).
    fn inner_grad_v(&self, omega: &Params, v: Tensor<2>, batch: &Self::InnerBatch) -> Tensor<2>;

    /// Pointwise diagonal of ∂²_v ℓ_in, `[n, d_v]`, where the curvature in v is diagonal
    /// (squared losses: the constant c). `None`: Hessian-vector products in v fall back to a
    /// central finite difference of [`inner_grad_v`](Self::inner_grad_v) along the direction,
    /// and the methods that need the matrix itself (FuncID-linear, ridge head) are unavailable.
    fn inner_hessian_diag(
        &self,
        _omega: &Params,
        _v: Tensor<2>,
        _batch: &Self::InnerBatch,
    ) -> Option<Tensor<2>> {
        None
    }

    /// ∂_ω Σ_i mean_b ⟨∂_v ℓ_in(ω, v_i,b), a_i,b⟩ — the ω-side of every cross term (functional
    /// adjoint, AID/penalty mixed products, ITD's reverse pass) — for a problem that computes it
    /// faster than one backward through [`inner_grad_v`](Self::inner_grad_v) per pair, e.g. by
    /// reusing a forward of ω's network it already made. `None` (default): the generic backward,
    /// [`cross_vjp`].
    fn inner_cross_vjp(
        &self,
        _omega: &Params,
        _pairs: &[(Tensor<2>, Tensor<2>)],
        _batch: &Self::InnerBatch,
    ) -> Option<Params> {
        None
    }

    /// The exact total gradient ∇F(ω), where the problem has one (the `closed_form` method).
    fn closed_form_total_gradient(
        &self,
        _ctx: &Ctx,
        _omega: &Params,
        _inner: &Self::InnerBatch,
        _outer: &Self::OuterBatch,
    ) -> Option<Params> {
        None
    }
}

/// ∂_ω Σ_i mean_b ⟨∂_v ℓ_in(ω, v_i,b), a_i,b⟩ with every v_i and a_i held fixed: the problem's
/// [`BilevelProblem::inner_cross_vjp`] where it has one, else one backward with ω tracked.
pub fn cross_vjp<P: BilevelProblem>(
    problem: &P,
    omega: &Params,
    pairs: &[(Tensor<2>, Tensor<2>)],
    batch: &P::InnerBatch,
) -> Params {
    if let Some(g) = problem.inner_cross_vjp(omega, pairs, batch) {
        return g.detached();
    }
    let om = omega.tracked();
    let total = pairs
        .iter()
        .map(|(v, a)| {
            let n = v.dims()[0] as f64;
            (problem.inner_grad_v(&om, v.clone().detach(), batch) * a.clone().detach())
                .sum()
                .mul_scalar(1.0 / n)
        })
        .reduce(|x, y| x + y)
        .expect("at least one pair");
    om.grads(&total.backward()).detached()
}

/// ∂²_v ℓ_in(ω, v_b) · a_b for every row b: the closed-form diagonal when the problem provides
/// one, else a central difference of ∂_v ℓ_in along a (exact up to rounding for losses quadratic
/// in v). Detached: it is a constant wherever the solver uses it.
pub fn inner_hvp_v<P: BilevelProblem>(
    ctx: &Ctx,
    problem: &P,
    omega: &Params,
    v: &Tensor<2>,
    a: &Tensor<2>,
    batch: &P::InnerBatch,
) -> Tensor<2> {
    let omega = omega.detached();
    let v = v.clone().detach();
    let a = a.clone().detach();
    if let Some(h) = problem.inner_hessian_diag(&omega, v.clone(), batch) {
        return (h * a).detach();
    }
    let a_max = crate::ctx::to_vec(&a.clone().abs().max())
        .first()
        .copied()
        .unwrap_or(0.0);
    if a_max == 0.0 {
        return a;
    }
    let v_max = crate::ctx::to_vec(&v.clone().abs().max())[0];
    let eps = ctx.precision.epsilon().cbrt() * (1.0 + v_max) / a_max;
    let plus = problem.inner_grad_v(&omega, v.clone() + a.clone().mul_scalar(eps), batch);
    let minus = problem.inner_grad_v(&omega, v - a.mul_scalar(eps), batch);
    ((plus - minus).mul_scalar(0.5 / eps)).detach()
}

/// Largest absolute difference between `inner_grad_v` and n·∂L_in/∂v computed by autodiff:
/// a problem author's consistency check (zero up to rounding when the two agree).
pub fn check_inner_grad_v<P: BilevelProblem>(
    problem: &P,
    omega: &Params,
    v: &Tensor<2>,
    batch: &P::InnerBatch,
) -> f64 {
    let omega = omega.detached();
    let n = v.dims()[0] as f64;
    let vt = v.clone().detach().require_grad();
    let grads = problem.inner_loss(&omega, vt.clone(), batch).backward();
    let auto = vt
        .grad(&grads)
        .expect("inner loss depends on v")
        .mul_scalar(n);
    let given = problem.inner_grad_v(&omega, v.clone().detach(), batch);
    crate::ctx::to_vec(&(auto - given.detach()).abs().max())[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ctx::{Precision, to_vec},
        toy::{LinearQuadratic, LqBatch, LqDims, LqOracle, generate},
    };

    /// The toy problem without its closed-form curvature, to exercise the fallback.
    struct NoDiag(LinearQuadratic);

    impl BilevelProblem for NoDiag {
        type InnerBatch = LqBatch;
        type OuterBatch = LqBatch;
        fn inner_inputs(&self, b: &LqBatch) -> Tensor<2> {
            self.0.inner_inputs(b)
        }
        fn outer_inputs(&self, b: &LqBatch) -> Tensor<2> {
            self.0.outer_inputs(b)
        }
        fn inner_loss(&self, o: &Params, v: Tensor<2>, b: &LqBatch) -> Tensor<1> {
            self.0.inner_loss(o, v, b)
        }
        fn outer_loss(&self, o: &Params, v: Tensor<2>, b: &LqBatch) -> Tensor<1> {
            self.0.outer_loss(o, v, b)
        }
        fn inner_grad_v(&self, o: &Params, v: Tensor<2>, b: &LqBatch) -> Tensor<2> {
            self.0.inner_grad_v(o, v, b)
        }
    }

    #[test]
    fn grad_v_is_consistent_and_the_fd_hvp_equals_the_closed_form() {
        let ctx = Ctx::from_env(Precision::F64);
        let dims = LqDims {
            d_z: 3,
            d_t: 2,
            d_v: 3,
            d_y: 2,
        };
        let inst = generate(&ctx, dims, 30, 10, 2.5, 0.0, LqOracle::Pointwise, false, 1);
        let v = ctx.tensor2((0..90).map(|i| (i as f64 * 0.37).sin()).collect(), 30, 3);
        let a = ctx.tensor2((0..90).map(|i| (i as f64 * 0.11).cos()).collect(), 30, 3);
        assert!(check_inner_grad_v(&inst.problem, &inst.omega0, &v, &inst.inner) < 1e-12);
        let exact = to_vec(&inner_hvp_v(
            &ctx,
            &inst.problem,
            &inst.omega0,
            &v,
            &a,
            &inst.inner,
        ));
        let fd = to_vec(&inner_hvp_v(
            &ctx,
            &NoDiag(inst.problem.clone()),
            &inst.omega0,
            &v,
            &a,
            &inst.inner,
        ));
        let expected: Vec<f64> = to_vec(&a).iter().map(|x| 2.5 * x).collect();
        for k in 0..90 {
            assert!((exact[k] - expected[k]).abs() < 1e-14);
            assert!(
                (fd[k] - expected[k]).abs() < 1e-9,
                "{} vs {}",
                fd[k],
                expected[k]
            );
        }
    }
}
