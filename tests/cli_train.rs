//! End-to-end tests of `funcrl train` / `funcrl compare`: a smoke run of every agent, resume
//! equality, the NaN/Inf stop, config errors (exit 2), and a small compare.

use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::{BIN, config, run_dir, tmp};

/// A tiny budget: 200 random steps, 200 steps with updates on batches of 32.
const SMALL: &[&str] = &[
    "--set",
    "total_steps=400",
    "--set",
    "warmup_steps=200",
    "--set",
    "batch_size=32",
    "--set",
    "eval_every=200",
    "--set",
    "eval_episodes=2",
    "--set",
    "checkpoint_every=200",
    "--set",
    "replay.capacity=1000",
    "--quiet",
];

fn train(args: &[&str]) -> Output {
    Command::new(BIN).arg("train").args(args).output().unwrap()
}

fn rows(path: &Path) -> Vec<Vec<f64>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|c| c.parse().unwrap()).collect())
        .collect()
}

#[test]
fn every_agent_trains_for_a_few_hundred_steps() {
    let out = tmp("smoke");
    let o = out.display().to_string();
    let cases: &[(&str, &[&str])] = &[
        ("mle", &[]),
        ("funcid", &[]),
        ("funcid", &["--set", "agent.mode=paper"]),
        (
            "funcid",
            &[
                "--set",
                "agent.mode=network",
                "--set",
                "agent.adjoint_steps=2",
            ],
        ),
        ("omd", &[]),
        (
            "omd",
            &[
                "--set",
                "agent.inverse=cg",
                "--set",
                "agent.cg_iterations=2",
            ],
        ),
        ("vep", &[]),
        (
            "modelfree",
            &["--set", "replay.prioritized={alpha=0.6, beta0=0.4}"],
        ),
    ];
    for (agent, extra) in cases {
        let c = config(agent);
        let mut args = vec!["--config", c.as_str(), "--out", o.as_str()];
        args.extend_from_slice(SMALL);
        args.extend_from_slice(extra);
        let dir = run_dir(&train(&args));
        for f in [
            "config.toml",
            "meta.json",
            "checkpoint.h5",
            "log.h5",
            "summary.json",
        ] {
            assert!(dir.join(f).is_file(), "{agent}: {f} missing");
        }
        let e = rows(&dir.join("evals.csv"));
        assert_eq!(
            e.iter().map(|r| r[0]).collect::<Vec<_>>(),
            vec![200.0, 400.0]
        );
        assert!(e.iter().all(|r| r[1] >= 8.0), "{agent}: {e:?}");
        let l = rows(&dir.join("losses.csv"));
        assert_eq!(l.len(), 2, "{agent}: loss rows at 300 and 400");
        assert!(l.iter().flatten().all(|v| v.is_finite()), "{agent}: {l:?}");
        let header = std::fs::read_to_string(dir.join("losses.csv")).unwrap();
        assert!(
            header.starts_with("global_step,losses/q_loss,losses/model_loss,losses/outer_loss")
        );
    }
}

/// Also with next states and rewards clipped to the replay range and targets to its value range,
/// on a ring smaller than the run,
/// so that the range saved in the checkpoint (which covers evicted transitions) is what the
/// resumed run uses.
#[test]
fn resume_gives_the_numbers_of_an_uninterrupted_run() {
    let c = config("funcid");
    let variants: [(&str, &[&str]); 2] = [
        ("resume", &[]),
        (
            "resume-clip",
            &[
                "--set",
                "model.clip_next_state=true",
                "--set",
                "model.clip_reward=true",
                "--set",
                "q.clip_target=true",
                "--set",
                "replay.capacity=100",
            ],
        ),
    ];
    for (name, extra) in variants {
        let out = tmp(name);
        let (a, b) = (out.join("a"), out.join("b"));
        let (a, b) = (a.display().to_string(), b.display().to_string());
        let base = |total: &'static str, o: &str| -> Vec<String> {
            let mut v: Vec<String> = ["--config", &c, "--out", o]
                .iter()
                .map(|s| s.to_string())
                .collect();
            v.extend(SMALL.iter().map(|s| s.to_string()));
            v.extend(["--set".to_string(), total.to_string()]);
            v.extend(extra.iter().map(|s| s.to_string()));
            v
        };
        let full = base("total_steps=600", &a);
        let dir_a = run_dir(&train(&full.iter().map(String::as_str).collect::<Vec<_>>()));
        let part = base("total_steps=400", &b);
        let dir_b = run_dir(&train(&part.iter().map(String::as_str).collect::<Vec<_>>()));
        let db = dir_b.display().to_string();
        let resumed = run_dir(&train(&[
            "--resume",
            &db,
            "--set",
            "total_steps=600",
            "--quiet",
        ]));
        assert_eq!(resumed, dir_b);
        // losses carry full precision: equal rows mean the same parameters at every logged step
        assert_eq!(
            std::fs::read_to_string(dir_a.join("losses.csv")).unwrap(),
            std::fs::read_to_string(dir_b.join("losses.csv")).unwrap(),
            "{name}"
        );
        let strip =
            |p: &Path| -> Vec<Vec<f64>> { rows(p).into_iter().map(|r| r[..3].to_vec()).collect() };
        assert_eq!(
            strip(&dir_a.join("evals.csv")),
            strip(&dir_b.join("evals.csv"))
        );
        assert_eq!(rows(&dir_a.join("evals.csv")).len(), 3);
    }
}

