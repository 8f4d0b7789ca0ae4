//! Second-order products w.r.t. the inner network's parameters, for the parametric baselines
//! (AID, identity, ITD, penalty). FuncID never calls this.
//!
//! Choice: central finite differences of first-order gradients. burn 0.22.1 offers second order
//! only at the backend-ops level (no `Module`, no fused `linear`), which would mean rewriting every
//! problem's losses on raw ops; finite differences work with any problem written on the public
//! Tensor API:
//!
//!   H_θθ u ≈ [∇_θ G(θ+εu) − ∇_θ G(θ−εu)] / 2ε                  (ω held constant),
//!   H_ωθ u = ∂_ω ⟨∂L_in/∂v(ω, v(θ)), J_θv·u⟩,  J_θv·u ≈ [v(θ+εu) − v(θ−εu)] / 2ε.
//!
//! The mixed product costs one backward in ω (not two), and the Hessian products none: for deep
//! IV, where ω is the 4096→1024 treatment network, that took AID from 13.5 to ≈ 3 s per outer
//! iteration (benches/iv_timing.rs).
//!
//! Exact up to rounding when G is quadratic in θ; otherwise O(ε²). ε = ε_rel (1 + ‖θ‖) / ‖u‖ with
//! ε_rel = cbrt(machine epsilon) by default (≈ 6e-6 in f64, 5e-3 in f32), the step that balances
//! truncation against rounding. Measured errors are in the README and the tests below.

use burn::tensor::Tensor;

use crate::{
    ctx::Ctx,
    inner::inner_grad_theta,
    model::InnerModel,
    params::Params,
    problem::{BilevelProblem, cross_vjp},
};

/// Relative finite-difference step; `None` picks cbrt(machine epsilon).
pub fn fd_step(ctx: &Ctx, rel: Option<f64>, theta: &Params, u: &Params) -> Option<f64> {
    let u_norm = u.norm();
    if u_norm == 0.0 || !u_norm.is_finite() {
        return None;
    }
    let rel = rel.unwrap_or_else(|| ctx.precision.epsilon().cbrt());
    Some(rel * (1.0 + theta.norm()) / u_norm)
}

/// H_θθ u: central difference of ∇_θ G at θ ± εu with ω held constant, so nothing is
/// differentiated through ω's side of the problem (for IV, the 4096→1024 treatment network).
#[allow(clippy::too_many_arguments)]
pub fn hvp<P: BilevelProblem, M: InnerModel>(
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
) -> Params {
    let Some(eps) = fd_step(ctx, rel_step, theta, u) else {
        return u.zeros_like();
    };
    let grad = |s: f64| {
        inner_grad_theta(
            problem,
            model,
            omega,
            &theta.axpy(s, u).detached(),
            x,
            batch,
            ridge,
        )
        .0
    };
    grad(eps)
        .sub(&grad(-eps))
        .scale(1.0 / (2.0 * eps))
        .detached()
}

/// H_ωθ u = ∂_ω ⟨∂L_in/∂v(ω, v(θ)), J_θv·u⟩: ω enters G only through ℓ_in(ω, v), so the mixed
/// product is one backward in ω of the pairing with the model's directional derivative J_θv·u,
/// itself a central difference of the model's outputs at θ ± εu (forwards only). The ridge on
/// the head does not involve ω.
#[allow(clippy::too_many_arguments)]
pub fn cross<P: BilevelProblem, M: InnerModel>(
    ctx: &Ctx,
    problem: &P,
    model: &M,
    omega: &Params,
    theta: &Params,
    u: &Params,
    x: &Tensor<2>,
    batch: &P::InnerBatch,
    rel_step: Option<f64>,
) -> Params {
    let Some(pair) = cross_pair(ctx, model, theta, u, x, rel_step) else {
        return omega.zeros_like();
    };
    cross_vjp(problem, omega, &[pair], batch)
}

