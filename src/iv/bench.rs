//! `funcrl iv-bench`: configs (methods) × sizes × seeds → summary table of test MSE
//! (mean/median/std), a log-scale box plot and outer-loss curves (mean ± std over seeds).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::config::UsageError;
use crate::iv::run as ivrun;
use crate::plot::{self, Band};
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
}

struct Group {
    label: String,
    mse: Vec<f64>,
    curves: Vec<Vec<f64>>,
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (mean, plot::quantile(&s, 0.5), sd)
}

/// A finished run under `root` (its `result.json` exists) whose resolved config equals `cfg`.
fn finished(root: &Path, cfg: &IvConfig) -> Option<ivrun::IvResult> {
    let want = toml::to_string_pretty(cfg).ok()?;
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| Some(e.ok()?.path()))
        .collect();
    dirs.sort();
    dirs.into_iter().find_map(|d| {
        let config = std::fs::read_to_string(d.join("config.toml")).ok()?;
        if config != want {
            return None;
        }
        let text = std::fs::read_to_string(d.join("result.json")).ok()?;
        let mut r: ivrun::IvResult = serde_json::from_str(&text).ok()?;
        r.run_dir = d;
        Some(r)
    })
}

fn outer_losses(dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("metrics.csv"))
        .map(|t| {
            t.lines()
                .skip(1)
                .filter_map(|l| l.split(',').nth(1)?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

pub fn run(args: &IvBenchArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if args.seeds == 0 || args.first_seed >= args.seeds {
        return Err(UsageError::new(format!(
            "--seeds must be at least 1 and above --first-seed (got --seeds {} --first-seed {})",
            args.seeds, args.first_seed
        ))
        .into());
    }
    std::fs::create_dir_all(&args.out)?;
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
                mse: vec![],
                curves: vec![],
            });
            bases.push(base);
        }
    }
    // Seed-major: a bench stopped early has about as many seeds of every method.
    let total = (args.seeds - args.first_seed) as usize * groups.len();
    let (mut done, mut ran, started) = (0usize, 0usize, std::time::Instant::now());
    for seed in args.first_seed..args.seeds {
        for (g, base) in groups.iter_mut().zip(&bases) {
            let mut cfg = base.clone();
            cfg.seed = seed;
            done += 1;
            let (r, how) = match finished(&runs_root, &cfg) {
                Some(r) => (r, "reused"),
                None if args.collect => continue,
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
                    (ivrun::run(&cfg, false)?, "ran")
                }
            };
            let m = r.test_mse.unwrap_or(f64::NAN);
            eprintln!(
                "[iv-bench] {} seed {seed}: test_mse {m:.4} ({:.2}s/it, {how})",
                g.label, r.seconds_per_iteration
            );
            g.mse.push(m);
            g.curves.push(outer_losses(&r.run_dir));
        }
    }
    groups.retain(|g| !g.mse.is_empty());
    if groups.is_empty() {
        return Err(UsageError::new(format!(
            "no finished runs of these configs in {}",
            runs_root.display()
        ))
        .into());
    }
    let mut csv = String::from("method,runs,mean,median,std\n");
    let mut md = String::from(
        "| method | runs | mean test MSE | median | std |\n|---|---:|---:|---:|---:|\n",
    );
    for g in &groups {
        let (mean, med, sd) = stats(&g.mse);
        csv.push_str(&format!("{},{},{mean},{med},{sd}\n", g.label, g.mse.len()));
        md.push_str(&format!(
            "| {} | {} | {mean:.4} | {med:.4} | {sd:.4} |\n",
            g.label,
            g.mse.len()
        ));
    }
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
    let bands: Vec<Band> = groups
        .iter()
        .map(|g| {
            let len = g.curves.iter().map(Vec::len).min().unwrap_or(0);
            let k = g.curves.len() as f64;
            let mean: Vec<f64> = (0..len)
                .map(|i| g.curves.iter().map(|c| c[i]).sum::<f64>() / k)
                .collect();
            let std = (0..len)
                .map(|i| {
                    (g.curves
                        .iter()
                        .map(|c| (c[i] - mean[i]).powi(2))
                        .sum::<f64>()
                        / k)
                        .sqrt()
                })
                .collect();
            Band {
                name: g.label.clone(),
                x: (0..len).map(|i| i as f64).collect(),
                mean,
                std,
                bounds: None,
            }
        })
        .collect();
    plot::curves(
        &args.out.join("outer_loss.png"),
        "outer loss",
        "outer iteration",
        "outer loss",
        &bands,
        true,
    )?;
    write!(out, "{md}")?;
    Ok(())
}
