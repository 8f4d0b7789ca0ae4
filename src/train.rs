//! `funcrl train`: the CLI around `funcrl_agents::Trainer` — configs, run
//! directories, progress, CSV/HDF5 logs with fixed metric names, atomic checkpoints, resume, and
//! the NaN/Inf stop that keeps the last good checkpoint.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use funcrl_agents::{TrainConfig, Trainer, h5io};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{self, UsageError};
use crate::rundir::{CsvLog, RunDir, write_atomic_with};

/// Column names never change (CleanRL style), so every run plots the same way.
pub const EVAL_COLUMNS: [&str; 4] = [
    "global_step",
    "charts/episodic_return",
    "charts/episodic_return_std",
    "charts/SPS",
];
pub const LOSS_COLUMNS: [&str; 4] = [
    "global_step",
    "losses/q_loss",
    "losses/model_loss",
    "losses/outer_loss",
];
pub const CHECKPOINT: &str = "checkpoint.h5";
/// Written when a run finishes.
pub const SUMMARY: &str = "summary.json";

#[derive(Args, Debug, Default)]
pub struct TrainArgs {
    /// TOML config (see configs/rl/); not needed with --resume.
    #[arg(long, required_unless_present = "resume")]
    pub config: Option<PathBuf>,
    /// Seed (overrides the config's `seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override a config field, e.g. --set total_steps=5000 or --set agent.mode=paper.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Continue the run in RUN_DIR from its last checkpoint (same numbers as an uninterrupted run);
    /// --set total_steps=N extends it.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["config", "seed"])]
    pub resume: Option<PathBuf>,
    /// Where run directories are created.
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub(crate) fn load_config(
    path: &Path,
    overrides: &[String],
    seed: Option<u64>,
) -> Result<TrainConfig, UsageError> {
    let mut o = overrides.to_vec();
    if let Some(s) = seed {
        o.push(format!("seed={s}"));
    }
    let cfg: TrainConfig = config::load(path, &o)?;
    cfg.validate()
        .map_err(|e| UsageError::new(format!("invalid config {}: {e}", path.display())))?;
    Ok(cfg)
}

/// Runs `funcrl train`; returns the run directory.
pub fn train(args: &TrainArgs) -> anyhow::Result<PathBuf> {
    let (run, mut trainer, resumed) = match &args.resume {
        Some(dir) => {
            let run = RunDir::open(dir).map_err(|e| UsageError::new(e.to_string()))?;
            let saved = load_config(&run.file("config.toml"), &[], None)?;
            let cfg = load_config(&run.file("config.toml"), &args.overrides, None)?;
            if saved.agent.name() != cfg.agent.name() {
                return Err(UsageError::new(format!(
                    "--resume cannot change the agent kind ({} → {})",
                    saved.agent.name(),
                    cfg.agent.name()
                ))
                .into());
            }
            let ckpt = run.file(CHECKPOINT);
            if !ckpt.is_file() {
                return Err(UsageError::new(format!(
                    "{} has no {CHECKPOINT} to resume from",
                    dir.display()
                ))
                .into());
            }
            // Nothing in the run directory changes until the checkpoint and the logs have passed
            // their checks.
            let t = Trainer::load_checkpoint(cfg.clone(), &ckpt)
                .map_err(|e| UsageError::new(format!("cannot resume: {e}")))?;
            for (name, cols) in [
                ("evals.csv", &EVAL_COLUMNS[..]),
                ("losses.csv", &LOSS_COLUMNS[..]),
            ] {
                CsvLog::read_strict(&run.file(name), cols)
                    .map_err(|e| UsageError::new(format!("cannot resume: {e}")))?;
            }
            run.write_config(&cfg)?;
            (run, t, true)
        }
        None => {
            let path = args.config.as_ref().expect("clap requires --config");
            let cfg = load_config(path, &args.overrides, args.seed)?;
            std::fs::create_dir_all(&args.out)
                .with_context(|| format!("creating {}", args.out.display()))?;
            let run = RunDir::create(&args.out, &[&cfg.env, cfg.agent.name()], cfg.seed, &cfg)?;
            let t = Trainer::new(cfg).map_err(|e| UsageError::new(e.to_string()))?;
            (run, t, false)
        }
    };
    let cfg = trainer.cfg.clone();
    let (mut evals, mut losses) = if resumed {
        let keep = trainer.step as f64 + 0.5;
        run.log(&format!(
            "resumed at step {} from {CHECKPOINT}",
            trainer.step
        ))?;
        (
            CsvLog::resume(&run.file("evals.csv"), &EVAL_COLUMNS, keep)?
                .with_tensorboard(&run.file("evals.csv"), &EVAL_COLUMNS)?,
            CsvLog::resume(&run.file("losses.csv"), &LOSS_COLUMNS, keep)?
                .with_tensorboard(&run.file("losses.csv"), &LOSS_COLUMNS)?,
        )
    } else {
        run.log(&format!(
            "train {} on {} seed {} for {} steps -> {}",
            cfg.agent.name(),
            cfg.env,
            cfg.seed,
            cfg.total_steps,
            run.path().display()
        ))?;
        (
            CsvLog::create(&run.file("evals.csv"), &EVAL_COLUMNS)?
                .with_tensorboard(&run.file("evals.csv"), &EVAL_COLUMNS)?,
            CsvLog::create(&run.file("losses.csv"), &LOSS_COLUMNS)?
                .with_tensorboard(&run.file("losses.csv"), &LOSS_COLUMNS)?,
        )
    };
    run.tensorboard_config()?;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(cfg.total_steps)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {rate} steps/s  eta {eta}  {msg}",
        )
        .expect("valid template")
        // indicatif's {per_sec} prints four decimals; steps per second are counts.
        .with_key(
            "rate",
            |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}", s.per_sec());
            },
        ),
    );
    bar.set_position(trainer.step);
    let (mut sum, mut count) = ([0.0f64; 3], 0u64);
    let mut last_ckpt = if resumed { Some(trainer.step) } else { None };
    let (t0, s0) = (Instant::now(), trainer.step);
    let stop = crate::signals::Stop::install()?;
    while !trainer.done() {
        let out = trainer.env_step()?;
        let step = trainer.step;
        if let Some(u) = out.update {
            if let Some((name, value)) = u.non_finite() {
                let keep = kept(&run, last_ckpt);
                let msg = format!("{name} = {value} at step {step}: run stopped; {keep}");
                run.log(&format!("error: {msg}"))?;
                bar.abandon();
                bail!(msg);
            }
            sum[0] += u.q_loss;
            sum[1] += u.model_loss;
            sum[2] += u.outer_loss;
            count += 1;
        }
        if step.is_multiple_of(cfg.log_every) && count > 0 {
            let n = count as f64;
            losses.row(&[step as f64, sum[0] / n, sum[1] / n, sum[2] / n])?;
            (sum, count) = ([0.0; 3], 0);
        }
        if step.is_multiple_of(cfg.eval_every) {
            let r = trainer.evaluate()?;
            let (m, sd) = mean_std(&r);
            let sps = (step - s0) as f64 / t0.elapsed().as_secs_f64().max(1e-9);
            evals.row(&[step as f64, m, sd, sps])?;
            bar.set_message(format!("eval return {m:.1}"));
        }
        let ckpt_due = cfg.checkpoint_every > 0 && step.is_multiple_of(cfg.checkpoint_every);
        if ckpt_due || trainer.done() {
            // Losses can stay finite while a parameter or an Adam moment overflows: such a state
            // never replaces the last good checkpoint.
            if let Err(why) = trainer.finite_state() {
                let keep = kept(&run, last_ckpt);
                let msg = format!("{why} at step {step}: run stopped; {keep}");
                run.log(&format!("error: {msg}"))?;
                bar.abandon();
                bail!(msg);
            }
            save(&run, &trainer)?;
            last_ckpt = Some(step);
        }
        bar.set_position(step);
        // A stop request is served at the next log boundary, where the saved state and the
        // logs agree, so that --resume reproduces the uninterrupted run.
        if let Some(sig) = stop.requested()
            && step.is_multiple_of(cfg.log_every)
            && !trainer.done()
        {
            // Save exactly where we are, so that --resume continues this run.
            save(&run, &trainer)?;
            let message = format!(
                "stopped by {} at step {}; checkpoint written; resume with: funcrl train --resume {}",
                crate::signals::name(sig),
                trainer.step,
                run.path().display()
            );
            run.log(&message)?;
            bar.abandon();
            return Err(crate::signals::Stopped {
                signal: sig,
                message,
            }
            .into());
        }
    }
    bar.finish_and_clear();
    let summary = summarize(&read_evals(&run.file("evals.csv"))?, &cfg.env);
    run.write(SUMMARY, serde_json::to_string_pretty(&summary)?.as_bytes())?;
    run.log(&format!(
        "done: {} steps in {:.1} s; final eval return {:.1}",
        trainer.step,
        t0.elapsed().as_secs_f64(),
        summary.final_return
    ))?;
    Ok(run.path().to_path_buf())
}

