//! A deep IV run from a config: data, networks, the bilevel solver, a run directory with the
//! resolved config, per-iteration CSV, final test MSE, HDF5 curves and predictions.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use funcrl_bilevel::{
    Ctx, InnerConfig, InnerModel, MethodConfig, OptimizerConfig, Precision, Solver, SolverConfig,
};
use rand::{SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::config::{self, UsageError};
use crate::iv::data::{Matrix, Table, write_hdf5};
use crate::iv::generate::{self, DataConfig, IvDataset};
use crate::iv::nets::{Act, Net};
use crate::iv::problem::{IvProblem, Stage1, Stage2};
use crate::iv::tsls;
use crate::rundir::{CsvLog, RunDir};

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

/// Networks of SPEC §2 (defaults: dSprites sizes).
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
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            treatment_hidden: d_treatment_hidden(),
            instrument_hidden: d_instrument_hidden(),
            features: d_features(),
            spectral_norm: true,
            layer_norm: true,
        }
    }
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

    pub fn resolve(&self) -> Result<Resolved, UsageError> {
        let name = self.method_name();
        let mut inner = self.inner.clone();
        let method = match name.as_str() {
            "2sls" => return Ok(Resolved::TwoSls),
            // DFIV: closed-form stage-1 head and the exact gradient through both ridge solves,
            // which is FuncID-linear with the adjoint ridge equal to the stage-1 ridge.
            "dfiv" => {
                if self.method.len() > 1 {
                    return Err(UsageError::new("method \"dfiv\" takes no options"));
                }
                inner.closed_form_head = true;
                MethodConfig::FuncidLinear { ridge: None }
            }
            "closed_form" | "identity" => {
                return Err(UsageError::new(format!(
                    "method \"{name}\" is not offered for IV; use dfiv, funcid, funcid_linear, aid, itd, penalty or 2sls"
                )));
            }
            _ => MethodConfig::deserialize(self.method.clone()).map_err(|e| {
                UsageError::new(format!(
                    "invalid [method]: {} (methods: 2sls, dfiv, funcid, funcid_linear, aid, itd, penalty)",
                    e.message()
                ))
            })?,
        };
        if self.iterations == 0 {
            return Err(UsageError::new("iterations must be at least 1"));
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

/// Config file + `--set` + flags.
pub fn load(
    path: &Path,
    overrides: &[String],
    seed: Option<u64>,
    method: Option<&str>,
    data: Option<&Path>,
    out: Option<&Path>,
) -> Result<IvConfig, UsageError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError::new(format!("cannot read config {}: {e}", path.display())))?;
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        UsageError::new(format!("invalid TOML in {}: {e}", path.display()))
    })?;
    if let Some(m) = method {
        let mut t = toml::Table::new();
        t.insert("method".into(), m.into());
        table.insert("method".into(), t.into());
    }
    for o in overrides {
        config::apply_override(&mut table, o)?;
    }
    if let Some(s) = seed {
        table.insert("seed".into(), toml::Value::Integer(s as i64));
    }
    if let Some(d) = data {
        let mut t = toml::Table::new();
        t.insert("kind".into(), "file".into());
        t.insert("path".into(), d.display().to_string().into());
        table.insert("data".into(), t.into());
    }
    if let Some(o) = out {
        table.insert("out".into(), o.display().to_string().into());
    }
    let cfg: IvConfig = config::from_table(table, &path.display().to_string())?;
    cfg.resolve()?;
    Ok(cfg)
}

/// What a run reports.
#[derive(Debug, Clone, Serialize)]
pub struct IvResult {
    pub method: String,
    pub seed: u64,
    pub n: usize,
    pub iterations: usize,
    /// Out-of-sample MSE between f and the learned structural function (null without a test set).
    pub test_mse: Option<f64>,
    pub seconds_per_iteration: f64,
    pub run_dir: PathBuf,
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

fn fmt_secs(s: f64) -> String {
    if s >= 60.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{s:.1}s")
    }
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
    let tensor = |m: &Matrix| ctx.tensor2(m.data.clone(), m.rows, m.cols);
    let s1 = Stage1::new(
        tensor(&ds.instrument.slice_rows(0, half)),
        tensor(&ds.treatment.slice_rows(0, half)),
    );
    let y2 = ds.outcome.data[half..].to_vec();
    let s2 = Stage2 {
        z: tensor(&ds.instrument.slice_rows(half, n)),
        y_t: ctx.tensor2(y2.clone(), n - half, 1),
        y: y2,
    };
    let net = &cfg.network;
    let widths = |input: usize, hidden: &[usize]| {
        let mut w = vec![input];
        w.extend(hidden);
        w.push(net.features);
        w
    };
    let tnet = Net::new(
        widths(ds.treatment.cols, &net.treatment_hidden),
        Act::Tanh,
        net.layer_norm,
        net.spectral_norm,
        None,
    );
    let inet = Net::new(
        widths(ds.instrument.cols, &net.instrument_hidden),
        Act::Relu,
        net.layer_norm,
        net.spectral_norm,
        Some(net.features),
    );
    let omega = tnet.init(ctx, &mut StdRng::seed_from_u64(cfg.seed.wrapping_add(1)));
    tnet.refresh(ctx, &omega);
    let problem = IvProblem::new(ctx.clone(), tnet, cfg.stage2_ridge);
    let solver = Solver::new(ctx.clone(), problem, inet, omega, solver_cfg);
    solver.model.refresh(ctx, &solver.theta);
    (solver, s1, s2)
}