#[test]
fn non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint() {
    let out = tmp("nan");
    let (c, o) = (config("mle"), out.display().to_string());
    let mut args = vec!["--config", c.as_str(), "--out", o.as_str()];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(&["--set", "q.lr=1e300"]);
    let r = train(&args);
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("losses/") && err.contains("at step") && err.contains("checkpoint (step 200)"),
        "{err}"
    );
    let dir = std::fs::read_dir(&out)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(dir.join("checkpoint.h5").is_file());
    // the kept checkpoint resumes (and fails again the same way, not on a torn file)
    let r2 = train(&["--resume", &dir.display().to_string(), "--quiet"]);
    assert_eq!(r2.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r2.stderr).contains("at step"));
}

#[test]
fn config_errors_name_the_field_and_exit_2() {
    let c = config("funcid");
    let out = tmp("bad");
    let o = out.display().to_string();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--set", "totl_steps=5"],
            &["unknown field `totl_steps`", "total_steps"],
        ),
        (
            &["--set", "agent.kind=dqn"],
            &["unknown variant `dqn`", "funcid", "omd", "vep"],
        ),
        (
            &["--set", "agent.mode=exact"],
            &["unknown variant `exact`", "full", "paper"],
        ),
        (
            &["--set", "model.predict=gaussian"],
            &["`next_state`", "`delta`"],
        ),
        (
            &["--set", "action_bins=5"],
            &["action_bins", "discrete action space"],
        ),
        (
            &["--set", "env=Pendulum-v1", "--set", "action_bins=1"],
            &["action_bins must lie in 2..=10000"],
        ),
        (&["--set", "env=CartPole-v9"], &["CartPole-v1"]),
        (
            &["--set", "warmup_steps=10"],
            &["warmup_steps", "batch_size"],
        ),
        (
            &["--set", "model.hidden=[0]"],
            &["model.hidden", "at least 1"],
        ),
        (&["--set", "q.hidden=[32,0]"], &["q.hidden", "at least 1"]),
        (&["--set", "q.steps=0"], &["q.steps"]),
        (&["--set", "model.grad_clip=-1"], &["model.grad_clip"]),
        (
            &[
                "--set",
                "agent.mode=network",
                "--set",
                "model.clip_next_state=true",
            ],
            &["model.clip_next_state", "host-kernel"],
        ),
        (
            &[
                "--set",
                "agent.mode=network",
                "--set",
                "model.clip_reward=true",
            ],
            &["model.clip_reward", "host-kernel"],
        ),
        (
            &["--set", "agent.mode=network", "--set", "q.clip_target=true"],
            &["q.clip_target", "host-kernel"],
        ),
        (&["--set", "q.policy=max"], &["`min`", "`mean`"]),
        (&["--set", "q.init=xavier"], &["`uniform`", "`orthogonal`"]),
        (
            &["--set", "total_steps=500"],
            &["total_steps", "warmup_steps"],
        ),
        (&["--set", "updates_per_step=0"], &["updates_per_step"]),
        (
            &["--set", "total_steps=1000000000000000"],
            &["GiB", "replay.capacity"],
        ),
        (&["--set", "q.hidden=[100000000]"], &["GiB", "q.hidden"]),
    ];
    for (extra, want) in cases {
        let mut args = vec!["--config", c.as_str(), "--out", o.as_str(), "--quiet"];
        args.extend_from_slice(extra);
        let r = train(&args);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{extra:?}: {err}");
        for w in *want {
            assert!(err.contains(w), "{extra:?}: '{w}' not in {err}");
        }
    }
    // Refused before anything was created.
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
    let r = train(&["--resume", &o]);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("not a run directory"));
}

