//! `funcrl iv-bench`: configs (methods) × sizes × seeds → summary table of test MSE
//! (mean/median/std), a log-scale box plot and outer-loss curves (mean ± std over seeds).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::config::UsageError;
use crate::iv::run as ivrun;
use crate::plot::{self, Band};
use crate::slurm::{self, LaunchArgs, Launcher};
use funcrl_iv::checkpoint;
use funcrl_iv::run::IvConfig;

#[derive(Args, Debug)]
pub struct IvBenchArgs {
    /// Configs to compare (one per method), comma-separated.
    #[arg(long, value_delimiter = ',', num_args = 1, required = true)]
    pub configs: Vec<PathBuf>,
    /// Number of seeds (0..N).
    #[arg(long, default_value_t = 10)]
    pub seeds: u64,
    /// Start at this seed (seeds first-seed..N), e.g. to split one bench across processes.
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Sample sizes (data.n), comma-separated; default: each config's.
    #[arg(long, value_delimiter = ',', num_args = 1)]
    pub sizes: Vec<usize>,
    /// Override a field of every config, e.g. --set iterations=20.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Output folder (summary.csv, summary.md, mse_boxes.png, outer_loss.png, run directories).
    /// A finished run already there with the same resolved config is reused, not rerun, so a
    /// bench can be extended (more seeds) or resumed after a kill.
    #[arg(long, default_value = "runs/iv-bench")]
    pub out: PathBuf,
    /// Run nothing: summarise the finished runs in --out (methods may have different seed counts).
    #[arg(long)]
    pub collect: bool,
    /// Processes at once: the seeds are spread over child processes (each runs every config and
    /// size of one seed, its log in --out/logs/seed-N.log), then the summary is collected.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// A child of --jobs: run, write no summary.
    #[arg(long, hide = true)]
    pub no_summary: bool,
    #[command(flatten)]
    pub launch: LaunchArgs,
}

/// Runs seeds first-seed..seeds as child `iv-bench` processes, `args.jobs` at a time. SIGINT or
/// SIGTERM stops the children (finished runs are kept; a rerun reuses them); a failed child
/// stops the others and names its seed and log.
fn spread_seeds(args: &IvBenchArgs) -> anyhow::Result<()> {
    let exe = crate::children::self_command()?;
    let logs = args.out.join("logs");
    std::fs::create_dir_all(&logs)?;
    let log = |seed: u64| logs.join(format!("seed-{seed}.log"));
    let seed = |i: usize| args.first_seed + i as u64;
    let configs: Vec<String> = args
        .configs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    crate::children::run(
        (args.seeds - args.first_seed) as usize,
        args.jobs,
        |i| {
            let s = seed(i);
            let mut cmd = exe.command();
            cmd.arg("iv-bench")
                .arg("--configs")
                .arg(configs.join(","))
                .arg("--seeds")
                .arg((s + 1).to_string())
                .arg("--first-seed")
                .arg(s.to_string())
                .arg("--out")
                .arg(&args.out)
                .arg("--no-summary");
            if !args.sizes.is_empty() {
                let sizes: Vec<String> = args.sizes.iter().map(|n| n.to_string()).collect();
                cmd.arg("--sizes").arg(sizes.join(","));
            }
            for o in &args.overrides {
                cmd.arg("--set").arg(o);
            }
            cmd.stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(log(s))?);
            eprintln!("[iv-bench] seed {s}: started");
            Ok(Some(cmd.spawn()?))
        },
        |i, status| {
            format!(
                "seed {} failed ({status}); see {}",
                seed(i),
                log(seed(i)).display()
            )
        },
        |i| eprintln!("[iv-bench] seed {}: done", seed(i)),
        |signal| {
            format!(
                "iv-bench stopped by {signal}: finished runs are kept in {}; rerun the same command to continue",
                args.out.display()
            )
        },
    )
}

struct Group {
    label: String,
    /// The sample size (data.n) override, which pairs compare within.
    size: Option<usize>,
    seeds: Vec<u64>,
    mse: Vec<f64>,
    curves: Vec<Vec<f64>>,
    inner: Vec<Vec<f64>>,
}

