//! The trainer, `compare`, the CLI and the IV estimators, called in-process. Each runs with the
//! GIL released; errors become Python exceptions: the user's input (config, key, value, data) a
//! `ValueError` with the CLI's message, a SIGINT/SIGTERM stop a `KeyboardInterrupt`, anything
//! else (a Rust panic included) a `RuntimeError`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use funcrl::children::{SelfCommand, set_self_command};
use funcrl::compare::CompareArgs;
use funcrl::train::TrainArgs;
use funcrl_iv::data::Table;
use funcrl_iv::tsls::TslsSpec;
use numpy::{PyArray2, PyArrayMethods, PyReadonlyArray1};
use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

fn to_py(e: anyhow::Error) -> PyErr {
    let msg = format!("{e:#}");
    if e.downcast_ref::<funcrl::signals::Stopped>().is_some() {
        PyKeyboardInterrupt::new_err(msg)
    } else if funcrl::cli::is_usage_error(&e) {
        PyValueError::new_err(msg)
    } else {
        PyRuntimeError::new_err(msg)
    }
}

/// Runs `f` without the GIL; a panic becomes a `RuntimeError` instead of unwinding into Python.
fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> anyhow::Result<T> + Send) -> PyResult<T> {
    py.detach(|| catch_unwind(AssertUnwindSafe(f)))
        .map_err(|p| {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            PyRuntimeError::new_err(format!("funcrl panicked (a bug; please report it): {what}"))
        })?
        .map_err(to_py)
}

/// Child runs start as `words` (program, then arguments before the subcommand); false if empty.
fn use_child_command(words: &[String]) -> bool {
    let Some((program, prefix)) = words.split_first() else {
        return false;
    };
    set_self_command(SelfCommand {
        program: program.into(),
        prefix: prefix.to_vec(),
    });
    true
}

/// `funcrl train`; returns the run directory.
#[pyfunction]
#[pyo3(signature = (config=None, seed=None, out=PathBuf::from("runs"), overrides=vec![], quiet=false, resume=None))]
pub fn train(
    py: Python<'_>,
    config: Option<PathBuf>,
    seed: Option<u64>,
    out: PathBuf,
    overrides: Vec<String>,
    quiet: bool,
    resume: Option<PathBuf>,
) -> PyResult<PathBuf> {
    if config.is_none() == resume.is_none() {
        return Err(PyValueError::new_err(
            "give exactly one of config (a TOML file or a shipped config's name) and resume (a run directory)",
        ));
    }
    let args = TrainArgs {
        config,
        seed,
        overrides,
        resume,
        out,
        quiet,
    };
    detached(py, || funcrl::train::train(&args))
}

/// `funcrl compare`; returns the summary table. Children run as `child_command` (the Python
/// package passes `[sys.executable, "-m", "funcrl"]`: here the running executable is Python).
#[pyfunction]
#[pyo3(signature = (configs, child_command, seeds=vec![0, 1, 2, 3, 4], out=PathBuf::from("compare"), overrides=vec![], grid=vec![], final_seeds=vec![], jobs=None, smooth=1, reps=50_000))]
#[allow(clippy::too_many_arguments)]
pub fn compare(
    py: Python<'_>,
    configs: Vec<PathBuf>,
    child_command: Vec<String>,
    seeds: Vec<u64>,
    out: PathBuf,
    overrides: Vec<String>,
    grid: Vec<String>,
    final_seeds: Vec<u64>,
    jobs: Option<usize>,
    smooth: usize,
    reps: usize,
) -> PyResult<String> {
    if !use_child_command(&child_command) {
        return Err(PyValueError::new_err("child_command is empty"));
    }
    let args = CompareArgs {
        configs,
        seeds,
        overrides,
        grid,
        final_seeds,
        out,
        jobs,
        smooth,
        reps,
        ..CompareArgs::default()
    };
    detached(py, || funcrl::compare::compare(&args))
}

/// The `funcrl` command line on `argv` (program name first); returns its exit code.
#[pyfunction]
pub fn cli(py: Python<'_>, argv: Vec<String>, child_command: Vec<String>) -> PyResult<u8> {
    use_child_command(&child_command);
    detached(py, || Ok(funcrl::cli::main_from(argv)))
}

/// A deep IV run (`funcrl iv --config`, or `--resume RUN_DIR`): returns the result as JSON, the
/// per-iteration curves with their column names and the test predictions `[f, prediction]`.
#[pyfunction]
#[pyo3(signature = (config=None, seed=None, out=None, overrides=vec![], data=None, quiet=false, resume=None))]
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
pub fn iv_fit<'py>(
    py: Python<'py>,
    config: Option<PathBuf>,
    seed: Option<u64>,
    out: Option<PathBuf>,
    overrides: Vec<String>,
    data: Option<PathBuf>,
    quiet: bool,
    resume: Option<PathBuf>,
) -> PyResult<(
    String,
    Vec<String>,
    Bound<'py, PyArray2<f64>>,
    Bound<'py, PyArray2<f64>>,
)> {
    if config.is_none() == resume.is_none() {
        return Err(PyValueError::new_err(
            "give exactly one of config (a TOML file or a shipped config's name) and resume (a run directory)",
        ));
    }
    let (json, curves, pred) = detached(py, || {
        let res = match (&config, &resume) {
            (_, Some(dir)) => funcrl::iv::run::resume(dir, &overrides, !quiet)?,
            (Some(config), None) => {
                let cfg = funcrl::iv::run::load(
                    config,
                    &overrides,
                    seed,
                    None,
                    data.as_deref(),
                    out.as_deref(),
                )?;
                funcrl::iv::run::run(&cfg, !quiet)?
            }
            (None, None) => unreachable!("checked above"),
        };
        let (curves, pred) = funcrl::iv::run::read_results(&res.run_dir)?;
        Ok((serde_json::to_string(&res)?, curves, pred))
    })?;
    let names = funcrl_iv::run::Iteration::HEADER
        .iter()
        .map(|s| s.to_string())
        .collect();
    let to_array = |m: funcrl_iv::data::Matrix| -> PyResult<Bound<'py, PyArray2<f64>>> {
        numpy::PyArray1::from_vec(py, m.data)
            .reshape([m.rows, m.cols])
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))
    };
    Ok((json, names, to_array(curves)?, to_array(pred)?))
}

/// Linear 2SLS on named columns (as `funcrl iv --method 2sls`); returns the fit as JSON.
#[pyfunction]
#[pyo3(signature = (columns, outcome, treatment, instrument, exog, intercept))]
pub fn tsls(
    py: Python<'_>,
    columns: Vec<(String, PyReadonlyArray1<'_, f64>)>,
    outcome: String,
    treatment: Vec<String>,
    instrument: Vec<String>,
    exog: Vec<String>,
    intercept: bool,
) -> PyResult<String> {
    let mut table = Table::default();
    for (name, col) in &columns {
        let v = col.as_array().to_vec();
        if let Some(first) = table.columns.first()
            && first.len() != v.len()
        {
            return Err(PyValueError::new_err(format!(
                "'{name}' has {} rows, '{}' has {}",
                v.len(),
                table.names[0],
                first.len()
            )));
        }
        table.names.push(name.clone());
        table.columns.push(v);
    }
    let spec = TslsSpec {
        outcome,
        treatment,
        instrument,
        exog,
        intercept,
    };
    detached(py, || {
        let fit = funcrl_iv::tsls::fit(&table, &spec)?;
        Ok(serde_json::to_string(&fit)?)
    })
}
