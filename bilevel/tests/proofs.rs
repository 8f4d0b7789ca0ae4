//! The proofs of issue 3: every consistent method against closed forms and finite differences.
//! Errors are printed (run with `--nocapture`) so the README can quote them.

use funcrl_bilevel::{
    Activation, Ctx, HyperInput, Hypergradient, InnerConfig, InnerModel, LinearSolver,
    MethodConfig, Mlp, OptimizerConfig, Params, Precision, Solver, SolverConfig,
    toy::{LinearQuadratic, LqDims, LqInstance, LqOracle, generate},
};
use rand::{SeedableRng, rngs::StdRng};

const DIMS: LqDims = LqDims {
    d_z: 4,
    d_t: 3,
    d_v: 2,
    d_y: 2,
};

fn rel_err(a: &Params, b: &Params) -> f64 {
    let (a, b) = (a.to_flat(), b.to_flat());
    let num: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    num / b.iter().map(|y| y * y).sum::<f64>().sqrt()
}

fn linear_model() -> Mlp {
    Mlp::new(DIMS.d_z, vec![], DIMS.d_v, Activation::Relu)
}

/// θ at the exact inner solution (closed-form head on a linear model).
fn exact_inner(ctx: &Ctx, inst: &LqInstance, model: &Mlp, omega: &Params, ridge: f64) -> Params {
    let cfg = SolverConfig {
        inner: InnerConfig {
            steps: 0,
            ridge,
            closed_form_head: true,
            ..InnerConfig::default()
        },
        method: MethodConfig::ClosedForm,
        outer_optimizer: OptimizerConfig::adam(1e-3),
        seed: 1,
    };
    let mut s = Solver::new(
        ctx.clone(),
        inst.problem.clone(),
        model.clone(),
        omega.clone(),
        &cfg,
    );
    s.solve_inner(&inst.inner).unwrap();
    s.theta
}

fn grad_with<M: InnerModel + 'static>(
    ctx: &Ctx,
    inst: &LqInstance,
    model: &M,
    method: &MethodConfig,
    omega: &Params,
    theta: &Params,
    ridge: f64,
) -> Params {
    hyper_with(ctx, inst, model, method, omega, theta, ridge).grad
}

/// The method's whole answer (gradient, losses, FuncID's adjoint cosine) at (ω, θ).
fn hyper_with<M: InnerModel + 'static>(
    ctx: &Ctx,
    inst: &LqInstance,
    model: &M,
    method: &MethodConfig,
    omega: &Params,
    theta: &Params,
    ridge: f64,
) -> Hypergradient {
    let mut m = method.build::<LinearQuadratic, M>();
    let mut th = theta.clone();
    let mut rng = StdRng::seed_from_u64(7);
    m.total_gradient(HyperInput {
        ctx,
        problem: &inst.problem,
        model,
        omega,
        theta: &mut th,
        inner: &inst.inner,
        outer: &inst.outer,
        inner_ridge: ridge,
        rng: &mut rng,
    })
    .unwrap()
}

fn aid(iterations: usize, damping: f64) -> MethodConfig {
    MethodConfig::Aid {
        solver: LinearSolver::Cg,
        iterations,
        damping,
        warm_start: false,
        neumann_lr: 0.0,
        fd_step: None,
        eliminate_head: false,
    }
}

#[test]
fn funcid_linear_and_aid_equal_the_closed_form() {
    let ctx = Ctx::from_env(Precision::F64);
    let model = linear_model();
    for ridge in [0.0, 0.3] {
        let inst = generate(
            &ctx,
            DIMS,
            200,
            150,
            1.5,
            0.1,
            LqOracle::LinearFeatures { ridge },
            false,
            1,
        );
        let theta = exact_inner(&ctx, &inst, &model, &inst.omega0, ridge);
        let exact = grad_with(
            &ctx,
            &inst,
            &model,
            &MethodConfig::ClosedForm,
            &inst.omega0,
            &theta,
            ridge,
        );
        let lin = grad_with(
            &ctx,
            &inst,
            &model,
            &MethodConfig::FuncidLinear { ridge: None },
            &inst.omega0,
            &theta,
            ridge,
        );
        // 10 parameters: CG is exact after 10 products.
        let cg = grad_with(
            &ctx,
            &inst,
            &model,
            &aid(20, 0.0),
            &inst.omega0,
            &theta,
            ridge,
        );
        let neumann = MethodConfig::Aid {
            solver: LinearSolver::Neumann,
            iterations: 300,
            damping: 0.0,
            warm_start: false,
            neumann_lr: 0.4,
            fd_step: None,
            eliminate_head: false,
        };
        let neu = grad_with(&ctx, &inst, &model, &neumann, &inst.omega0, &theta, ridge);
        let (e_lin, e_cg, e_neu) = (
            rel_err(&lin, &exact),
            rel_err(&cg, &exact),
            rel_err(&neu, &exact),
        );
        println!(
            "ridge {ridge}: funcid_linear {e_lin:.2e}, aid-cg(20) {e_cg:.2e}, aid-neumann(300) {e_neu:.2e}"
        );
        assert!(e_lin < 1e-10, "funcid_linear vs closed form: {e_lin:e}");
        assert!(e_cg < 1e-8, "aid-cg vs closed form: {e_cg:e}");
        assert!(e_neu < 1e-6, "aid-neumann vs closed form: {e_neu:e}");
    }
}

