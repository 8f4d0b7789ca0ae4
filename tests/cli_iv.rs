//! End-to-end runs of `funcrl iv`: 2SLS against linearmodels fixtures, bad input (exit 2), and a
//! tiny deep IV run of every method.

use std::process::{Command, Output};

fn funcrl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_funcrl"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run funcrl")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fixture_dir() -> String {
    format!("{}/tests/fixtures/iv", env!("CARGO_MANIFEST_DIR"))
}

fn names(v: &serde_json::Value) -> String {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Coefficients, unadjusted and robust (HC0) standard errors equal linearmodels.IV2SLS
/// (debiased=False) to 1e-8 relative, on four designs: several treatments and instruments, with
/// and without exogenous regressors.
#[test]
fn tsls_matches_linearmodels() {
    let mut worst: f64 = 0.0;
    for case in [
        "tsls_2t_3z",
        "tsls_2t_2z_2x",
        "tsls_1t_3z_1x",
        "tsls_3t_4z_3x",
    ] {
        let dir = fixture_dir();
        let want: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{dir}/{case}.json")).unwrap())
                .unwrap();
        let data = format!("{dir}/{case}.csv");
        let (t, z, x) = (
            names(&want["treatment"]),
            names(&want["instrument"]),
            names(&want["exog"]),
        );
        let mut args = vec![
            "iv",
            "--method",
            "2sls",
            "--data",
            &data,
            "--outcome",
            "y",
            "--treatment",
            &t,
            "--instrument",
            &z,
            "--format",
            "json",
        ];
        if !x.is_empty() {
            args.extend(["--exog", &x]);
        }
        let o = funcrl(&args);
        assert!(o.status.success(), "{case}: {}", stderr(&o));
        let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        for key in ["coef", "se", "se_robust"] {
            let w = want[key].as_object().unwrap();
            let g = got[key].as_object().unwrap();
            assert_eq!(w.len(), g.len(), "{case} {key}: {g:?}");
            for (name, wv) in w {
                let (wv, gv) = (wv.as_f64().unwrap(), g[name].as_f64().unwrap());
                let rel = (gv - wv).abs() / wv.abs();
                worst = worst.max(rel);
                assert!(
                    rel < 1e-8,
                    "{case} {key}[{name}]: {gv} vs {wv} (rel {rel:e})"
                );
            }
        }
    }
    eprintln!("2SLS vs linearmodels: worst relative difference {worst:e}");
}

/// Missing columns, NaN cells, too few instruments and missing flags exit with code 2 and say why.
#[test]
fn tsls_bad_input_exits_2() {
    let dir = std::env::temp_dir().join(format!("funcrl-cli-iv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let nan = dir.join("nan.csv");
    std::fs::write(&nan, "y,t,z\n1,2,3\n2,nan,4\n3,4,1\n4,1,1\n").unwrap();
    let good = format!("{}/tsls_2t_3z.csv", fixture_dir());
    let nan = nan.to_str().unwrap().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--data",
                &good,
                "--outcome",
                "y",
                "--treatment",
                "t1",
                "--instrument",
                "w9",
            ],
            "'w9'",
        ),
        (
            vec![
                "--data",
                &nan,
                "--outcome",
                "y",
                "--treatment",
                "t",
                "--instrument",
                "z",
            ],
            "non-finite value at row 2",
        ),
        (
            vec![
                "--data",
                &good,
                "--outcome",
                "y",
                "--treatment",
                "t1,t2",
                "--instrument",
                "z1",
            ],
            "under-identified",
        ),
        (
            vec!["--data", &good, "--treatment", "t1", "--instrument", "z1"],
            "--outcome",
        ),
        (
            vec![
                "--data",
                "/nonexistent.csv",
                "--outcome",
                "y",
                "--treatment",
                "t1",
                "--instrument",
                "z1",
            ],
            "does not exist",
        ),
    ];
    for (extra, msg) in cases {
        let mut args = vec!["iv", "--method", "2sls"];
        args.extend(extra.iter().copied());
        let o = funcrl(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(msg), "{args:?}: {}", stderr(&o));
    }
}

