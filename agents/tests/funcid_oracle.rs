//! FuncID's model gradient on a tiny case against finite differences of the outer loss with the
//! inner problem solved to convergence.
//!
//! The inner problem is functional: Q is free at each of the batch's (distinct) states, so the
//! inner variable is v ∈ R^{B×2A} itself, minimised by gradient descent to convergence. F(ω) =
//! L_out(v*(ω)); its directional derivatives by central differences must match the closed-form
//! adjoint's ∂_ω mean_b⟨∂_v ℓ_in, a⟩ with a = −(v* − y)·onehot.

use burn::tensor::Tensor;
use funcrl_agents::nets::{DoubleQ, Predict, WorldModel};
use funcrl_agents::problem::{BatchTensors, OuterData, RlProblem};
use funcrl_bilevel::{
    BilevelProblem, Ctx, InnerModel, Params, Precision, ctx::scalar, methods::total_from_adjoint,
};
use rand::{RngExt, SeedableRng, rngs::StdRng};

const B: usize = 5;
const S: usize = 2;
const A: usize = 2;

fn setup(through: bool) -> (Ctx, RlProblem, Params, BatchTensors, OuterData) {
    let ctx = Ctx::flex(Precision::F64);
    let mut rng = StdRng::seed_from_u64(7);
    let qnet = DoubleQ::new(S, vec![6], A);
    let target = qnet.init(&ctx, &mut rng);
    let model = WorldModel::new(S, S + A, vec![3, 3], Predict::Delta);
    let omega = model.init(&ctx, &mut rng);
    let mut draw = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.random::<f64>() - 0.5).collect() };
    let s = draw(B * S);
    let s2 = draw(B * S);
    let r = draw(B);
    let actions = [0usize, 1, 1, 0, 1];
    let mut x = vec![];
    let mut oh2 = vec![0.0; B * 2 * A];
    for b in 0..B {
        x.extend_from_slice(&s[b * S..(b + 1) * S]);
        for k in 0..A {
            x.push(if k == actions[b] { 1.0 } else { 0.0 });
        }
        oh2[b * 2 * A + actions[b]] = 1.0;
        oh2[b * 2 * A + A + actions[b]] = 1.0;
    }
    let d = BatchTensors {
        s: ctx.tensor2(s, B, S),
        x: ctx.tensor2(x, B, S + A),
        onehot2: ctx.tensor2(oh2, B, 2 * A),
        r: ctx.tensor2(r, B, 1),
        s_next: ctx.tensor2(s2, B, S),
        mask: ctx.tensor2(vec![1.0, 1.0, 0.0, 1.0, 1.0], B, 1),
        w: ctx.ones2(B, 1),
        n: B,
    };
    let problem = RlProblem {
        model,
        qnet,
        target,
        gamma: 0.9,
        alpha: 0.1,
        through_next_state: through,
    };
    let outer = OuterData {
        s: d.s.clone(),
        onehot2: d.onehot2.clone(),
        y: problem.real_target(&d),
        w: d.w.clone(),
    };
    (ctx, problem, omega, d, outer)
}

/// v* = argmin_v L_in(ω, v) by gradient descent on v (curvature 1/B on the taken entries).
fn solve_inner(ctx: &Ctx, p: &RlProblem, omega: &Params, d: &BatchTensors) -> Tensor<2> {
    let mut v = ctx.zeros2(B, 2 * A);
    for _ in 0..200 {
        let vt = v.clone().detach().require_grad();
        let loss = p.inner_loss(&omega.detached(), vt.clone(), d);
        let g = vt.grad(&loss.backward()).unwrap().autodiff();
        v = (v - g.mul_scalar(0.5 * B as f64)).detach();
    }
    v
}

fn check(through: bool) {
    let (ctx, p, omega, d, outer) = setup(through);
    let v = solve_inner(&ctx, &p, &omega, &d);
    // converged: the inner gradient vanishes
    let res = scalar(p.inner_grad_v(&omega, v.clone(), &d).abs().max());
    assert!(res < 1e-12, "inner residual {res}");
    let a = ((v.clone() - outer.y.clone()) * d.onehot2.clone()).neg();
    let g = total_from_adjoint(&p, &omega, &v, &a, &v, &d, &outer);
    let f = |om: &Params| -> f64 {
        let v = solve_inner(&ctx, &p, om, &d);
        scalar(p.outer_loss(om, v, &outer))
    };
    let mut rng = StdRng::seed_from_u64(11);
    let flat = omega.to_flat();
    let mut worst = 0.0f64;
    for _ in 0..4 {
        let u: Vec<f64> = (0..flat.len()).map(|_| rng.random::<f64>() - 0.5).collect();
        let eps = 1e-5;
        let at = |sgn: f64| {
            let w: Vec<f64> = flat
                .iter()
                .zip(&u)
                .map(|(a, b)| a + sgn * eps * b)
                .collect();
            f(&omega.from_flat_like(&ctx, &w))
        };
        let fd = (at(1.0) - at(-1.0)) / (2.0 * eps);
        let an: f64 = g.to_flat().iter().zip(&u).map(|(a, b)| a * b).sum();
        let rel = (fd - an).abs() / fd.abs().max(1e-8);
        worst = worst.max(rel);
        assert!(
            rel < 1e-6,
            "through={through}: FD {fd} vs FuncID {an} (rel {rel:.2e})"
        );
    }
    eprintln!("through_next_state={through}: worst relative error vs FD {worst:.2e}");
    if !through {
        // paper mode: the next-state net gets no gradient
        let k = 2 * (p.model.state_net.hidden.len() + 1);
        assert!(
            g.0[..k]
                .iter()
                .all(|t| scalar(t.clone().abs().sum()) == 0.0)
        );
        assert!(g.0[k..].iter().any(|t| scalar(t.clone().abs().sum()) > 0.0));
    }
}

#[test]
fn funcid_full_gradient_matches_finite_differences() {
    check(true);
}

#[test]
fn funcid_paper_gradient_matches_finite_differences_of_its_own_objective() {
    check(false);
}

#[test]
fn inner_grad_v_is_n_times_the_autodiff_gradient() {
    let (_, p, omega, d, _) = setup(true);
    let v = p.qnet.forward(&p.target, &d.s).output;
    let err = funcrl_bilevel::check_inner_grad_v(&p, &omega, &v, &d);
    assert!(err < 1e-12, "{err}");
}