/// FuncID-linear in f32 on the selected backend against the closed form in f64 on flex (so the
/// check also holds on GPU backends without f64).
#[test]
fn funcid_linear_in_f32_is_close() {
    let (c64, c32) = (Ctx::flex(Precision::F64), Ctx::from_env(Precision::F32));
    let model = linear_model();
    let inst64 = generate(
        &c64,
        DIMS,
        200,
        150,
        1.0,
        0.1,
        LqOracle::LinearFeatures { ridge: 0.1 },
        false,
        2,
    );
    let inst32 = generate(
        &c32,
        DIMS,
        200,
        150,
        1.0,
        0.1,
        LqOracle::LinearFeatures { ridge: 0.1 },
        false,
        2,
    );
    let exact = {
        let th = exact_inner(&c64, &inst64, &model, &inst64.omega0, 0.1);
        grad_with(
            &c64,
            &inst64,
            &model,
            &MethodConfig::ClosedForm,
            &inst64.omega0,
            &th,
            0.1,
        )
    };
    let th = exact_inner(&c32, &inst32, &model, &inst32.omega0, 0.1);
    let lin = grad_with(
        &c32,
        &inst32,
        &model,
        &MethodConfig::FuncidLinear { ridge: None },
        &inst32.omega0,
        &th,
        0.1,
    );
    let e = rel_err(&lin, &exact);
    println!("funcid_linear f32 vs f64 closed form: {e:.2e}");
    assert!(e < 1e-4, "{e:e}");
}

#[test]
fn itd_approaches_the_closed_form_as_k_grows() {
    let ctx = Ctx::from_env(Precision::F64);
    let model = linear_model();
    let inst = generate(
        &ctx,
        DIMS,
        200,
        150,
        1.0,
        0.1,
        LqOracle::LinearFeatures { ridge: 0.0 },
        false,
        3,
    );
    let theta = exact_inner(&ctx, &inst, &model, &inst.omega0, 0.0);
    let exact = grad_with(
        &ctx,
        &inst,
        &model,
        &MethodConfig::ClosedForm,
        &inst.omega0,
        &theta,
        0.0,
    );
    let mut errs = Vec::new();
    for k in [1, 2, 5, 10, 20, 60] {
        let g = grad_with(
            &ctx,
            &inst,
            &model,
            &MethodConfig::Itd {
                unroll: k,
                lr: 0.5,
                fd_step: None,
                eliminate_head: false,
            },
            &inst.omega0,
            &theta,
            0.0,
        );
        errs.push(rel_err(&g, &exact));
    }
    println!(
        "itd (lr 0.5) error for k = 1, 2, 5, 10, 20, 60: {:?}",
        errs.iter().map(|e| format!("{e:.2e}")).collect::<Vec<_>>()
    );
    assert!(
        errs.windows(2).all(|w| w[1] < w[0]),
        "ITD error must shrink with k: {errs:?}"
    );
    assert!(errs[5] < 1e-8, "ITD k=60: {:e}", errs[5]);
}

