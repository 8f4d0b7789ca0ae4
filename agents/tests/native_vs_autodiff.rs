//! The host kernels' agent update against a reference written with burn's autodiff on the same
//! maths (`RlProblem`, the solver's `total_from_adjoint` and hypergradient methods, burn's Adam):
//! from the same state and batches, every agent must land on the same Q, target and model.

use burn::tensor::Tensor;
use funcrl_agents::problem::{OuterData, RlProblem, q_loss_t};
use funcrl_agents::rules::solver_method;
use funcrl_agents::{
    Agent, AgentConfig, Batch, FuncidAdjoint, FuncidMode, ModelConfig, ModelLearning, NetInit,
    OmdInverse, QConfig, nets::Predict,
};
use funcrl_bilevel::{
    BilevelProblem, HyperInput, InnerModel, MethodConfig, Optimizer, OptimizerConfig, Params,
    Precision,
    ctx::{scalar, to_vec},
    methods::total_from_adjoint,
};
use rand::{RngExt, SeedableRng, rngs::StdRng};

struct Reference {
    q: Params,
    q_target: Params,
    omega: Params,
    q_opt: Optimizer,
    model_opt: Optimizer,
    method: Option<
        Box<dyn funcrl_bilevel::HypergradientMethod<RlProblem, funcrl_agents::nets::DoubleQ>>,
    >,
}

impl Reference {
    fn new(agent: &Agent) -> Self {
        // OMD identity runs on the host kernels, so the solver's (finite-difference) identity
        // method is the reference; the burn-backed options use the agent's own method builder.
        let method = match &agent.cfg.learning {
            ModelLearning::Omd {
                inverse: OmdInverse::Identity,
                ..
            } => Some(
                MethodConfig::Identity {
                    fd_step: Some(1e-8),
                }
                .build(),
            ),
            other => solver_method(other),
        };
        Self {
            q: agent.q_params(&agent.q),
            q_target: agent.q_params(&agent.q_target),
            omega: agent.omega_params(&agent.omega),
            q_opt: Optimizer::new(OptimizerConfig::adam(agent.cfg.q.lr)),
            model_opt: Optimizer::new(OptimizerConfig::adam(agent.cfg.model.lr)),
            method,
        }
    }

    fn problem(&self, agent: &Agent, through: bool) -> RlProblem {
        RlProblem {
            model: agent.model.clone(),
            qnet: agent.qnet.clone(),
            target: self.q_target.detached(),
            gamma: agent.cfg.q.gamma,
            alpha: agent.cfg.q.alpha,
            through_next_state: through,
        }
    }