/// Runs the configured method; writes the run directory; returns the result.
pub fn run(cfg: &IvConfig, progress: bool) -> anyhow::Result<IvResult> {
    let resolved = cfg.resolve()?;
    let ds = generate::build(&cfg.data, cfg.seed)?;
    ds.check().map_err(UsageError::new)?;
    let kind = match &cfg.data {
        DataConfig::Dsprites { .. } => "dsprites",
        DataConfig::Demand { .. } => "demand",
        DataConfig::Linear { .. } => "linear",
        DataConfig::File { .. } => "file",
    };
    let method = cfg.method_name();
    let dir = RunDir::create(Path::new(&cfg.out), &["iv", kind, &method], cfg.seed, cfg)
        .with_context(|| format!("creating a run directory under {}", cfg.out))?;
    ds.save(&dir.file("data.h5"))
        .map_err(|e| anyhow::anyhow!("writing data.h5: {e}"))?;
    let n = ds.rows();
    let started = Instant::now();
    let (solver_cfg, name) = match resolved {
        Resolved::TwoSls => {
            let (table, spec) = to_table(&ds);
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
            let test_mse = mse(&pred, &ds.test_structural.data);
            dir.write("tsls.json", serde_json::to_string_pretty(&fit)?.as_bytes())?;
            return finish(
                &dir,
                cfg,
                &method,
                n,
                1,
                test_mse,
                started.elapsed().as_secs_f64(),
                &pred,
                &ds,
                &[],
            );
        }
        Resolved::Deep { name, solver } => (solver, name),
    };
    if n < 4 {
        return Err(UsageError::new(format!("{n} rows: deep IV needs at least 4")).into());
    }
    let ctx = Ctx::flex(cfg.precision);
    let (mut solver, s1, s2) = setup(cfg, &solver_cfg, &ds, &ctx);
    let header = [
        "iteration",
        "outer_loss",
        "inner_loss",
        "adjoint_loss",
        "grad_norm",
        "seconds",
        "test_mse",
    ];
    let mut csv = CsvLog::create(&dir.file("metrics.csv"), &header)?;
    let mut curves: Vec<f64> = Vec::new();
    let evaluate = |solver: &Solver<IvProblem, Net>| -> (Vec<f64>, Option<f64>) {
        let v2 = solver.model.forward(&solver.theta.detached(), &s2.z).output;
        let u = solver.problem.stage2(&v2, &s2.y);
        let pred = solver
            .problem
            .predict(&solver.omega, &u, &ds.test_treatment);
        let m = mse(&pred, &ds.test_structural.data);
        (pred, m)
    };
    let mut last_pred = Vec::new();
    let mut last_mse = None;
    let mut total = 0.0;
    for it in 0..cfg.iterations {
        solver.problem.net.refresh(&ctx, &solver.omega);
        solver.model.refresh(&ctx, &solver.theta);
        let log = solver.step(&s1, &s2)?;
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
            let (p, m) = evaluate(&solver);
            last_pred = p;
            last_mse = m;
            m
        } else {
            None
        };
        let row = [
            it as f64,
            log.outer_loss,
            log.inner_loss,
            log.adjoint_loss.unwrap_or(f64::NAN),
            log.grad_norm,
            log.seconds,
            test.unwrap_or(f64::NAN),
        ];
        csv.row(&row)?;
        curves.extend(row);
        if progress {
            let per = total / (it + 1) as f64;
            let eta = per * (cfg.iterations - it - 1) as f64;
            let t = test.map_or(String::new(), |m| format!(" test_mse {m:.4}"));
            dir.log(&format!(
                "[iv {name}] it {}/{} outer {:.5} inner {:.5}{t} {:.2}s/it ETA {}",
                it + 1,
                cfg.iterations,
                log.outer_loss,
                log.inner_loss,
                per,
                fmt_secs(eta)
            ))?;
        }
    }
    finish(
        &dir,
        cfg,
        &method,
        n,
        cfg.iterations,
        last_mse,
        total / cfg.iterations as f64,
        &last_pred,
        &ds,
        &curves,
    )
}

#[allow(clippy::too_many_arguments)]
fn finish(
    dir: &RunDir,
    cfg: &IvConfig,
    method: &str,
    n: usize,
    iterations: usize,
    test_mse: Option<f64>,
    per_it: f64,
    pred: &[f64],
    ds: &IvDataset,
    curves: &[f64],
) -> anyhow::Result<IvResult> {
    let res = IvResult {
        method: method.to_string(),
        seed: cfg.seed,
        n,
        iterations,
        test_mse,
        seconds_per_iteration: per_it,
        run_dir: dir.path().to_path_buf(),
    };
    dir.write(
        "result.json",
        serde_json::to_string_pretty(&res)?.as_bytes(),
    )?;
    let m = pred.len();
    let mut pt = Vec::with_capacity(2 * m);
    for (p, f) in pred.iter().zip(&ds.test_structural.data) {
        pt.extend([*f, *p]);
    }
    let curves_m = Matrix::new(curves.len() / 7, 7, curves.to_vec());
    let pred_m = Matrix::new(m, 2, pt);
    write_hdf5(
        &dir.file("results.h5"),
        &[("curves", &curves_m), ("predictions", &pred_m)],
    )
    .map_err(|e| anyhow::anyhow!("writing results.h5: {e}"))?;
    Ok(res)
}

/// `funcrl iv --config ...`: runs and prints the result as one JSON line.
pub fn cli(cfg: &IvConfig, out: &mut dyn Write) -> anyhow::Result<()> {
    let res = run(cfg, true)?;
    writeln!(out, "{}", serde_json::to_string(&res)?)?;
    Ok(())
}