#[test]
fn identity_is_biased_by_its_own_formula() {
    let ctx = Ctx::from_env(Precision::F64);
    let model = linear_model();
    let c = 1.0;
    let inst = generate(
        &ctx,
        DIMS,
        200,
        150,
        c,
        0.1,
        LqOracle::LinearFeatures { ridge: 0.0 },
        false,
        4,
    );
    let theta = exact_inner(&ctx, &inst, &model, &inst.omega0, 0.0);
    let exact = grad_with(
        &ctx,
        &inst,
        &model,
        &MethodConfig::ClosedForm,
        &inst.omega0,
        &theta,
        0.0,
    );
    let ident = grad_with(
        &ctx,
        &inst,
        &model,
        &MethodConfig::Identity { fd_step: None },
        &inst.omega0,
        &theta,
        0.0,
    );
    // Analytic identity estimate for the linear model: q = ∇_W L_out = Z̃_Qᵀ D, then
    // ∇F_id = ∂_Ω L_out + (c/n) Tᵀ (Z̃_P q), with D = −(Y − V_Q C) Cᵀ / m.
    let host = |t: &burn::tensor::Tensor<2>| (t.dims(), funcrl_bilevel::ctx::to_vec(t));
    let aug = |t: &burn::tensor::Tensor<2>| {
        let ([r, k], v) = host(t);
        let mut out = Vec::new();
        for i in 0..r {
            out.extend_from_slice(&v[i * k..(i + 1) * k]);
            out.push(1.0);
        }
        (r, k + 1, out)
    };
    let (m, q, zq) = aug(&inst.outer.z);
    let (n, _, zp) = aug(&inst.inner.z);
    let fwd = model.forward(&theta, &inst.outer.z).output;
    let (_, vq) = host(&fwd);
    let (_, y) = host(&inst.outer.y);
    let (_, cm) = host(&inst.problem.head);
    let (_, t) = host(&inst.inner.t);
    let (_, om) = host(&inst.omega0.0[0]);
    let (dv, dy, dt) = (DIMS.d_v, DIMS.d_y, DIMS.d_t);
    let mut d = vec![0.0; m * dv];
    for s in 0..m {
        for a in 0..dv {
            let mut acc = 0.0;
            for j in 0..dy {
                let pred: f64 = (0..dv).map(|b| vq[s * dv + b] * cm[b * dy + j]).sum();
                acc += (y[s * dy + j] - pred) * cm[a * dy + j];
            }
            d[s * dv + a] = -acc / m as f64;
        }
    }
    let mut qm = vec![0.0; q * dv];
    for s in 0..m {
        for r in 0..q {
            for a in 0..dv {
                qm[r * dv + a] += zq[s * q + r] * d[s * dv + a];
            }
        }
    }
    // direct term ∂_Ω L_out = ρΩ (L_out depends on Ω only through the ridge term).
    let mut formula: Vec<f64> = om.iter().map(|w| 0.1 * w).collect();
    for s in 0..n {
        for a in 0..dv {
            let zq_s: f64 = (0..q).map(|r| zp[s * q + r] * qm[r * dv + a]).sum();
            for i in 0..dt {
                formula[i * dv + a] += c / n as f64 * t[s * dt + i] * zq_s;
            }
        }
    }
    let formula = Params::new(vec![ctx.tensor2(formula, dt, dv)]);
    let (e_formula, bias) = (rel_err(&ident, &formula), rel_err(&ident, &exact));
    println!(
        "identity: vs its analytic formula {e_formula:.2e}; relative bias vs the true hypergradient {bias:.3}"
    );
    assert!(e_formula < 1e-8, "{e_formula:e}");
    assert!(
        bias > 0.05,
        "identity should be visibly biased here, got {bias}"
    );
}

/// F(ω) with the inner problem solved to convergence by plain gradient steps (400 SGD steps, no
/// closed-form head: independent of the ridge-solve code the methods use).
fn value_by_solver(ctx: &Ctx, inst: &LqInstance, model: &Mlp, omega: &Params, ridge: f64) -> f64 {
    use funcrl_bilevel::BilevelProblem;
    let cfg = SolverConfig {
        inner: InnerConfig {
            steps: 400,
            optimizer: OptimizerConfig::sgd(0.5),
            ridge,
            ..InnerConfig::default()
        },
        method: MethodConfig::ClosedForm,
        outer_optimizer: OptimizerConfig::adam(1e-3),
        seed: 1,
    };
    let mut s = Solver::new(
        ctx.clone(),
        inst.problem.clone(),
        model.clone(),
        omega.clone(),
        &cfg,
    );
    s.solve_inner(&inst.inner).unwrap();
    let v = model.forward(&s.theta, &inst.outer.z).output;
    funcrl_bilevel::ctx::scalar(inst.problem.outer_loss(omega, v, &inst.outer))
}