/// Where the last good checkpoint is, for the messages of a stopped run.
fn kept(run: &RunDir, last_ckpt: Option<u64>) -> String {
    match last_ckpt {
        Some(s) => format!(
            "the last good checkpoint (step {s}) is kept in {}",
            run.file(CHECKPOINT).display()
        ),
        None => "no checkpoint was written before it".to_string(),
    }
}

/// Writes the checkpoint (atomically) and the HDF5 copy of the logs.
fn save(run: &RunDir, trainer: &Trainer) -> anyhow::Result<()> {
    write_atomic_with(&run.file(CHECKPOINT), |tmp| {
        trainer
            .save_checkpoint(tmp)
            .map_err(|e| anyhow::anyhow!("writing checkpoint: {e}"))
    })?;
    write_log_h5(run)
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n;
    (m, var.sqrt())
}

/// (step, mean eval return) rows of evals.csv, parsed strictly (a damaged log is an error
/// naming the file and line, never a silently shorter curve).
pub fn read_evals(path: &Path) -> anyhow::Result<Vec<(f64, f64)>> {
    Ok(CsvLog::read_strict(path, &EVAL_COLUMNS)?
        .into_iter()
        .map(|r| (r[0], r[1]))
        .collect())
}

fn write_log_h5(run: &RunDir) -> anyhow::Result<()> {
    let read = |name: &str, cols: usize| -> Vec<Vec<f64>> {
        let text = std::fs::read_to_string(run.file(name)).unwrap_or_default();
        let mut out = vec![Vec::new(); cols];
        for l in text.lines().skip(1) {
            for (i, c) in l.split(',').enumerate().take(cols) {
                out[i].push(c.parse().unwrap_or(f64::NAN));
            }
        }
        out
    };
    let e = read("evals.csv", EVAL_COLUMNS.len());
    let l = read("losses.csv", LOSS_COLUMNS.len());
    let mut series: Vec<(String, &[f64])> = vec![];
    for (i, c) in EVAL_COLUMNS.iter().enumerate() {
        series.push((format!("evals/{c}"), &e[i]));
    }
    for (i, c) in LOSS_COLUMNS.iter().enumerate() {
        series.push((format!("losses/{c}"), &l[i]));
    }
    let refs: Vec<(&str, &[f64])> = series.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    write_atomic_with(&run.file("log.h5"), |tmp| {
        h5io::write_series(tmp, &refs).map_err(|e| anyhow::anyhow!("writing log.h5: {e}"))
    })
}

/// Final return, area under the curve (mean eval return over the run) and the first step whose
/// mean eval return reaches the env's threshold (CartPole-v1: 475).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub final_return: f64,
    pub auc: f64,
    pub threshold: Option<f64>,
    pub steps_to_threshold: Option<f64>,
}

pub fn summarize(evals: &[(f64, f64)], env: &str) -> Summary {
    let threshold = funcrl_envs::spec(env).ok().and_then(|s| s.reward_threshold);
    Summary {
        final_return: evals.last().map_or(f64::NAN, |e| e.1),
        auc: evals.iter().map(|e| e.1).sum::<f64>() / evals.len().max(1) as f64,
        threshold,
        steps_to_threshold: threshold.and_then(|t| evals.iter().find(|e| e.1 >= t).map(|e| e.0)),
    }
}
