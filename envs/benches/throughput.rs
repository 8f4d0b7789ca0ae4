//! Environment throughput, single core: CartPole-v1 steps per second for one env (`make`, boxed,
//! with its TimeLimit) and the structure-of-arrays vector env at N = 1, 64, 1024, with the ratio to
//! Python gymnasium measured in the same run when `python3` with gymnasium is available
//! (`benches/peers/envs_gymnasium.py`), else to the figures recorded in benches/peers/README.md.
//!
//!     cargo bench -p funcrl-envs --bench throughput
//!
//! Set FUNCRL_BENCH_SECONDS to change the time per measurement (default 1.5 s, best of 3).

use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use funcrl_envs::cartpole::CartPole;
use funcrl_envs::{Action, Env, SyncVectorEnv, VecAction, VectorEnv, make};

/// Fixed pseudo-random actions so that the loop measures the env, not a generator.
fn action_table(len: usize) -> Vec<i64> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 63) as i64
        })
        .collect()
}

/// Runs `chunk` (which does `steps_per_chunk` env steps) repeatedly for `secs`, 3 times; returns
/// the best steps/s.
fn measure(secs: f64, steps_per_chunk: u64, mut chunk: impl FnMut()) -> f64 {
    let mut best = 0.0f64;
    for _ in 0..3 {
        let start = Instant::now();
        let mut steps = 0u64;
        while start.elapsed() < Duration::from_secs_f64(secs) {
            chunk();
            steps += steps_per_chunk;
        }
        best = best.max(steps as f64 / start.elapsed().as_secs_f64());
    }
    best
}

fn python_peer() -> Option<(String, f64, f64)> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../benches/peers/envs_gymnasium.py"
    );
    let out = Command::new("python3").arg(script).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().parse().ok()))?
    };
    let version = text.lines().next()?.to_string();
    Some((version, field("single ")?, field("vector64 ")?))
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let secs: f64 = std::env::var("FUNCRL_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.5);
    let actions = action_table(1 << 16);
    let mask = actions.len() - 1;

    let mut env = make("CartPole-v1").unwrap();
    env.reset(Some(0));
    let mut k = 0usize;
    let single = measure(secs, 10_000, || {
        for _ in 0..10_000 {
            let s = env.step(Action::Discrete(actions[k & mask])).unwrap();
            k += 1;
            if s.terminated || s.truncated {
                env.reset(None);
            }
            black_box(&s);
        }
    });

    let mut vector = Vec::new();
    for n in [1usize, 64, 1024] {
        let mut venv = SyncVectorEnv::new("CartPole-v1", CartPole::default(), n, Some(500));
        venv.reset(Some(0));
        let mut k = 0usize;
        let iters = (65_536 / n).max(1);
        let rate = measure(secs, (iters * n) as u64, || {
            for _ in 0..iters {
                let start = k & mask;
                let a = if start + n <= actions.len() {
                    &actions[start..start + n]
                } else {
                    &actions[..n]
                };
                k += 7 * n + 1;
                let out = venv.step(VecAction::Discrete(a)).unwrap();
                black_box(out.rewards);
            }
        });
        vector.push((n, rate));
    }

    let peer = python_peer();
    let (label, py_single, py_vec) = match &peer {
        Some((v, s, vv)) => (format!("{v}, measured now"), *s, *vv),
        None => (
            "gymnasium 1.4, recorded in benches/peers/README.md".to_string(),
            130_000.0,
            1_440_000.0,
        ),
    };
    println!("CartPole-v1 throughput, one core (best of 3 × {secs} s)");
    println!(
        "{:<28} {:>14} {:>14} {:>9}",
        "case", "funcrl steps/s", "python steps/s", "ratio"
    );
    println!(
        "{:<28} {:>14.3e} {:>14.3e} {:>8.0}×",
        "single env (make, boxed)",
        single,
        py_single,
        single / py_single
    );
    for (n, rate) in &vector {
        let (py, ratio) = if *n == 64 {
            (format!("{py_vec:.3e}"), format!("{:.0}×", rate / py_vec))
        } else {
            ("-".into(), "-".into())
        };
        println!(
            "{:<28} {:>14.3e} {:>14} {:>9}",
            format!("vector env N = {n}"),
            rate,
            py,
            ratio
        );
    }
    println!("python peer: {label}");
}
