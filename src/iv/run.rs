//! A deep IV run on disk: the config file with `--set` and flags, a run directory with the
//! resolved config, `data.h5`, per-iteration `metrics.csv`, `checkpoint.h5` while it runs (so a
//! killed run resumes), then `result.json` and `results.h5` (curves and predictions). The fit
//! itself is `funcrl_iv::run::fit_from`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use funcrl_iv::checkpoint::{self, State};
use funcrl_iv::data::{Matrix, write_hdf5};
use funcrl_iv::generate::{self, DataConfig, IvDataset};
use funcrl_iv::run::{Fit, FitObserver, Iteration, IvConfig};
use serde::{Deserialize, Serialize};

use crate::config::{self, UsageError};
use crate::rundir::{CsvLog, RunDir};

/// Config file + `--set` + flags.
pub fn load(
    path: &Path,
    overrides: &[String],
    seed: Option<u64>,
    method: Option<&str>,
    data: Option<&Path>,
    out: Option<&Path>,
) -> Result<IvConfig, UsageError> {
    let source = config::read_source(path)?;
    let mut table = config::parse(&source)?;
    // Data files named in the config are relative to the config's folder.
    config::resolve_paths(
        &mut table,
        &["data.path", "data.matrix", "data.archive"],
        &source,
    );
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
    let cfg: IvConfig = config::from_table(table, &source.label)?;
    cfg.resolve()?;
    Ok(cfg)
}

/// What a run reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

fn fmt_secs(s: f64) -> String {
    if s >= 60.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{s:.1}s")
    }
}

/// Writes a deep fit's records into its run directory: `metrics.csv` from the first iteration
/// on (a resumed run's rows up to its checkpoint kept), the progress line in the run's log, and
/// `checkpoint.h5` when one is due or a stop was requested.
struct RunLog<'a> {
    dir: &'a RunDir,
    name: String,
    iterations: usize,
    progress: bool,
    csv: Option<CsvLog>,
    curves: Vec<f64>,
    stop: crate::signals::Stop,
    /// Iterations of the last checkpoint written (or resumed from).
    last_checkpoint: Option<usize>,
}

impl FitObserver for RunLog<'_> {
    fn begin(&mut self, done: usize) -> anyhow::Result<()> {
        let path = self.dir.file("metrics.csv");
        let csv = if done == 0 {
            CsvLog::create(&path, &Iteration::HEADER)?
        } else {
            // Rows of iterations the checkpoint has not seen (a kill after it) are dropped; the
            // kept ones go into the final curves.
            let keep = done as f64 - 0.5;
            for row in CsvLog::read_strict(&path, &Iteration::HEADER)? {
                if row[0] < keep {
                    self.curves.extend(row);
                }
            }
            CsvLog::resume(&path, &Iteration::HEADER, keep)?
        };
        self.csv = Some(csv.with_tensorboard(&path, &Iteration::HEADER)?);
        self.dir.tensorboard_config()?;
        Ok(())
    }

    fn iteration(&mut self, it: &Iteration) -> anyhow::Result<()> {
        let row = it.row();
        if let Some(csv) = self.csv.as_mut() {
            csv.row(&row)?;
        }
        self.curves.extend(row);
        if self.progress {
            let eta = it.mean_seconds * (self.iterations - it.index - 1) as f64;
            let t = it
                .test_mse
                .map_or(String::new(), |m| format!(" test_mse {m:.4}"));
            self.dir.log(&format!(
                "[iv {}] it {}/{} outer {:.5} inner {:.5}{t} {:.2}s/it ETA {}",
                self.name,
                it.index + 1,
                self.iterations,
                it.outer_loss,
                it.inner_loss,
                it.mean_seconds,
                fmt_secs(eta)
            ))?;
        }
        Ok(())
    }

    // SIGINT/SIGTERM: save exactly where the run is, then stop (`proceed`).
    fn checkpoint_due(&mut self, _done: usize) -> bool {
        self.stop.requested().is_some()
    }

    fn checkpoint(&mut self, done: usize, state: &State) -> anyhow::Result<()> {
        checkpoint::write(&self.dir.file(checkpoint::FILE), state)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", checkpoint::FILE))?;
        self.last_checkpoint = Some(done);
        Ok(())
    }

    fn proceed(&mut self, done: usize) -> anyhow::Result<()> {
        let Some(sig) = self.stop.requested() else {
            return Ok(());
        };
        let message = format!(
            "stopped by {} after {done} of {} iterations; {}; resume with: funcrl iv --resume {}",
            crate::signals::name(sig),
            self.iterations,
            match self.last_checkpoint {
                Some(k) if k == done => "checkpoint written".to_string(),
                _ => "no checkpoint written".to_string(),
            },
            self.dir.path().display()
        );
        self.dir.log(&message)?;
        Err(crate::signals::Stopped {
            signal: sig,
            message,
        }
        .into())
    }
}

