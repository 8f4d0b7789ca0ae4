//! A deep IV fit from a config: networks, the bilevel solver, the outer loop and the test MSE.
//! Where the records go (a run directory, a progress line) is the caller's: it passes a
//! [`FitObserver`].

use std::time::Instant;

use funcrl_bilevel::inner::solve_head;
use funcrl_bilevel::{
    BilevelProblem, Ctx, InnerConfig, InnerModel, MethodConfig, Optimizer, OptimizerConfig, Params,
    Precision, Solver, SolverConfig, State,
};
use rand::{SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::InputError;
use crate::data::{Matrix, Table};
use crate::generate::{DataConfig, IvDataset};
use crate::nets::{Act, Net};
use crate::problem::{Covariate, IvProblem, Stage1, Stage2};
use crate::tsls;

fn d_treatment_hidden() -> Vec<usize> {
    vec![1024, 512, 128]
}
fn d_instrument_hidden() -> Vec<usize> {
    vec![256, 128, 128]
}
fn d_features() -> usize {
    32
}
fn d_true() -> bool {
    true
}
fn d_ridge() -> f64 {
    0.1
}
fn d_eval_every() -> usize {
    10
}
fn d_out() -> String {
    "runs".into()
}

/// Networks of the dSprites protocol (docs/protocols.md) (defaults: dSprites sizes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Treatment net hidden widths (input = treatment dimension).
    #[serde(default = "d_treatment_hidden")]
    pub treatment_hidden: Vec<usize>,
    /// Instrument net hidden widths (input = instrument dimension).
    #[serde(default = "d_instrument_hidden")]
    pub instrument_hidden: Vec<usize>,
    /// Feature width of both nets (32).
    #[serde(default = "d_features")]
    pub features: usize,
    #[serde(default = "d_true")]
    pub spectral_norm: bool,
    #[serde(default = "d_true")]
    pub layer_norm: bool,
    /// Where LayerNorm sits: "funcbo" (funcBO's dSprites networks, see [`Net::funcbo`]) or
    /// "pre_activation" (between the linear map and the activation of every layer but the first).
    #[serde(default)]
    pub norm_layout: NormLayout,
    /// The treatment net's last activation: "tanh" (the protocol's, the default), "relu" or "identity".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub treatment_activation: Option<Act>,
    /// Width of the instrument net's last layer, before the linear head to `features`
    /// (default: `features`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instrument_features: Option<usize>,
    /// DFIV's demand model: a covariate net on the last treatment columns (see
    /// [`CovariateConfig`]). Unset: every treatment column goes into the treatment net.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covariate: Option<CovariateConfig>,
}

/// `[network.covariate]`: the last `columns` treatment columns are exogenous covariates x
/// (demand: t and s). A covariate net χ (`columns` → `hidden` → `features`, ReLU) takes them,
/// the treatment net the rest, and stage 2 regresses y on [v, 1] ⊗ [χ(x), 1] (DFIV's demand
/// model). χ's parameters are part of ω and trained by the outer optimiser on L_out; `steps`
/// more steps of χ alone on L_out follow every outer step (DFIV's `covariate_iter`, 20).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CovariateConfig {
    pub columns: usize,
    pub hidden: Vec<usize>,
    pub features: usize,
    /// Extra steps on χ alone per outer iteration (0: only the outer step).
    #[serde(default)]
    pub steps: usize,
    /// Their optimiser (weight decay read as `weight_decay_form` says, like the outer one's).
    #[serde(default = "default_outer")]
    pub optimizer: OptimizerConfig,
}

/// `steps` optimiser steps on the covariate net's part of ω alone, on L_out at the current
/// stage-2 predictions (DFIV's covariate update).
fn covariate_steps(
    solver: &mut Solver<IvProblem, Net>,
    s2: &Stage2,
    opt: &mut Optimizer,
    steps: usize,
) {
    let Some(split) = solver.problem.covariate.as_ref().map(|c| c.split) else {
        return;
    };
    let v2 = solver
        .model
        .forward(&solver.theta.detached(), &s2.z)
        .output
        .detach();
    for _ in 0..steps {
        let (head, chi) = solver.omega.0.split_at(split);
        let chi = Params::new(chi.to_vec());
        let tracked = chi.tracked();
        let om = Params::new(
            head.iter()
                .map(|t| t.clone().detach())
                .chain(tracked.0.clone())
                .collect(),
        );
        let loss = solver.problem.outer_loss(&om, v2.clone(), s2);
        let g = tracked.grads(&loss.backward());
        let new = opt.step(&chi, &g);
        solver.omega = Params::new(head.iter().cloned().chain(new.0).collect());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormLayout {
    #[default]
    Funcbo,
    PreActivation,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            treatment_hidden: d_treatment_hidden(),
            instrument_hidden: d_instrument_hidden(),
            features: d_features(),
            spectral_norm: true,
            layer_norm: true,
            norm_layout: NormLayout::Funcbo,
            treatment_activation: None,
            instrument_features: None,
            covariate: None,
        }
    }
}

/// Network settings that only the data can rule out, as errors naming the field.
pub fn check_network(net: &NetworkConfig, ds: &IvDataset) -> Result<(), InputError> {
    let zero = |field: &str, w: &[usize]| {
        if w.contains(&0) {
            Err(InputError::new(format!(
                "network.{field} = {w:?}: widths must be ≥ 1"
            )))
        } else {
            Ok(())
        }
    };
    zero("features", &[net.features])?;
    zero("treatment_hidden", &net.treatment_hidden)?;
    zero("instrument_hidden", &net.instrument_hidden)?;
    zero(
        "instrument_features",
        &net.instrument_features.into_iter().collect::<Vec<_>>(),
    )?;
    if net.layer_norm && net.features == 1 {
        return Err(InputError::new(
            "network.features = 1 with network.layer_norm = true: LayerNorm over one feature is \
             a constant; set network.layer_norm = false",
        ));
    }
    if let Some(c) = &net.covariate {
        zero("covariate.hidden", &c.hidden)?;
        zero("covariate.features", &[c.features])?;
        if c.columns == 0 || c.columns >= ds.treatment.cols {
            return Err(InputError::new(format!(
                "network.covariate.columns = {}: must be 1..{} (the data has {} treatment \
                 columns; the last `columns` are the covariates, at least one stays a treatment)",
                c.columns,
                ds.treatment.cols.saturating_sub(1),
                ds.treatment.cols
            )));
        }
    }
    Ok(())
}