#[test]
fn compare_plots_and_tabulates() {
    let out = tmp("compare");
    let (m, f, fp) = (config("mle"), config("funcid"), config("funcid_paper"));
    let mut args: Vec<&str> = vec![
        "compare", "--config", &m, &f, &fp, "--seeds", "0,1", "--jobs", "2",
    ];
    let o = out.display().to_string();
    args.extend_from_slice(&["--out", &o]);
    for s in SMALL.iter().filter(|s| **s != "--quiet") {
        args.push(s);
    }
    let r = Command::new(BIN).args(&args).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let table = String::from_utf8(r.stdout).unwrap();
    // two funcid configs: told apart by file name
    assert!(
        table.contains("| mle |")
            && table.contains("| funcid (cartpole_funcid) |")
            && table.contains("| funcid (cartpole_funcid_paper) |"),
        "{table}"
    );
    assert!(out.join("curves.png").is_file() && out.join("summary.md").is_file());

    // Rerunning keeps finished runs and resumes unfinished ones from their checkpoints: drop one
    // run's summary (as if killed after its last checkpoint) and compare again.
    let runs = out.join("runs").join("1_funcid_1");
    let dir = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("summary.json").is_file())
        .unwrap();
    std::fs::remove_file(dir.join("summary.json")).unwrap();
    let r = Command::new(BIN).args(&args).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let log = String::from_utf8_lossy(&r.stderr);
    assert_eq!(log.matches("done already").count(), 5, "{log}");
    assert!(
        log.contains("resume funcid (cartpole_funcid) seed 1"),
        "{log}"
    );
    assert_eq!(String::from_utf8(r.stdout).unwrap(), table);

    // `--with` reports runs of an earlier compare beside new ones, nothing rerun: the MLE runs
    // (reused) with the two FuncID configs' runs added under new labels give the same rows and
    // the same P(A > B) as the compare that ran them all.
    let out2 = tmp("compare-with");
    let o2 = out2.display().to_string();
    let (w1, w2) = (format!("fid={o}:1_funcid"), format!("paper={o}:2_funcid"));
    let mut args2: Vec<&str> = vec!["compare", "--config", &m, "--seeds", "0,1", "--out", &o];
    args2.extend_from_slice(&["--with", &w1, "--with", &w2]);
    for s in SMALL.iter().filter(|s| **s != "--quiet") {
        args2.push(s);
    }
    let r = Command::new(BIN).args(&args2).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let log = String::from_utf8_lossy(&r.stderr);
    assert_eq!(log.matches("done already").count(), 2, "{log}");
    let table2 = String::from_utf8(r.stdout).unwrap();
    let swap = table
        .replace("funcid (cartpole_funcid_paper)", "paper")
        .replace("funcid (cartpole_funcid)", "fid");
    let rows = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("| "))
            .map(|l| l.to_string())
            .collect()
    };
    assert_eq!(rows(&table2), rows(&swap), "{table2}\nvs\n{swap}");
    // Without --config nothing runs: the table holds the --with agents only.
    let out3 = tmp("compare-collect");
    let o3 = out3.display().to_string();
    let w0 = format!("mle={o}:0_mle");
    let r = Command::new(BIN)
        .args([
            "compare", "--with", &w0, "--with", &w1, "--with", &w2, "--out", &o3,
        ])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(rows(&String::from_utf8(r.stdout).unwrap()), rows(&swap));
    assert!(out3.join("summary.md").is_file() && !out3.join("runs").exists());
    // The diverged-runs column: these short runs' Bellman errors stay far below 10³.
    assert!(table2.contains("| outer loss > 10³ (runs) |") && table2.contains("| 0/2 |"));
    // A bad --with is refused before anything runs, naming the flag.
    let bad = format!("mle={o}:1_funcid");
    let r = Command::new(BIN)
        .args([
            "compare", "--config", &m, "--seeds", "0", "--out", &o2, "--with", &bad,
        ])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
    let e = String::from_utf8_lossy(&r.stderr);
    assert!(
        e.contains("--with") && e.contains("already an agent"),
        "{e}"
    );
    assert_eq!(std::fs::read_dir(&out2).unwrap().count(), 0);
}