const TINY_NETS: [&str; 6] = [
    "--set",
    "network.treatment_hidden=[8]",
    "--set",
    "network.instrument_hidden=[8]",
    "--set",
    "network.features=4",
];
const TINY: [&str; 10] = [
    TINY_NETS[0],
    TINY_NETS[1],
    TINY_NETS[2],
    TINY_NETS[3],
    TINY_NETS[4],
    TINY_NETS[5],
    "--set",
    "iterations=2",
    "--set",
    "eval_every=1",
];

fn out_dir(tag: &str) -> String {
    let d = std::env::temp_dir().join(format!("funcrl-cli-iv-{tag}-{}", std::process::id()));
    d.to_str().unwrap().to_string()
}

/// Runs a config with tiny networks; returns the result JSON.
fn tiny(config: &str, extra: &[&str], tag: &str) -> serde_json::Value {
    let out = out_dir(tag);
    let mut args = vec!["iv", "--config", config, "--out", &out];
    args.extend(TINY);
    args.extend(extra);
    let o = funcrl(&args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    assert!(
        stderr(&o).contains("ETA") || config.contains("2sls"),
        "no progress output"
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Every deep method runs end to end on tiny dSprites and writes its run directory: resolved
/// config, per-iteration CSV with the fixed columns, result.json with a finite test MSE, HDF5 files.
#[test]
fn every_method_runs_end_to_end() {
    for m in ["dfiv", "funcid", "funcid_linear", "aid", "itd", "penalty"] {
        let cfg = format!("configs/iv/dsprites_{m}.toml");
        let r = tiny(&cfg, &["--set", "data.n=60"], m);
        assert_eq!(r["method"], m);
        assert!(r["test_mse"].as_f64().unwrap().is_finite(), "{m}: {r}");
        let dir = std::path::PathBuf::from(r["run_dir"].as_str().unwrap());
        for f in [
            "config.toml",
            "meta.json",
            "metrics.csv",
            "result.json",
            "results.h5",
            "data.h5",
        ] {
            assert!(dir.join(f).is_file(), "{m}: {f} missing");
        }
        let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
        assert!(csv.starts_with(
            "iteration,outer_loss,inner_loss,adjoint_loss,grad_norm,seconds,test_mse,adjoint_cosine"
        ));
        assert_eq!(csv.lines().count(), 3, "{m}: {csv}");
        let cfg = std::fs::read_to_string(dir.join("config.toml")).unwrap();
        assert!(cfg.contains("features = 4"), "resolved config: {cfg}");
    }
}

/// The demand design and the linear design run, 2SLS recovers the linear design's structural
/// function (test MSE near 0), and a run reruns on its saved data.h5 with the same result.
#[test]
fn demand_linear_and_rerun_on_saved_data() {
    let r = tiny(
        "configs/iv/demand_dfiv.toml",
        &["--set", "data.n=200"],
        "demand",
    );
    assert!(r["test_mse"].as_f64().unwrap().is_finite());
    let lin = tiny("configs/iv/linear_2sls.toml", &[], "lin");
    assert!(lin["test_mse"].as_f64().unwrap() < 0.05, "{lin}");
    let dir = std::path::PathBuf::from(r["run_dir"].as_str().unwrap());
    let data = dir.join("data.h5");
    let again = tiny(
        "configs/iv/demand_dfiv.toml",
        &["--data", data.to_str().unwrap()],
        "rerun",
    );
    assert_eq!(
        again["test_mse"], r["test_mse"],
        "same data, same seed, same MSE"
    );
}

/// DFIV's demand model (covariate net on (t, s), stage 2 on [φ̂, 1] ⊗ [χ, 1]) runs with every
/// deep method; impossible network settings are usage errors naming the field.
#[test]
fn demand_covariate_model_runs_and_checks_its_settings() {
    let cfg = "configs/iv/demand_dfiv_covariate.toml";
    for (m, options) in [
        ("dfiv", ""),
        ("funcid", ", steps=3"),
        ("funcid_linear", ""),
        ("aid", ", iterations=2"),
        ("itd", ", unroll=2, lr=1e-3"),
        ("penalty", ", lambda=0.1"),
    ] {
        let method = format!("method={{method=\"{m}\"{options}}}");
        let r = tiny(
            cfg,
            &[
                "--set",
                "data.n=200",
                "--set",
                "network.features=1",
                "--set",
                &method,
            ],
            &format!("cov-{m}"),
        );
        assert!(r["test_mse"].as_f64().unwrap().is_finite(), "{m}: {r}");
    }
    // Two configs of one method in a bench are told apart by their file names.
    let out = out_dir("cov-bench");
    let mut args = vec![
        "iv-bench",
        "--configs",
        "configs/iv/demand_dfiv.toml,configs/iv/demand_dfiv_covariate.toml",
        "--seeds",
        "1",
        "--sizes",
        "100",
        "--out",
        &out,
        "--set",
        "iterations=1",
    ];
    args.extend(["--set", "network.instrument_hidden=[8]"]);
    let o = funcrl(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("| demand_dfiv n=100 | 1 |")
            && table.contains("| demand_dfiv_covariate n=100 | 1 |"),
        "{table}"
    );
    for (set, msg) in [
        (
            "network.covariate.columns=3",
            "network.covariate.columns = 3",
        ),
        ("network.layer_norm=true", "network.layer_norm = false"),
        (
            "network.treatment_activation=\"softplus\"",
            "treatment_activation",
        ),
    ] {
        let args = [
            "iv",
            "--config",
            cfg,
            "--set",
            "data.n=40",
            "--set",
            "iterations=1",
            "--set",
            set,
        ];
        let o = funcrl(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(msg), "{args:?}: {}", stderr(&o));
    }
}

/// Bring-your-own CSV through the config (columns named by keys), and config mistakes exit 2.
#[test]
fn byo_csv_and_config_errors() {
    let csv = format!("{}/tsls_2t_2z_2x.csv", fixture_dir());
    let set = |kv: &str| kv.to_string();
    let sets = [
        set("data.kind=file"),
        format!("data.path={csv}"),
        set("data.outcome=y"),
        set("data.treatment=[\"t1\",\"t2\"]"),
        set("data.instrument=[\"z1\",\"z2\"]"),
        set("data.exog=[\"x1\"]"),
    ];
    let mut extra: Vec<&str> = Vec::new();
    for s in &sets {
        extra.extend(["--set", s]);
    }
    // Replace the [data] table wholesale: start from a file-less table.
    let r = tiny(
        "configs/iv/dsprites_funcid_linear.toml",
        &[&["--set", "data={}"][..], &extra[..]].concat(),
        "byo",
    );
    assert!(r["test_mse"].is_null(), "no test set in a CSV: {r}");
    let bad: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--set", "method.method=newton"], "invalid [method]"),
        (vec!["--set", "iterations=0"], "at least 1"),
        (
            vec![
                "--set",
                "data.kind=dsprites",
                "--set",
                "data.matrix=/nope.npy",
            ],
            "cannot open",
        ),
        (vec!["--set", "bogus=1"], "bogus"),
    ];
    for (extra, msg) in bad {
        let mut args = vec![
            "iv",
            "--config",
            "configs/iv/dsprites_dfiv.toml",
            "--set",
            "data.n=20",
        ];
        args.extend(extra);
        let o = funcrl(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(msg), "{args:?}: {}", stderr(&o));
    }
}

/// `iv-bench`: methods × sizes × seeds → summary table, box plot and loss curves.
#[test]
fn iv_bench_writes_summary_and_figures() {
    let out = out_dir("bench");
    let mut args = vec![
        "iv-bench",
        "--configs",
        "configs/iv/dsprites_dfiv.toml,configs/iv/dsprites_funcid_linear.toml",
        "--seeds",
        "2",
        "--sizes",
        "40",
        "--out",
        &out,
    ];
    args.extend(TINY);
    let o = funcrl(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("| dfiv n=40 | 2 |") && table.contains("| funcid_linear n=40 | 2 |"),
        "{table}"
    );
    assert!(
        table.contains("| dfiv n=40 | funcid_linear n=40 | ") && table.contains(" / 2 |"),
        "{table}"
    );
    for f in [
        "summary.csv",
        "summary.md",
        "mse_boxes.png",
        "outer_loss.png",
        "inner_loss.png",
    ] {
        assert!(std::path::Path::new(&out).join(f).is_file(), "{f} missing");
    }
    // The same bench with the seeds spread over two processes gives the same table.
    let spread_out = out_dir("bench-jobs");
    let mut spread: Vec<&str> = args.clone();
    let at = spread.iter().position(|a| *a == "--out").unwrap() + 1;
    spread[at] = &spread_out;
    spread.extend(["--jobs", "2"]);
    let o2 = funcrl(&spread);
    assert!(o2.status.success(), "{}", stderr(&o2));
    assert_eq!(String::from_utf8_lossy(&o2.stdout), table);
    for seed in 0..2 {
        let log = format!("{spread_out}/logs/seed-{seed}.log");
        assert!(std::path::Path::new(&log).is_file(), "{log} missing");
    }
    // A rerun reuses the finished runs: same table, no new run directory.
    let count = || std::fs::read_dir(format!("{out}/runs")).unwrap().count();
    let before = count();
    assert_eq!(before, 4);
    let again = funcrl(&args);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(String::from_utf8_lossy(&again.stdout), table);
    assert!(stderr(&again).contains("reused"), "{}", stderr(&again));
    assert_eq!(count(), before);
    // Runs copied into another bench folder are reused there too (their `out` differs).
    let moved = out_dir("bench-moved");
    std::fs::create_dir_all(format!("{moved}/runs")).unwrap();
    for e in std::fs::read_dir(format!("{out}/runs")).unwrap() {
        let from = e.unwrap().path();
        let to = std::path::Path::new(&moved)
            .join("runs")
            .join(from.file_name().unwrap());
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(&from).unwrap() {
            let f = f.unwrap().path();
            if f.is_file() {
                std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
            }
        }
    }
    let mut there = args.clone();
    let at = there.iter().position(|a| *a == "--out").unwrap() + 1;
    there[at] = &moved;
    let o3 = funcrl(&there);
    assert!(o3.status.success(), "{}", stderr(&o3));
    assert_eq!(String::from_utf8_lossy(&o3.stdout), table);
    assert!(!stderr(&o3).contains(", ran)"), "{}", stderr(&o3));
    assert_eq!(
        std::fs::read_dir(format!("{moved}/runs")).unwrap().count(),
        before
    );
    // --collect with more seeds runs nothing and summarises the two finished seeds.
    let seeds = args.iter().position(|a| *a == "--seeds").unwrap() + 1;
    args[seeds] = "5";
    args.push("--collect");
    let collected = funcrl(&args);
    assert!(collected.status.success(), "{}", stderr(&collected));
    assert_eq!(String::from_utf8_lossy(&collected.stdout), table);
    assert_eq!(count(), before);
    // --first-seed 1 of --seeds 2: seed 1 only; --first-seed at or past --seeds is a usage error.
    let mut one = args.clone();
    one[seeds] = "2";
    one.extend(["--first-seed", "1"]);
    let o1 = funcrl(&one);
    assert!(o1.status.success(), "{}", stderr(&o1));
    let t1 = String::from_utf8_lossy(&o1.stdout);
    assert!(t1.contains("| dfiv n=40 | 1 |"), "{t1}");
    let n = one.len();
    one[n - 1] = "2";
    let bad = funcrl(&one);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("above --first-seed (got --seeds 2 --first-seed 2)"),
        "{}",
        stderr(&bad)
    );
    // A different config (here one more iteration) is not a finished run of it.
    args.extend(["--set", "iterations=3"]);
    let none = funcrl(&args);
    assert_eq!(none.status.code(), Some(2), "{}", stderr(&none));
    assert!(
        stderr(&none).contains("no finished runs"),
        "{}",
        stderr(&none)
    );
}

/// A bench stopped by SIGTERM mid-run resumes that run from its checkpoint on the rerun (not from
/// scratch), and its table equals an uninterrupted bench's.
#[test]
fn a_stopped_bench_resumes_its_unfinished_run() {
    let bench = |out: &str| -> Vec<String> {
        let mut a = vec![
            "iv-bench",
            "--configs",
            "configs/iv/dsprites_funcid.toml",
            "--seeds",
            "1",
            "--sizes",
            "60",
            "--out",
            out,
        ];
        a.extend(TINY_NETS);
        a.extend([
            "--set",
            "iterations=400",
            "--set",
            "inner.steps=2",
            "--set",
            "checkpoint_every=5",
        ]);
        a.into_iter().map(String::from).collect()
    };
    let whole = funcrl(
        &bench(&out_dir("bench-whole"))
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(whole.status.success(), "{}", stderr(&whole));
    let out = out_dir("bench-stopped");
    let child = Command::new(env!("CARGO_BIN_EXE_funcrl"))
        .args(bench(&out))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let runs = std::path::Path::new(&out).join("runs");
    let start = std::time::Instant::now();
    while !std::fs::read_dir(&runs)
        .is_ok_and(|mut d| d.any(|e| e.unwrap().path().join("checkpoint.h5").is_file()))
    {
        assert!(start.elapsed().as_secs() < 60, "no checkpoint after 60 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let stopped = child.wait_with_output().unwrap();
    // 400 iterations take far longer than the polling: the signal lands mid-run.
    assert_eq!(stopped.status.code(), Some(143));
    // --collect names the unfinished run instead of silently leaving it out.
    let mut collect = bench(&out);
    collect.push("--collect".into());
    let o = funcrl(&collect.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        stderr(&o).contains("1 unfinished run(s) with a checkpoint"),
        "{}",
        stderr(&o)
    );
    // Through Slurm the unfinished run is one task that resumes it (--dry-run: the script only).
    let mut dry = bench(&out);
    dry.extend(["--launcher", "slurm", "--dry-run"].map(String::from));
    let o = funcrl(&dry.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let script =
        std::fs::read_to_string(std::path::Path::new(&out).join("slurm/sweep.sbatch")).unwrap();
    assert!(script.contains("'iv' '--resume'"), "{script}");
    let again = funcrl(&bench(&out).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stderr(&again).contains("resumed)"), "{}", stderr(&again));
    assert_eq!(
        std::fs::read_dir(&runs).unwrap().count(),
        1,
        "no second run directory"
    );
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        String::from_utf8_lossy(&whole.stdout)
    );
}

/// `--launcher slurm` where Slurm's commands are missing: a usage error that says what is
/// missing and that `--dry-run` still writes the script (which it does, without them).
#[test]
fn slurm_launcher_without_sbatch_says_so() {
    let out = out_dir("no-sbatch");
    let mut args = vec![
        "iv-bench",
        "--configs",
        "configs/iv/dsprites_dfiv.toml",
        "--seeds",
        "1",
        "--sizes",
        "40",
        "--out",
        &out,
        "--launcher",
        "slurm",
    ];
    args.extend(TINY);
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_funcrl"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("PATH", "/nonexistent")
            .output()
            .unwrap()
    };
    let o = run(&args);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("sbatch not found on PATH") && stderr(&o).contains("--dry-run"),
        "{}",
        stderr(&o)
    );
    args.push("--dry-run");
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let script = std::fs::read_to_string(format!("{out}/slurm/sweep.sbatch")).unwrap();
    assert!(
        script.contains("#SBATCH --array=0-0") && script.contains("'iv'"),
        "{script}"
    );
}