/// A deep IV run (configs/iv/*.toml).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IvConfig {
    #[serde(default)]
    pub seed: u64,
    /// Outer iterations.
    pub iterations: usize,
    /// Test MSE every this many iterations (and at the last).
    #[serde(default = "d_eval_every")]
    pub eval_every: usize,
    #[serde(default)]
    pub precision: Precision,
    /// Root folder of run directories.
    #[serde(default = "d_out")]
    pub out: String,
    pub data: DataConfig,
    #[serde(default)]
    pub network: NetworkConfig,
    /// Stage-2 ridge λ₂ (mean form: DFIV's λ₂·N₂ in sum form). Stage 1's is `inner.ridge`.
    #[serde(default = "d_ridge")]
    pub stage2_ridge: f64,
    #[serde(default)]
    pub inner: InnerConfig,
    /// `method = "dfiv" | "2sls" | "funcid" | "funcid_linear" | "aid" | "itd" | "penalty"` and
    /// that method's options (bilevel/README.md).
    pub method: toml::Table,
    #[serde(default = "default_outer")]
    pub outer_optimizer: OptimizerConfig,
    /// How the `weight_decay` of `inner.optimizer` and `outer_optimizer` is read (see
    /// [`DecayForm`]); the adjoint network's optimiser (method `funcid`) is used as given.
    #[serde(default)]
    pub weight_decay_form: DecayForm,
    /// Which columns to standardise with their training mean and standard deviation before
    /// fitting (see [`Standardize`]); predictions are mapped back, so the test MSE is always on
    /// the original scale of the outcome.
    #[serde(default)]
    pub standardize: Standardize,
    /// Evaluate with the stage-1 head solved exactly at the current ω (the reference code's
    /// `evaluate()`: both stages refit in closed form on the current features). Off: the head
    /// from the last inner solve, fitted at the previous ω.
    #[serde(default = "d_true")]
    pub eval_refit: bool,
    /// Save the run's state (`checkpoint.h5`) every this many iterations, so that a killed run
    /// resumes (`funcrl iv --resume RUN_DIR`) to the numbers of an uninterrupted one; 0: never
    /// (a stop by SIGINT/SIGTERM still saves). Default: `eval_every`. Not part of what a run
    /// computes, so written to the resolved config only when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_every: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Standardize {
    #[default]
    None,
    /// Treatment, instrument and outcome columns.
    All,
    /// Instrument columns only (dSprites: the latents' ranges differ, 0.5–1 for scale and
    /// 0–2π for orientation; the pixels stay as they are).
    Instrument,
}

/// Weight decay is added to the gradient (PyTorch's Adam). DFIV and funcBO add it to the
/// gradient of losses *summed* over rows (stage 1 ‖ψ̃W − φ‖² + λ₁N₁‖W‖², stage 2
/// ‖y − v̂u‖² + λ₂N₂‖u‖²), whereas our losses are row means (stage 1 with a ½). The same decay on
/// a mean loss is N times stronger relative to the data term (2500× at n = 5,000), enough to
/// shrink the networks instead of fitting them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecayForm {
    /// As DFIV/funcBO give it (for sum-form losses): the solver gets wd/(2N₁) for the inner
    /// optimiser and wd/N₂ for the outer one — the same decay relative to the data term.
    #[default]
    Sum,
    /// Used as given, on the mean-form losses.
    Mean,
}

/// `opt` with its weight decay multiplied by `factor`.
pub fn scale_weight_decay(opt: &OptimizerConfig, factor: f64) -> OptimizerConfig {
    let mut o = opt.clone();
    match &mut o {
        OptimizerConfig::Sgd { weight_decay, .. } | OptimizerConfig::Adam { weight_decay, .. } => {
            *weight_decay *= factor
        }
    }
    o
}

/// The solver configuration a run uses with N₁ stage-1 and N₂ stage-2 rows: the weight decays
/// converted as `weight_decay_form` says.
pub fn effective_solver_config(
    cfg: &IvConfig,
    solver: &SolverConfig,
    n1: usize,
    n2: usize,
) -> SolverConfig {
    let mut s = solver.clone();
    if cfg.weight_decay_form == DecayForm::Sum {
        s.inner.optimizer = scale_weight_decay(&s.inner.optimizer, 1.0 / (2 * n1.max(1)) as f64);
        s.outer_optimizer = scale_weight_decay(&s.outer_optimizer, 1.0 / n2.max(1) as f64);
    }
    s
}

fn default_outer() -> OptimizerConfig {
    OptimizerConfig::adam(1e-3)
}

/// What the `method` table resolves to.
#[allow(clippy::large_enum_variant)] // built once per run
pub enum Resolved {
    TwoSls,
    Deep { name: String, solver: SolverConfig },
}

impl IvConfig {
    pub fn method_name(&self) -> String {
        self.method
            .get("method")
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string()
    }

    /// Values no run can use, as errors naming the field (checked before anything is allocated
    /// or written): ridges negative or not finite, unusable optimiser settings, and data or
    /// networks that would not fit in the memory available.
    pub fn check_values(&self) -> Result<(), InputError> {
        let ridge = |field: &str, r: f64| {
            if r.is_finite() && r >= 0.0 {
                Ok(())
            } else {
                Err(InputError::new(format!(
                    "{field} = {r}: must be a finite number ≥ 0"
                )))
            }
        };
        // Steps inside one outer iteration: a typo here would make one iteration endless.
        let steps = |field: &str, v: usize| {
            if v > 100_000 {
                Err(InputError::new(format!(
                    "{field} = {v} is above the sane bound 100000"
                )))
            } else {
                Ok(())
            }
        };
        steps("inner.steps", self.inner.steps)?;
        for k in ["steps", "iterations", "unroll"] {
            if let Some(v) = self.method.get(k).and_then(|v| v.as_integer()) {
                steps(&format!("method.{k}"), v.max(0) as usize)?;
            }
        }
        ridge("stage2_ridge", self.stage2_ridge)?;
        ridge("inner.ridge", self.inner.ridge)?;
        if let Some(r) = self.method.get("ridge").and_then(|v| v.as_float()) {
            ridge("method.ridge", r)?;
        }
        self.inner
            .optimizer
            .check("inner.optimizer")
            .map_err(InputError::new)?;
        self.outer_optimizer
            .check("outer_optimizer")
            .map_err(InputError::new)?;
        if let Some(o) = self.method.get("optimizer") {
            let o = OptimizerConfig::deserialize(o.clone())
                .map_err(|e| InputError::new(format!("method.optimizer: {}", e.message())))?;
            o.check("method.optimizer").map_err(InputError::new)?;
        }
        // Rough footprint: the data (dSprites rows hold 64×64 pixels) in a few copies, and the
        // networks' parameters with optimiser states and activations.
        let (rows, width) = match &self.data {
            DataConfig::Dsprites { n, .. } => (*n as f64, 4096.0 + 8.0),
            DataConfig::Demand { n, .. } => (*n as f64, 16.0),
            DataConfig::Linear { n, d_t, d_z } => (*n as f64, (*d_t + *d_z + 2) as f64),
            DataConfig::File { .. } => (0.0, 0.0),
        };
        let net = &self.network;
        let mlp = |hidden: &[usize]| funcrl_bilevel::model::param_count(4096, hidden, net.features);
        let params = mlp(&net.treatment_hidden) + mlp(&net.instrument_hidden);
        let need = rows * width * 8.0 * 4.0 + params * 8.0 * 16.0;
        if let Some(avail) = funcrl_bilevel::ctx::mem_available_bytes()
            && need > avail
        {
            let gib = |b: f64| b / (1u64 << 30) as f64;
            return Err(InputError::new(format!(
                "this run needs ≈ {:.1} GiB, more than the {:.1} GiB available: lower data.n or the network widths",
                gib(need),
                gib(avail)
            )));
        }
        Ok(())
    }

