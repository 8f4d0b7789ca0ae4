//! SIGINT/SIGTERM as a request to stop cleanly: long commands poll [`Stop`] between steps, save
//! what a resume needs, log where they stopped and exit with 128 + the signal's number (130, 143),
//! as a shell expects.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use signal_hook::SigId;
use signal_hook::consts::{SIGINT, SIGTERM};

/// The first SIGINT/SIGTERM received since [`Stop::install`], if any. While a `Stop` lives the
/// signals only set it; once the last one is dropped they act as before again (see
/// [`restore_defaults`]), which matters when funcrl runs inside a longer-lived process such as
/// Python.
#[derive(Clone, Debug)]
pub struct Stop(Arc<Registered>);

#[derive(Debug)]
struct Registered {
    flag: Arc<AtomicUsize>,
    ids: Vec<SigId>,
}

/// Live [`Stop`]s.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

impl Drop for Registered {
    fn drop(&mut self) {
        for id in &self.ids {
            signal_hook::low_level::unregister(*id);
        }
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// signal-hook's handler stays installed after its last action is removed, so a signal whose
/// previous disposition was the default (terminate) would from then on be swallowed: SIGTERM
/// could no longer stop a Python process that once called `funcrl.train`. For each such signal,
/// one action emulates the default while no `Stop` is live. (A previous handler that is not the
/// default, such as Python's for SIGINT, is chained by signal-hook anyway.)
fn restore_defaults() -> std::io::Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        for sig in [SIGINT, SIGTERM] {
            // SAFETY: sigaction(2) with a null new action only reads the current disposition.
            let default = unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                    && old.sa_sigaction == libc::SIG_DFL
            };
            if !default {
                continue;
            }
            // SAFETY: the action only reads an atomic and calls signal-hook's async-signal-safe
            // emulation of the default action.
            let r = unsafe {
                signal_hook::low_level::register(sig, move || {
                    if ACTIVE.load(Ordering::SeqCst) == 0 {
                        let _ = signal_hook::low_level::emulate_default_handler(sig);
                    }
                })
            };
            if let Err(e) = r {
                result = Err(e);
                return;
            }
        }
    });
    result
}

impl Stop {
    /// Routes SIGINT and SIGTERM to this flag (instead of killing the process at once) until the
    /// last clone of it is dropped.
    pub fn install() -> std::io::Result<Stop> {
        restore_defaults()?;
        let flag = Arc::new(AtomicUsize::new(0));
        ACTIVE.fetch_add(1, Ordering::SeqCst);
        let mut reg = Registered {
            flag: flag.clone(),
            ids: vec![],
        };
        for sig in [SIGINT, SIGTERM] {
            reg.ids.push(signal_hook::flag::register_usize(
                sig,
                flag.clone(),
                sig as usize,
            )?);
        }
        Ok(Stop(Arc::new(reg)))
    }

    /// The signal received, if any.
    pub fn requested(&self) -> Option<i32> {
        match self.0.flag.load(Ordering::Relaxed) {
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