#[test]
fn finite_differences_of_f_match_every_consistent_method() {
    let ctx = Ctx::from_env(Precision::F64);
    let model = linear_model();
    let ridge = 0.05;
    let inst = generate(
        &ctx,
        DIMS,
        120,
        90,
        1.0,
        0.1,
        LqOracle::LinearFeatures { ridge },
        false,
        5,
    );
    let omega = &inst.omega0;
    let flat = omega.to_flat();
    let h = 1e-5;
    let fd: Vec<f64> = (0..flat.len())
        .map(|k| {
            let mut p = flat.clone();
            p[k] += h;
            let fp = value_by_solver(&ctx, &inst, &model, &omega.from_flat_like(&ctx, &p), ridge);
            p[k] -= 2.0 * h;
            let fm = value_by_solver(&ctx, &inst, &model, &omega.from_flat_like(&ctx, &p), ridge);
            (fp - fm) / (2.0 * h)
        })
        .collect();
    let fd = omega.from_flat_like(&ctx, &fd);
    // The solver's F and the closed-form F agree at ω itself.
    let (f_solver, f_exact) = (
        value_by_solver(&ctx, &inst, &model, omega, ridge),
        inst.problem.value(omega, &inst.inner, &inst.outer),
    );
    assert!((f_solver - f_exact).abs() < 1e-12 * f_exact.abs().max(1.0));
    let theta = exact_inner(&ctx, &inst, &model, omega, ridge);
    for method in [
        MethodConfig::ClosedForm,
        MethodConfig::FuncidLinear { ridge: None },
        aid(30, 0.0),
        MethodConfig::Itd {
            unroll: 80,
            lr: 0.5,
            fd_step: None,
            eliminate_head: false,
        },
    ] {
        let e = rel_err(
            &grad_with(&ctx, &inst, &model, &method, omega, &theta, ridge),
            &fd,
        );
        println!("{:>14} vs finite differences of F: {e:.2e}", method.name());
        assert!(e < 1e-7, "{} vs FD: {e:e}", method.name());
    }
}

#[test]
fn penalty_is_the_gradient_of_the_penalised_objective() {
    use funcrl_bilevel::{BilevelProblem, inner::inner_grad_theta};
    let ctx = Ctx::from_env(Precision::F64);
    let model = Mlp::new(DIMS.d_z, vec![8], DIMS.d_v, Activation::Tanh);
    let inst = generate(
        &ctx,
        DIMS,
        60,
        50,
        1.0,
        0.1,
        LqOracle::LinearFeatures { ridge: 0.0 },
        false,
        6,
    );
    let theta = model.init(&ctx, &mut StdRng::seed_from_u64(3));
    let lambda = 0.7;
    let objective = |omega: &Params| {
        let v = model.forward(&theta, &inst.outer.z).output;
        let out = funcrl_bilevel::ctx::scalar(inst.problem.outer_loss(omega, v, &inst.outer));
        let (g, _) = inner_grad_theta(
            &inst.problem,
            &model,
            omega,
            &theta,
            &inst.inner.z,
            &inst.inner,
            0.0,
        );
        out + lambda * g.dot(&g)
    };
    let flat = inst.omega0.to_flat();
    let h = 1e-5;
    let fd: Vec<f64> = (0..flat.len())
        .map(|k| {
            let mut p = flat.clone();
            p[k] += h;
            let fp = objective(&inst.omega0.from_flat_like(&ctx, &p));
            p[k] -= 2.0 * h;
            (fp - objective(&inst.omega0.from_flat_like(&ctx, &p))) / (2.0 * h)
        })
        .collect();
    let fd = inst.omega0.from_flat_like(&ctx, &fd);
    let g = grad_with(
        &ctx,
        &inst,
        &model,
        &MethodConfig::Penalty {
            lambda,
            fd_step: None,
            eliminate_head: false,
            network_optimizer: OptimizerConfig::adam(1e-3),
        },
        &inst.omega0,
        &theta,
        0.0,
    );
    let e = rel_err(&g, &fd);
    println!("penalty vs finite differences of the penalised objective: {e:.2e}");
    assert!(e < 1e-6, "{e:e}");
}