#[test]
fn pendulum_trains_on_an_action_grid() {
    // Continuous actions: the soft-Q picks among `action_bins` torques, the model sees the torque.
    let out = tmp("pendulum");
    let o = out.display().to_string();
    let c = config("funcid");
    let mut args = vec!["--config", c.as_str(), "--out", o.as_str()];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(&["--set", "env=Pendulum-v1", "--set", "action_bins=3"]);
    let dir = run_dir(&train(&args));
    let e = rows(&dir.join("evals.csv"));
    assert_eq!(
        e.iter().map(|r| r[0]).collect::<Vec<_>>(),
        vec![200.0, 400.0]
    );
    // Pendulum's per-step reward lies in [-16.27, 0] and episodes last 200 steps.
    assert!(
        e.iter().all(|r| r[1] <= 0.0 && r[1] >= -16.3 * 200.0),
        "{e:?}"
    );
    let l = rows(&dir.join("losses.csv"));
    assert!(l.iter().flatten().all(|v| v.is_finite()), "{l:?}");
    let cfg = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(cfg.contains("action_bins = 3"), "{cfg}");
}

/// Mean of the second column of evals.csv (the AUC) in the finished run inside a job folder.
fn job_auc(job: &Path) -> f64 {
    let dir = std::fs::read_dir(job)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("summary.json").is_file())
        .unwrap();
    let e = rows(&dir.join("evals.csv"));
    e.iter().map(|r| r[1]).sum::<f64>() / e.len() as f64
}

#[test]
fn compare_grid_selects_by_mean_auc_and_reports_fresh_seeds() {
    let out = tmp("grid");
    let o = out.display().to_string();
    let (m, f) = (config("mle"), config("funcid_reference"));
    let mut args: Vec<&str> = vec![
        "compare",
        "--config",
        &m,
        &f,
        "--seeds",
        "0,1",
        "--final-seeds",
        "7,8",
        "--grid",
        "q.lr=1e-3,3e-3",
        "--jobs",
        "2",
        "--reps",
        "2000",
        "--out",
        &o,
    ];
    for s in SMALL.iter().filter(|s| **s != "--quiet") {
        args.push(s);
    }
    let r = Command::new(BIN).args(&args).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let table = String::from_utf8(r.stdout).unwrap();
    let grid = std::fs::read_to_string(out.join("grid.md")).unwrap();
    assert_eq!(grid.matches('★').count(), 3, "{grid}"); // one per agent + the legend
    for (ci, kind) in [(0, "mle"), (1, "funcid")] {
        // The oracle: the point whose two selection runs have the higher mean AUC.
        let mean_auc = |lr: &str| {
            let p = out
                .join("grid")
                .join(format!("{ci}_{kind}"))
                .join(format!("q.lr={lr}"));
            (job_auc(&p.join("0")) + job_auc(&p.join("1"))) / 2.0
        };
        let best = if mean_auc("3e-3") > mean_auc("1e-3") {
            "3e-3"
        } else {
            "1e-3"
        };
        for s in [7, 8] {
            let job = std::fs::read_to_string(
                out.join("runs")
                    .join(format!("{ci}_{kind}_{s}"))
                    .join("job.json"),
            )
            .unwrap();
            assert!(job.contains(&format!("\"q.lr={best}\"")), "{kind}: {job}");
        }
        assert!(table.contains(&format!("q.lr={best}")), "{table}");
    }
    // rliable figures: IQM with its CI per agent, P(A > B) for the pair.
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["agents"].as_array().unwrap().len(), 2);
    let iqm = &stats["agents"][0]["auc_iqm"];
    assert!(iqm["lo"].as_f64().unwrap() <= iqm["point"].as_f64().unwrap());
    assert_eq!(stats["agents"][0]["auc"].as_array().unwrap().len(), 2);
    assert!(stats["pairs"][0]["p_auc"]["point"].is_number());
    assert!(out.join("profile.png").is_file());

    // Final seeds must be fresh, and an output folder is not reused for a different job.
    let mut bad = args.clone();
    let i = bad.iter().position(|a| *a == "7,8").unwrap();
    bad[i] = "1,9";
    let r = Command::new(BIN).args(&bad).output().unwrap();
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("fresh"));
    let mut other = args.clone();
    other.extend_from_slice(&["--set", "q.gamma=0.9"]);
    let r = Command::new(BIN).args(&other).output().unwrap();
    assert_eq!(
        r.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(String::from_utf8_lossy(&r.stderr).contains("different job"));
}

