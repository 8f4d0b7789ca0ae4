//! The baselines in the authors' parametrisation (`eliminate_head`: the inner variable is the
//! feature network u, the head solved exactly inside both losses), each against finite differences
//! of the map it claims to differentiate:
//! - ITD: ω ↦ F(ω, u_k(ω)) with u_k from k gradient steps on the profiled objective g;
//! - AID (exact CG): ω ↦ F(ω, u*(ω)) with u* a stationary point of g, re-converged at each ω ± h;
//! - penalty: both gradients of Φ(ω, u) = F(ω, u) + λ‖∇_u g(ω, u)‖.
//!
//! Errors are printed (run with `--nocapture`).

use funcrl_bilevel::{
    Activation, BilevelProblem, Ctx, HyperInput, InnerModel, LinearSolver, MethodConfig, Mlp,
    OptimizerConfig, Params, Precision,
    ctx::scalar,
    linalg::conjugate_gradient,
    methods::{Profile, without_head},
    toy::{LinearQuadratic, LqDims, LqInstance, LqOracle, generate},
};
use rand::{SeedableRng, rngs::StdRng};

const DIMS: LqDims = LqDims {
    d_z: 4,
    d_t: 3,
    d_v: 2,
    d_y: 2,
};
const RIDGE: f64 = 0.05;

fn instance(ctx: &Ctx) -> LqInstance {
    generate(
        ctx,
        DIMS,
        60,
        50,
        1.0,
        0.1,
        LqOracle::LinearFeatures { ridge: 0.0 },
        false,
        6,
    )
}

/// A small tanh network: 10 feature parameters.
fn model() -> Mlp {
    Mlp::new(DIMS.d_z, vec![2], DIMS.d_v, Activation::Tanh)
}

fn profile<'a>(
    ctx: &'a Ctx,
    inst: &'a LqInstance,
    model: &'a Mlp,
    omega: &'a Params,
) -> Profile<'a, LinearQuadratic, Mlp> {
    Profile::new(
        ctx,
        &inst.problem,
        model,
        omega,
        &inst.inner.z,
        &inst.inner,
        RIDGE,
        None,
    )
}

/// F(ω, u): the outer loss with the head solved at (ω, u).
fn outer_value(ctx: &Ctx, inst: &LqInstance, model: &Mlp, omega: &Params, theta: &Params) -> f64 {
    let theta = profile(ctx, inst, model, omega).refit(theta).unwrap();
    let v = model.forward(&theta, &inst.outer.z).output;
    scalar(inst.problem.outer_loss(omega, v, &inst.outer))
}

/// Central differences of `f` along every coordinate of `at`.
fn fd(ctx: &Ctx, at: &Params, f: impl Fn(&Params) -> f64) -> Params {
    let flat = at.to_flat();
    let h = 1e-5;
    let g: Vec<f64> = (0..flat.len())
        .map(|k| {
            let mut p = flat.clone();
            p[k] += h;
            let fp = f(&at.from_flat_like(ctx, &p));
            p[k] -= 2.0 * h;
            (fp - f(&at.from_flat_like(ctx, &p))) / (2.0 * h)
        })
        .collect();
    at.from_flat_like(ctx, &g)
}

fn rel_err(a: &Params, b: &Params) -> f64 {
    a.sub(b).norm() / b.norm()
}

fn gradient(
    ctx: &Ctx,
    inst: &LqInstance,
    model: &Mlp,
    method: &MethodConfig,
    omega: &Params,
    theta: &mut Params,
) -> Params {
    let mut m = method.build::<LinearQuadratic, Mlp>();
    m.total_gradient(HyperInput {
        ctx,
        problem: &inst.problem,
        model,
        omega,
        theta,
        inner: &inst.inner,
        outer: &inst.outer,
        inner_ridge: RIDGE,
        rng: &mut StdRng::seed_from_u64(0),
    })
    .unwrap()
    .grad
}

#[test]
fn itd_is_the_derivative_of_the_unrolled_profiled_map() {
    let ctx = Ctx::from_env(Precision::F64);
    let (inst, model) = (instance(&ctx), model());
    let theta0 = model.init(&ctx, &mut StdRng::seed_from_u64(3));
    let (unroll, lr) = (5, 0.3);
    // u_k(ω) from θ₀, every step on g with the head refitted.
    let unrolled = |omega: &Params| {
        let prof = profile(&ctx, &inst, &model, omega);
        let mut theta = prof.refit(&theta0).unwrap();
        for _ in 0..unroll {
            let (g, _) = prof.grad(&theta);
            theta = prof.refit(&theta.axpy(-lr, &g)).unwrap();
        }
        theta
    };
    let omega = &inst.omega0;
    let expected = fd(&ctx, omega, |o| {
        outer_value(&ctx, &inst, &model, o, &unrolled(o))
    });
    let method = MethodConfig::Itd {
        unroll,
        lr,
        fd_step: None,
        eliminate_head: true,
    };
    let mut theta = theta0.clone();
    let got = gradient(&ctx, &inst, &model, &method, omega, &mut theta);
    let e = rel_err(&got, &expected);
    println!("ITD (head eliminated) vs finite differences of the unrolled map: {e:.2e}");
    assert!(e < 1e-6, "{e:e}");
    // θ is left where the unrolled steps took it.
    assert!(theta.sub(&unrolled(omega)).norm() < 1e-12);
}