/// Runs the configured method; writes the run directory; returns the result.
pub fn run(cfg: &IvConfig, progress: bool) -> anyhow::Result<IvResult> {
    // Everything the config and the data can rule out is checked before the run directory exists.
    let resolved = cfg.resolve()?;
    cfg.check_values()?;
    let ds = generate::build(&cfg.data, cfg.seed)?;
    ds.check().map_err(UsageError::new)?;
    if !matches!(resolved, funcrl_iv::run::Resolved::TwoSls) {
        if ds.rows() < 4 {
            return Err(
                UsageError::new(format!("{} rows: deep IV needs at least 4", ds.rows())).into(),
            );
        }
        funcrl_iv::run::check_network(&cfg.network, &ds)?;
    }
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
    fit_in(&dir, cfg, &method, &ds, progress, None)
}

/// Settings a resume may change: when the run ends and how it is recorded, not what it computes.
const RESUMABLE_FIELDS: [&str; 3] = ["iterations", "eval_every", "checkpoint_every"];

/// Continues the deep run in `dir` from its `checkpoint.h5` (same numbers as an uninterrupted
/// run); `overrides` may change only [`RESUMABLE_FIELDS`] (e.g. more iterations).
pub fn resume(dir: &Path, overrides: &[String], progress: bool) -> anyhow::Result<IvResult> {
    for o in overrides {
        let key = o.split_once('=').map_or(o.as_str(), |(k, _)| k.trim());
        if !RESUMABLE_FIELDS.contains(&key) {
            return Err(UsageError::new(format!(
                "--resume continues the saved config; --set {key} cannot change (allowed: {})",
                RESUMABLE_FIELDS.join(", ")
            ))
            .into());
        }
    }
    let run = RunDir::open(dir).map_err(|e| UsageError::new(e.to_string()))?;
    let ckpt = run.file(checkpoint::FILE);
    if !ckpt.is_file() {
        return Err(UsageError::new(format!(
            "{} has no {} to resume from{}",
            dir.display(),
            checkpoint::FILE,
            if run.file("result.json").is_file() {
                " (the run finished; its checkpoint was removed)"
            } else {
                ""
            }
        ))
        .into());
    }
    let cfg = load(&run.file("config.toml"), overrides, None, None, None, None)?;
    cfg.check_values()?;
    // Nothing in the run directory changes until the checkpoint and the log have passed their
    // checks.
    let state =
        checkpoint::read(&ckpt).map_err(|e| UsageError::new(format!("cannot resume: {e}")))?;
    CsvLog::read_strict(&run.file("metrics.csv"), &Iteration::HEADER)
        .map_err(|e| UsageError::new(format!("cannot resume: {e}")))?;
    let ds = generate::build(&cfg.data, cfg.seed)?;
    let done = funcrl_iv::run::check_resume(&cfg, &ds, &state)
        .map_err(|e| UsageError::new(format!("cannot resume: {e}")))?;
    run.write_config(&cfg)?;
    let _ = std::fs::remove_file(run.file("result.json"));
    let method = cfg.method_name();
    run.log(&format!(
        "resumed from {} at iteration {done} (code {})",
        checkpoint::FILE,
        crate::rundir::code_version()
    ))?;
    fit_in(&run, &cfg, &method, &ds, progress, Some(&state))
}