#[test]
fn inspect_measures_a_runs_model_and_refuses_what_has_none() {
    let out = tmp("inspect");
    let o = out.display().to_string();
    let c = config("funcid");
    let mut args = vec!["--config", c.as_str(), "--out", o.as_str()];
    args.extend_from_slice(SMALL);
    let dir = run_dir(&train(&args));
    let d = dir.display().to_string();
    let r = Command::new(BIN)
        .args(["inspect", &d, "--transitions", "300", "--horizon", "5"])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stdout).contains("state RMSE"));
    let rep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("inspect.json")).unwrap()).unwrap();
    assert_eq!(rep["transitions"], 300);
    assert_eq!(rep["open_loop_rmse"].as_array().unwrap().len(), 5);
    assert!(rep["state_rmse"].as_f64().unwrap() > 0.0);
    assert_eq!(rep["clips"], serde_json::json!([]));
    assert!(dir.join("inspect.png").is_file());
    // The policy report: 20 episodes by default, returns within CartPole's [1, 500].
    let p = &rep["policy"];
    assert_eq!(p["episodes"], 20);
    for k in ["softmax_return_mean", "greedy_return_mean"] {
        let v = p[k].as_f64().unwrap();
        assert!((1.0..=500.0).contains(&v), "{k}: {v}");
    }
    let top = p["mean_top_probability"].as_f64().unwrap();
    assert!((0.5..=1.0).contains(&top), "{top}");
    assert!(String::from_utf8_lossy(&r.stdout).contains("greedy"));

    // A run that clips its model is measured with its clips: CartPole's reward is always 1, so
    // the clipped reward error is exactly 0 whatever the reward head predicts.
    let c = config("funcid_full_k2_clip");
    let mut args = vec!["--config", c.as_str(), "--out", o.as_str()];
    args.extend_from_slice(SMALL);
    let dir = run_dir(&train(&args));
    let r = Command::new(BIN)
        .args([
            "inspect",
            &dir.display().to_string(),
            "--transitions",
            "300",
        ])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stdout).contains("q.clip_target"));
    let rep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("inspect.json")).unwrap()).unwrap();
    assert_eq!(
        rep["clips"],
        serde_json::json!([
            "model.clip_next_state",
            "model.clip_reward",
            "q.clip_target"
        ])
    );
    assert_eq!(rep["reward_mae"].as_f64(), Some(0.0));

    let m = config("modelfree");
    let mut args = vec!["--config", m.as_str(), "--out", o.as_str()];
    args.extend_from_slice(SMALL);
    let mf = run_dir(&train(&args)).display().to_string();
    for bad in [vec!["inspect", mf.as_str()], vec!["inspect", o.as_str()]] {
        let r = Command::new(BIN).args(&bad).output().unwrap();
        assert_eq!(r.status.code(), Some(2), "{bad:?}");
    }
}

/// A rerun reuses a finished run only for the same resolved config: editing the config file makes
/// it a different job, which `compare` refuses instead of reporting the old runs.
#[test]
fn compare_refuses_runs_of_an_edited_config() {
    let out = tmp("edited");
    let cfg = out.join("mle.toml");
    std::fs::copy(config("mle"), &cfg).unwrap();
    let (c, o) = (
        cfg.display().to_string(),
        out.join("cmp").display().to_string(),
    );
    let mut args: Vec<&str> = vec!["compare", "--config", &c, "--seeds", "0", "--out", &o];
    for s in SMALL.iter().filter(|s| **s != "--quiet") {
        args.push(s);
    }
    let r = Command::new(BIN).args(&args).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("gamma = 0.99", "gamma = 0.9")).unwrap();
    let r = Command::new(BIN).args(&args).output().unwrap();
    assert_eq!(
        r.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(String::from_utf8_lossy(&r.stderr).contains("different job"));
}