/// Probability of improvement for every pair of methods at the same sample size: P(A < B), the
/// chance that a run of A has a lower test MSE than a run of B (ties ½), with its 95 % percentile
/// bootstrap interval (rliable's conventions), and how many shared seeds A is lower on. Empty
/// when there is no pair.
fn pairs_table(groups: &[Group]) -> String {
    let mut md = String::new();
    for (i, a) in groups.iter().enumerate() {
        for b in groups[i + 1..].iter().filter(|b| b.size == a.size) {
            if md.is_empty() {
                md.push_str(
                    "\nProbability of improvement (lower test MSE; a run of A against a run of B, ties ½; a 95% CI containing 0.5: not separated by these seeds):\n\n| A | B | P(A < B) [95% CI] | A lower on paired seeds |\n|---|---|---:|---:|\n",
                );
            }
            // P(A < B) = P(−A > −B).
            let neg = |g: &Group| vec![g.mse.iter().map(|m| -m).collect::<Vec<f64>>()];
            let p = funcrl_stats::probability_of_improvement(
                &neg(a),
                &neg(b),
                funcrl_stats::Bootstrap::default(),
            );
            let (mut wins, mut shared) = (0, 0);
            for (s, ma) in a.seeds.iter().zip(&a.mse) {
                if let Some(k) = b.seeds.iter().position(|t| t == s) {
                    shared += 1;
                    wins += usize::from(*ma < b.mse[k]);
                }
            }
            let sep = if p.lo <= 0.5 && p.hi >= 0.5 { " ~" } else { "" };
            md.push_str(&format!(
                "| {} | {} | {:.2} [{:.2}, {:.2}]{sep} | {wins} / {shared} |\n",
                a.label, b.label, p.point, p.lo, p.hi
            ));
        }
    }
    md
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (mean, plot::quantile(&s, 0.5), sd)
}