/// Over-parameterised inner network (more parameters than the n·d_v fitted values):
/// FuncID vs the functional (pointwise) closed form, and AID's dependence on damping.
#[test]
fn overparameterised_inner_network_funcid_matches_functional_closed_form() {
    let ctx = Ctx::from_env(Precision::F64);
    let n = 24;
    let model = Mlp::new(DIMS.d_z, vec![64, 64], DIMS.d_v, Activation::Tanh);
    let inst = generate(&ctx, DIMS, n, n, 1.0, 0.1, LqOracle::Pointwise, true, 8);
    let cfg = SolverConfig {
        inner: InnerConfig {
            steps: 3000,
            optimizer: OptimizerConfig::adam(3e-3),
            ..InnerConfig::default()
        },
        method: MethodConfig::funcid(3000, OptimizerConfig::adam(3e-3), true),
        outer_optimizer: OptimizerConfig::adam(1e-3),
        seed: 11,
    };
    let mut s = Solver::new(
        ctx.clone(),
        inst.problem.clone(),
        model.clone(),
        inst.omega0.clone(),
        &cfg,
    );
    let inner_loss = s.solve_inner(&inst.inner).unwrap();
    println!(
        "params {} > fitted values {}; inner loss after training {inner_loss:.2e}",
        s.theta.numel(),
        n * DIMS.d_v
    );
    assert!(s.theta.numel() > n * DIMS.d_v);
    let exact = grad_with(
        &ctx,
        &inst,
        &model,
        &MethodConfig::ClosedForm,
        &inst.omega0,
        &s.theta,
        0.0,
    );
    let funcid = s.total_gradient(&inst.inner, &inst.outer).unwrap();
    let e_funcid = rel_err(&funcid.grad, &exact);
    println!(
        "funcid (network adjoint, 3000 Adam steps): rel err {e_funcid:.3e}, adjoint loss {:?}",
        funcid.adjoint_loss
    );
    let mut aid_errs = Vec::new();
    for (iters, damping) in [(5, 0.0), (50, 0.0), (50, 1e-1), (50, 1e-3)] {
        let e = rel_err(
            &grad_with(
                &ctx,
                &inst,
                &model,
                &aid(iters, damping),
                &inst.omega0,
                &s.theta,
                0.0,
            ),
            &exact,
        );
        println!("aid-cg iterations {iters:>3} damping {damping:.0e}: rel err {e:.3e}");
        aid_errs.push(e);
    }
    assert!(
        e_funcid < 0.03,
        "FuncID should be within 3% of the functional closed form: {e_funcid}"
    );
    // AID's answer depends on the damping: the errors differ by a visible amount.
    assert!((aid_errs[2] - aid_errs[3]).abs() > 0.01, "{aid_errs:?}");
}

#[test]
fn outer_loop_recovers_the_structural_parameters() {
    let ctx = Ctx::from_env(Precision::F64);
    let dims = LqDims {
        d_z: 4,
        d_t: 2,
        d_v: 2,
        d_y: 2,
    };
    let model = Mlp::new(dims.d_z, vec![], dims.d_v, Activation::Relu);
    let inst = generate(
        &ctx,
        dims,
        2000,
        2000,
        1.0,
        0.0,
        LqOracle::LinearFeatures { ridge: 1e-3 },
        false,
        9,
    );
    let cfg: SolverConfig = toml::from_str(
        r#"
        seed = 3
        [inner]
        steps = 0
        ridge = 1e-3
        closed_form_head = true
        [method]
        method = "funcid_linear"
        [outer_optimizer]
        kind = "adam"
        lr = 0.05
        "#,
    )
    .unwrap();
    let mut s = Solver::new(
        ctx.clone(),
        inst.problem.clone(),
        model,
        inst.omega0.clone(),
        &cfg,
    );
    let mut logs = Vec::new();
    s.run(
        300,
        |_| (inst.inner.clone(), inst.outer.clone()),
        |l| logs.push(l.clone()),
    )
    .unwrap();
    let err = rel_err(&s.omega, &inst.omega_true);
    // The confounded regression of y on t (what ignoring the instrument gives) for comparison.
    let naive = LinearQuadratic {
        oracle: LqOracle::Pointwise,
        ..inst.problem.clone()
    };
    let naive_inst = LqInstance {
        problem: naive,
        inner: inst.outer.clone(),
        outer: inst.outer.clone(),
        omega_true: inst.omega_true.clone(),
        omega0: inst.omega0.clone(),
    };
    let mut cfg_naive = cfg.clone();
    cfg_naive.method = MethodConfig::ClosedForm;
    let mut s2 = Solver::new(
        ctx.clone(),
        naive_inst.problem.clone(),
        Mlp::new(dims.d_z, vec![], dims.d_v, Activation::Relu),
        inst.omega0.clone(),
        &cfg_naive,
    );
    s2.run(
        300,
        |_| (naive_inst.inner.clone(), naive_inst.outer.clone()),
        |_| (),
    )
    .unwrap();
    let err_naive = rel_err(&s2.omega, &inst.omega_true);
    println!(
        "outer loss {:.4} -> {:.4}; ‖Ω−Ω*‖/‖Ω*‖ = {err:.4} (confounded regression: {err_naive:.4})",
        logs[0].outer_loss,
        logs.last().unwrap().outer_loss
    );
    assert!(logs.last().unwrap().outer_loss < logs[0].outer_loss);
    assert!(err < 0.1, "ω should recover Ω*: {err}");
    assert!(
        err_naive > 2.0 * err,
        "the instrument should matter: {err_naive} vs {err}"
    );
}

