//! `funcrl inspect RUN_DIR`: the world model of a run's checkpoint measured on held-out real
//! transitions against the true dynamics (`funcrl_agents::inspect`): one-step state, reward and
//! value errors and the open-loop error by horizon, plus how decisive the run's policy is (its
//! sampled evaluation policy against the greedy one), as inspect.json and inspect.png.

use std::path::{Path, PathBuf};

use clap::Args;
use funcrl_agents::inspect::{self, ModelReport};
use funcrl_agents::{ActionMap, Trainer};

use crate::config::UsageError;
use crate::plot::{self, Band};
use crate::rundir::RunDir;
use crate::train::{CHECKPOINT, load_config};

/// Seed of the held-out episodes (training draws its episode seeds from other streams).
pub const HELD_OUT_SEED: u64 = 987_654_321;

#[derive(Args, Debug, Clone)]
pub struct InspectArgs {
    /// A run directory of `funcrl train` (its config.toml and checkpoint.h5 are read).
    pub run: PathBuf,
    /// Held-out real transitions to measure on.
    #[arg(long, default_value_t = 2000)]
    pub transitions: usize,
    /// Longest open-loop horizon.
    #[arg(long, default_value_t = 20)]
    pub horizon: usize,
    /// Seed of the held-out episodes (never the training seed's streams).
    #[arg(long, default_value_t = HELD_OUT_SEED)]
    pub seed: u64,
    /// Episodes of the evaluation (softmax) policy and of the greedy policy, from the same
    /// seeds, for the policy report (0: skip it).
    #[arg(long, default_value_t = 20)]
    pub episodes: usize,
}

/// Measures the model in `run`'s checkpoint; writes inspect.json and inspect.png there.
pub fn inspect_run(args: &InspectArgs) -> anyhow::Result<ModelReport> {
    let run = RunDir::open(&args.run).map_err(|e| UsageError::new(e.to_string()))?;
    let ckpt = run.file(CHECKPOINT);
    if !ckpt.is_file() {
        return Err(UsageError::new(format!(
            "{} has no {CHECKPOINT} to inspect",
            args.run.display()
        ))
        .into());
    }
    if args.transitions == 0 || args.horizon == 0 {
        return Err(UsageError::new("--transitions and --horizon must be at least 1").into());
    }
    let cfg = load_config(&run.file("config.toml"), &[], None)?;
    if cfg.agent.name() == "modelfree" {
        return Err(UsageError::new(format!(
            "{} is a modelfree run: it has no world model to inspect",
            args.run.display()
        ))
        .into());
    }
    let (t, legacy) = Trainer::load_checkpoint_for_reading(cfg.clone(), &ckpt)
        .map_err(|e| UsageError::new(format!("cannot inspect: {e}")))?;
    if legacy {
        eprintln!(
            "note: {} predates checkpoint checksums; read without verifying it",
            ckpt.display()
        );
    }
    let env = funcrl_envs::make(&cfg.env)?;
    let actions = ActionMap::new(&env.action_space(), &cfg.env, cfg.action_bins)
        .map_err(|e| anyhow::anyhow!(e))?;
    let records = inspect::collect(
        &t.agent,
        &cfg.env,
        &actions,
        cfg.q.epsilon,
        args.transitions,
        args.seed,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    // The model as the run's Q step uses it (its clips applied; the raw model without clips).
    let model = inspect::AsUsed::new(&t.agent, &t.buffer);
    let mut report = inspect::inspect(&model, &t.agent, &records, args.horizon);
    if args.episodes > 0 {
        report.policy = Some(
            inspect::policy_report(&t.agent, &cfg.env, &actions, args.episodes, args.seed)
                .map_err(|e| anyhow::anyhow!(e))?,
        );
    }
    run.write(
        "inspect.json",
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    open_loop_plot(
        &run.file("inspect.png"),
        &format!("{} {}: open-loop state error", cfg.env, cfg.agent.name()),
        &[(
            cfg.agent.name().to_string(),
            vec![report.open_loop_rmse.clone()],
        )],
    )?;
    Ok(report)
}

/// Open-loop RMSE by horizon, mean ± std over each group's runs.
pub fn open_loop_plot(
    path: &Path,
    title: &str,
    groups: &[(String, Vec<Vec<f64>>)],
) -> anyhow::Result<()> {
    let bands: Vec<Band> = groups
        .iter()
        .map(|(name, runs)| {
            let len = runs.iter().map(Vec::len).min().unwrap_or(0);
            let (mut mean, mut std) = (vec![], vec![]);
            for h in 0..len {
                let v: Vec<f64> = runs.iter().map(|r| r[h]).collect();
                let (m, s) = funcrl_stats::mean_std(&[v]);
                mean.push(m);
                std.push(s);
            }
            Band {
                name: name.clone(),
                x: (1..=len).map(|h| h as f64).collect(),
                mean,
                std,
                bounds: None,
            }
        })
        .collect();
    plot::curves(
        path,
        title,
        "steps ahead (open loop, real actions)",
        "state RMSE",
        &bands,
        true,
    )?;
    Ok(())
}

/// The report as a short table.
pub fn describe(r: &ModelReport) -> String {
    let h = |k: usize| {
        r.open_loop_rmse
            .get(k - 1)
            .map_or("-".to_string(), |v| format!("{v:.4}"))
    };
    let clips = match r.clips.is_empty() {
        true => "none (the raw model)".to_string(),
        false => r.clips.join(", "),
    };
    let policy = r.policy.as_ref().map_or(String::new(), |p| {
        format!(
            "policy, {} episodes   softmax (as evaluated) {:.1} ± {:.1}, greedy {:.1} ± {:.1}\n\
             policy decisiveness   top-action probability {:.3} (below 0.9 on {:.1} % of states), median action gap {:.2} α\n",
            p.episodes,
            p.softmax_return_mean,
            p.softmax_return_std,
            p.greedy_return_mean,
            p.greedy_return_std,
            p.mean_top_probability,
            100.0 * p.undecided_fraction,
            p.median_gap_over_alpha
        )
    });
    format!(
        "held-out transitions  {}\nclips applied         {clips}\nstate RMSE            {:.4}  (per dim: {})\nreward MAE            {:.4}\nvalue MAE |V̄(ŝ′) − V̄(s′)|  {:.4}\ntarget MAE |ŷ − y|    {:.4}\nopen-loop RMSE h=1/5/10/20  {} / {} / {} / {}\n{policy}",
        r.transitions,
        r.state_rmse,
        r.state_rmse_per_dim
            .iter()
            .map(|v| format!("{v:.4}"))
            .collect::<Vec<_>>()
            .join(", "),
        r.reward_mae,
        r.value_mae,
        r.target_mae,
        h(1),
        h(5),
        h(10),
        h(20)
    )
}