/// The resolved config without its top-level `out` and `checkpoint_every` lines: where a run was
/// written and how often it saved are not part of what it computed, so runs copied in from
/// another bench folder are reused too.
fn without_out(config: &str) -> String {
    config
        .lines()
        .filter(|l| !l.starts_with("out = ") && !l.starts_with("checkpoint_every = "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Run directories under `root` whose resolved config equals `cfg` (`out` aside), sorted.
fn same_config(root: &Path, cfg: &IvConfig) -> Vec<PathBuf> {
    let Some(want) = toml::to_string_pretty(cfg).ok().map(|t| without_out(&t)) else {
        return vec![];
    };
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|r| r.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.retain(|d| {
        std::fs::read_to_string(d.join("config.toml")).is_ok_and(|c| without_out(&c) == want)
    });
    dirs
}

/// An unfinished run of `cfg` under `root` that a kill left with a checkpoint, to resume.
fn unfinished(root: &Path, cfg: &IvConfig) -> Option<PathBuf> {
    same_config(root, cfg)
        .into_iter()
        .find(|d| !d.join("result.json").exists() && d.join(checkpoint::FILE).is_file())
}

/// A finished run under `root` (its `result.json` exists) whose resolved config equals `cfg`
/// (`out` aside).
fn finished(root: &Path, cfg: &IvConfig) -> Option<ivrun::IvResult> {
    same_config(root, cfg).into_iter().find_map(|d| {
        let text = std::fs::read_to_string(d.join("result.json")).ok()?;
        let mut r: ivrun::IvResult = serde_json::from_str(&text).ok()?;
        r.run_dir = d;
        Some(r)
    })
}

/// Column `k` of a run's metrics.csv (1: outer loss, 2: inner loss).
fn column(dir: &Path, k: usize) -> Vec<f64> {
    std::fs::read_to_string(dir.join("metrics.csv"))
        .map(|t| {
            t.lines()
                .skip(1)
                .filter_map(|l| l.split(',').nth(k)?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Mean ± std over runs of equal-length prefixes of the curves.
fn band(name: &str, curves: &[Vec<f64>]) -> Band {
    let len = curves.iter().map(Vec::len).min().unwrap_or(0);
    let k = curves.len() as f64;
    let mean: Vec<f64> = (0..len)
        .map(|i| curves.iter().map(|c| c[i]).sum::<f64>() / k)
        .collect();
    let std = (0..len)
        .map(|i| (curves.iter().map(|c| (c[i] - mean[i]).powi(2)).sum::<f64>() / k).sqrt())
        .collect();
    Band {
        name: name.to_string(),
        x: (0..len).map(|i| i as f64).collect(),
        mean,
        std,
        bounds: None,
    }
}

pub fn run(args: &IvBenchArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if args.seeds == 0 || args.first_seed >= args.seeds {
        return Err(UsageError::new(format!(
            "--seeds must be at least 1 and above --first-seed (got --seeds {} --first-seed {})",
            args.seeds, args.first_seed
        ))
        .into());
    }
    if args.jobs == 0 {
        return Err(UsageError::new("--jobs must be at least 1").into());
    }
    std::fs::create_dir_all(&args.out)?;
    // With --jobs or Slurm, others run the seeds and this process only collects.
    let slurm = args.launch.launcher == Launcher::Slurm && !args.collect;
    if slurm && args.jobs > 1 {
        return Err(UsageError::new(
            "--jobs is for --launcher local (Slurm runs one task per run)",
        )
        .into());
    }
    let collect = args.collect || args.jobs > 1 || slurm;
    let sizes: Vec<Option<usize>> = if args.sizes.is_empty() {
        vec![None]
    } else {
        args.sizes.iter().copied().map(Some).collect()
    };
    let runs_root = args.out.join("runs");
    let mut groups = Vec::new();
    let mut bases = Vec::new();
    let loaded = args
        .configs
        .iter()
        .map(|p| ivrun::load(p, &args.overrides, None, None, None, Some(&runs_root)))
        .collect::<Result<Vec<_>, _>>()?;
    for (cfg_path, first) in args.configs.iter().zip(&loaded) {
        // Labelled by method, or by the config's file name where two configs share a method.
        let method = first.method_name();
        let shared = loaded.iter().filter(|c| c.method_name() == method).count() > 1;
        let name = match cfg_path.file_stem() {
            Some(stem) if shared => stem.to_string_lossy().to_string(),
            _ => method,
        };
        for size in &sizes {
            let mut ov = args.overrides.clone();
            if let Some(n) = size {
                ov.push(format!("data.n={n}"));
            }
            let base = ivrun::load(cfg_path, &ov, None, None, None, Some(&runs_root))?;
            let label = match size {
                Some(n) => format!("{name} n={n}"),
                None => name.clone(),
            };
            groups.push(Group {
                label,
                size: *size,
                seeds: vec![],
                mse: vec![],
                curves: vec![],
                inner: vec![],
            });
            bases.push(base);
        }
    }
    if args.jobs > 1 && !args.collect {
        spread_seeds(args)?;
    }
    if slurm {
        // One task per unfinished run: the `funcrl iv` command that makes exactly the config
        // `finished` looks for.
        let mut tasks = vec![];
        for seed in args.first_seed..args.seeds {
            for (ci, cfg_path) in args.configs.iter().enumerate() {
                for (si, size) in sizes.iter().enumerate() {
                    let gi = ci * sizes.len() + si;
                    let mut cfg = bases[gi].clone();
                    cfg.seed = seed;
                    if finished(&runs_root, &cfg).is_some() {
                        continue;
                    }
                    let label = format!("{} seed {seed}", groups[gi].label);
                    if let Some(dir) = unfinished(&runs_root, &cfg) {
                        tasks.push(slurm::Task {
                            label,
                            args: vec![
                                "iv".to_string(),
                                "--resume".to_string(),
                                dir.display().to_string(),
                            ],
                        });
                        continue;
                    }
                    let mut a = vec![
                        "iv".to_string(),
                        "--config".to_string(),
                        cfg_path.display().to_string(),
                        "--seed".to_string(),
                        seed.to_string(),
                        "--out".to_string(),
                        runs_root.display().to_string(),
                    ];
                    for o in &args.overrides {
                        a.extend(["--set".to_string(), o.clone()]);
                    }
                    if let Some(n) = size {
                        a.extend(["--set".to_string(), format!("data.n={n}")]);
                    }
                    tasks.push(slurm::Task { label, args: a });
                }
            }
        }
        if !tasks.is_empty()
            && slurm::run(&tasks, &args.out.join("slurm"), &args.launch)?
                != slurm::Outcome::Finished
        {
            return Ok(());
        }
    }
    // Seed-major: a bench stopped early has about as many seeds of every method.
    let total = (args.seeds - args.first_seed) as usize * groups.len();
    let (mut done, mut ran, started) = (0usize, 0usize, std::time::Instant::now());
    // Runs a collect skips that a kill left with a checkpoint (a run would resume them).
    let mut paused = Vec::new();
    for seed in args.first_seed..args.seeds {
        for (g, base) in groups.iter_mut().zip(&bases) {
            let mut cfg = base.clone();
            cfg.seed = seed;
            done += 1;
            let (r, how) = match finished(&runs_root, &cfg) {
                Some(r) => (r, "reused"),
                None if collect => {
                    if let Some(dir) = unfinished(&runs_root, &cfg) {
                        paused.push(dir);
                    }
                    continue;
                }
                None => {
                    let eta = if ran > 0 {
                        let per = started.elapsed().as_secs_f64() / ran as f64;
                        format!(", ETA {:.0} min", per * (total - done + 1) as f64 / 60.0)
                    } else {
                        String::new()
                    };
                    eprintln!(
                        "[iv-bench] run {done}/{total}: {} seed {seed}{eta}",
                        g.label
                    );
                    ran += 1;
                    match unfinished(&runs_root, &cfg) {
                        Some(dir) => (ivrun::resume(&dir, &[], false)?, "resumed"),
                        None => (ivrun::run(&cfg, false)?, "ran"),
                    }
                }
            };
            let m = r.test_mse.unwrap_or(f64::NAN);
            eprintln!(
                "[iv-bench] {} seed {seed}: test_mse {m:.4} ({:.2}s/it, {how})",
                g.label, r.seconds_per_iteration
            );
            g.mse.push(m);
            g.seeds.push(seed);
            g.curves.push(column(&r.run_dir, 1));
            g.inner.push(column(&r.run_dir, 2));
        }
    }
    if args.no_summary {
        return Ok(());
    }
    if !paused.is_empty() {
        eprintln!(
            "[iv-bench] {} unfinished run(s) with a checkpoint, not in the summary (the same command without --collect resumes them): {}",
            paused.len(),
            paused
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    groups.retain(|g| !g.mse.is_empty());
    if groups.is_empty() {
        return Err(UsageError::new(format!(
            "no finished runs of these configs in {}",
            runs_root.display()
        ))
        .into());
    }
    let mut csv = String::from("method,runs,mean,median,std,iqm,iqm_lo,iqm_hi\n");
    let mut md = String::from(
        "| method | runs | mean test MSE | median | std | IQM [95% bootstrap CI] |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for g in &groups {
        let (mean, med, sd) = stats(&g.mse);
        // rliable's conventions: interquartile mean, percentile bootstrap over runs.
        let iqm = funcrl_stats::interval(
            std::slice::from_ref(&g.mse),
            funcrl_stats::iqm,
            funcrl_stats::Bootstrap::default(),
        );
        csv.push_str(&format!(
            "{},{},{mean},{med},{sd},{},{},{}\n",
            g.label,
            g.mse.len(),
            iqm.point,
            iqm.lo,
            iqm.hi
        ));
        md.push_str(&format!(
            "| {} | {} | {mean:.4} | {med:.4} | {sd:.4} | {iqm:.3} |\n",
            g.label,
            g.mse.len()
        ));
    }
    md.push_str(&pairs_table(&groups));
    crate::rundir::write_atomic(&args.out.join("summary.csv"), csv.as_bytes())?;
    crate::rundir::write_atomic(&args.out.join("summary.md"), md.as_bytes())?;
    let boxes: Vec<(String, Vec<f64>)> = groups
        .iter()
        .map(|g| (g.label.clone(), g.mse.clone()))
        .collect();
    plot::boxes(
        &args.out.join("mse_boxes.png"),
        "out-of-sample MSE",
        "test MSE",
        &boxes,
        true,
    )?;
    for (file, title, inner) in [
        ("outer_loss.png", "outer loss", false),
        ("inner_loss.png", "inner loss", true),
    ] {
        let bands: Vec<Band> = groups
            .iter()
            .map(|g| band(&g.label, if inner { &g.inner } else { &g.curves }))
            .collect();
        plot::curves(
            &args.out.join(file),
            title,
            "outer iteration",
            title,
            &bands,
            true,
        )?;
    }
    write!(out, "{md}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(label: &str, size: Option<usize>, seeds: &[u64], mse: &[f64]) -> Group {
        Group {
            label: label.into(),
            size,
            seeds: seeds.to_vec(),
            mse: mse.to_vec(),
            curves: vec![],
            inner: vec![],
        }
    }

    /// P(A < B) by hand: of A's 3 × B's 3 run pairs, A is lower in 3 + 2 + 2 and tied in 1, so
    /// (7 + ½)/9 = 0.83; A is lower on all 3 shared seeds. Groups of another size are not paired.
    #[test]
    fn pairs_count_lower_runs_with_half_ties_within_a_size() {
        let groups = [
            group("a", Some(40), &[0, 1, 2], &[1.0, 2.0, 3.0]),
            group("b", Some(40), &[0, 1, 2], &[2.0, 4.0, 5.0]),
            group("c", Some(80), &[0, 1], &[9.0, 9.0]),
        ];
        let t = pairs_table(&groups);
        assert_eq!(t.matches("\n| ").count(), 2, "{t}"); // header row + one pair
        assert!(t.contains("| a | b | 0.83 ["), "{t}");
        assert!(t.contains("| 3 / 3 |"), "{t}");
        assert!(pairs_table(&groups[2..]).is_empty());
    }
}
