//! SIGINT/SIGTERM as a request to stop cleanly: long commands poll [`Stop`] between steps, save
//! what a resume needs, log where they stopped and exit with 128 + the signal's number (130, 143),
//! as a shell expects.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};

/// The first SIGINT/SIGTERM received since [`Stop::install`], if any.
#[derive(Clone, Debug)]
pub struct Stop(Arc<AtomicUsize>);

impl Stop {
    /// Routes SIGINT and SIGTERM to this flag (instead of killing the process at once).
    pub fn install() -> std::io::Result<Stop> {
        let flag = Arc::new(AtomicUsize::new(0));
        for sig in [SIGINT, SIGTERM] {
            signal_hook::flag::register_usize(sig, flag.clone(), sig as usize)?;
        }
        Ok(Stop(flag))
    }

    /// The signal received, if any.
    pub fn requested(&self) -> Option<i32> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            s => Some(s as i32),
        }
    }
}

/// The error a command returns after stopping on a signal; `main` exits with its code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Stopped {
    pub signal: i32,
    pub message: String,
}

impl Stopped {
    pub fn exit_code(&self) -> u8 {
        (128 + self.signal).clamp(0, 255) as u8
    }
}

/// The name of a stop signal, for messages.
pub fn name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// Sends SIGTERM to a child process (so that it can checkpoint), ignoring one that has exited.
pub fn terminate(child: &std::process::Child) {
    // SAFETY: kill(2) on a pid we spawned and have not reaped yet; it cannot affect memory.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}