    pub fn resolve(&self) -> Result<Resolved, InputError> {
        let name = self.method_name();
        let mut inner = self.inner.clone();
        let method = match name.as_str() {
            "2sls" => return Ok(Resolved::TwoSls),
            // DFIV: closed-form stage-1 head and the exact gradient through both ridge solves,
            // which is FuncID-linear with the adjoint ridge equal to the stage-1 ridge.
            "dfiv" => {
                if self.method.len() > 1 {
                    return Err(InputError::new("method \"dfiv\" takes no options"));
                }
                inner.closed_form_head = true;
                MethodConfig::FuncidLinear { ridge: None }
            }
            "closed_form" | "identity" => {
                return Err(InputError::new(format!(
                    "method \"{name}\" is not offered for IV; use dfiv, funcid, funcid_linear, aid, itd, penalty or 2sls"
                )));
            }
            _ => MethodConfig::deserialize(self.method.clone()).map_err(|e| {
                InputError::new(format!(
                    "invalid [method]: {} (methods: 2sls, dfiv, funcid, funcid_linear, aid, itd, penalty)",
                    e.message()
                ))
            })?,
        };
        if self.iterations == 0 {
            return Err(InputError::new("iterations must be at least 1"));
        }
        Ok(Resolved::Deep {
            name,
            solver: SolverConfig {
                inner,
                method,
                outer_optimizer: self.outer_optimizer.clone(),
                seed: self.seed,
            },
        })
    }
}

fn mse(a: &[f64], b: &[f64]) -> Option<f64> {
    (!a.is_empty())
        .then(|| a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / a.len() as f64)
}

fn to_table(ds: &IvDataset) -> (Table, tsls::TslsSpec) {
    let mut t = Table::default();
    let mut spec = tsls::TslsSpec {
        outcome: "y".into(),
        treatment: vec![],
        instrument: vec![],
        exog: vec![],
        intercept: true,
    };
    t.names.push("y".into());
    t.columns.push(ds.outcome.data.clone());
    for (m, prefix, list) in [
        (&ds.treatment, "t", &mut spec.treatment),
        (&ds.instrument, "z", &mut spec.instrument),
    ] {
        for j in 0..m.cols {
            let name = format!("{prefix}{j}");
            t.names.push(name.clone());
            t.columns.push((0..m.rows).map(|r| m.at(r, j)).collect());
            list.push(name);
        }
    }
    (t, spec)
}

/// Training mean and standard deviation (population) of every column; sd 1 for a constant column.
pub fn column_stats(m: &Matrix) -> Vec<(f64, f64)> {
    let n = m.rows.max(1) as f64;
    (0..m.cols)
        .map(|j| {
            let mean = (0..m.rows).map(|r| m.at(r, j)).sum::<f64>() / n;
            let var = (0..m.rows)
                .map(|r| (m.at(r, j) - mean).powi(2))
                .sum::<f64>()
                / n;
            let sd = var.sqrt();
            (mean, if sd > 0.0 { sd } else { 1.0 })
        })
        .collect()
}

fn apply_stats(m: &Matrix, stats: &[(f64, f64)]) -> Matrix {
    let mut out = m.clone();
    for r in 0..m.rows {
        for (j, (mean, sd)) in stats.iter().enumerate() {
            out.data[r * m.cols + j] = (m.at(r, j) - mean) / sd;
        }
    }
    out
}

/// `ds` with treatment, instrument and outcome columns standardised by their training mean and
/// sd (the test treatments with the training statistics; the test structural values untouched),
/// and the outcome's (mean, sd) to map predictions back.
pub fn standardize(ds: &IvDataset, which: Standardize) -> (IvDataset, (f64, f64)) {
    let unit = |m: &Matrix| vec![(0.0, 1.0); m.cols];
    let all = which == Standardize::All;
    let t = if all {
        column_stats(&ds.treatment)
    } else {
        unit(&ds.treatment)
    };
    let z = if which == Standardize::None {
        unit(&ds.instrument)
    } else {
        column_stats(&ds.instrument)
    };
    let y = if all {
        column_stats(&ds.outcome)[0]
    } else {
        (0.0, 1.0)
    };
    let out = IvDataset {
        treatment: apply_stats(&ds.treatment, &t),
        instrument: apply_stats(&ds.instrument, &z),
        outcome: apply_stats(&ds.outcome, &[y]),
        test_treatment: apply_stats(&ds.test_treatment, &t),
        test_structural: ds.test_structural.clone(),
    };
    (out, y)
}