    /// The update as tensors and autodiff; returns (q_loss, model_loss, outer_loss, td).
    fn update(
        &mut self,
        agent: &Agent,
        batch: &Batch,
        rng: &mut StdRng,
    ) -> (f64, f64, f64, Vec<f64>) {
        let d = agent.tensors(batch);
        let learning = agent.cfg.learning.clone();
        let full = !matches!(
            learning,
            ModelLearning::Funcid {
                mode: FuncidMode::Paper,
                ..
            }
        );
        if agent.cfg.q.reset_optimizer {
            self.q_opt = Optimizer::new(OptimizerConfig::adam(agent.cfg.q.lr));
        }
        let mut q_loss_value = 0.0;
        for _ in 0..agent.cfg.q.steps {
            let problem = self.problem(agent, true);
            let (y_in, w_in) = match learning {
                ModelLearning::Modelfree => (problem.real_target(&d), d.w.clone()),
                _ => (
                    problem.model_target(&self.omega.detached(), &d).detach(),
                    d.w.ones_like(),
                ),
            };
            let th = self.q.tracked();
            let v = agent.qnet.forward(&th, &d.s).output;
            let q_loss = q_loss_t(v, y_in, &d.onehot2, &w_in);
            q_loss_value = scalar(q_loss.clone().detach());
            let grad = th.grads(&q_loss.backward());
            self.q = self.q_opt.step(&self.q, &grad);
            let tau = agent.cfg.q.tau;
            self.q_target = self.q_target.scale(1.0 - tau).axpy(tau, &self.q).detached();
        }

        let problem = self.problem(agent, full);
        let outer = OuterData {
            s: d.s.clone(),
            onehot2: d.onehot2.clone(),
            y: problem.real_target(&d),
            w: d.w.clone(),
        };
        let v_out = agent.qnet.forward(&self.q, &d.s).output.detach();
        let outer_loss = scalar(
            problem
                .outer_loss(&self.omega, v_out.clone(), &outer)
                .detach(),
        );
        let td_sel = (v_out.clone() - outer.y.clone()) * d.onehot2.clone();
        let td = to_vec(&td_sel.clone().sum_dim(1).mul_scalar(0.5));

        let (model_grad, model_loss) = match learning {
            ModelLearning::Modelfree => (None, 0.0),
            ModelLearning::Mle => {
                let om = self.omega.tracked();
                let (s2, r) = agent.model.forward(&om, &d.s, &d.x);
                let err = (s2 - d.s_next.clone()).square().sum_dim(1) + (r - d.r.clone()).square();
                let loss = err.mul(d.w.clone()).sum().mul_scalar(0.5 / d.n as f64);
                let value = scalar(loss.clone().detach());
                (Some(om.grads(&loss.backward())), value)
            }
            ModelLearning::Vep { .. } => {
                let om = self.omega.tracked();
                let (s2, r) = agent.model.forward(&om, &d.s, &d.x);
                let g = agent.cfg.q.gamma;
                let mut loss: Option<Tensor<1>> = None;
                let vep = agent.rule().vep().expect("a VEP agent");
                for vk in &vep.values {
                    let vk = funcrl_bilevel::Mlp::init(
                        &vep.net,
                        &agent.ctx,
                        &mut StdRng::seed_from_u64(0),
                    )
                    .from_flat_like(&agent.ctx, vk);
                    let model_side = r.clone()
                        + (d.mask.clone() * vep.net.forward(&vk, &s2).output).mul_scalar(g);
                    let real_side = d.r.clone()
                        + (d.mask.clone() * vep.net.forward(&vk, &d.s_next).output).mul_scalar(g);
                    let l = (model_side - real_side.detach())
                        .square()
                        .mul(d.w.clone())
                        .sum()
                        .mul_scalar(0.5 / d.n as f64);
                    loss = Some(match loss {
                        None => l,
                        Some(acc) => acc + l,
                    });
                }
                let loss = loss.unwrap();
                let value = scalar(loss.clone().detach());
                (Some(om.grads(&loss.backward())), value)
            }
            ModelLearning::Funcid {
                mode: FuncidMode::Full | FuncidMode::Paper,
                adjoint,
                ..
            } => {
                let a = match adjoint {
                    FuncidAdjoint::CurrentQ => td_sel.mul(d.w.clone()).neg(),
                    // Q*_ω = y_ω on both networks' taken actions.
                    FuncidAdjoint::InnerSolution => {
                        let y_model = self.problem(agent, true).model_target(&self.omega, &d);
                        ((y_model - outer.y.clone()) * d.onehot2.clone())
                            .mul(d.w.clone())
                            .neg()
                    }
                };
                let g = total_from_adjoint(&problem, &self.omega, &v_out, &a, &v_out, &d, &outer);
                (Some(g), outer_loss)
            }
            ModelLearning::Funcid { .. } | ModelLearning::Omd { .. } => {
                let method = self.method.as_mut().unwrap();
                let mut theta = self.q.clone();
                let h = method
                    .total_gradient(HyperInput {
                        ctx: &agent.ctx,
                        problem: &problem,
                        model: &agent.qnet,
                        omega: &self.omega,
                        theta: &mut theta,
                        inner: &d,
                        outer: &outer,
                        inner_ridge: 0.0,
                        rng,
                    })
                    .unwrap();
                (Some(h.grad), outer_loss)
            }
        };
        if let Some(mut g) = model_grad {
            if let Some(max) = agent.cfg.model.grad_clip {
                let norm = g.to_flat().iter().map(|x| x * x).sum::<f64>().sqrt();
                if norm > max {
                    g = g.scale(max / norm);
                }
            }
            self.omega = self.model_opt.step(&self.omega, &g);
        }
        (q_loss_value, model_loss, outer_loss, td)
    }
}

fn random_batch(rng: &mut StdRng, n: usize, n_actions: usize) -> Batch {
    let mut draw = |k: usize, scale: f64| -> Vec<f64> {
        (0..k)
            .map(|_| scale * (rng.random::<f64>() - 0.5))
            .collect()
    };
    let obs = draw(n * 4, 1.0);
    let next_obs: Vec<f64> = obs
        .iter()
        .zip(draw(n * 4, 0.1))
        .map(|(a, b)| a + b)
        .collect();
    let weight: Vec<f64> = draw(n, 1.0).iter().map(|w| 1.0 + w).collect();
    Batch {
        indices: (0..n).collect(),
        action: (0..n)
            .map(|i| ((i * 7 + 3) % 5 % n_actions) as f64)
            .collect(),
        obs,
        next_obs,
        reward: vec![1.0; n],
        mask: (0..n).map(|i| if i % 9 == 4 { 0.0 } else { 1.0 }).collect(),
        weight,
        ..Batch::default()
    }
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    let num = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    let den = b.iter().map(|y| y.abs()).fold(1e-12, f64::max);
    num / den
}

fn check(learning: ModelLearning, predict: Predict, tol: f64) {
    check_with(learning, predict, tol, None);
}

