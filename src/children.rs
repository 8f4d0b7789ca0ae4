//! Child processes run a fixed number at a time — the local launcher of `compare` and of
//! `iv-bench --jobs` — stopped together on SIGINT/SIGTERM or when one of them fails.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::OnceLock;

/// How this program starts another copy of itself (`compare`, `iv-bench --jobs`, Slurm tasks):
/// the program and the arguments before the subcommand.
#[derive(Debug, Clone, PartialEq)]
pub struct SelfCommand {
    pub program: PathBuf,
    pub prefix: Vec<String>,
}

static SELF_COMMAND: OnceLock<SelfCommand> = OnceLock::new();

/// Sets the command children are started with, once per process. The Python package needs it:
/// there the running executable is the interpreter, and a child is `python -m funcrl ...`.
pub fn set_self_command(cmd: SelfCommand) {
    let _ = SELF_COMMAND.set(cmd);
}

/// The command a child copy of this program starts with: the one set by [`set_self_command`],
/// else the running executable.
pub fn self_command() -> std::io::Result<SelfCommand> {
    match SELF_COMMAND.get() {
        Some(c) => Ok(c.clone()),
        None => Ok(SelfCommand {
            program: std::env::current_exe()?,
            prefix: vec![],
        }),
    }
}

impl SelfCommand {
    /// A [`Command`] for the program with its prefix arguments.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.prefix);
        c
    }

    /// Program and prefix, for a shell script.
    pub fn words(&self) -> Vec<String> {
        std::iter::once(self.program.display().to_string())
            .chain(self.prefix.iter().cloned())
            .collect()
    }
}

/// Runs items `0..count`, `parallel` at a time. `spawn(i)` starts item i's process, or returns
/// `None` when the item has nothing to run; `failed(i, status)` words a failed item, `done(i)` is
/// told of each success, and `stopped(signal)` words the message when a signal ends the pool.
/// Children are asked to stop with SIGTERM (so that a training run writes a checkpoint a rerun
/// resumes) and waited for, whatever ends the pool early.
pub fn run(
    count: usize,
    parallel: usize,
    mut spawn: impl FnMut(usize) -> anyhow::Result<Option<Child>>,
    failed: impl Fn(usize, ExitStatus) -> String,
    mut done: impl FnMut(usize),
    stopped: impl Fn(&str) -> String,
) -> anyhow::Result<()> {
    let stop_all = |running: &mut Vec<(Child, usize)>| {
        for (c, _) in running.iter() {
            crate::signals::terminate(c);
        }
        for (c, _) in running.iter_mut() {
            let _ = c.wait();
        }
    };
    let stop = crate::signals::Stop::install()?;
    let mut running: Vec<(Child, usize)> = vec![];
    let mut next = 0;
    while next < count || !running.is_empty() {
        if let Some(sig) = stop.requested() {
            stop_all(&mut running);
            return Err(crate::signals::Stopped {
                signal: sig,
                message: stopped(crate::signals::name(sig)),
            }
            .into());
        }
        while running.len() < parallel && next < count {
            match spawn(next) {
                Ok(Some(child)) => running.push((child, next)),
                Ok(None) => {}
                Err(e) => {
                    stop_all(&mut running);
                    return Err(e);
                }
            }
            next += 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut k = 0;
        while k < running.len() {
            match running[k].0.try_wait()? {
                Some(status) => {
                    let (_, i) = running.remove(k);
                    if !status.success() {
                        stop_all(&mut running);
                        anyhow::bail!("{}", failed(i, status));
                    }
                    done(i);
                }
                None => k += 1,
            }
        }
    }
    Ok(())
}