#[test]
fn method_configs_parse_from_toml_and_reject_unknowns() {
    let cfg: SolverConfig = toml::from_str(
        r#"
        [inner]
        steps = 20
        optimizer = { kind = "adam", lr = 1e-3, weight_decay = 0.1 }
        [method]
        method = "aid"
        solver = "cg"
        iterations = 2
        "#,
    )
    .unwrap();
    assert_eq!(cfg.method, aid(2, 0.0).clone_with_neumann_default());
    for name in ["funcid", "funcid_linear", "identity", "closed_form"] {
        let m: MethodConfig = toml::from_str(&format!("method = \"{name}\"")).unwrap();
        assert_eq!(m.name(), name);
    }
    let itd: MethodConfig = toml::from_str("method = \"itd\"\nunroll = 2\nlr = 0.01").unwrap();
    assert_eq!(itd.name(), "itd");
    assert!(toml::from_str::<MethodConfig>("method = \"omd\"").is_err());
    assert!(toml::from_str::<MethodConfig>("method = \"aid\"\niters = 2").is_err());
}

trait NeumannDefault {
    fn clone_with_neumann_default(&self) -> Self;
}
impl NeumannDefault for MethodConfig {
    fn clone_with_neumann_default(&self) -> Self {
        match self.clone() {
            MethodConfig::Aid {
                solver,
                iterations,
                damping,
                ..
            } => MethodConfig::Aid {
                solver,
                iterations,
                damping,
                warm_start: true,
                neumann_lr: 0.01,
                fd_step: None,
                eliminate_head: false,
            },
            m => m,
        }
    }
}

#[test]
fn funcid_network_adjoint_drives_the_outer_loop_too() {
    // Same IV-like problem; the adjoint is now a (linear) network trained by Adam, warm-started.
    let ctx = Ctx::from_env(Precision::F64);
    let dims = LqDims {
        d_z: 4,
        d_t: 2,
        d_v: 2,
        d_y: 2,
    };
    let model = Mlp::new(dims.d_z, vec![], dims.d_v, Activation::Relu);
    let inst = generate(
        &ctx,
        dims,
        2000,
        2000,
        1.0,
        0.0,
        LqOracle::LinearFeatures { ridge: 1e-3 },
        false,
        9,
    );
    let cfg = SolverConfig {
        inner: InnerConfig {
            steps: 0,
            ridge: 1e-3,
            closed_form_head: true,
            ..InnerConfig::default()
        },
        method: MethodConfig::funcid(20, OptimizerConfig::adam(0.05), true),
        outer_optimizer: OptimizerConfig::adam(0.05),
        seed: 3,
    };
    let mut s = Solver::new(
        ctx.clone(),
        inst.problem.clone(),
        model,
        inst.omega0.clone(),
        &cfg,
    );
    let mut iters = Vec::new();
    s.run(
        300,
        |_| (inst.inner.clone(), inst.outer.clone()),
        |l| iters.push((l.iteration, l.adjoint_loss.is_some())),
    )
    .unwrap();
    assert_eq!(iters.len(), 300);
    assert!(
        iters
            .iter()
            .enumerate()
            .all(|(i, &(it, has_adj))| it == i && has_adj)
    );
    let err = rel_err(&s.omega, &inst.omega_true);
    println!("funcid network adjoint in the outer loop: ‖Ω−Ω*‖/‖Ω*‖ = {err:.4}");
    assert!(err < 0.1, "{err}");
}