fn check_with(learning: ModelLearning, predict: Predict, tol: f64, values: Option<Vec<f64>>) {
    check_q(learning, predict, tol, values, QConfig::default(), None);
}

fn check_q(
    learning: ModelLearning,
    predict: Predict,
    tol: f64,
    values: Option<Vec<f64>>,
    q: QConfig,
    grad_clip: Option<f64>,
) {
    let n_actions = values.as_ref().map_or(2, Vec::len);
    let cfg = AgentConfig {
        learning: learning.clone(),
        q: QConfig {
            hidden: vec![16, 16],
            ..q
        },
        model: ModelConfig {
            hidden: vec![3, 3],
            predict,
            lr: 1e-2,
            init: q.init,
            grad_clip,
            clip_next_state: false,
            clip_reward: false,
        },
        precision: Precision::F64,
        action_values: values,
    };
    let mut agent = Agent::new(cfg, 4, n_actions, &mut StdRng::seed_from_u64(5));
    let mut reference = Reference::new(&agent);
    let mut data = StdRng::seed_from_u64(6);
    let (mut ra, mut rb) = (StdRng::seed_from_u64(8), StdRng::seed_from_u64(8));
    let omega0 = agent.omega.clone();
    for step in 0..4 {
        let batch = random_batch(&mut data, 40, n_actions);
        let (stats, td) = agent.update(&batch, &mut ra);
        let (ql, ml, ol, td_ref) = reference.update(&agent, &batch, &mut rb);
        let what = format!("{learning:?} {predict:?} step {step}");
        assert!(
            rel(&agent.q, &reference.q.to_flat()) < tol,
            "{what}: q {:.2e}",
            rel(&agent.q, &reference.q.to_flat())
        );
        assert!(
            rel(&agent.q_target, &reference.q_target.to_flat()) < tol,
            "{what}: target"
        );
        let e = rel(&agent.omega, &reference.omega.to_flat());
        assert!(e < tol, "{what}: omega {e:.2e}");
        assert!(rel(&td, &td_ref) < tol, "{what}: td");
        for (a, b, name) in [
            (stats.q_loss, ql, "q_loss"),
            (stats.model_loss, ml, "model_loss"),
            (stats.outer_loss, ol, "outer_loss"),
        ] {
            assert!(
                (a - b).abs() <= tol * b.abs().max(1e-12),
                "{what}: {name} {a} vs {b}"
            );
        }
    }
    if !matches!(learning, ModelLearning::Modelfree) {
        // the model moved, so the comparison above was not vacuous
        assert!(
            rel(&agent.omega, &omega0) > 1e-4,
            "{learning:?}: model did not move"
        );
    }
}

/// The reference code's settings: orthogonal init and an Adam state re-initialised before every
/// Q step (the autodiff reference makes a fresh optimizer each update).
#[test]
fn reference_options_match_the_autodiff_reference() {
    let q = QConfig {
        init: NetInit::Orthogonal,
        reset_optimizer: true,
        lr: 3e-3,
        ..QConfig::default()
    };
    for learning in [
        ModelLearning::Funcid {
            mode: FuncidMode::Paper,
            adjoint_steps: 3,
            adjoint: FuncidAdjoint::CurrentQ,
        },
        ModelLearning::Omd {
            inverse: OmdInverse::Identity,
            cg_iterations: 3,
        },
        ModelLearning::Mle,
    ] {
        check_q(learning, Predict::NextState, 1e-9, None, q.clone(), None);
    }
}

/// The `full`-mode stabilisers: the inner-solution adjoint, several Q steps per update and
/// model-gradient clipping (0.05 is active: these gradients have norms of order 0.1–1).
#[test]
fn stabilising_options_match_the_autodiff_reference() {
    for predict in [Predict::NextState, Predict::Delta] {
        for (steps, clip) in [(1, None), (3, Some(0.05))] {
            let q = QConfig {
                steps,
                ..QConfig::default()
            };
            for adjoint in [FuncidAdjoint::InnerSolution, FuncidAdjoint::CurrentQ] {
                let learning = ModelLearning::Funcid {
                    mode: FuncidMode::Full,
                    adjoint_steps: 3,
                    adjoint,
                };
                check_q(learning, predict, 1e-9, None, q.clone(), clip);
            }
        }
    }
}