/// The solver, stage-1 and stage-2 batches for a deep run on `ds` (first half stage 1).
pub fn setup(
    cfg: &IvConfig,
    solver_cfg: &SolverConfig,
    ds: &IvDataset,
    ctx: &Ctx,
) -> (Solver<IvProblem, Net>, Stage1, Stage2) {
    let n = ds.rows();
    let half = n / 2;
    let solver_cfg = &effective_solver_config(cfg, solver_cfg, half, n - half);
    let tensor = |m: &Matrix| ctx.tensor2(m.data.clone(), m.rows, m.cols);
    let net = &cfg.network;
    // Treatment columns, then the covariates (DFIV's demand model) when there is a covariate net.
    let d_cov = net.covariate.as_ref().map_or(0, |c| c.columns);
    let d_t = ds.treatment.cols - d_cov;
    let (treat, cov) = ds.treatment.split_cols(d_t);
    let s1 = Stage1::new(
        tensor(&ds.instrument.slice_rows(0, half)),
        tensor(&treat.slice_rows(0, half)),
    );
    let y2 = ds.outcome.data[half..].to_vec();
    let s2 = Stage2 {
        z: tensor(&ds.instrument.slice_rows(half, n)),
        y_t: ctx.tensor2(y2.clone(), n - half, 1),
        y: y2,
        x: (d_cov > 0).then(|| tensor(&cov.slice_rows(half, n))),
    };
    let widths = |input: usize, hidden: &[usize], out: usize| {
        let mut w = vec![input];
        w.extend(hidden);
        w.push(out);
        w
    };
    let build = |input: usize, hidden: &[usize], out: usize, act: Act, head: Option<usize>| {
        if net.layer_norm && net.norm_layout == NormLayout::Funcbo {
            Net::funcbo(widths(input, hidden, out), act, net.spectral_norm, head)
        } else {
            Net::new(
                widths(input, hidden, out),
                act,
                net.layer_norm,
                net.spectral_norm,
                head,
            )
        }
    };
    let tnet = build(
        d_t,
        &net.treatment_hidden,
        net.features,
        net.treatment_activation.unwrap_or(Act::Tanh),
        None,
    );
    let inet = build(
        ds.instrument.cols,
        &net.instrument_hidden,
        net.instrument_features.unwrap_or(net.features),
        Act::Relu,
        Some(net.features),
    );
    let mut omega = tnet.init(ctx, &mut StdRng::seed_from_u64(cfg.seed.wrapping_add(1)));
    tnet.refresh(ctx, &omega);
    let covariate = net.covariate.as_ref().map(|c| {
        let cnet = build(c.columns, &c.hidden, c.features, Act::Relu, None);
        let split = omega.len();
        let chi = cnet.init(ctx, &mut StdRng::seed_from_u64(cfg.seed.wrapping_add(2)));
        cnet.refresh(ctx, &chi);
        omega = Params::new(omega.0.iter().chain(&chi.0).cloned().collect());
        Covariate { net: cnet, split }
    });
    let mut problem = IvProblem::new(ctx.clone(), tnet, cfg.stage2_ridge);
    problem.covariate = covariate;
    let solver = Solver::new(ctx.clone(), problem, inet, omega, solver_cfg);
    solver.model.refresh(ctx, &solver.theta);
    (solver, s1, s2)
}

/// f̂ at the test treatments `t` (the fitted columns' scale) from the solver's current state:
/// the stage-1 head — solved exactly at the current ω with ridge `refit` when given, else the
/// last inner solve's — predicts the stage-2 features, stage 2 is solved on them, and the
/// treatment net maps `t`.
pub fn predict_test(
    solver: &Solver<IvProblem, Net>,
    s1: &Stage1,
    s2: &Stage2,
    t: &Matrix,
    refit: Option<f64>,
) -> Result<Vec<f64>, funcrl_bilevel::BilevelError> {
    let theta = match refit {
        Some(ridge) => solve_head(
            &solver.ctx,
            &solver.problem,
            &solver.model,
            &solver.omega,
            &solver.theta,
            &s1.z,
            s1,
            ridge,
        )?,
        None => solver.theta.detached(),
    };
    let v2 = solver.model.forward(&theta, &s2.z).output;
    let u = solver
        .problem
        .stage2_weights(&solver.omega.detached(), &v2, s2);
    Ok(solver.problem.predict(&solver.omega, &u, t))
}

/// One outer iteration's record (a row of a run's `metrics.csv`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Iteration {
    /// 0-based.
    pub index: usize,
    pub outer_loss: f64,
    pub inner_loss: f64,
    pub adjoint_loss: Option<f64>,
    pub grad_norm: f64,
    pub seconds: f64,
    /// Test MSE where this iteration was evaluated (every `eval_every`, and the last).
    pub test_mse: Option<f64>,
    /// Mean seconds per iteration so far.
    pub mean_seconds: f64,
    /// FuncID's network-vs-linear adjoint cosine (`log_cosine`).
    pub adjoint_cosine: Option<f64>,
}

impl Iteration {
    /// The `metrics.csv` columns, in [`Iteration::row`]'s order.
    pub const HEADER: [&'static str; 8] = [
        "iteration",
        "outer_loss",
        "inner_loss",
        "adjoint_loss",
        "grad_norm",
        "seconds",
        "test_mse",
        "adjoint_cosine",
    ];

    /// The record as numbers (NaN where a value is absent).
    pub fn row(&self) -> [f64; 8] {
        [
            self.index as f64,
            self.outer_loss,
            self.inner_loss,
            self.adjoint_loss.unwrap_or(f64::NAN),
            self.grad_norm,
            self.seconds,
            self.test_mse.unwrap_or(f64::NAN),
            self.adjoint_cosine.unwrap_or(f64::NAN),
        ]
    }
}

/// Receives a deep fit's progress: [`begin`](FitObserver::begin) once the networks are built
/// (and a checkpoint restored), then, after every iteration, its record, a checkpoint when one is
/// due, and the question whether to go on.
pub trait FitObserver {
    /// `done`: iterations already taken (a resumed run's).
    fn begin(&mut self, _done: usize) -> anyhow::Result<()> {
        Ok(())
    }
    fn iteration(&mut self, it: &Iteration) -> anyhow::Result<()>;
    /// Whether to save the state after `done` iterations (never asked after the last).
    fn checkpoint_due(&mut self, _done: usize) -> bool {
        false
    }
    /// The state after `done` iterations, to keep (see [`fit_from`] to resume from it).
    fn checkpoint(&mut self, _done: usize, _state: &State) -> anyhow::Result<()> {
        Ok(())
    }
    /// After any checkpoint: an error ends the run here (a stop request).
    fn proceed(&mut self, _done: usize) -> anyhow::Result<()> {
        Ok(())
    }
}

/// An observer that keeps nothing.
pub struct Silent;

impl FitObserver for Silent {
    fn iteration(&mut self, _: &Iteration) -> anyhow::Result<()> {
        Ok(())
    }
}

/// What a fit produced.
#[derive(Debug, Clone)]
pub struct Fit {
    /// Out-of-sample MSE between f and the learned structural function (None without a test set).
    pub test_mse: Option<f64>,
    /// Predictions at the dataset's test treatments, on the outcome's scale.
    pub predictions: Vec<f64>,
    pub iterations: usize,
    pub seconds_per_iteration: f64,
    /// The closed-form fit, for `method = "2sls"`.
    pub tsls: Option<tsls::TslsFit>,
}

/// Fits the configured method on `ds` (first half stage 1, second half stage 2).
pub fn fit(cfg: &IvConfig, ds: &IvDataset, observer: &mut dyn FitObserver) -> anyhow::Result<Fit> {
    fit_from(cfg, ds, observer, None)
}

