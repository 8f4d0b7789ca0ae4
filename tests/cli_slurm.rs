//! `--launcher slurm` against a real Slurm: a private single-node cluster on this machine
//! (tests/slurm/cluster.sh: munged, slurmctld and slurmd from Debian's slurm-wlm and munge, which
//! .ci/run installs). A 2-agent × 2-seed `compare` and a 2-method × 2-seed `iv-bench` run through
//! job arrays and their collected tables and statistics must equal the same sweeps run locally;
//! a rejected submission and a failing task must give errors naming the cause.
//!
//! Without the Slurm daemons installed, or without root (slurmd launches the tasks), the test
//! says so and does nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{BIN, root, tmp};

/// Stops the cluster when the test ends, passed or not.
struct Cluster {
    dir: PathBuf,
    conf: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(root().join("tests/slurm/cluster.sh"))
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

fn installed(cmd: &str) -> bool {
    Command::new("bash")
        .args([
            "-c",
            &format!("command -v {cmd} || test -x /usr/sbin/{cmd}"),
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn start() -> Option<Cluster> {
    let missing: Vec<&str> = ["slurmctld", "slurmd", "munged", "sbatch", "squeue"]
        .into_iter()
        .filter(|c| !installed(c))
        .collect();
    let uid = Command::new("id").arg("-u").output().unwrap();
    let root_user = String::from_utf8_lossy(&uid.stdout).trim() == "0";
    if !missing.is_empty() || !root_user {
        eprintln!(
            "SKIPPED: the Slurm test needs root and slurm-wlm + munge (.ci/run installs them); missing: {missing:?}, root: {root_user}"
        );
        return None;
    }
    let dir = tmp("slurm-cluster");
    let out = Command::new("bash")
        .arg(root().join("tests/slurm/cluster.sh"))
        .arg("start")
        .arg(&dir)
        .output()
        .unwrap();
    let cluster = Cluster {
        conf: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        dir,
    };
    assert!(
        out.status.success(),
        "cluster did not start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(cluster)
}

fn funcrl(cluster: &Cluster, args: &[String]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(root())
        .env("SLURM_CONF", &cluster.conf)
        .output()
        .unwrap()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn sweeps_through_slurm_equal_local_sweeps() {
    let Some(cluster) = start() else { return };
    let out = tmp("slurm-sweeps");

    // compare: 2 agents × 2 seeds of short CartPole runs.
    let compare = |dir: &Path, launcher: &[&str]| {
        let mut a = strings(&[
            "compare",
            "--config",
            "configs/rl/cartpole_mle.toml",
            "configs/rl/cartpole_funcid.toml",
            "--seeds",
            "0,1",
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
            "--reps",
            "2000",
            "--out",
        ]);
        a.push(dir.display().to_string());
        a.extend(strings(launcher));
        funcrl(&cluster, &a)
    };
    let (local, slurm) = (out.join("compare-local"), out.join("compare-slurm"));
    let table_local = ok(&compare(&local, &["--jobs", "2"]));
    let run = compare(&slurm, &["--launcher", "slurm", "--time", "00:05:00"]);
    let table_slurm = ok(&run);
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(log.contains("[slurm] submitted job"), "{log}");
    assert!(log.contains("all 4 tasks finished"), "{log}");
    assert_eq!(table_slurm, table_local);
    assert_eq!(
        read(&slurm.join("stats.json")),
        read(&local.join("stats.json"))
    );
    let script = read(&slurm.join("slurm/runs/sweep.sbatch"));
    assert!(script.contains("#SBATCH --array=0-3"), "{script}");
    assert!(script.contains("#SBATCH --time=00:05:00"), "{script}");
    // A rerun submits nothing: every run is finished.
    let again = compare(&slurm, &["--launcher", "slurm"]);
    assert_eq!(ok(&again), table_local);
    let log = String::from_utf8_lossy(&again.stderr);
    assert_eq!(log.matches("done already").count(), 4, "{log}");
    assert!(!log.contains("submitted"), "{log}");

    // iv-bench: 2 methods × 2 seeds of tiny dSprites runs.
    let bench = |dir: &Path, launcher: &[&str], extra: &[&str]| {
        let mut a = strings(&[
            "iv-bench",
            "--configs",
            "configs/iv/dsprites_dfiv.toml,configs/iv/dsprites_funcid_linear.toml",
            "--seeds",
            "2",
            "--sizes",
            "40",
            "--set",
            "iterations=2",
            "--set",
            "network.treatment_hidden=[8]",
            "--set",
            "network.instrument_hidden=[8]",
            "--set",
            "network.features=4",
            "--out",
        ]);
        a.push(dir.display().to_string());
        a.extend(strings(launcher));
        a.extend(strings(extra));
        funcrl(&cluster, &a)
    };
    let (local, slurm) = (out.join("bench-local"), out.join("bench-slurm"));
    let table_local = ok(&bench(&local, &[], &[]));
    let run = bench(&slurm, &["--launcher", "slurm"], &[]);
    assert_eq!(ok(&run), table_local);
    assert_eq!(
        read(&slurm.join("summary.csv")),
        read(&local.join("summary.csv"))
    );
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("all 4 tasks finished"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    // --dry-run writes the script and submits nothing.
    let dry = out.join("bench-dry");
    let o = bench(&dry, &["--launcher", "slurm", "--dry-run"], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(dry.join("slurm/sweep.sbatch").is_file());
    assert!(!dry.join("slurm/task-0.log").exists());

    // A rejected submission names sbatch's reason.
    let o = bench(
        &out.join("bench-rejected"),
        &["--launcher", "slurm", "--partition", "no_such_partition"],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("sbatch rejected") && err.contains("partition"),
        "{err}"
    );

    // A task that fails (n = 3: too few rows for a deep run; --sizes adds it to n = 40) is named
    // with its log, and the runs that finished are kept.
    let failing = out.join("bench-failing");
    let o = bench(&failing, &["--launcher", "slurm"], &["--sizes", "3"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("4 of 8 tasks failed")
            && err.contains("dfiv n=3 seed 0")
            && err.contains("task-1.log"),
        "{err}"
    );
    let task_log = read(&failing.join("slurm/task-1.log"));
    assert!(task_log.contains("at least 4"), "{task_log}");
    let kept = std::fs::read_dir(failing.join("runs"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().join("result.json").is_file())
        .count();
    assert_eq!(kept, 4, "the n = 40 runs are kept");
}
