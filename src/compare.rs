//! `funcrl compare`: every (config, seed) as a child `funcrl train`, optionally after a tuning
//! grid, then curves, a performance profile and a table whose uncertainty is stated with
//! rliable's conventions (interquartile mean with 95 % stratified-bootstrap intervals,
//! probability of improvement between every pair of agents).
//!
//! With `--grid`, each agent runs every grid point on `--seeds`; the point with the best mean AUC
//! (mean evaluation return over the run) is then re-run on fresh `--final-seeds`, and only those
//! runs enter the reported table, so the selection does not flatter anyone. The whole grid is kept
//! in `grid.md`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use funcrl_agents::inspect::{ModelReport, PolicyReport};
use funcrl_stats::{self as stats, Bootstrap, Interval};
use serde::Serialize;

use crate::config::UsageError;
use crate::plot::{self, Band};
use crate::rundir::CsvLog;
use crate::slurm::{self, LaunchArgs, Launcher};
use crate::train::{
    CHECKPOINT, LOSS_COLUMNS, SUMMARY, Summary, load_config, read_evals, summarize,
};

#[derive(Args, Debug, Default)]
pub struct CompareArgs {
    /// One config per agent (e.g. configs/rl/cartpole_{mle,funcid,omd}.toml); optional with
    /// --with, which then only reports earlier runs.
    #[arg(long = "config", required_unless_present = "with", num_args = 1..)]
    pub configs: Vec<PathBuf>,
    /// Seeds to run for every config (with --grid: the seeds the grid points are selected on).
    #[arg(long, value_delimiter = ',', default_value = "0,1,2,3,4")]
    pub seeds: Vec<u64>,
    /// Overrides applied to every config.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Tuning grid, one flag per field: --grid 'q.lr=3e-4,1e-3,3e-3' --grid 'q.tau=0.01,0.005'.
    /// Every agent runs every combination on --seeds; its best point by mean AUC is re-run on
    /// --final-seeds for the reported table.
    #[arg(long = "grid", value_name = "KEY=V1,V2,...")]
    pub grid: Vec<String>,
    /// Fresh seeds for the reported runs after --grid [default: ten seeds after the largest of
    /// --seeds].
    #[arg(long = "final-seeds", value_delimiter = ',')]
    pub final_seeds: Vec<u64>,
    /// Output folder: runs/, grid/, curves.png, profile.png, summary.md, stats.json.
    #[arg(long, default_value = "compare")]
    pub out: PathBuf,
    /// Parallel processes [default: the number of cores].
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Plot each seed's curve as a trailing mean over this many evaluations (the table is
    /// computed from the raw evaluations either way).
    #[arg(long, default_value_t = 1)]
    pub smooth: usize,
    /// Bootstrap resamples for the confidence intervals (rliable's default).
    #[arg(long, default_value_t = 50_000)]
    pub reps: usize,
    /// Also report the finished runs of an earlier `compare` as agent LABEL (repeatable), so
    /// variants run by separate commands share one table, profile and P(A > B): DIR is that
    /// compare's --out folder, PREFIX picks its job folders runs/PREFIX_<seed> (e.g. `1_mle`;
    /// optional when all of them belong to one config). Nothing is rerun; without --config,
    /// nothing runs at all and the table holds the --with agents only.
    #[arg(long = "with", value_name = "LABEL=DIR[:PREFIX]")]
    pub with: Vec<String>,
    #[command(flatten)]
    pub launch: LaunchArgs,
}

/// One child run: `config` with `overrides` and `seed`, into its own folder `out`.
#[derive(Debug, Clone, Serialize, PartialEq)]
struct Job {
    /// For messages only: a job is what it runs (config, seed, overrides), not its name.
    #[serde(skip)]
    label: String,
    config: PathBuf,
    seed: u64,
    overrides: Vec<String>,
    /// The config as the run will use it: a finished run is reused only if this is unchanged
    /// (an edited config file is a different job).
    resolved: String,
    #[serde(skip)]
    out: PathBuf,
}

impl Job {
    fn new(
        label: String,
        config: &Path,
        seed: u64,
        overrides: Vec<String>,
        out: PathBuf,
    ) -> anyhow::Result<Job> {
        let cfg = load_config(config, &overrides, Some(seed))?;
        Ok(Job {
            label,
            config: config.to_path_buf(),
            seed,
            resolved: toml::to_string(&cfg)?,
            overrides,
            out,
        })
    }
}

const JOB: &str = "job.json";

/// What `compare` prints after `--launcher slurm --dry-run`.
const DRY_RUN: &str = "dry run: the job script is written (path above); submit it with sbatch, then rerun this command without --dry-run to collect (finished runs are reused)\n";