/// Iterations between checkpoints: `checkpoint_every`, else `eval_every`.
pub fn checkpoint_interval(cfg: &IvConfig) -> usize {
    cfg.checkpoint_every.unwrap_or(cfg.eval_every.max(1))
}

/// Everything the next iteration depends on: the solver's state, the networks' power-iteration
/// vectors, the covariate optimiser, the time and last evaluation so far, and the data's checksum.
fn fit_state(
    solver: &Solver<IvProblem, Net>,
    cov_opt: Option<&Optimizer>,
    done: usize,
    seconds: f64,
    last: (&[f64], Option<f64>),
    data_checksum: u64,
) -> State {
    let mut st = solver.state();
    solver.model.save_norm_state(&mut st, "net.instrument");
    solver.problem.net.save_norm_state(&mut st, "net.treatment");
    if let Some(c) = &solver.problem.covariate {
        c.net.save_norm_state(&mut st, "net.covariate");
    }
    if let Some(o) = cov_opt {
        st.put_optimizer("covariate_optimizer", o);
    }
    st.put_number("run.done", done as f64);
    st.put_number("run.seconds", seconds);
    st.put_number("run.test_mse", last.1.unwrap_or(f64::NAN));
    if !last.0.is_empty() {
        st.put(
            "run.predictions",
            &Params::new(vec![solver.ctx.tensor2(last.0.to_vec(), 1, last.0.len())]),
        );
    }
    st.put_number("run.data_checksum", data_checksum as f64);
    st
}

/// Whether a checkpoint's `state` can continue a run of `cfg` on `ds`: saved on the same data and
/// before `cfg.iterations`. Returns the iterations it has done.
pub fn check_resume(cfg: &IvConfig, ds: &IvDataset, state: &State) -> Result<usize, InputError> {
    let bad = |e: funcrl_bilevel::BilevelError| InputError::new(e.to_string());
    // f64 holds the 32-bit checksum exactly.
    if state.number("run.data_checksum").map_err(bad)? != ds.checksum() as f64 {
        return Err(InputError::new(
            "the checkpoint was saved on other data (its data checksum differs: another data file, or another funcrl version's generator); resume with the config and code that made it",
        ));
    }
    let done = state.number("run.done").map_err(bad)?;
    if done >= cfg.iterations as f64 {
        return Err(InputError::new(format!(
            "the checkpoint is at iteration {done}, iterations = {}: raise iterations to continue it",
            cfg.iterations
        )));
    }
    Ok(done as usize)
}

