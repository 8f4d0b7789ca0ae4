//! `funcrl iv` and `funcrl iv-bench`: the commands over the IV library (`funcrl_iv`: data,
//! 2SLS, networks, the fit), with run directories and plots.

pub mod bench;
pub mod run;

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::config::UsageError;
use funcrl_iv::{data, tsls};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum IvFormat {
    #[default]
    Table,
    Json,
}

/// `funcrl iv` arguments.
#[derive(Args, Debug, Default)]
pub struct IvArgs {
    /// TOML config of a deep IV run (configs/iv/*.toml); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a config field, e.g. --set iterations=5 or --set method.steps=10.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Method: `2sls` (closed-form linear, needs --data and the column flags), or a deep method
    /// (dfiv, funcid, funcid_linear, aid, itd, penalty) that replaces the config's.
    #[arg(long)]
    pub method: Option<String>,
    /// Data file: CSV with a header row, or HDF5 with one dataset per column (.h5/.hdf5); for deep
    /// runs, also a dataset saved by an earlier run (data.h5 in its run directory).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Outcome column.
    #[arg(long)]
    pub outcome: Option<String>,
    /// Treatment (endogenous) columns, comma-separated.
    #[arg(long, value_delimiter = ',', num_args = 1)]
    pub treatment: Option<Vec<String>>,
    /// Instrument columns, comma-separated (at least as many as treatments).
    #[arg(long, value_delimiter = ',', num_args = 1)]
    pub instrument: Option<Vec<String>>,
    /// Exogenous regressors, comma-separated (included in both stages).
    #[arg(long, value_delimiter = ',', num_args = 1)]
    pub exog: Option<Vec<String>>,
    /// 2SLS without the intercept column `const`.
    #[arg(long)]
    pub no_intercept: bool,
    /// Seed (deep runs).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output format of 2SLS [default: table].
    #[arg(long, value_enum)]
    pub format: Option<IvFormat>,
    /// Root folder of run directories (deep runs) [default: runs].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the deep run in RUN_DIR from its checkpoint.h5 (same numbers as an uninterrupted
    /// run); --set may change only iterations, eval_every and checkpoint_every.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["config", "method", "data", "seed", "out"])]
    pub resume: Option<PathBuf>,
}

fn required<'a, T>(v: &'a Option<T>, flag: &str) -> Result<&'a T, UsageError> {
    v.as_ref()
        .ok_or_else(|| UsageError::new(format!("2SLS needs {flag}")))
}

/// Runs `funcrl iv`.
pub fn run(args: &IvArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if let Some(dir) = &args.resume {
        let res = run::resume(dir, &args.overrides, true)?;
        writeln!(out, "{}", serde_json::to_string(&res)?)?;
        return Ok(());
    }
    if args.method.as_deref() == Some("2sls") && args.config.is_none() {
        return run_2sls(args, out);
    }
    let Some(path) = &args.config else {
        return Err(UsageError::new(
            "deep IV runs need --config configs/iv/<name>.toml (or --method 2sls with --data and the column flags)",
        )
        .into());
    };
    let cfg = run::load(
        path,
        &args.overrides,
        args.seed,
        args.method.as_deref(),
        args.data.as_deref(),
        args.out.as_deref(),
    )?;
    run::cli(&cfg, out)
}

fn run_2sls(args: &IvArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let path = required(&args.data, "--data FILE (CSV with a header, or HDF5)")?;
    let spec = tsls::TslsSpec {
        outcome: required(&args.outcome, "--outcome COLUMN")?.clone(),
        treatment: required(&args.treatment, "--treatment COL[,COL..]")?.clone(),
        instrument: required(&args.instrument, "--instrument COL[,COL..]")?.clone(),
        exog: args.exog.clone().unwrap_or_default(),
        intercept: !args.no_intercept,
    };
    let table = data::read_table(path)?;
    let fit = tsls::fit(&table, &spec)?;
    match args.format.unwrap_or_default() {
        IvFormat::Json => writeln!(out, "{}", serde_json::to_string(&fit)?)?,
        IvFormat::Table => {
            writeln!(out, "2SLS, {} observations", fit.nobs)?;
            writeln!(
                out,
                "{:<16} {:>14} {:>12} {:>12}",
                "", "coef", "se", "se_robust"
            )?;
            for (k, c) in &fit.coef {
                writeln!(
                    out,
                    "{k:<16} {c:>14.6} {:>12.6} {:>12.6}",
                    fit.se[k], fit.se_robust[k]
                )?;
            }
        }
    }
    Ok(())
}
