//! Helpers shared by the CLI end-to-end tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;
use std::process::Output;

pub const BIN: &str = env!("CARGO_BIN_EXE_funcrl");

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A shipped CartPole config by agent name (`mle`, `funcid_reference`, …), as a path string.
pub fn config(agent: &str) -> String {
    root()
        .join(format!("configs/rl/cartpole_{agent}.toml"))
        .display()
        .to_string()
}

/// A fresh, empty temporary folder for one test.
pub fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("funcrl-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The run directory a successful `funcrl train` printed.
pub fn run_dir(out: &Output) -> PathBuf {
    assert!(
        out.status.success(),
        "train failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout.clone()).unwrap().trim())
}