/// The inner-solution adjoint's model gradient is the gradient of the outer loss at the
/// functional inner optimum Q*_ω = y_ω: L(ω) = ½Σᵢ mean_b w_b (y_ω,b − y_b)², y_ω = r_ω +
/// γ·m·V̄(ŝ′_ω). Checked against central finite differences along random directions.
#[test]
fn inner_solution_adjoint_is_the_finite_difference_gradient() {
    for predict in [Predict::NextState, Predict::Delta] {
        let cfg = AgentConfig {
            learning: ModelLearning::Funcid {
                mode: FuncidMode::Full,
                adjoint_steps: 3,
                adjoint: FuncidAdjoint::InnerSolution,
            },
            q: QConfig {
                hidden: vec![16, 16],
                ..QConfig::default()
            },
            model: ModelConfig {
                hidden: vec![3, 3],
                predict,
                ..ModelConfig::default()
            },
            precision: Precision::F64,
            action_values: None,
        };
        let agent = Agent::new(cfg, 4, 2, &mut StdRng::seed_from_u64(11));
        let reference = Reference::new(&agent);
        let batch = random_batch(&mut StdRng::seed_from_u64(12), 40, 2);
        let d = agent.tensors(&batch);
        let problem = reference.problem(&agent, true);
        let y = problem.real_target(&d);
        let loss = |omega: &Params| {
            let e = problem.model_target(omega, &d) - y.clone();
            scalar(e.square().mul(d.w.clone()).sum()) / d.n as f64
        };
        let omega = reference.omega.clone();
        let v = agent.qnet.forward(&reference.q, &d.s).output;
        let a = ((problem.model_target(&omega, &d) - y.clone()) * d.onehot2.clone())
            .mul(d.w.clone())
            .neg();
        let outer = OuterData {
            s: d.s.clone(),
            onehot2: d.onehot2.clone(),
            y: y.clone(),
            w: d.w.clone(),
        };
        let g = total_from_adjoint(&problem, &omega, &v, &a, &v, &d, &outer).to_flat();
        let mut rng = StdRng::seed_from_u64(13);
        let flat = omega.to_flat();
        for _ in 0..4 {
            let u: Vec<f64> = (0..flat.len()).map(|_| rng.random::<f64>() - 0.5).collect();
            let at = |h: f64| {
                let p: Vec<f64> = flat.iter().zip(&u).map(|(x, d)| x + h * d).collect();
                loss(&omega.from_flat_like(&agent.ctx, &p))
            };
            let h = 1e-6;
            let fd = (at(h) - at(-h)) / (2.0 * h);
            let an: f64 = g.iter().zip(&u).map(|(x, d)| x * d).sum();
            assert!(
                (fd - an).abs() <= 1e-6 * an.abs().max(1e-3),
                "{predict:?}: finite difference {fd} vs adjoint {an}"
            );
        }
    }
}

#[test]
fn every_agent_matches_the_autodiff_reference() {
    check(ModelLearning::Modelfree, Predict::NextState, 1e-10);
    check(ModelLearning::Mle, Predict::NextState, 1e-10);
    check(ModelLearning::Mle, Predict::Delta, 1e-10);
    for mode in [FuncidMode::Full, FuncidMode::Paper] {
        for predict in [Predict::NextState, Predict::Delta] {
            check(
                ModelLearning::Funcid {
                    mode,
                    adjoint_steps: 3,
                    adjoint: FuncidAdjoint::CurrentQ,
                },
                predict,
                1e-10,
            );
        }
    }
    check(
        ModelLearning::Vep {
            functions: 3,
            hidden: vec![8],
        },
        Predict::Delta,
        1e-10,
    );
    // The solver's methods run on burn in both; these check the plumbing.
    check(
        ModelLearning::Funcid {
            mode: FuncidMode::Network,
            adjoint_steps: 3,
            adjoint: FuncidAdjoint::CurrentQ,
        },
        Predict::Delta,
        1e-10,
    );
    check(
        ModelLearning::Omd {
            inverse: OmdInverse::Cg,
            cg_iterations: 3,
        },
        Predict::Delta,
        1e-10,
    );
}

#[test]
fn omd_jvp_matches_the_solvers_finite_difference_identity_method() {
    // The reference takes the mixed second derivative by central differences (a small step, so
    // that no ReLU kink falls inside ±step: the default cbrt(eps) step crossed one and left a
    // 1e-5 difference after Adam's normalisation); the host kernel by an exact JVP.
    check(
        ModelLearning::Omd {
            inverse: OmdInverse::Identity,
            cg_iterations: 3,
        },
        Predict::NextState,
        1e-5,
    );
    check(
        ModelLearning::Omd {
            inverse: OmdInverse::Identity,
            cg_iterations: 3,
        },
        Predict::Delta,
        1e-5,
    );
}

#[test]
fn continuous_action_grid_matches_the_autodiff_reference() {
    // The model sees the action value (Pendulum's torque grid), not a one-hot code.
    let values = Some(vec![-2.0, 0.0, 2.0]);
    for learning in [
        ModelLearning::Mle,
        ModelLearning::Funcid {
            mode: FuncidMode::Full,
            adjoint_steps: 3,
            adjoint: FuncidAdjoint::CurrentQ,
        },
    ] {
        check_with(learning, Predict::Delta, 1e-10, values.clone());
    }
}