/// The pair (v(θ), J_θv·u) whose [`cross_vjp`] is H_ωθ u; `None` when u = 0. ITD sums several
/// such pairs in one [`cross_vjp`].
pub fn cross_pair<M: InnerModel>(
    ctx: &Ctx,
    model: &M,
    theta: &Params,
    u: &Params,
    x: &Tensor<2>,
    rel_step: Option<f64>,
) -> Option<(Tensor<2>, Tensor<2>)> {
    let eps = fd_step(ctx, rel_step, theta, u)?;
    let out = |t: &Params| model.forward(&t.detached(), x).output.detach();
    let jvp = (out(&theta.axpy(eps, u)) - out(&theta.axpy(-eps, u))).mul_scalar(1.0 / (2.0 * eps));
    Some((out(theta), jvp))
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

    /// The two products of G = inner objective along u.
    struct SecondOrder {
        /// H_θθ u
        hvp: Params,
        /// H_ωθ u = ∂_ω ⟨∇_θ G, u⟩
        cross: Params,
    }

    /// Both products along `u`, checked together below.
    #[allow(clippy::too_many_arguments)]
    fn second_order<P: BilevelProblem, M: InnerModel>(
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
        SecondOrder {
            hvp: hvp(
                ctx, problem, model, omega, theta, u, x, batch, ridge, rel_step,
            ),
            cross: cross(ctx, problem, model, omega, theta, u, x, batch, rel_step),
        }
    }

    const DIMS: LqDims = LqDims {
        d_z: 3,
        d_t: 2,
        d_v: 2,
        d_y: 2,
    };

    fn rel(a: &Params, b: &Params) -> f64 {
        a.sub(b).norm() / b.norm()
    }

    /// G is quadratic in θ for a linear model: H = (c/n) Z̃ᵀZ̃ ⊗ I + λ I, exactly.
    #[test]
    fn exact_on_a_quadratic_against_the_closed_form_hessian() {
        let ctx = Ctx::from_env(Precision::F64);
        let (c, ridge) = (1.3, 0.2);
        let inst = generate(&ctx, DIMS, 50, 10, c, 0.0, LqOracle::Pointwise, false, 1);
        let model = Mlp::new(DIMS.d_z, vec![], DIMS.d_v, Activation::Relu);
        let mut rng = StdRng::seed_from_u64(2);
        let (theta, u) = (model.init(&ctx, &mut rng), model.init(&ctx, &mut rng));
        let so = second_order(
            &ctx,
            &inst.problem,
            &model,
            &inst.omega0,
            &theta,
            &u,
            &inst.inner.z,
            &inst.inner,
            ridge,
            None,
        );
        // Closed form: H u = (c/n) Z̃ᵀ (Z̃ U) + λ U with U = [W_u; b_u].
        let z = inst.inner.z.clone();
        let zu = z.clone().matmul(u.0[0].clone()) + u.0[1].clone();
        let scale = c / 50.0;
        let hw =
            z.transpose().matmul(zu.clone()).mul_scalar(scale) + u.0[0].clone().mul_scalar(ridge);
        let hb = zu.clone().sum_dim(0).mul_scalar(scale) + u.0[1].clone().mul_scalar(ridge);
        let e = rel(&so.hvp, &Params::new(vec![hw, hb]));
        // And the cross term: ∂_Ω⟨∇_θ G, u⟩ = −(c/n) Tᵀ (Z̃ U).
        let cross = inst
            .inner
            .t
            .clone()
            .transpose()
            .matmul(zu)
            .mul_scalar(-scale);
        let e_cross = rel(&so.cross, &Params::new(vec![cross]));
        println!("quadratic: H u rel err {e:.1e}, cross rel err {e_cross:.1e}");
        assert!(e < 1e-9 && e_cross < 1e-9, "{e:e} {e_cross:e}");
    }

    /// On a tanh MLP the reference is a Richardson extrapolation of large-step differences
    /// (O(ε⁴)); the default step must be close to it in f64 and symmetric (uᵀHw = wᵀHu).
    #[test]
    fn accurate_and_symmetric_on_an_mlp() {
        let ctx = Ctx::from_env(Precision::F64);
        let inst = generate(&ctx, DIMS, 40, 10, 1.0, 0.0, LqOracle::Pointwise, false, 3);
        let model = Mlp::new(DIMS.d_z, vec![16, 16], DIMS.d_v, Activation::Tanh);
        let mut rng = StdRng::seed_from_u64(4);
        let (theta, u, w) = (
            model.init(&ctx, &mut rng),
            model.init(&ctx, &mut rng),
            model.init(&ctx, &mut rng),
        );
        let hvp = |dir: &Params, step: Option<f64>| {
            second_order(
                &ctx,
                &inst.problem,
                &model,
                &inst.omega0,
                &theta,
                dir,
                &inst.inner.z,
                &inst.inner,
                0.0,
                step,
            )
        };
        let (big, half) = (hvp(&u, Some(1e-3)), hvp(&u, Some(5e-4)));
        let reference = half.hvp.scale(4.0 / 3.0).axpy(-1.0 / 3.0, &big.hvp);
        let ref_cross = half.cross.scale(4.0 / 3.0).axpy(-1.0 / 3.0, &big.cross);
        let default = hvp(&u, None);
        let (e, e_cross) = (
            rel(&default.hvp, &reference),
            rel(&default.cross, &ref_cross),
        );
        let sym = (u.dot(&hvp(&w, None).hvp) - w.dot(&default.hvp)).abs()
            / u.dot(&default.hvp).abs().max(1e-12);
        println!("tanh MLP f64: H u rel err {e:.1e}, cross {e_cross:.1e}, asymmetry {sym:.1e}");
        assert!(
            e < 1e-7 && e_cross < 1e-7 && sym < 1e-7,
            "{e:e} {e_cross:e} {sym:e}"
        );

        // The same products in f32 (step cbrt(eps_f32)) against the f64 reference.
        let c32 = Ctx::from_env(Precision::F32);
        let to32 = |p: &Params| p.from_flat_like(&c32, &p.to_flat());
        let inst32 = generate(&c32, DIMS, 40, 10, 1.0, 0.0, LqOracle::Pointwise, false, 3);
        let so32 = second_order(
            &c32,
            &inst32.problem,
            &model,
            &inst32.omega0,
            &to32(&theta),
            &to32(&u),
            &inst32.inner.z,
            &inst32.inner,
            0.0,
            None,
        );
        let e32 = rel(
            &so32.hvp.from_flat_like(&ctx, &so32.hvp.to_flat()),
            &reference,
        );
        println!("tanh MLP f32: H u rel err {e32:.1e}");
        assert!(e32 < 1e-3, "{e32:e}");
    }
}