#[test]
fn methods_that_need_more_from_the_problem_say_so() {
    use burn::tensor::Tensor;
    use funcrl_bilevel::{BilevelError, BilevelProblem, toy::LqBatch};
    struct Bare(LinearQuadratic);
    impl BilevelProblem for Bare {
        type InnerBatch = LqBatch;
        type OuterBatch = LqBatch;
        fn inner_inputs(&self, b: &LqBatch) -> Tensor<2> {
            b.z.clone()
        }
        fn outer_inputs(&self, b: &LqBatch) -> Tensor<2> {
            b.z.clone()
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
    let ctx = Ctx::from_env(Precision::F64);
    let inst = generate(&ctx, DIMS, 50, 50, 1.0, 0.1, LqOracle::Pointwise, true, 1);
    let run = |method: MethodConfig| {
        let cfg = SolverConfig {
            inner: InnerConfig {
                steps: 2,
                ..InnerConfig::default()
            },
            method,
            outer_optimizer: OptimizerConfig::sgd(0.1),
            seed: 0,
        };
        let mut s = Solver::new(
            ctx.clone(),
            Bare(inst.problem.clone()),
            linear_model(),
            inst.omega0.clone(),
            &cfg,
        );
        s.step(&inst.inner, &inst.outer).map(|_| ())
    };
    assert_eq!(
        run(MethodConfig::FuncidLinear { ridge: None }),
        Err(BilevelError::MissingCurvature("funcid_linear"))
    );
    assert_eq!(
        run(MethodConfig::ClosedForm),
        Err(BilevelError::NoClosedForm)
    );
    // FuncID itself falls back to finite differences of ∂_v ℓ_in and works.
    assert!(run(MethodConfig::funcid(3, OptimizerConfig::adam(1e-3), true)).is_ok());
}

/// FuncID's adjoint options change how the adjoint is trained, not what it estimates. On a
/// linear inner model the network adjoint spans the same functions as the linear adjoint, so:
/// started from the linear solution with no steps it is FuncID-linear exactly for any κ (ψ starts
/// at a*/κ and the hypergradient uses κ·a), with cosine 1; trained from a zero output or a random
/// draw, with κ = 1 or 4, it converges to the closed form.
#[test]
fn funcid_adjoint_options_keep_the_estimate() {
    use funcrl_bilevel::AdjointInit;
    let ctx = Ctx::from_env(Precision::F64);
    let model = linear_model();
    let ridge = 0.0;
    let inst = generate(
        &ctx,
        DIMS,
        200,
        150,
        1.5,
        0.1,
        LqOracle::LinearFeatures { ridge },
        false,
        3,
    );
    let theta = exact_inner(&ctx, &inst, &model, &inst.omega0, ridge);
    let exact = grad_with(
        &ctx,
        &inst,
        &model,
        &MethodConfig::ClosedForm,
        &inst.omega0,
        &theta,
        ridge,
    );
    let funcid = |init, kappa, steps| MethodConfig::Funcid {
        steps,
        optimizer: OptimizerConfig::adam(1e-2),
        warm_start: false,
        init,
        curvature_scale: kappa,
        own_norm_state: false,
        log_cosine: true,
        adjoint_precision: None,
    };
    for kappa in [1.0, 4.0] {
        let hg = hyper_with(
            &ctx,
            &inst,
            &model,
            &funcid(AdjointInit::Linear, kappa, 0),
            &inst.omega0,
            &theta,
            ridge,
        );
        let e = rel_err(&hg.grad, &exact);
        let cos = hg.adjoint_cosine.unwrap();
        println!("funcid linear init, κ = {kappa}, no steps: rel err {e:.2e}, cosine {cos}");
        assert!(e < 1e-10, "{e:e}");
        assert!((cos - 1.0).abs() < 1e-12, "{cos}");
    }
    for (init, kappa) in [
        (AdjointInit::ZeroOutput, 1.0),
        (AdjointInit::ZeroOutput, 4.0),
        (AdjointInit::Independent, 4.0),
    ] {
        let g = grad_with(
            &ctx,
            &inst,
            &model,
            &funcid(init, kappa, 4000),
            &inst.omega0,
            &theta,
            ridge,
        );
        let e = rel_err(&g, &exact);
        println!("funcid {init:?}, κ = {kappa}, 4000 Adam steps: rel err {e:.2e}");
        assert!(e < 1e-6, "{init:?} κ = {kappa}: {e:e}");
    }
}
