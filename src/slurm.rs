//! `--launcher slurm`: a sweep's unfinished runs as one Slurm job array (one array task per run),
//! submitted with `sbatch`, followed with `squeue`, and checked task by task when it ends. The
//! caller then collects the runs exactly as after local processes: the runs are the same
//! `funcrl train` / `funcrl iv` commands, so the same seeds give the same numbers.
//!
//! Each task writes its exit code next to its log (`task-K.rc`); a task that has no code when the
//! job is gone timed out, was cancelled or never started. No accounting database (`sacct`) is
//! needed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

use crate::config::UsageError;

/// Where a sweep's runs execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Launcher {
    /// Child processes on this machine.
    #[default]
    Local,
    /// One Slurm job array, one task per run.
    Slurm,
}

/// Launcher flags shared by `compare` and `iv-bench`.
#[derive(Args, Debug, Clone, Default)]
pub struct LaunchArgs {
    /// Where the runs execute: local processes, or a Slurm job array (one task per run; needs
    /// `sbatch` and `squeue` on PATH and a folder every node sees).
    #[arg(long, value_enum, default_value_t = Launcher::Local)]
    pub launcher: Launcher,
    /// Slurm partition [default: the cluster's default].
    #[arg(long)]
    pub partition: Option<String>,
    /// Slurm time limit per task (sbatch --time, e.g. 02:00:00). A task stopped at its limit
    /// leaves a checkpoint; rerunning the command resubmits only the unfinished runs.
    #[arg(long, default_value = "01:00:00")]
    pub time: String,
    /// CPUs per Slurm task.
    #[arg(long, default_value_t = 1)]
    pub cpus_per_task: u32,
    /// Memory per Slurm task (sbatch --mem, e.g. 4G) [default: the cluster's default].
    #[arg(long)]
    pub mem: Option<String>,
    /// An extra #SBATCH line, e.g. --sbatch=--account=myproject (repeatable).
    #[arg(long = "sbatch", value_name = "OPTION", allow_hyphen_values = true)]
    pub sbatch: Vec<String>,
    /// With --launcher slurm: write the job script (sweep.sbatch) and stop without submitting.
    #[arg(long)]
    pub dry_run: bool,
}

/// One run: what it is (for messages) and the `funcrl` arguments that run it.
#[derive(Debug, Clone)]
pub struct Task {
    pub label: String,
    pub args: Vec<String>,
}

/// How a Slurm launch ended.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Every task exited 0.
    Finished,
    /// `--dry-run`: the script was written, nothing submitted.
    DryRun(PathBuf),
}

/// A word quoted for bash.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The job-array script running `tasks` with `exe`, logs and exit codes under `dir`.
pub fn script(exe: &[String], tasks: &[Task], dir: &Path, cwd: &Path, opts: &LaunchArgs) -> String {
    let d = dir.display();
    let mut s = String::from("#!/bin/bash\n");
    s.push_str("#SBATCH --job-name=funcrl-sweep\n");
    s.push_str(&format!("#SBATCH --array=0-{}\n", tasks.len() - 1));
    s.push_str(&format!("#SBATCH --output={d}/task-%a.log\n"));
    s.push_str(&format!("#SBATCH --chdir={}\n", cwd.display()));
    s.push_str(&format!("#SBATCH --time={}\n", opts.time));
    s.push_str(&format!("#SBATCH --cpus-per-task={}\n", opts.cpus_per_task));
    if let Some(p) = &opts.partition {
        s.push_str(&format!("#SBATCH --partition={p}\n"));
    }
    if let Some(m) = &opts.mem {
        s.push_str(&format!("#SBATCH --mem={m}\n"));
    }
    for line in &opts.sbatch {
        s.push_str(&format!("#SBATCH {line}\n"));
    }
    s.push_str("# One task per run; the task's exit code goes to task-K.rc beside its log.\n");
    s.push_str("case \"$SLURM_ARRAY_TASK_ID\" in\n");
    let exe: Vec<String> = exe.iter().map(|w| quote(w)).collect();
    let exe = exe.join(" ");
    for (k, t) in tasks.iter().enumerate() {
        let args: Vec<String> = t.args.iter().map(|a| quote(a)).collect();
        s.push_str(&format!("  # {}\n", t.label.replace('\n', " ")));
        s.push_str(&format!("  {k}) {exe} {} ;;\n", args.join(" ")));
    }
    s.push_str("  *) echo \"no task $SLURM_ARRAY_TASK_ID\" >&2; exit 2 ;;\n");
    s.push_str("esac\nrc=$?\n");
    s.push_str(&format!(
        "printf '%s\\n' \"$rc\" > {}\"$SLURM_ARRAY_TASK_ID\".rc\nexit \"$rc\"\n",
        quote(&format!("{d}/task-"))
    ));
    s
}

