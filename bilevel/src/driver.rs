//! The outer loop: inner steps, total gradient, outer optimiser step, one log record.

use std::time::Instant;

use rand::{SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::{
    ctx::Ctx,
    error::BilevelError,
    inner::{InnerConfig, InnerSolver},
    methods::{HyperInput, Hypergradient, HypergradientMethod, MethodConfig},
    model::InnerModel,
    optim::{Optimizer, OptimizerConfig},
    params::Params,
    problem::BilevelProblem,
    seed::rng_for,
    state::State,
};

/// The method's random stream (FuncID's adjoint draws), one generator per outer iteration.
const STREAM_METHOD: u64 = 1;

fn default_outer_optimizer() -> OptimizerConfig {
    OptimizerConfig::adam(1e-3)
}

/// The whole solver configuration (a TOML table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SolverConfig {
    #[serde(default)]
    pub inner: InnerConfig,
    pub method: MethodConfig,
    #[serde(default = "default_outer_optimizer")]
    pub outer_optimizer: OptimizerConfig,
    #[serde(default)]
    pub seed: u64,
}

/// One outer iteration, as reported to the caller's callback. Names are fixed so that runs plot
/// the same way.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OuterLog {
    pub iteration: usize,
    pub inner_loss: f64,
    pub adjoint_loss: Option<f64>,
    pub adjoint_cosine: Option<f64>,
    pub outer_loss: f64,
    pub grad_norm: f64,
    pub seconds: f64,
}

/// The bilevel solver: owns ω, θ, the optimisers and the method's state.
pub struct Solver<P: BilevelProblem, M: InnerModel> {
    pub ctx: Ctx,
    pub problem: P,
    pub model: M,
    pub omega: Params,
    pub theta: Params,
    inner: InnerSolver,
    outer_optimizer: Optimizer,
    method: Box<dyn HypergradientMethod<P, M>>,
    seed: u64,
    iteration: usize,
    inner_ridge: f64,
}

impl<P: BilevelProblem + 'static, M: InnerModel + 'static> Solver<P, M> {
    /// θ is initialised by the model from `config.seed`.
    pub fn new(ctx: Ctx, problem: P, model: M, omega: Params, config: &SolverConfig) -> Self {
        let theta = model.init(&ctx, &mut StdRng::seed_from_u64(config.seed));
        let mut method = config.method.build();
        method.begin(&theta);
        Self {
            inner_ridge: config.inner.ridge,
            inner: InnerSolver::new(config.inner.clone()),
            outer_optimizer: Optimizer::new(config.outer_optimizer.clone()),
            method,
            ctx,
            problem,
            model,
            omega: omega.detached(),
            theta,
            seed: config.seed,
            iteration: 0,
        }
    }

    pub fn method_name(&self) -> &'static str {
        self.method.name()
    }

    /// Inner steps at the current ω; returns the inner objective after them.
    pub fn solve_inner(&mut self, inner: &P::InnerBatch) -> Result<f64, BilevelError> {
        let (theta, value) = self.inner.solve(
            &self.ctx,
            &self.problem,
            &self.model,
            &self.omega,
            &self.theta,
            inner,
        )?;
        self.theta = theta;
        Ok(value)
    }

    /// The method's estimate of ∇F(ω) at the current (ω, θ), without moving ω.
    pub fn total_gradient(
        &mut self,
        inner: &P::InnerBatch,
        outer: &P::OuterBatch,
    ) -> Result<Hypergradient, BilevelError> {
        self.method.total_gradient(HyperInput {
            ctx: &self.ctx,
            problem: &self.problem,
            model: &self.model,
            omega: &self.omega,
            theta: &mut self.theta,
            inner,
            outer,
            inner_ridge: self.inner_ridge,
            rng: &mut rng_for(self.seed, self.iteration as u64, STREAM_METHOD),
        })
    }

    /// Outer iterations taken so far.
    pub fn iteration(&self) -> usize {
        self.iteration
    }

    /// Everything the next outer iteration depends on besides the problem and the model (whose
    /// own state, e.g. power-iteration vectors, is the caller's): ω, θ, both optimisers, the
    /// method's carried state and the iteration count (the method's random stream is derived
    /// from it).
    pub fn state(&self) -> State {
        let mut s = State::default();
        s.put("omega", &self.omega);
        s.put("theta", &self.theta);
        s.put_optimizer("inner_optimizer", &self.inner.optimizer);
        s.put_optimizer("outer_optimizer", &self.outer_optimizer);
        s.put_number("iteration", self.iteration as f64);
        self.method.save(&mut s);
        s
    }

    /// Restores [`state`](Self::state) into a solver built from the same config; every shape is
    /// checked against this solver's.
    pub fn restore(&mut self, s: &State) -> Result<(), BilevelError> {
        let ctx = &self.ctx;
        let omega = s.get_like(ctx, "omega", &self.omega)?;
        let theta = s.get_like(ctx, "theta", &self.theta)?;
        s.restore_optimizer(ctx, "inner_optimizer", &mut self.inner.optimizer, None)?;
        s.restore_optimizer(
            ctx,
            "outer_optimizer",
            &mut self.outer_optimizer,
            Some(&omega),
        )?;
        self.method.restore(ctx, s, &theta)?;
        self.iteration = s.number("iteration")? as usize;
        (self.omega, self.theta) = (omega, theta);
        Ok(())
    }

    /// One outer iteration: inner steps, total gradient, outer step.
    pub fn step(
        &mut self,
        inner: &P::InnerBatch,
        outer: &P::OuterBatch,
    ) -> Result<OuterLog, BilevelError> {
        let start = Instant::now();
        let inner_loss = self.solve_inner(inner)?;
        let hg = self.total_gradient(inner, outer)?;
        self.omega = self.outer_optimizer.step(&self.omega, &hg.grad);
        let log = OuterLog {
            iteration: self.iteration,
            inner_loss,
            adjoint_loss: hg.adjoint_loss,
            adjoint_cosine: hg.adjoint_cosine,
            outer_loss: hg.outer_loss,
            grad_norm: hg.grad.norm(),
            seconds: start.elapsed().as_secs_f64(),
        };
        self.iteration += 1;
        Ok(log)
    }

    /// `iterations` outer steps on the batches `data(i)` provides; `log` sees every record.
    pub fn run(
        &mut self,
        iterations: usize,
        mut data: impl FnMut(usize) -> (P::InnerBatch, P::OuterBatch),
        mut log: impl FnMut(&OuterLog),
    ) -> Result<(), BilevelError> {
        for it in 0..iterations {
            let (inner, outer) = data(it);
            log(&self.step(&inner, &outer)?);
        }
        Ok(())
    }
}