/// The run directories (holding a config.toml) inside a job folder.
fn run_dirs(out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("config.toml").is_file())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// What a job still needs: `None` when its folder holds a finished run, else the `funcrl`
/// arguments that start it (or resume it from its checkpoint). A job folder that holds a
/// different job is refused.
fn job_args(job: &Job) -> anyhow::Result<Option<Vec<String>>> {
    std::fs::create_dir_all(&job.out)?;
    let record = serde_json::to_string_pretty(job)?;
    let job_file = job.out.join(JOB);
    let same = |old: &str| {
        let (a, b): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(old).unwrap_or_default(),
            serde_json::to_value(job).unwrap_or_default(),
        );
        // Records from before `resolved` was kept are matched on the rest.
        ["config", "seed", "overrides", "resolved"]
            .iter()
            .all(|k| a.get(k).is_none_or(|x| Some(x) == b.get(k)))
    };
    match std::fs::read_to_string(&job_file) {
        Ok(old) if !same(&old) => {
            return Err(UsageError::new(format!(
                "{} holds runs of a different job ({}); use another --out",
                job.out.display(),
                job_file.display()
            ))
            .into());
        }
        Ok(_) => {}
        Err(_) => crate::rundir::write_atomic(&job_file, record.as_bytes())?,
    }
    let previous = run_dirs(&job.out)?;
    if previous.iter().any(|d| d.join(SUMMARY).is_file()) {
        eprintln!("done already: {} seed {}", job.label, job.seed);
        return Ok(None);
    }
    let mut args = vec!["train".to_string()];
    match previous.iter().find(|d| d.join(CHECKPOINT).is_file()) {
        Some(dir) => {
            eprintln!(
                "resume {} seed {} from {}",
                job.label,
                job.seed,
                dir.display()
            );
            args.extend(["--resume".to_string(), dir.display().to_string()]);
        }
        None => {
            eprintln!("start {} seed {}", job.label, job.seed);
            args.extend([
                "--config".to_string(),
                job.config.display().to_string(),
                "--seed".to_string(),
                job.seed.to_string(),
                "--out".to_string(),
                job.out.display().to_string(),
            ]);
            for o in &job.overrides {
                args.extend(["--set".to_string(), o.clone()]);
            }
        }
    }
    args.push("--quiet".to_string());
    Ok(Some(args))
}

/// Runs the jobs — `parallel` local processes at a time, or one Slurm job array (task logs in
/// `slurm_dir`) — and returns each one's finished run directory, in order. Rerunning keeps
/// finished runs and resumes the others from their checkpoints. If a local child fails, the
/// others are stopped. `Ok(None)`: a Slurm dry run (the script is written, nothing ran).
fn run_jobs(
    jobs: &[Job],
    parallel: usize,
    launch: &LaunchArgs,
    slurm_dir: &Path,
) -> anyhow::Result<Option<Vec<PathBuf>>> {
    if launch.launcher == Launcher::Slurm {
        let mut tasks = vec![];
        for job in jobs {
            if let Some(args) = job_args(job)? {
                tasks.push(slurm::Task {
                    label: format!("{} seed {}", job.label, job.seed),
                    args,
                });
            }
        }
        if !tasks.is_empty() && slurm::run(&tasks, slurm_dir, launch)? != slurm::Outcome::Finished {
            return Ok(None);
        }
        return finished_dirs(jobs).map(Some);
    }
    let exe = crate::children::self_command()?;
    crate::children::run(
        jobs.len(),
        parallel,
        |i| {
            let job = &jobs[i];
            let Some(args) = job_args(job)? else {
                return Ok(None);
            };
            // Children print their run directory on stdout; keep ours for the table.
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(job.out.join("stderr.log"))?;
            let child = exe
                .command()
                .args(&args)
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()?;
            Ok(Some(child))
        },
        |i, status| {
            let job = &jobs[i];
            format!(
                "{} seed {} failed ({status}); see {}",
                job.label,
                job.seed,
                job.out.join("stderr.log").display()
            )
        },
        |_| {},
        |signal| {
            format!(
                "compare stopped by {signal}: running children were stopped at a checkpoint; rerun the same command to resume"
            )
        },
    )?;
    finished_dirs(jobs).map(Some)
}

/// Each job's finished run directory, in order.
fn finished_dirs(jobs: &[Job]) -> anyhow::Result<Vec<PathBuf>> {
    jobs.iter()
        .map(|j| {
            run_dirs(&j.out)?
                .into_iter()
                .find(|p| p.join(SUMMARY).is_file())
                .with_context(|| format!("no finished run directory in {}", j.out.display()))
        })
        .collect()
}

