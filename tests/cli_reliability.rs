//! Failures that must not be silent: damaged checkpoints and logs are refused (exit 2, nothing in
//! the run directory changed), a live run cannot be resumed twice, SIGTERM stops `train` at a
//! checkpoint that resumes to the uninterrupted run's numbers, and SIGTERM to `compare` leaves
//! none of its children running.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{BIN, config, run_dir, tmp};

fn small(total: u64) -> Vec<String> {
    [
        format!("total_steps={total}"),
        "warmup_steps=200".into(),
        "batch_size=32".into(),
        "eval_every=200".into(),
        "eval_episodes=2".into(),
        "checkpoint_every=200".into(),
        "replay.capacity=100000".into(),
    ]
    .into_iter()
    .flat_map(|s| ["--set".to_string(), s])
    .collect()
}

fn train(args: &[String]) -> Output {
    Command::new(BIN).arg("train").args(args).output().unwrap()
}

fn new_run(tag: &str, total: u64) -> PathBuf {
    let out = tmp(tag);
    let mut args = vec![
        "--config".to_string(),
        config("funcid"),
        "--out".into(),
        out.display().to_string(),
        "--quiet".into(),
    ];
    args.extend(small(total));
    run_dir(&train(&args))
}

fn resume(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "--resume".to_string(),
        dir.display().to_string(),
        "--quiet".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    train(&args)
}

fn flip(path: &Path, offset: u64) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[b[0] ^ 0x5a]).unwrap();
}

/// File offset of a dataset's values (contiguous layout).
fn offset(ckpt: &Path, dataset: &str) -> u64 {
    let f = hdf5::File::open(ckpt).unwrap();
    f.dataset(dataset).unwrap().offset().expect("contiguous")
}