/// The fit with its records in `dir`; on success the result files are written and the checkpoint
/// removed (the run is complete; `results.h5` holds its curves and predictions).
fn fit_in(
    dir: &RunDir,
    cfg: &IvConfig,
    method: &str,
    ds: &IvDataset,
    progress: bool,
    state: Option<&State>,
) -> anyhow::Result<IvResult> {
    let mut log = RunLog {
        dir,
        name: method.to_string(),
        iterations: cfg.iterations,
        progress,
        csv: None,
        curves: Vec::new(),
        stop: crate::signals::Stop::install()?,
        last_checkpoint: state.and_then(|s| s.number("run.done").ok().map(|d| d as usize)),
    };
    let fit = match funcrl_iv::run::fit_from(cfg, ds, &mut log, state) {
        Ok(f) => f,
        Err(e) if e.downcast_ref::<crate::signals::Stopped>().is_some() => return Err(e),
        Err(e) => {
            let kept = match log.last_checkpoint {
                Some(k) => format!(
                    "the last good checkpoint (iteration {k}) is kept in {}",
                    dir.file(checkpoint::FILE).display()
                ),
                None => "no checkpoint was written before it".to_string(),
            };
            dir.log(&format!("error: {e:#}; {kept}"))?;
            return Err(e.context(kept));
        }
    };
    let curves = std::mem::take(&mut log.curves);
    if let Some(t) = &fit.tsls {
        dir.write("tsls.json", serde_json::to_string_pretty(t)?.as_bytes())?;
    }
    let res = finish(dir, cfg, method, ds, &fit, &curves)?;
    let _ = std::fs::remove_file(dir.file(checkpoint::FILE));
    Ok(res)
}

fn finish(
    dir: &RunDir,
    cfg: &IvConfig,
    method: &str,
    ds: &IvDataset,
    fit: &Fit,
    curves: &[f64],
) -> anyhow::Result<IvResult> {
    let res = IvResult {
        method: method.to_string(),
        seed: cfg.seed,
        n: ds.rows(),
        iterations: fit.iterations,
        test_mse: fit.test_mse,
        seconds_per_iteration: fit.seconds_per_iteration,
        run_dir: dir.path().to_path_buf(),
    };
    dir.write(
        "result.json",
        serde_json::to_string_pretty(&res)?.as_bytes(),
    )?;
    let pred = &fit.predictions;
    let m = pred.len();
    let mut pt = Vec::with_capacity(2 * m);
    for (p, f) in pred.iter().zip(&ds.test_structural.data) {
        pt.extend([*f, *p]);
    }
    let k = Iteration::HEADER.len();
    let curves_m = Matrix::new(curves.len() / k, k, curves.to_vec());
    let pred_m = Matrix::new(m, 2, pt);
    write_hdf5(
        &dir.file("results.h5"),
        &[("curves", &curves_m), ("predictions", &pred_m)],
    )
    .map_err(|e| anyhow::anyhow!("writing results.h5: {e}"))?;
    Ok(res)
}

/// The per-iteration curves (columns as `Iteration::HEADER`) and the test predictions (columns
/// `[structural f, prediction]`) of a finished run directory, from its `results.h5`.
pub fn read_results(run_dir: &Path) -> anyhow::Result<(Matrix, Matrix)> {
    let path = run_dir.join("results.h5");
    let file = hdf5::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let read = |name: &str| {
        funcrl_iv::data::read_matrix(&file, name)
            .with_context(|| format!("reading '{name}' from {}", path.display()))
    };
    Ok((read("curves")?, read("predictions")?))
}

/// `funcrl iv --config ...`: runs and prints the result as one JSON line.
pub fn cli(cfg: &IvConfig, out: &mut dyn Write) -> anyhow::Result<()> {
    let res = run(cfg, true)?;
    writeln!(out, "{}", serde_json::to_string(&res)?)?;
    Ok(())
}