/// A stationary point of g(ω, ·) by Newton's method (exact CG solves), from `theta`.
fn stationary(ctx: &Ctx, inst: &LqInstance, model: &Mlp, omega: &Params, theta: &Params) -> Params {
    let prof = profile(ctx, inst, model, omega);
    let mut theta = prof.refit(theta).unwrap();
    for _ in 0..30 {
        let (g, _) = prof.grad(&theta);
        let step = conjugate_gradient(|d| prof.hvp(&theta, d), &g, g.zeros_like(), 40, 1e-14);
        theta = prof.refit(&theta.sub(&step)).unwrap();
    }
    theta
}

#[test]
fn aid_with_an_exact_solve_is_the_implicit_derivative() {
    let ctx = Ctx::from_env(Precision::F64);
    let (inst, model) = (instance(&ctx), model());
    let omega = &inst.omega0;
    // Start Newton from a point 300 gradient steps in, where g is locally convex.
    let start = {
        let prof = profile(&ctx, &inst, &model, omega);
        let mut theta = prof
            .refit(&model.init(&ctx, &mut StdRng::seed_from_u64(4)))
            .unwrap();
        for _ in 0..300 {
            let (g, _) = prof.grad(&theta);
            theta = prof.refit(&theta.axpy(-0.5, &g)).unwrap();
        }
        theta
    };
    let star = stationary(&ctx, &inst, &model, omega, &start);
    let prof = profile(&ctx, &inst, &model, omega);
    let residual = prof.grad(&star).0.norm();
    println!("‖∇_u g‖ at the stationary point: {residual:.2e}");
    assert!(residual < 1e-10, "{residual:e}");
    let expected = fd(&ctx, omega, |o| {
        let s = stationary(&ctx, &inst, &model, o, &star);
        outer_value(&ctx, &inst, &model, o, &s)
    });
    let aid = |iterations| MethodConfig::Aid {
        solver: LinearSolver::Cg,
        iterations,
        damping: 0.0,
        warm_start: false,
        neumann_lr: 0.0,
        fd_step: None,
        eliminate_head: true,
    };
    // Twice the 10 dimensions: with finite-difference products CG loses conjugacy (3e-5 at 10).
    let got = gradient(&ctx, &inst, &model, &aid(20), omega, &mut star.clone());
    let e = rel_err(&got, &expected);
    println!("AID (head eliminated, 20 CG iterations) vs finite differences of F: {e:.2e}");
    assert!(e < 1e-6, "{e:e}");
    // With no CG iteration only the direct term is left: FuncID-linear's gradient.
    let direct = gradient(&ctx, &inst, &model, &aid(0), omega, &mut star.clone());
    let linear = gradient(
        &ctx,
        &inst,
        &model,
        &MethodConfig::FuncidLinear { ridge: None },
        omega,
        &mut star.clone(),
    );
    assert!(rel_err(&direct, &linear) < 1e-12);
    // And the correction matters here: the direct term alone is off.
    assert!(rel_err(&direct, &expected) > 1e-3);
}

#[test]
fn penalty_descends_the_penalised_profiled_objective() {
    let ctx = Ctx::from_env(Precision::F64);
    let (inst, model) = (instance(&ctx), model());
    let lambda = 0.7;
    let omega = &inst.omega0;
    let theta = profile(&ctx, &inst, &model, omega)
        .refit(&model.init(&ctx, &mut StdRng::seed_from_u64(5)))
        .unwrap();
    let phi = |o: &Params, t: &Params| {
        let prof = profile(&ctx, &inst, &model, o);
        let t = prof.refit(t).unwrap();
        outer_value(&ctx, &inst, &model, o, &t) + lambda * prof.grad(&t).0.norm()
    };
    let lr = 0.1;
    let method = MethodConfig::Penalty {
        lambda,
        fd_step: None,
        eliminate_head: true,
        network_optimizer: OptimizerConfig::sgd(lr),
    };
    let mut moved = theta.clone();
    let got = gradient(&ctx, &inst, &model, &method, omega, &mut moved);
    let e_omega = rel_err(&got, &fd(&ctx, omega, |o| phi(o, &theta)));
    // The network's step: u − lr ∂_uΦ (the head is refitted afterwards, so compare u only).
    let d_u = without_head(&theta.sub(&moved).scale(1.0 / lr));
    let e_u = rel_err(&d_u, &without_head(&fd(&ctx, &theta, |t| phi(omega, t))));
    println!("penalty (head eliminated) vs finite differences: ω {e_omega:.2e}, u {e_u:.2e}");
    assert!(e_omega < 1e-6, "{e_omega:e}");
    assert!(e_u < 1e-6, "{e_u:e}");
}