/// A tuning grid: every combination of the values of each field, as `--set` overrides.
fn grid_points(grid: &[String]) -> Result<Vec<Vec<String>>, UsageError> {
    let mut points = vec![vec![]];
    for g in grid {
        let (key, values) = g
            .split_once('=')
            .ok_or_else(|| UsageError::new(format!("--grid {g:?}: expected KEY=V1,V2,...")))?;
        let values: Vec<&str> = values.split(',').map(str::trim).collect();
        if key.trim().is_empty() || values.iter().any(|v| v.is_empty()) {
            return Err(UsageError::new(format!(
                "--grid {g:?}: expected KEY=V1,V2,... with no empty value"
            )));
        }
        points = points
            .into_iter()
            .flat_map(|p| {
                values.iter().map(move |v| {
                    let mut q = p.clone();
                    q.push(format!("{}={v}", key.trim()));
                    q
                })
            })
            .collect();
    }
    Ok(points)
}

/// A folder name for a grid point: `q.lr=3e-4 q.tau=0.01` → `q.lr=3e-4_q.tau=0.01`.
fn point_label(point: &[String]) -> String {
    point
        .iter()
        .map(|s| {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "=.-+".contains(c) {
                        c
                    } else {
                        '-'
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("_")
}

/// Every agent's evaluation curves (one per seed) and where they came from.
struct AgentRuns {
    name: String,
    config: PathBuf,
    point: Vec<String>,
    runs: Vec<Vec<(f64, f64)>>,
    dirs: Vec<PathBuf>,
}

/// Per-run scores: AUC (mean eval return over the run) and the mean of the last 10 evaluations.
fn scores(runs: &[Vec<(f64, f64)>], env: &str) -> (Vec<Summary>, Vec<f64>, Vec<f64>) {
    let sums: Vec<Summary> = runs.iter().map(|r| summarize(r, env)).collect();
    let auc = sums.iter().map(|s| s.auc).collect();
    // The last evaluation is 10 episodes of one policy; the last ten are steadier.
    let tail = runs
        .iter()
        .map(|r| {
            let t = &r[r.len().saturating_sub(10)..];
            t.iter().map(|e| e.1).sum::<f64>() / t.len().max(1) as f64
        })
        .collect();
    (sums, auc, tail)
}

#[derive(Serialize)]
struct AgentStats {
    name: String,
    config: PathBuf,
    grid_point: Vec<String>,
    seeds: usize,
    auc: Vec<f64>,
    last10: Vec<f64>,
    auc_mean_std: (f64, f64),
    auc_iqm: Interval,
    last10_mean_std: (f64, f64),
    last10_iqm: Interval,
    /// Each run's largest logged outer loss ½Σᵢ mean (Qᵢ − y)² on real data: a Bellman error
    /// that ran away (here: past [`DIVERGED`]) marks a diverged run.
    largest_outer_loss: Vec<f64>,
    /// `funcrl inspect` of each run's final model (none for `modelfree`).
    model: Vec<ModelReport>,
}

#[derive(Serialize)]
struct PairStats {
    a: String,
    b: String,
    /// P(AUC of a run of `a` > AUC of a run of `b`).
    p_auc: Interval,
    p_last10: Interval,
}

#[derive(Serialize)]
struct StudyStats {
    env: String,
    bootstrap_reps: usize,
    agents: Vec<AgentStats>,
    pairs: Vec<PairStats>,
}

/// The outer loss above which a run counts as diverged in the summary (the Bellman error of a
/// CartPole Q that learns stays below ≈ 10²; diverged `full`-mode runs reach 10⁴–10¹⁷).
const DIVERGED: f64 = 1e3;

/// The largest `losses/outer_loss` in a run's losses.csv (NaN for a run that logged none).
fn largest_outer_loss(run: &Path) -> anyhow::Result<f64> {
    let col = LOSS_COLUMNS
        .iter()
        .position(|c| *c == "losses/outer_loss")
        .expect("outer loss column");
    let rows = CsvLog::read_strict(&run.join("losses.csv"), &LOSS_COLUMNS)?;
    Ok(rows.iter().map(|r| r[col]).fold(f64::NAN, f64::max))
}

/// The finished runs named by one `--with LABEL=DIR[:PREFIX]`, as agent LABEL.
/// `env`: the comparison's environment, which the runs must match (`None`: take theirs).
fn with_runs(spec: &str, env: Option<&str>) -> anyhow::Result<(AgentRuns, String)> {
    let usage =
        |why: String| -> anyhow::Error { UsageError::new(format!("--with {spec}: {why}")).into() };
    let Some((label, rest)) = spec.split_once('=') else {
        return Err(usage("expected LABEL=DIR[:PREFIX]".into()));
    };
    let label = label.trim();
    if label.is_empty() {
        return Err(usage("the label is empty".into()));
    }
    let (dir, prefix) = match rest.rsplit_once(':') {
        Some((d, p)) if !p.contains('/') => (PathBuf::from(d), Some(p.to_string())),
        _ => (PathBuf::from(rest), None),
    };
    let runs_dir = dir.join("runs");
    let entries = std::fs::read_dir(&runs_dir).map_err(|e| {
        usage(format!(
            "{}: {e} (not a compare --out folder?)",
            runs_dir.display()
        ))
    })?;
    // Job folders are named <config index>_<agent>_<seed>.
    let mut jobs: Vec<(String, u64, PathBuf)> = vec![];
    for e in entries {
        let path = e?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if let Some((p, seed)) = name.rsplit_once('_')
            && let Ok(seed) = seed.parse::<u64>()
            && path.join(JOB).is_file()
        {
            jobs.push((p.to_string(), seed, path));
        }
    }
    let mut prefixes: Vec<String> = jobs.iter().map(|j| j.0.clone()).collect();
    prefixes.sort();
    prefixes.dedup();
    let prefix = match prefix {
        Some(p) => p,
        None if prefixes.len() == 1 => prefixes[0].clone(),
        None => {
            return Err(usage(format!(
                "{} holds runs of several configs; add :PREFIX, one of {}",
                runs_dir.display(),
                prefixes.join(", ")
            )));
        }
    };
    jobs.retain(|j| j.0 == prefix);
    if jobs.is_empty() {
        return Err(usage(format!(
            "no job folder {prefix}_<seed> in {} (there: {})",
            runs_dir.display(),
            if prefixes.is_empty() {
                "none".to_string()
            } else {
                prefixes.join(", ")
            }
        )));
    }
    jobs.sort_by_key(|j| j.1);
    let (mut runs, mut dirs) = (vec![], vec![]);
    // The comparison's environment, else the first run's: every run must be on it.
    let mut env = env.map(str::to_string);
    for (_, seed, job) in &jobs {
        let Some(run) = run_dirs(job)?
            .into_iter()
            .find(|d| d.join(SUMMARY).is_file())
        else {
            return Err(usage(format!(
                "seed {seed} has no finished run in {} (rerun that compare first)",
                job.display()
            )));
        };
        let run_env = load_config(&run.join("config.toml"), &[], None)?.env;
        let want = env.get_or_insert_with(|| run_env.clone());
        if run_env != *want {
            return Err(usage(format!(
                "its runs are on {run_env}, the comparison on {want}"
            )));
        }
        runs.push(read_evals(&run.join("evals.csv"))?);
        dirs.push(run);
    }
    let agent = AgentRuns {
        name: label.to_string(),
        config: dirs[0].join("config.toml"),
        point: vec![],
        runs,
        dirs,
    };
    Ok((agent, env.expect("at least one run")))
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    stats::mean_std(&[v.to_vec()])
}

/// Trailing mean over `k` points (the first points average what exists so far).
fn trailing_mean(v: &[(f64, f64)], k: usize) -> Vec<(f64, f64)> {
    let k = k.max(1);
    (0..v.len())
        .map(|i| {
            let w = &v[i + 1 - k.min(i + 1)..=i];
            (v[i].0, w.iter().map(|e| e.1).sum::<f64>() / w.len() as f64)
        })
        .collect()
}

/// Curves, performance profile, summary table and stats.json for the reported runs.
fn report(
    out: &Path,
    env: &str,
    agents: &[AgentRuns],
    args: &CompareArgs,
) -> anyhow::Result<String> {
    let b = Bootstrap {
        reps: args.reps,
        ..Bootstrap::default()
    };
    let mut bands = vec![];
    let mut all = vec![];
    let mut table = "| agent | grid point | seeds | final return | last 10 evals: mean ± std | last 10: IQM [95% CI] | AUC: mean ± std | AUC: IQM [95% CI] | steps to threshold (reached/seeds) | outer loss > 10³ (runs) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n".to_string();
    for a in agents {
        let len = a.runs.iter().map(Vec::len).min().unwrap_or(0);
        let x: Vec<f64> = a
            .runs
            .first()
            .map_or(vec![], |r| r[..len].iter().map(|e| e.0).collect());
        let smoothed: Vec<Vec<(f64, f64)>> = a
            .runs
            .iter()
            .map(|r| trailing_mean(r, args.smooth))
            .collect();
        let (mut mean, mut std) = (vec![], vec![]);
        for i in 0..len {
            let (m, s) = mean_std(&smoothed.iter().map(|r| r[i].1).collect::<Vec<_>>());
            mean.push(m);
            std.push(s);
        }
        bands.push(Band {
            name: a.name.clone(),
            x,
            mean,
            std,
            bounds: None,
        });
        let (sums, auc, tail) = scores(&a.runs, env);
        let (fm, fs) = mean_std(&sums.iter().map(|s| s.final_return).collect::<Vec<_>>());
        let st = AgentStats {
            name: a.name.clone(),
            config: a.config.clone(),
            grid_point: a.point.clone(),
            seeds: a.runs.len(),
            auc_mean_std: mean_std(&auc),
            auc_iqm: stats::interval(std::slice::from_ref(&auc), stats::iqm, b),
            last10_mean_std: mean_std(&tail),
            last10_iqm: stats::interval(std::slice::from_ref(&tail), stats::iqm, b),
            auc,
            last10: tail,
            largest_outer_loss: a
                .dirs
                .iter()
                .map(|d| largest_outer_loss(d))
                .collect::<anyhow::Result<_>>()?,
            model: inspect_all(&a.dirs)?,
        };
        let diverged = st
            .largest_outer_loss
            .iter()
            .filter(|l| **l > DIVERGED)
            .count();
        let reached: Vec<f64> = sums.iter().filter_map(|s| s.steps_to_threshold).collect();
        let steps = if reached.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{:.0} ({}/{})",
                mean_std(&reached).0,
                reached.len(),
                sums.len()
            )
        };
        let point = if a.point.is_empty() {
            "-".to_string()
        } else {
            a.point.join(" ")
        };
        table.push_str(&format!(
            "| {} | {point} | {} | {fm:.1} ± {fs:.1} | {:.1} ± {:.1} | {:.1} | {:.1} ± {:.1} | {:.1} | {steps} | {diverged}/{} |\n",
            a.name,
            st.seeds,
            st.last10_mean_std.0,
            st.last10_mean_std.1,
            st.last10_iqm,
            st.auc_mean_std.0,
            st.auc_mean_std.1,
            st.auc_iqm,
            st.seeds,
        ));
        all.push(st);
    }
    let with_model: Vec<&AgentStats> = all.iter().filter(|s| !s.model.is_empty()).collect();
    if !with_model.is_empty() {
        table.push_str("\nWorld models on 2,000 held-out real transitions per run (`funcrl inspect`; as the Q step uses them, with the run's clips applied), mean ± std over seeds: one-step state RMSE, value error |V̄(ŝ′) − V̄(s′)| under the run's own Q̄, error of the Q-learning target |ŷ − y|, open-loop state RMSE 10 steps ahead.\n\n| agent | state RMSE | reward MAE | value MAE | target MAE | open loop, h = 10 |\n|---|---:|---:|---:|---:|---:|\n");
        for st in &with_model {
            let col = |f: &dyn Fn(&ModelReport) -> f64| {
                let (m, s) = mean_std(&st.model.iter().map(f).collect::<Vec<_>>());
                format!("{m:.3} ± {s:.3}")
            };
            table.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                st.name,
                col(&|r| r.state_rmse),
                col(&|r| r.reward_mae),
                col(&|r| r.value_mae),
                col(&|r| r.target_mae),
                col(&|r| r.open_loop_rmse.get(9).copied().unwrap_or(f64::NAN)),
            ));
        }
        table.push_str("\nPolicies at the last checkpoint, 20 episodes each from the same held-out seeds (`funcrl inspect`), mean ± std over seeds: the evaluation policy softmax(Q/α) as `evals.csv` logs it against the greedy policy argmax Q, and how decisive the softmax is on the states it visits (mean probability of its top action; median gap between the two best action values, in units of α). A greedy return well above the softmax one means evaluation dips come from sampling near-tied actions, not from a wrong Q.\n\n| agent | softmax return | greedy return | top-action probability | median gap / α |\n|---|---:|---:|---:|---:|\n");
        for st in &with_model {
            let col = |f: &dyn Fn(&PolicyReport) -> f64, digits: usize| {
                let v: Vec<f64> = st
                    .model
                    .iter()
                    .filter_map(|r| r.policy.as_ref())
                    .map(f)
                    .collect();
                let (m, s) = mean_std(&v);
                format!("{m:.digits$} ± {s:.digits$}")
            };
            table.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                st.name,
                col(&|p| p.softmax_return_mean, 1),
                col(&|p| p.greedy_return_mean, 1),
                col(&|p| p.mean_top_probability, 3),
                col(&|p| p.median_gap_over_alpha, 2),
            ));
        }
        let groups: Vec<(String, Vec<Vec<f64>>)> = with_model
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    s.model.iter().map(|r| r.open_loop_rmse.clone()).collect(),
                )
            })
            .collect();
        crate::inspect::open_loop_plot(
            &out.join("model_error.png"),
            &format!("{env}: open-loop state error of the learned models (mean ± std over seeds)"),
            &groups,
        )?;
    }
    let mut pairs = vec![];
    if all.len() > 1 {
        table.push_str("\nProbability of improvement P(A > B): the chance that a run of A scores higher than a run of B (ties ½), with its 95 % bootstrap CI. A CI that contains 0.5 means these seeds cannot separate the two agents.\n\n| A | B | P(A > B), AUC | P(A > B), last 10 evals |\n|---|---|---:|---:|\n");
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                let p = PairStats {
                    a: all[i].name.clone(),
                    b: all[j].name.clone(),
                    p_auc: stats::probability_of_improvement(
                        std::slice::from_ref(&all[i].auc),
                        std::slice::from_ref(&all[j].auc),
                        b,
                    ),
                    p_last10: stats::probability_of_improvement(
                        &[all[i].last10.clone()],
                        &[all[j].last10.clone()],
                        b,
                    ),
                };
                let sep = |c: &Interval| if c.lo > 0.5 || c.hi < 0.5 { "" } else { " ~" };
                table.push_str(&format!(
                    "| {} | {} | {:.2}{} | {:.2}{} |\n",
                    p.a,
                    p.b,
                    p.p_auc,
                    sep(&p.p_auc),
                    p.p_last10,
                    sep(&p.p_last10)
                ));
                pairs.push(p);
            }
        }
        table.push_str("\n~ : the CI contains 0.5 (not separated).\n");
    }
    let title = if args.smooth > 1 {
        format!(
            "{env}: eval return, trailing mean of {} evals (mean ± std over seeds)",
            args.smooth
        )
    } else {
        format!("{env}: eval return (mean ± std over seeds)")
    };
    plot::curves(
        &out.join("curves.png"),
        &title,
        "env steps",
        "episodic return",
        &bands,
        false,
    )?;
    // Performance profile of the AUC: the fraction of runs above each score τ, with 95 % CIs.
    // τ spans the scores seen (Acrobot's returns are negative), a little beyond both ends.
    let (lo, hi) = all
        .iter()
        .flat_map(|s| s.auc.iter().copied())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
    let pad = ((hi - lo) * 0.05).max(1.0);
    let (lo, hi) = (lo.min(0.0) - pad, hi + pad);
    let taus: Vec<f64> = (0..=100)
        .map(|i| lo + (hi - lo) * i as f64 / 100.0)
        .collect();
    let pb = Bootstrap {
        reps: 2000.min(args.reps),
        ..b
    };
    let profile: Vec<Band> = all
        .iter()
        .map(|s| {
            let p = stats::performance_profile(std::slice::from_ref(&s.auc), &taus, pb);
            Band {
                name: s.name.clone(),
                x: taus.clone(),
                mean: p.iter().map(|i| i.point).collect(),
                std: vec![],
                bounds: Some((
                    p.iter().map(|i| i.lo).collect(),
                    p.iter().map(|i| i.hi).collect(),
                )),
            }
        })
        .collect();
    plot::curves(
        &out.join("profile.png"),
        &format!("{env}: performance profile of the AUC (95 % CIs)"),
        "AUC τ (mean eval return over the run)",
        "fraction of runs with AUC > τ",
        &profile,
        false,
    )?;
    let study = StudyStats {
        env: env.to_string(),
        bootstrap_reps: args.reps,
        agents: all,
        pairs,
    };
    crate::rundir::write_atomic(
        &out.join("stats.json"),
        serde_json::to_string_pretty(&study)?.as_bytes(),
    )?;
    crate::rundir::write_atomic(&out.join("summary.md"), table.as_bytes())?;
    Ok(table)
}