fn command_missing(name: &str, e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        UsageError::new(format!(
            "{name} not found on PATH: --launcher slurm needs Slurm's client commands (sbatch, squeue, scancel); --dry-run writes the job script without them"
        ))
        .into()
    } else {
        anyhow::anyhow!("running {name}: {e}")
    }
}

/// States of the job's tasks still known to Slurm, or None once the job has left the queue.
fn queue_states(job: &str) -> anyhow::Result<Option<Vec<String>>> {
    let out = Command::new("squeue")
        .args(["-h", "-r", "-j", job, "-o", "%T"])
        .output()
        .map_err(|e| command_missing("squeue", e))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // A finished job is eventually purged; squeue then calls its id invalid.
        if stderr.contains("Invalid job id") {
            return Ok(None);
        }
        anyhow::bail!("squeue -j {job} failed ({}): {}", out.status, stderr.trim());
    }
    let states: Vec<String> = stdout.lines().map(|l| l.trim().to_string()).collect();
    Ok((!states.is_empty()).then_some(states))
}

/// Writes `dir/sweep.sbatch` for `tasks`, submits it (unless `--dry-run`), follows the job with a
/// progress line on stderr until it has left the queue, then checks every task's exit code.
/// SIGINT/SIGTERM cancel the job (`scancel`); finished runs are kept either way.
pub fn run(tasks: &[Task], dir: &Path, opts: &LaunchArgs) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(dir)?;
    // The script is read on the compute nodes: absolute paths only.
    let dir = std::fs::canonicalize(dir)?;
    let cwd = std::env::current_dir()?;
    let exe = crate::children::self_command()?.words();
    let path = dir.join("sweep.sbatch");
    crate::rundir::write_atomic(&path, script(&exe, tasks, &dir, &cwd, opts).as_bytes())?;
    if opts.dry_run {
        eprintln!(
            "[slurm] wrote {} ({} tasks); not submitted (--dry-run)",
            path.display(),
            tasks.len()
        );
        return Ok(Outcome::DryRun(path));
    }
    for k in 0..tasks.len() {
        let _ = std::fs::remove_file(dir.join(format!("task-{k}.rc")));
    }
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(&path)
        .output()
        .map_err(|e| command_missing("sbatch", e))?;
    if !out.status.success() {
        anyhow::bail!(
            "sbatch rejected {} ({}): {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    // --parsable prints "jobid" or "jobid;cluster".
    let job = stdout.trim().split(';').next().unwrap_or("").to_string();
    if job.is_empty() || !job.chars().all(|c| c.is_ascii_digit()) {
        anyhow::bail!("sbatch printed no job id: {stdout:?}");
    }
    eprintln!(
        "[slurm] submitted job {job}: {} tasks ({}), logs in {}",
        tasks.len(),
        path.display(),
        dir.display()
    );
    let stop = crate::signals::Stop::install()?;
    let started = Instant::now();
    let mut last = String::new();
    let mut failures = 0;
    loop {
        if let Some(sig) = stop.requested() {
            let _ = Command::new("scancel").arg(&job).status();
            return Err(crate::signals::Stopped {
                signal: sig,
                message: format!(
                    "stopped by {}: Slurm job {job} cancelled; finished runs are kept, rerun the same command to submit the rest",
                    crate::signals::name(sig)
                ),
            }
            .into());
        }
        let states = match queue_states(&job) {
            Ok(s) => {
                failures = 0;
                s
            }
            // The controller may be briefly unreachable: retry a few times before giving up.
            Err(e) if failures < 5 => {
                failures += 1;
                eprintln!("[slurm] {e:#} (retrying)");
                std::thread::sleep(Duration::from_secs(2));
                continue;
            }
            Err(e) => return Err(e),
        };
        let Some(states) = states else { break };
        let count = |s: &str| states.iter().filter(|x| x.as_str() == s).count();
        let done = (0..tasks.len())
            .filter(|k| dir.join(format!("task-{k}.rc")).is_file())
            .count();
        let line = format!(
            "[slurm] job {job}: {} pending, {} running, {done}/{} finished ({:.0} s)",
            count("PENDING"),
            count("RUNNING") + count("COMPLETING"),
            tasks.len(),
            started.elapsed().as_secs_f64()
        );
        if line.split(" (").next() != last.split(" (").next() {
            eprintln!("{line}");
            last = line;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let mut bad = vec![];
    for (k, t) in tasks.iter().enumerate() {
        let log = dir.join(format!("task-{k}.log"));
        match std::fs::read_to_string(dir.join(format!("task-{k}.rc"))) {
            Ok(rc) if rc.trim() == "0" => {}
            Ok(rc) => bad.push(format!(
                "task {k} ({}) exited with {}; see {}",
                t.label,
                rc.trim(),
                log.display()
            )),
            Err(_) => bad.push(format!(
                "task {k} ({}) did not finish (timed out, cancelled or never started); see {}",
                t.label,
                log.display()
            )),
        }
    }
    if !bad.is_empty() {
        anyhow::bail!(
            "Slurm job {job}: {} of {} tasks failed (finished runs are kept; rerun the same command to submit only the unfinished ones):\n  {}",
            bad.len(),
            tasks.len(),
            bad.join("\n  ")
        );
    }
    eprintln!(
        "[slurm] job {job}: all {} tasks finished ({:.0} s)",
        tasks.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(Outcome::Finished)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The script runs every task by its array index with its arguments intact (quotes and
    /// spaces included) and records each exit code: checked by running it with bash for each
    /// index, `echo` standing in for funcrl.
    #[test]
    fn script_runs_each_task_by_index_and_records_its_exit_code() {
        let dir = std::env::temp_dir().join(format!("funcrl-slurm-script-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let tasks = vec![
            Task {
                label: "a seed 0".into(),
                args: vec!["train".into(), "--set".into(), "q.lr=3e-4".into()],
            },
            Task {
                label: "b seed 1".into(),
                args: vec!["it's".into(), "two words".into()],
            },
        ];
        let opts = LaunchArgs {
            partition: Some("debug".into()),
            mem: Some("2G".into()),
            sbatch: vec!["--account=x".into()],
            time: "00:10:00".into(),
            cpus_per_task: 2,
            ..LaunchArgs::default()
        };
        // A program with a prefix argument (as `python -m funcrl` is), quoted like the rest.
        let exe = ["/bin/echo".to_string(), "pre fix".to_string()];
        let text = script(&exe, &tasks, &dir, &dir, &opts);
        for line in [
            "#SBATCH --array=0-1",
            "#SBATCH --partition=debug",
            "#SBATCH --mem=2G",
            "#SBATCH --account=x",
            "#SBATCH --time=00:10:00",
            "#SBATCH --cpus-per-task=2",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        let path = dir.join("sweep.sbatch");
        std::fs::write(&path, &text).unwrap();
        for (k, want) in ["pre fix train --set q.lr=3e-4", "pre fix it's two words"]
            .iter()
            .enumerate()
        {
            let out = Command::new("bash")
                .arg(&path)
                .env("SLURM_ARRAY_TASK_ID", k.to_string())
                .output()
                .unwrap();
            assert!(out.status.success());
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), *want);
            let rc = std::fs::read_to_string(dir.join(format!("task-{k}.rc"))).unwrap();
            assert_eq!(rc.trim(), "0");
        }
        // An unknown index fails and records its code.
        let out = Command::new("bash")
            .arg(&path)
            .env("SLURM_ARRAY_TASK_ID", "7")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