/// Fits like [`fit`], continuing from a checkpoint's `state` when given (a state saved by a run
/// of the same config on the same data: anything else is refused, naming what differs).
pub fn fit_from(
    cfg: &IvConfig,
    ds: &IvDataset,
    observer: &mut dyn FitObserver,
    resume: Option<&State>,
) -> anyhow::Result<Fit> {
    let started = Instant::now();
    let solver_cfg = match cfg.resolve()? {
        Resolved::TwoSls => {
            let (table, spec) = to_table(ds);
            let fit = tsls::fit(&table, &spec)?;
            let t = &ds.test_treatment;
            let pred: Vec<f64> = (0..t.rows)
                .map(|r| {
                    fit.coef["const"]
                        + (0..t.cols)
                            .map(|j| fit.coef[&format!("t{j}")] * t.at(r, j))
                            .sum::<f64>()
                })
                .collect();
            return Ok(Fit {
                test_mse: mse(&pred, &ds.test_structural.data),
                predictions: pred,
                iterations: 1,
                seconds_per_iteration: started.elapsed().as_secs_f64(),
                tsls: Some(fit),
            });
        }
        Resolved::Deep { solver, .. } => solver,
    };
    let n = ds.rows();
    if n < 4 {
        return Err(InputError::new(format!("{n} rows: deep IV needs at least 4")).into());
    }
    let ctx = Ctx::flex(cfg.precision);
    // Networks fit `fit_ds` (z-scores when `standardize`); predictions go back by y·sd + mean.
    let (fit_ds, (y_mean, y_sd)) = if cfg.standardize == Standardize::None {
        (ds.clone(), (0.0, 1.0))
    } else {
        standardize(ds, cfg.standardize)
    };
    check_network(&cfg.network, &fit_ds)?;
    let (mut solver, s1, s2) = setup(cfg, &solver_cfg, &fit_ds, &ctx);
    let inner_ridge = solver_cfg.inner.ridge;
    let evaluate = |solver: &Solver<IvProblem, Net>| -> anyhow::Result<(Vec<f64>, Option<f64>)> {
        let refit = cfg.eval_refit.then_some(inner_ridge);
        let pred: Vec<f64> = predict_test(solver, &s1, &s2, &fit_ds.test_treatment, refit)?
            .into_iter()
            .map(|p| p * y_sd + y_mean)
            .collect();
        let m = mse(&pred, &ds.test_structural.data);
        Ok((pred, m))
    };
    let mut cov_opt = cfg.network.covariate.as_ref().map(|c| {
        let o = match cfg.weight_decay_form {
            DecayForm::Sum => scale_weight_decay(&c.optimizer, 1.0 / s2.y.len().max(1) as f64),
            DecayForm::Mean => c.optimizer.clone(),
        };
        (Optimizer::new(o), c.steps)
    });
    let mut last_pred = Vec::new();
    let mut last_mse = None;
    let mut total = 0.0;
    let mut start = 0;
    let data_checksum = ds.checksum();
    if let Some(st) = resume {
        start = check_resume(cfg, ds, st)?;
        let bad = |e: funcrl_bilevel::BilevelError| InputError::new(e.to_string());
        solver.restore(st).map_err(bad)?;
        solver
            .model
            .restore_norm_state(&ctx, st, "net.instrument")
            .map_err(bad)?;
        solver
            .problem
            .net
            .restore_norm_state(&ctx, st, "net.treatment")
            .map_err(bad)?;
        if let Some(c) = &solver.problem.covariate {
            c.net
                .restore_norm_state(&ctx, st, "net.covariate")
                .map_err(bad)?;
        }
        if let Some((o, _)) = cov_opt.as_mut() {
            st.restore_optimizer(&ctx, "covariate_optimizer", o, None)
                .map_err(bad)?;
        }
        total = st.number("run.seconds").map_err(bad)?;
        last_mse = Some(st.number("run.test_mse").map_err(bad)?).filter(|m| !m.is_nan());
        if let Some(p) = st.get(&ctx, "run.predictions").map_err(bad)? {
            last_pred = p.to_flat();
        }
        if start != solver.iteration() {
            return Err(InputError::new(format!(
                "the checkpoint is damaged: run.done = {start} but the solver's iteration is {}",
                solver.iteration()
            ))
            .into());
        }
    }
    observer.begin(start)?;
    let every = checkpoint_interval(cfg);
    for it in start..cfg.iterations {
        solver.problem.refresh(&ctx, &solver.omega);
        if !solver_cfg.inner.refresh_every_step {
            solver.model.refresh(&ctx, &solver.theta);
        }
        let mut log = solver.step(&s1, &s2)?;
        if let Some((opt, steps)) = cov_opt.as_mut() {
            let start = Instant::now();
            covariate_steps(&mut solver, &s2, opt, *steps);
            log.seconds += start.elapsed().as_secs_f64();
        }
        total += log.seconds;
        if !log.outer_loss.is_finite() || !log.inner_loss.is_finite() {
            anyhow::bail!(
                "iteration {it}: loss is not finite (outer {}, inner {}); lower the learning rates",
                log.outer_loss,
                log.inner_loss
            );
        }
        let eval = (it + 1) % cfg.eval_every.max(1) == 0 || it + 1 == cfg.iterations;
        let test = if eval {
            let (p, m) = evaluate(&solver)?;
            last_pred = p;
            last_mse = m;
            m
        } else {
            None
        };
        observer.iteration(&Iteration {
            index: it,
            outer_loss: log.outer_loss,
            inner_loss: log.inner_loss,
            adjoint_loss: log.adjoint_loss,
            adjoint_cosine: log.adjoint_cosine,
            grad_norm: log.grad_norm,
            seconds: log.seconds,
            test_mse: test,
            mean_seconds: total / (it + 1) as f64,
        })?;
        let done = it + 1;
        if done < cfg.iterations
            && ((every > 0 && done.is_multiple_of(every)) || observer.checkpoint_due(done))
        {
            let st = fit_state(
                &solver,
                cov_opt.as_ref().map(|(o, _)| o),
                done,
                total,
                (&last_pred, last_mse),
                data_checksum,
            );
            // A state holding NaN/Inf never replaces the last good checkpoint.
            if let Some(name) = st.first_non_finite() {
                anyhow::bail!(
                    "iteration {it}: {name} is not finite (not saved); lower the learning rates"
                );
            }
            observer.checkpoint(done, &st)?;
        }
        // A stop request after the last iteration lets the run finish.
        if done < cfg.iterations {
            observer.proceed(done)?;
        }
    }
    Ok(Fit {
        test_mse: last_mse,
        predictions: last_pred,
        iterations: cfg.iterations,
        seconds_per_iteration: total / cfg.iterations as f64,
        tsls: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate;
    use crate::problem::stage2_ridge;
    use crate::tsls::{chol_solve, cholesky};
    use funcrl_bilevel::{ctx::to_vec, inner::inner_objective};

    use crate::problem::random_tensor as random;
    use std::path::Path;

    /// A shipped config with `key=value` overrides (dotted keys, TOML values).
    fn load(name: &str, sets: &[&str]) -> IvConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../configs/iv")
            .join(name);
        let mut t: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
        for kv in sets {
            let (k, v) = kv.split_once('=').unwrap();
            let v: toml::Table = format!("v = {v}").parse().unwrap();
            let mut keys: Vec<&str> = k.split('.').collect();
            let last = keys.pop().unwrap();
            let mut cur = &mut t;
            for k in keys {
                cur = cur.get_mut(k).unwrap().as_table_mut().unwrap();
            }
            cur.insert(last.into(), v["v"].clone());
        }
        t.try_into().unwrap()
    }

    fn sq(v: &[f64]) -> f64 {
        v.iter().map(|x| x * x).sum()
    }

    /// DFIV's covariate update: a few Adam steps on χ alone lower L_out at the current stage-2
    /// predictions and leave the treatment net's part of ω as it was.
    /// `eval_refit`: the prediction equals the two-stage closed form recomputed on the host from
    /// the current networks — stage-1 ridge of φ_ω(t₁) on [ψ(z₁), 1], its prediction on the
    /// stage-2 rows, stage-2 ridge of y on it, then [φ_ω(t), 1]·u — after an outer step has moved
    /// ω away from the ω the head was fitted at (without refit the prediction differs).
    #[test]
    fn refit_evaluation_is_the_two_stage_closed_form_at_the_current_omega() {
        let cfg = load(
            "dsprites_dfiv.toml",
            &[
                "data.n=120",
                "network.treatment_hidden=[16]",
                "network.instrument_hidden=[12]",
                "network.features=4",
                "inner.steps=3",
            ],
        );
        let Resolved::Deep { solver: scfg, .. } = cfg.resolve().unwrap() else {
            panic!("a deep method");
        };
        let ds = generate::build(&cfg.data, 0).unwrap();
        let (ds, _) = standardize(&ds, Standardize::Instrument);
        let ctx = Ctx::flex(cfg.precision);
        let (mut solver, s1, s2) = setup(&cfg, &scfg, &ds, &ctx);
        solver.step(&s1, &s2).unwrap();
        let ridge = scfg.inner.ridge;
        let feats = |z: &burn::tensor::Tensor<2>| {
            let f = solver.model.forward(&solver.theta.detached(), z).features;
            let [n, p] = f.dims();
            (to_vec(&f), n, p)
        };
        let (psi1, n1, p) = feats(&s1.z);
        let (psi2, n2, _) = feats(&s2.z);
        let phi1 = to_vec(&solver.problem.features(&solver.omega.detached(), &s1));
        let d = phi1.len() / n1;
        let mut v2 = vec![0.0; n2 * d];
        for c in 0..d {
            let col: Vec<f64> = (0..n1).map(|r| phi1[r * d + c]).collect();
            let w = stage2_ridge(&psi1, n1, p, &col, ridge).unwrap();
            for r in 0..n2 {
                v2[r * d + c] = (0..p).map(|i| psi2[r * p + i] * w[i]).sum::<f64>() + w[p];
            }
        }
        let u = stage2_ridge(&v2, n2, d, &s2.y, cfg.stage2_ridge).unwrap();
        let t = &ds.test_treatment;
        let phi_t = to_vec(
            &solver
                .problem
                .net
                .run(
                    &solver.omega.detached(),
                    &ctx.tensor2(t.data.clone(), t.rows, t.cols),
                )
                .0,
        );
        let want: Vec<f64> = (0..t.rows)
            .map(|r| (0..d).map(|i| phi_t[r * d + i] * u[i]).sum::<f64>() + u[d])
            .collect();
        let got = predict_test(&solver, &s1, &s2, t, Some(ridge)).unwrap();
        let stale = predict_test(&solver, &s1, &s2, t, None).unwrap();
        let err = |a: &[f64]| {
            a.iter()
                .zip(&want)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max)
                / want.iter().map(|y| y.abs()).fold(0.0, f64::max)
        };
        assert!(
            err(&got) < 1e-9,
            "refit vs host closed form: {:e}",
            err(&got)
        );
        assert!(
            err(&stale) > 1e-6,
            "the stale head should differ: {:e}",
            err(&stale)
        );
    }

    /// Evaluating is free of side effects: the training trajectory (every outer and inner loss)
    /// is the same whether the test MSE is computed after every iteration or only at the end.
    #[test]
    fn evaluation_does_not_change_the_trajectory() {
        let losses = |every: usize| {
            let cfg = load(
                "dsprites_funcid.toml",
                &[
                    "data.n=120",
                    "network.treatment_hidden=[16]",
                    "network.instrument_hidden=[12]",
                    "network.features=4",
                    "inner.steps=3",
                    "method.steps=3",
                    "iterations=6",
                    &format!("eval_every={every}"),
                ],
            );
            let ds = generate::build(&cfg.data, 0).unwrap();
            struct Keep(Vec<(f64, f64)>);
            impl FitObserver for Keep {
                fn iteration(&mut self, it: &Iteration) -> anyhow::Result<()> {
                    self.0.push((it.outer_loss, it.inner_loss));
                    Ok(())
                }
            }
            let mut keep = Keep(vec![]);
            let f = fit(&cfg, &ds, &mut keep).unwrap();
            (keep.0, f.test_mse.unwrap())
        };
        let (every, mse_every) = losses(1);
        let (end, mse_end) = losses(6);
        assert_eq!(every.len(), 6);
        assert_eq!(every, end);
        assert_eq!(mse_every, mse_end);
    }

    #[test]
    fn covariate_steps_lower_the_stage2_loss_and_move_only_chi() {
        let cfg = load(
            "demand_dfiv_covariate.toml",
            &[
                "data.n=200",
                "network.instrument_hidden=[8]",
                "network.covariate.hidden=[8]",
            ],
        );
        let Resolved::Deep { solver: scfg, .. } = cfg.resolve().unwrap() else {
            panic!("a deep method");
        };
        let ds = generate::build(&cfg.data, 0).unwrap();
        let (ds, _) = standardize(&ds, Standardize::All);
        let ctx = Ctx::flex(cfg.precision);
        let (mut solver, s1, s2) = setup(&cfg, &scfg, &ds, &ctx);
        solver.solve_inner(&s1).unwrap();
        let loss = |solver: &Solver<IvProblem, Net>| {
            let v2 = solver.model.forward(&solver.theta.detached(), &s2.z).output;
            to_vec(&solver.problem.outer_loss(&solver.omega.detached(), v2, &s2))[0]
        };
        let split = solver.problem.covariate.as_ref().unwrap().split;
        let before = (loss(&solver), solver.omega.clone());
        let mut opt = Optimizer::new(OptimizerConfig::adam(1e-3));
        covariate_steps(&mut solver, &s2, &mut opt, 5);
        let after = loss(&solver);
        assert!(after < before.0, "L_out {} → {after}", before.0);
        let flat = |p: &[burn::tensor::Tensor<2>]| Params::new(p.to_vec()).to_flat();
        assert_eq!(flat(&solver.omega.0[..split]), flat(&before.1.0[..split]));
        assert_ne!(flat(&solver.omega.0[split..]), flat(&before.1.0[split..]));
    }

    /// The conversion factors are the ratios of DFIV/funcBO's sum-form losses to ours, computed
    /// independently on the host: stage 1 ‖v − φ‖² + λ₁N₁‖[W; b]‖² = 2N₁·G, stage 2
    /// ‖y − Ṽu‖² + λ₂N₂‖u‖² (u from the sum-form normal equations) = N₂·L_out. Hence an Adam step
    /// on our loss with the converted decay equals the reference step (sum loss, decay as given).
    #[test]
    fn decay_conversion_matches_the_sum_form_losses() {
        let ctx = Ctx::flex(Precision::F64);
        let mut rng = StdRng::seed_from_u64(1);
        let (n1, n2, dt, dz, feat) = (30, 20, 5, 3, 4);
        let (t1, z1, z2) = (
            random(&ctx, &mut rng, n1, dt),
            random(&ctx, &mut rng, n1, dz),
            random(&ctx, &mut rng, n2, dz),
        );
        let y2 = to_vec(&random(&ctx, &mut rng, n2, 1));
        let tnet = Net::new(vec![dt, 6, feat], Act::Tanh, true, true, None);
        let inet = Net::new(vec![dz, 6, 5], Act::Relu, true, true, Some(feat));
        let omega = tnet.init(&ctx, &mut rng);
        let theta = inet.init(&ctx, &mut rng);
        tnet.refresh(&ctx, &omega);
        inet.refresh(&ctx, &theta);
        let (l1, l2) = (0.1, 0.1);
        let phi = to_vec(&tnet.run(&omega, &t1).0);
        let problem = IvProblem::new(ctx.clone(), tnet, l2);
        let s1 = Stage1::new(z1.clone(), t1);
        // Stage 1.
        let g = to_vec(&inner_objective(
            &problem, &inet, &omega, &theta, &z1, &s1, l1,
        ))[0];
        let v1 = to_vec(&inet.forward(&theta, &z1).output);
        let k = theta.len();
        let head = sq(&to_vec(&theta.0[k - 2])) + sq(&to_vec(&theta.0[k - 1]));
        let resid: Vec<f64> = v1.iter().zip(&phi).map(|(a, b)| a - b).collect();
        let g_sum = sq(&resid) + l1 * n1 as f64 * head;
        assert!(
            (g_sum - 2.0 * n1 as f64 * g).abs() < 1e-10 * g_sum,
            "{g_sum} {g}"
        );
        // Stage 2: sum-form ridge solve (ṼᵀṼ + λ₂N₂I)u = Ṽᵀy on the host.
        let v2 = inet.forward(&theta, &z2).output;
        let vh = to_vec(&v2);
        let q = feat + 1;
        let aug = |r: usize, i: usize| if i < feat { vh[r * feat + i] } else { 1.0 };
        let mut a = vec![0.0; q * q];
        let mut u = vec![0.0; q];
        for (r, yr) in y2.iter().enumerate() {
            for i in 0..q {
                u[i] += aug(r, i) * yr;
                for j in 0..q {
                    a[i * q + j] += aug(r, i) * aug(r, j);
                }
            }
        }
        for i in 0..q {
            a[i * q + i] += l2 * n2 as f64;
        }
        chol_solve(&cholesky(&a, q).unwrap(), q, &mut u, 1);
        let ours_u = stage2_ridge(&vh, n2, feat, &y2, l2).unwrap();
        assert!(u.iter().zip(&ours_u).all(|(a, b)| (a - b).abs() < 1e-10));
        let r2: Vec<f64> = (0..n2)
            .map(|r| y2[r] - (0..q).map(|i| aug(r, i) * u[i]).sum::<f64>())
            .collect();
        let out_sum = sq(&r2) + l2 * n2 as f64 * sq(&u);
        let s2 = Stage2 {
            z: z2,
            y: y2.clone(),
            y_t: ctx.tensor2(y2, n2, 1),
            x: None,
        };
        let out = to_vec(&problem.outer_loss(&omega, v2, &s2))[0];
        assert!((out_sum - n2 as f64 * out).abs() < 1e-10 * out_sum);

        // The run's solver configuration carries exactly these factors.
        let wd = 0.1;
        let opt = OptimizerConfig::Adam {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-30,
            weight_decay: wd,
        };
        let mut cfg: IvConfig = toml::from_str(
            "iterations = 1\n[data]\nkind = \"linear\"\nn = 10\nd_t = 1\nd_z = 1\n[method]\nmethod = \"dfiv\"\n",
        )
        .unwrap();
        let solver = SolverConfig {
            inner: InnerConfig {
                optimizer: opt.clone(),
                ..InnerConfig::default()
            },
            method: MethodConfig::FuncidLinear { ridge: None },
            outer_optimizer: opt.clone(),
            seed: 0,
        };
        let decay = |o: &OptimizerConfig| match o {
            OptimizerConfig::Adam { weight_decay, .. }
            | OptimizerConfig::Sgd { weight_decay, .. } => *weight_decay,
        };
        let eff = effective_solver_config(&cfg, &solver, n1, n2);
        assert_eq!(cfg.weight_decay_form, DecayForm::Sum);
        assert!((decay(&eff.inner.optimizer) - wd / (2.0 * n1 as f64)).abs() < 1e-18);
        assert!((decay(&eff.outer_optimizer) - wd / n2 as f64).abs() < 1e-18);
        cfg.weight_decay_form = DecayForm::Mean;
        let same = effective_solver_config(&cfg, &solver, n1, n2);
        assert_eq!(same.inner.optimizer, opt);
        assert_eq!(same.outer_optimizer, opt);

        // Adam on our mean-form inner gradient with the converted decay = Adam on the sum-form
        // gradient (2N₁× ours, by the identity above) with the decay as given.
        let grads =
            funcrl_bilevel::inner::inner_grad_theta(&problem, &inet, &omega, &theta, &z1, &s1, l1)
                .0;
        let mut ours = Optimizer::new(eff.inner.optimizer.clone());
        let mut reference = Optimizer::new(opt);
        let sum_grads = Params::new(
            grads
                .0
                .iter()
                .map(|t| t.clone().mul_scalar(2.0 * n1 as f64))
                .collect(),
        );
        let (a1, b1) = (
            ours.step(&theta, &grads),
            reference.step(&theta, &sum_grads),
        );
        let (a2, b2) = (ours.step(&a1, &grads), reference.step(&b1, &sum_grads));
        let (fa, fb) = (a2.to_flat(), b2.to_flat());
        let worst = fa
            .iter()
            .zip(&fb)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        // Adam is invariant to the loss scale once ε is negligible (ε = 1e-30 here).
        assert!(worst < 1e-12, "{worst}");
    }

    #[test]
    fn standardize_uses_training_statistics() {
        let ds = generate::linear(300, 2, 3, 4).unwrap();
        let (s, (my, sy)) = standardize(&ds, Standardize::All);
        for m in [&s.treatment, &s.instrument, &s.outcome] {
            for (mean, sd) in column_stats(m) {
                assert!(mean.abs() < 1e-12 && (sd - 1.0).abs() < 1e-12);
            }
        }
        let y = &ds.outcome.data;
        let mean = y.iter().sum::<f64>() / 300.0;
        let sd = (y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 300.0).sqrt();
        assert!((my - mean).abs() < 1e-12 && (sy - sd).abs() < 1e-12);
        // Test treatments use the training statistics; the structural values stay in y units.
        let t0: Vec<f64> = (0..300).map(|r| ds.treatment.at(r, 0)).collect();
        let m0 = t0.iter().sum::<f64>() / 300.0;
        let s0 = (t0.iter().map(|v| (v - m0).powi(2)).sum::<f64>() / 300.0).sqrt();
        assert!((s.test_treatment.at(7, 0) - (ds.test_treatment.at(7, 0) - m0) / s0).abs() < 1e-12);
        assert_eq!(s.test_structural, ds.test_structural);
        // A constant column is centred, not divided by zero.
        let c = column_stats(&Matrix::new(3, 1, vec![2.0; 3]));
        assert_eq!(c, vec![(2.0, 1.0)]);
    }

    /// With `standardize`, the networks see the same z-scores whatever the outcome's units, and
    /// predictions are mapped back: multiplying the outcome and f by 1000 (and shifting them)
    /// multiplies the reported test MSE by exactly 10⁶.
    #[test]
    fn standardized_mse_is_on_the_outcome_scale() {
        let dir = std::env::temp_dir().join(format!("funcrl-iv-std-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ds = generate::linear(80, 2, 3, 9).unwrap();
        let mut big = ds.clone();
        for v in big
            .outcome
            .data
            .iter_mut()
            .chain(big.test_structural.data.iter_mut())
        {
            *v = 1000.0 * *v + 5.0;
        }
        let mse_of = |d: &IvDataset, tag: &str| {
            let path = dir.join(format!("{tag}.h5"));
            d.save(&path).unwrap();
            let text = format!(
                "iterations = 3\nstandardize = \"all\"\nout = \"{}\"\n[data]\nkind = \"file\"\npath = \"{}\"\n\
                 [network]\ntreatment_hidden = [6]\ninstrument_hidden = [6]\nfeatures = 3\n\
                 [inner]\nsteps = 2\nridge = 0.1\n[method]\nmethod = \"dfiv\"\n",
                dir.join("runs").display(),
                path.display()
            );
            let cfg: IvConfig = toml::from_str(&text).unwrap();
            let d = generate::build(&cfg.data, cfg.seed).unwrap();
            fit(&cfg, &d, &mut Silent).unwrap().test_mse.unwrap()
        };
        let (a, b) = (mse_of(&ds, "unit"), mse_of(&big, "big"));
        assert!(a > 0.0 && (b / a / 1e6 - 1.0).abs() < 1e-6, "{a} {b}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