#[test]
fn damaged_checkpoints_and_logs_are_refused_and_change_nothing() {
    let dir = new_run("damage", 400);
    let ckpt = dir.join("checkpoint.h5");
    let good = std::fs::read(&ckpt).unwrap();
    let config = std::fs::read(dir.join("config.toml")).unwrap();
    // Bytes flipped inside the Q weights, the replay observations and the counters; then a
    // truncated file.
    for (ds, at) in [
        ("agent/q", 40),
        ("buffer/obs", 1000),
        ("state/counters", 0),
        ("agent/model_opt_v", 8),
    ] {
        std::fs::write(&ckpt, &good).unwrap();
        flip(&ckpt, offset(&ckpt, ds) + at);
        let r = resume(&dir, &["--set", "total_steps=600"]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{ds}: {err}");
        assert!(
            err.contains("checkpoint.h5") && err.contains("damaged"),
            "{ds}: {err}"
        );
        assert_eq!(
            std::fs::read(dir.join("config.toml")).unwrap(),
            config,
            "{ds}"
        );
    }
    std::fs::write(&ckpt, &good[..good.len() / 2]).unwrap();
    let r = resume(&dir, &["--set", "total_steps=600"]);
    assert_eq!(
        r.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(std::fs::read(dir.join("config.toml")).unwrap(), config);

    // A damaged log line is named, not skipped.
    std::fs::write(&ckpt, &good).unwrap();
    let evals = std::fs::read_to_string(dir.join("evals.csv")).unwrap();
    let mut lines: Vec<String> = evals.lines().map(String::from).collect();
    lines[1] = lines[1].replacen(',', ",x", 1);
    std::fs::write(dir.join("evals.csv"), lines.join("\n") + "\n").unwrap();
    let r = resume(&dir, &["--set", "total_steps=600"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(err.contains("evals.csv, line 2"), "{err}");
    assert_eq!(std::fs::read(dir.join("config.toml")).unwrap(), config);

    // Intact files resume.
    std::fs::write(dir.join("evals.csv"), evals).unwrap();
    let r = resume(&dir, &["--set", "total_steps=600"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}

#[test]
fn a_run_held_by_a_live_process_is_not_resumed_twice() {
    let dir = new_run("lock", 400);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("run.lock"))
        .unwrap();
    f.try_lock().unwrap();
    let r = resume(&dir, &[]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(err.contains("in use by another funcrl process"), "{err}");
    drop(f);
    assert!(resume(&dir, &[]).status.success());
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigterm(pid: u32) {
    // SAFETY: kill(2) on a child we spawned.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

fn rows(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split(',').map(String::from).collect())
        .collect()
}

#[test]
fn sigterm_stops_train_at_a_checkpoint_that_resumes_exactly() {
    let total = 6000;
    let reference = new_run("sig-ref", total);
    let out = tmp("sig");
    let mut args = vec![
        "train".to_string(),
        "--config".into(),
        config("funcid"),
        "--out".into(),
        out.display().to_string(),
        "--quiet".into(),
    ];
    args.extend(small(total));
    let child = Command::new(BIN)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stop it once updates have started (after the 200 warm-up steps).
    wait_for("the first loss rows", Duration::from_secs(60), || {
        std::fs::read_dir(&out).unwrap().flatten().any(|d| {
            std::fs::read_to_string(d.path().join("losses.csv"))
                .is_ok_and(|t| t.lines().count() > 3)
        })
    });
    sigterm(child.id());
    let r = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(143), "{err}");
    assert!(err.contains("stopped by SIGTERM at step"), "{err}");
    let dir = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let log = std::fs::read_to_string(dir.join("run.log")).unwrap();
    assert!(log.contains("resume with: funcrl train --resume"), "{log}");
    assert!(!dir.join("summary.json").exists());
    let stopped_at = rows(&dir.join("losses.csv")).len();
    assert!(
        stopped_at < (total / 100) as usize,
        "it stopped before the end"
    );

    let r = resume(&dir, &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(
        std::fs::read_to_string(dir.join("losses.csv")).unwrap(),
        std::fs::read_to_string(reference.join("losses.csv")).unwrap()
    );
    let returns = |d: &Path| -> Vec<Vec<String>> {
        rows(&d.join("evals.csv"))
            .into_iter()
            .map(|r| r[..3].to_vec())
            .collect()
    };
    assert_eq!(returns(&dir), returns(&reference));
}

/// Processes whose command line mentions `needle`.
fn processes_with(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .count()
}

#[test]
fn sigterm_to_compare_stops_every_child() {
    let out = tmp("compare-sig");
    let o = out.display().to_string();
    let mut args = vec![
        "compare".to_string(),
        "--config".into(),
        config("mle"),
        config("funcid"),
        "--seeds".into(),
        "0,1".into(),
        "--jobs".into(),
        "2".into(),
        "--out".into(),
        o.clone(),
    ];
    args.extend(small(200_000));
    let child = Command::new(BIN)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let runs = out.join("runs");
    wait_for("two running children", Duration::from_secs(60), || {
        ["0_mle_0", "0_mle_1"].iter().all(|j| {
            std::fs::read_dir(runs.join(j))
                .map(|mut d| d.any(|e| e.unwrap().path().join("losses.csv").is_file()))
                .unwrap_or(false)
        })
    });
    sigterm(child.id());
    let r = child.wait_with_output().unwrap();
    assert_eq!(
        r.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(processes_with(&o), 0, "children left running");
    // Each child stopped at a checkpoint that a rerun resumes.
    for j in ["0_mle_0", "0_mle_1"] {
        let d = std::fs::read_dir(runs.join(j))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.join("config.toml").is_file())
            .unwrap();
        let log = std::fs::read_to_string(d.join("run.log")).unwrap();
        assert!(log.contains("stopped by SIGTERM"), "{j}: {log}");
        assert!(d.join("checkpoint.h5").is_file());
    }
}

/// Runs `funcrl args`; returns its exit status and stderr, or None when `long_run` and it was
/// still running after 3 s (a legal long request). Fails the test if it runs past `limit`.
fn run_limited(
    args: &[String],
    limit: Duration,
    long_run: bool,
    what: &str,
) -> Option<(Option<i32>, String)> {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let limit = if long_run {
        Duration::from_secs(3)
    } else {
        limit
    };
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            assert!(long_run, "{what}: still running after {limit:?}");
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    Some((status.code(), err))
}

/// Exit 0, 2 with nothing left in `out`, or 1 only with the designed stop's message `stop`.
fn check_outcome(what: &str, code: Option<i32>, err: &str, stop: &str, out: &Path) {
    let designed_stop = code == Some(1) && err.contains(stop);
    assert!(
        code == Some(0) || code == Some(2) || designed_stop,
        "{what}: exit {code:?}: {err}"
    );
    if code == Some(2) {
        assert!(
            !out.exists() || std::fs::read_dir(out).unwrap().count() == 0,
            "{what}: refused but left a run directory"
        );
    }
}

/// No value reachable through `--set` may panic, hang or leave a run directory behind when it is
/// refused: every adversarial value of every numeric or list field exits with 0 or 2 (or 1 from the
/// NaN/Inf guard, with its message).
#[test]
fn adversarial_set_values_exit_0_or_2_and_never_panic() {
    let keys = [
        "total_steps",
        "warmup_steps",
        "batch_size",
        "eval_every",
        "eval_episodes",
        "checkpoint_every",
        "log_every",
        "updates_per_step",
        "action_bins",
        "q.lr",
        "q.tau",
        "q.gamma",
        "q.alpha",
        "q.epsilon",
        "q.hidden",
        "q.steps",
        "model.lr",
        "model.hidden",
        "model.grad_clip",
        "replay.capacity",
        "agent.adjoint_steps",
    ];
    let values = [
        "0",
        "-1",
        "1e300",
        "nan",
        "inf",
        "18446744073709551615",
        "9223372036854775807",
        "[]",
        "[0]",
        "[1000000000]",
        "\"x\"",
        "true",
    ];
    let out = tmp("fuzz");
    let o = out.display().to_string();
    for key in keys {
        for v in values {
            let mut args = vec![
                "train".to_string(),
                "--config".into(),
                config("funcid"),
                "--out".into(),
                o.clone(),
                "--quiet".into(),
            ];
            args.extend(small(400));
            args.extend(["--set".to_string(), format!("{key}={v}")]);
            // A run of 9.2e18 steps on a bounded replay buffer is a legal (long) request: it only
            // has to be running.
            let long_run = key == "total_steps" && v == "9223372036854775807";
            let what = format!("{key}={v}");
            let Some((code, err)) = run_limited(&args, Duration::from_secs(30), long_run, &what)
            else {
                let _ = std::fs::remove_dir_all(&out);
                std::fs::create_dir_all(&out).unwrap();
                continue;
            };
            // Exit 1 only as the designed NaN/Inf stop (a learning rate of 1e300 is legal).
            check_outcome(
                &what,
                code,
                &err,
                "run stopped; the last good checkpoint",
                &out,
            );
            let _ = std::fs::remove_dir_all(&out);
            std::fs::create_dir_all(&out).unwrap();
        }
    }
}

/// The same for deep IV runs: adversarial values exit 0 or 2, never a panic or an abort, and a
/// refused run leaves no run directory.
#[test]
fn adversarial_iv_values_exit_0_or_2_and_never_panic() {
    let cfg = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("configs/iv/dsprites_funcid.toml")
        .display()
        .to_string();
    let out = tmp("ivfuzz");
    let o = out.display().to_string();
    let base = [
        "data.n=200",
        "iterations=2",
        "network.treatment_hidden=[8]",
        "network.instrument_hidden=[8]",
        "network.features=4",
        "inner.steps=2",
        "method.steps=2",
    ];
    let keys = [
        "iterations",
        "data.n",
        "stage2_ridge",
        "inner.ridge",
        "inner.steps",
        "network.features",
        "network.treatment_hidden",
        "outer_optimizer.lr",
        "outer_optimizer.weight_decay",
        "method.optimizer.lr",
    ];
    let values = [
        "0",
        "-1",
        "nan",
        "inf",
        "1e300",
        "[]",
        "[0]",
        "1000000000",
        "\"x\"",
    ];
    for key in keys {
        for v in values {
            let mut args = vec!["iv".to_string(), "--config".into(), cfg.clone()];
            for b in base {
                args.extend(["--set".to_string(), b.to_string()]);
            }
            args.extend([
                "--set".to_string(),
                format!("out={o}"),
                "--set".into(),
                format!("{key}={v}"),
            ]);
            // A billion iterations is a legal (long) request: it only has to be running.
            let long_run = key == "iterations" && v == "1000000000";
            let what = format!("{key}={v}");
            let Some((code, err)) = run_limited(&args, Duration::from_secs(60), long_run, &what)
            else {
                let _ = std::fs::remove_dir_all(&out);
                continue;
            };
            // Exit 1 only from the fit's own non-finite-loss stop (a step size of 1e300).
            check_outcome(&what, code, &err, "is not finite", &out);
            let _ = std::fs::remove_dir_all(&out);
        }
    }
}

/// Every CSV value of a run is in its TensorBoard event files at the same step and nothing else,
/// after a kill and a resume too (each step once).
#[test]
fn tensorboard_mirrors_the_csv_logs_through_a_resume() {
    let dir = new_run("tb", 800);
    let check = |dir: &Path| {
        for (csv, stem) in [("evals.csv", "evals"), ("losses.csv", "losses")] {
            let rows = rows(&dir.join(csv));
            let header = &rows[0];
            let mut want: Vec<(i64, String, f32)> = vec![];
            for r in &rows[1..] {
                let step: f64 = r[0].parse().unwrap();
                for (tag, v) in header[1..].iter().zip(&r[1..]) {
                    want.push((step as i64, tag.clone(), v.parse::<f64>().unwrap() as f32));
                }
            }
            let got = common::read_event_scalars(
                &dir.join("tb")
                    .join(format!("events.out.tfevents.funcrl.{stem}")),
            );
            assert_eq!(got.len(), want.len(), "{csv}");
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    g.0 == w.0 && g.1 == w.1 && (g.2 == w.2 || (g.2.is_nan() && w.2.is_nan())),
                    "{csv}: {g:?} vs {w:?}"
                );
            }
        }
        assert!(dir.join("tb/events.out.tfevents.funcrl.config").is_file());
    };
    check(&dir);
    // As if killed after the checkpoint at step 600: the summary is gone and the logs ran ahead.
    std::fs::remove_file(dir.join("summary.json")).unwrap();
    let r = resume(&dir, &["--set", "total_steps=1000"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    check(&dir);
}

/// Identical `train` commands started together never share a run directory.
#[test]
fn concurrent_identical_runs_get_their_own_directories() {
    let out = tmp("concurrent");
    let mut args = vec![
        "train".to_string(),
        "--config".into(),
        config("mle"),
        "--out".into(),
        out.display().to_string(),
        "--quiet".into(),
    ];
    args.extend(small(400));
    for round in 0..3 {
        let children: Vec<_> = (0..4)
            .map(|_| {
                Command::new(BIN)
                    .args(&args)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let r = c.wait_with_output().unwrap();
            assert!(
                r.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&r.stderr)
            );
        }
    }
    let dirs: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(dirs.len(), 12, "{dirs:?}");
    // Each holds one run's logs, not interleaved ones: the same as every other (same seed).
    let first = std::fs::read_to_string(dirs[0].join("losses.csv")).unwrap();
    for d in &dirs {
        assert_eq!(
            std::fs::read_to_string(d.join("losses.csv")).unwrap(),
            first,
            "{d:?}"
        );
        assert!(d.join("summary.json").is_file());
    }
}

/// A deep IV run of `config` (configs/iv/) on tiny networks, with `iterations`.
fn iv_args(config: &str, extra: &[&str], iterations: &str, out: &Path) -> Vec<String> {
    let cfg = common::root().join("configs/iv").join(config);
    let mut args = vec![
        "iv".to_string(),
        "--config".into(),
        cfg.display().to_string(),
    ];
    let mut sets: Vec<String> = [
        "data.n=200",
        "inner.steps=2",
        "eval_every=2",
        "checkpoint_every=3",
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect();
    sets.push(format!("iterations={iterations}"));
    sets.push(format!("out={}", out.display()));
    for s in sets {
        args.extend(["--set".to_string(), s]);
    }
    args
}

/// metrics.csv without its wall-clock column (`seconds`, the sixth).
fn metrics_without_time(dir: &Path) -> Vec<Vec<String>> {
    rows(&dir.join("metrics.csv"))
        .into_iter()
        .map(|mut r| {
            r.remove(5);
            r
        })
        .collect()
}

/// A killed deep IV run resumes from its checkpoint to exactly the numbers of an uninterrupted
/// run — for every method's carried state (FuncID's adjoint network and optimiser, its own
/// power-iteration slot in the reference config, AID's warm start, penalty's optimiser, DFIV's
/// covariate net and optimiser) — whether it was stopped by SIGTERM (checkpoint written where it
/// stopped) or SIGKILL (the rows after the last periodic checkpoint are dropped and redone).
#[test]
fn a_killed_iv_run_resumes_to_the_uninterrupted_numbers() {
    let tiny = [
        "network.treatment_hidden=[8]",
        "network.instrument_hidden=[8]",
        "network.features=4",
    ];
    let covariate = [
        "network.instrument_hidden=[8]",
        "network.covariate.hidden=[8]",
        "network.covariate.steps=2",
        "network.spectral_norm=true",
    ];
    let cases: [(&str, &[&str], i32); 7] = [
        ("dsprites_dfiv.toml", &tiny, libc::SIGTERM),
        ("dsprites_funcid.toml", &tiny, libc::SIGKILL),
        ("dsprites_funcid_reference.toml", &tiny, libc::SIGTERM),
        ("dsprites_aid.toml", &tiny, libc::SIGKILL),
        ("dsprites_itd.toml", &tiny, libc::SIGKILL),
        ("dsprites_penalty.toml", &tiny, libc::SIGTERM),
        ("demand_dfiv_covariate.toml", &covariate, libc::SIGKILL),
    ];
    for (config, extra, signal) in cases {
        let out = tmp("ivresume");
        let child = Command::new(BIN)
            .args(iv_args(config, extra, "1000000", &out.join("a")))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let dir = || {
            std::fs::read_dir(out.join("a"))
                .ok()
                .and_then(|mut d| d.next())
                .map(|e| e.unwrap().path())
        };
        // Past the first periodic checkpoint and a few rows beyond it.
        wait_for(
            "a checkpoint and more rows",
            Duration::from_secs(120),
            || {
                dir().is_some_and(|d| {
                    d.join("checkpoint.h5").is_file()
                        && std::fs::read_to_string(d.join("metrics.csv"))
                            .is_ok_and(|t| t.lines().count() > 8)
                })
            },
        );
        unsafe {
            libc::kill(child.id() as libc::pid_t, signal);
        }
        let r = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        let a = dir().unwrap();
        if signal == libc::SIGTERM {
            assert_eq!(r.status.code(), Some(143), "{config}: {err}");
            assert!(err.contains("checkpoint written"), "{config}: {err}");
        }
        // Three iterations more than the killed run had logged (the header is a line too).
        let n = (rows(&a.join("metrics.csv")).len() - 1 + 3).to_string();
        let resumed = Command::new(BIN)
            .args(["iv", "--resume", a.to_str().unwrap(), "--set"])
            .arg(format!("iterations={n}"))
            .output()
            .unwrap();
        assert!(
            resumed.status.success(),
            "{config}: {}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        assert!(
            !a.join("checkpoint.h5").exists(),
            "{config}: removed once finished"
        );
        let whole = Command::new(BIN)
            .args(iv_args(config, extra, &n, &out.join("b")))
            .output()
            .unwrap();
        let b = run_dir_iv(&whole);
        let (ra, rb) = (metrics_without_time(&a), metrics_without_time(&b));
        assert_eq!(
            (ra.len() - 1).to_string(),
            n,
            "{config}: every iteration once"
        );
        assert_eq!(ra, rb, "{config}: resumed and uninterrupted runs differ");
        let mse = |d: &Path| -> serde_json::Value {
            serde_json::from_str::<serde_json::Value>(
                &std::fs::read_to_string(d.join("result.json")).unwrap(),
            )
            .unwrap()["test_mse"]
                .clone()
        };
        assert_eq!(mse(&a), mse(&b), "{config}");
        assert!(mse(&a).as_f64().is_some(), "{config}");
    }
}

/// The run directory a `funcrl iv` JSON line names.
fn run_dir_iv(out: &Output) -> PathBuf {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    PathBuf::from(v["run_dir"].as_str().unwrap())
}

/// A resume refuses a damaged checkpoint and settings that change what the run computes, and
/// leaves the run directory as it was.
#[test]
fn iv_resume_refuses_damaged_checkpoints_and_changed_settings() {
    let out = tmp("ivrefuse");
    let tiny = [
        "network.treatment_hidden=[8]",
        "network.instrument_hidden=[8]",
        "network.features=4",
    ];
    let child = Command::new(BIN)
        .args(iv_args("dsprites_funcid.toml", &tiny, "1000000", &out))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dir = || {
        std::fs::read_dir(&out)
            .ok()
            .and_then(|mut d| d.next())
            .map(|e| e.unwrap().path())
    };
    wait_for("a checkpoint", Duration::from_secs(60), || {
        dir().is_some_and(|d| d.join("checkpoint.h5").is_file())
    });
    sigterm(child.id());
    child.wait_with_output().unwrap();
    let d = dir().unwrap();
    let resume = |extra: &[&str]| {
        Command::new(BIN)
            .args(["iv", "--resume", d.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    let r = resume(&["--set", "outer_optimizer.lr=0.1"]);
    assert_eq!(r.status.code(), Some(2));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("--set outer_optimizer.lr cannot change") && err.contains("iterations"),
        "{err}"
    );
    let ckpt = d.join("checkpoint.h5");
    let before = std::fs::read(&ckpt).unwrap();
    let metrics = std::fs::read(d.join("metrics.csv")).unwrap();
    flip(&ckpt, offset(&ckpt, "t:omega") + 16);
    let r = resume(&["--set", "iterations=2000000"]);
    assert_eq!(r.status.code(), Some(2));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("checksum mismatch"), "{err}");
    assert_eq!(std::fs::read(d.join("metrics.csv")).unwrap(), metrics);
    assert!(
        std::fs::read_to_string(d.join("config.toml"))
            .unwrap()
            .contains("iterations = 1000000")
    );
    // Repaired, it resumes (here with fewer iterations than it already ran: refused too).
    std::fs::write(&ckpt, &before).unwrap();
    let r = resume(&["--set", "iterations=1"]);
    assert_eq!(r.status.code(), Some(2));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("raise iterations to continue it"), "{err}");
}