/// `funcrl inspect` (default settings) of every run that has a world model.
fn inspect_all(dirs: &[PathBuf]) -> anyhow::Result<Vec<ModelReport>> {
    let mut out = vec![];
    for d in dirs {
        let cfg = load_config(&d.join("config.toml"), &[], None)?;
        if cfg.agent.name() == "modelfree" {
            return Ok(vec![]);
        }
        out.push(crate::inspect::inspect_run(&crate::inspect::InspectArgs {
            run: d.clone(),
            transitions: 2000,
            horizon: 20,
            seed: crate::inspect::HELD_OUT_SEED,
            episodes: 20,
        })?);
    }
    Ok(out)
}

/// Runs the study; returns the summary table.
pub fn compare(args: &CompareArgs) -> anyhow::Result<String> {
    // Validate everything (configs, overrides, every grid point) before starting anything.
    let points = grid_points(&args.grid)?;
    let mut kinds = vec![];
    for c in &args.configs {
        for (pi, p) in points.iter().enumerate() {
            let mut o = args.overrides.clone();
            o.extend(p.iter().cloned());
            let cfg = load_config(c, &o, None)?;
            if pi == 0 {
                kinds.push(cfg.agent.name().to_string());
            }
        }
    }
    if args.seeds.is_empty() {
        return Err(UsageError::new("--seeds: give at least one seed").into());
    }
    // Two configs of the same agent kind (say funcid full and paper) are told apart by file name.
    let names: Vec<String> = kinds
        .iter()
        .enumerate()
        .map(|(ci, k)| {
            if kinds.iter().filter(|x| *x == k).count() > 1 {
                let stem = args.configs[ci]
                    .file_stem()
                    .map_or(format!("#{ci}"), |s| s.to_string_lossy().into_owned());
                format!("{k} ({stem})")
            } else {
                k.clone()
            }
        })
        .collect();
    let parallel = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    if args.configs.is_empty() && !args.grid.is_empty() {
        return Err(UsageError::new("--grid needs --config: it tunes the configs' agents").into());
    }
    // Without configs, the comparison is on the first --with's environment.
    let mut env = match args.configs.first() {
        Some(c) => Some(load_config(c, &args.overrides, None)?.env),
        None => None,
    };
    // Earlier runs to report beside these: read (and refused if unusable) before anything runs.
    let mut earlier = vec![];
    for spec in &args.with {
        let (a, run_env) = with_runs(spec, env.as_deref())?;
        env.get_or_insert(run_env);
        if names.contains(&a.name) || earlier.iter().any(|e: &AgentRuns| e.name == a.name) {
            return Err(UsageError::new(format!(
                "--with {spec}: the label {} is already an agent of this comparison",
                a.name
            ))
            .into());
        }
        earlier.push(a);
    }
    let env = env.expect("--config or --with is required");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    if args.configs.is_empty() {
        return report(&args.out, &env, &earlier, args);
    }

    // With a grid: every agent × point × selection seed, then the best point per agent.
    let (chosen, seeds): (Vec<Vec<String>>, Vec<u64>) = if args.grid.is_empty() {
        (vec![vec![]; args.configs.len()], args.seeds.clone())
    } else {
        let mut jobs = vec![];
        for (ci, c) in args.configs.iter().enumerate() {
            for p in &points {
                for &s in &args.seeds {
                    let mut o = args.overrides.clone();
                    o.extend(p.iter().cloned());
                    jobs.push(Job::new(
                        format!("{} [{}]", names[ci], p.join(" ")),
                        c,
                        s,
                        o,
                        args.out
                            .join("grid")
                            .join(format!("{ci}_{}", kinds[ci]))
                            .join(point_label(p))
                            .join(s.to_string()),
                    )?);
                }
            }
        }
        let Some(dirs) = run_jobs(&jobs, parallel, &args.launch, &args.out.join("slurm/grid"))?
        else {
            return Ok(DRY_RUN.to_string());
        };
        let per = points.len() * args.seeds.len();
        let mut md = format!(
            "# Tuning grid ({env})\n\nEvery agent ran every point on seeds {:?}; the point with the highest mean AUC (mean evaluation return over the run) is marked ★ and was re-run on fresh seeds for the reported table.\n\n| agent | grid point | mean AUC ± std | AUC IQM [95% CI] | last 10 evals: mean |\n|---|---|---:|---:|---:|\n",
            args.seeds
        );
        let mut chosen = vec![];
        for (ci, name) in names.iter().enumerate() {
            let mut rows = vec![];
            for (pi, p) in points.iter().enumerate() {
                let at = ci * per + pi * args.seeds.len();
                let runs: Vec<Vec<(f64, f64)>> = dirs[at..at + args.seeds.len()]
                    .iter()
                    .map(|d| read_evals(&d.join("evals.csv")))
                    .collect::<anyhow::Result<_>>()?;
                let (_, auc, tail) = scores(&runs, &env);
                rows.push((p.clone(), mean_std(&auc), auc, mean_std(&tail).0));
            }
            let best = (0..rows.len())
                .max_by(|&i, &j| rows[i].1.0.total_cmp(&rows[j].1.0))
                .expect("at least one grid point");
            for (ri, (p, (m, s), auc, tail)) in rows.iter().enumerate() {
                let iqm = stats::interval(
                    std::slice::from_ref(auc),
                    stats::iqm,
                    Bootstrap {
                        reps: args.reps,
                        ..Bootstrap::default()
                    },
                );
                md.push_str(&format!(
                    "| {}{} | {} | {m:.1} ± {s:.1} | {iqm:.1} | {tail:.1} |\n",
                    name,
                    if ri == best { " ★" } else { "" },
                    p.join(" ")
                ));
            }
            chosen.push(rows[best].0.clone());
        }
        crate::rundir::write_atomic(&args.out.join("grid.md"), md.as_bytes())?;
        let fresh = if args.final_seeds.is_empty() {
            let start = args.seeds.iter().max().map_or(0, |m| m + 1);
            (start..start + 10).collect()
        } else {
            args.final_seeds.clone()
        };
        if let Some(s) = fresh.iter().find(|s| args.seeds.contains(s)) {
            return Err(UsageError::new(format!(
                "--final-seeds must be fresh: seed {s} was used for the grid selection"
            ))
            .into());
        }
        (chosen, fresh)
    };

    let mut jobs = vec![];
    for (ci, c) in args.configs.iter().enumerate() {
        for &s in &seeds {
            let mut o = args.overrides.clone();
            o.extend(chosen[ci].iter().cloned());
            jobs.push(Job::new(
                names[ci].clone(),
                c,
                s,
                o,
                args.out
                    .join("runs")
                    .join(format!("{ci}_{}_{s}", kinds[ci])),
            )?);
        }
    }
    let Some(dirs) = run_jobs(&jobs, parallel, &args.launch, &args.out.join("slurm/runs"))? else {
        return Ok(DRY_RUN.to_string());
    };
    let mut agents = vec![];
    for (ci, c) in args.configs.iter().enumerate() {
        let runs = dirs[ci * seeds.len()..(ci + 1) * seeds.len()]
            .iter()
            .map(|d| read_evals(&d.join("evals.csv")))
            .collect::<anyhow::Result<_>>()?;
        agents.push(AgentRuns {
            name: names[ci].clone(),
            config: c.clone(),
            point: chosen[ci].clone(),
            runs,
            dirs: dirs[ci * seeds.len()..(ci + 1) * seeds.len()].to_vec(),
        });
    }
    agents.extend(earlier);
    report(&args.out, &env, &agents, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_mean_by_hand() {
        let v = [(1.0, 2.0), (2.0, 4.0), (3.0, 9.0), (4.0, 1.0)];
        assert_eq!(
            trailing_mean(&v, 2),
            vec![(1.0, 2.0), (2.0, 3.0), (3.0, 6.5), (4.0, 5.0)]
        );
        assert_eq!(trailing_mean(&v, 1), v.to_vec());
    }

    #[test]
    fn largest_outer_loss_by_hand() {
        let dir = std::env::temp_dir().join(format!("funcrl-outer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv = format!(
            "{}\n100,1,2,0.5\n200,1,2,3.1e4\n300,9e9,2,7\n",
            LOSS_COLUMNS.join(",")
        );
        std::fs::write(dir.join("losses.csv"), csv).unwrap();
        // The outer-loss column's maximum, not the q_loss column's 9e9.
        assert_eq!(largest_outer_loss(&dir).unwrap(), 3.1e4);
        std::fs::write(dir.join("losses.csv"), "global_step,x\n1,2\n").unwrap();
        assert!(largest_outer_loss(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn with_names_its_flag_and_what_is_wrong() {
        let dir = std::env::temp_dir().join(format!("funcrl-with-{}", std::process::id()));
        let runs = dir.join("runs");
        for job in ["0_funcid_3", "1_mle_3"] {
            std::fs::create_dir_all(runs.join(job)).unwrap();
            std::fs::write(runs.join(job).join(JOB), "{}").unwrap();
        }
        let d = dir.display();
        let err = |spec: &str| {
            with_runs(spec, Some("CartPole-v1"))
                .err()
                .unwrap()
                .to_string()
        };
        assert!(err("nolabel").contains("expected LABEL=DIR[:PREFIX]"));
        let e = err(&format!("x={d}"));
        assert!(
            e.contains("several configs") && e.contains("0_funcid, 1_mle"),
            "{e}"
        );
        let e = err(&format!("x={d}:2_omd"));
        assert!(e.contains("no job folder 2_omd_<seed>"), "{e}");
        let e = err(&format!("x={d}:1_mle"));
        assert!(e.contains("seed 3 has no finished run"), "{e}");
        assert!(err(&format!("x={d}/nowhere")).contains("not a compare --out folder"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn grid_is_the_cartesian_product_in_flag_order() {
        let g = grid_points(&["q.lr=1,2".into(), "q.tau=a, b ,c".into()]).unwrap();
        assert_eq!(g.len(), 6);
        assert_eq!(g[0], vec!["q.lr=1", "q.tau=a"]);
        assert_eq!(g[4], vec!["q.lr=2", "q.tau=b"]);
        assert_eq!(grid_points(&[]).unwrap(), vec![Vec::<String>::new()]);
        assert!(grid_points(&["q.lr".into()]).is_err());
        assert!(grid_points(&["q.lr=1,,2".into()]).is_err());
        assert_eq!(point_label(&g[5]), "q.lr=2_q.tau=c");
    }
}
