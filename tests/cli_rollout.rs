//! End-to-end runs of the `funcrl` binary: rollout output checked against gymnasium-recorded
//! trajectories, and the exit code and message of every kind of bad input.

use std::process::{Command, Output};

fn funcrl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_funcrl"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run funcrl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fixture(name: &str) -> serde_json::Value {
    let path = format!("{}/envs/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn join(v: &serde_json::Value) -> String {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| match x {
            serde_json::Value::Array(a) => a[0].to_string(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `rollout --state S --actions A --format jsonl` reproduces what gymnasium recorded from the
/// same state and actions: observations, rewards and flags, through the episode's end.
#[test]
fn jsonl_rollout_reproduces_gymnasium_trajectories() {
    for (file, env_label) in [
        ("cartpole.json", "edge state"),
        ("pendulum.json", "angle normalisation"),
    ] {
        let fx = fixture(file);
        let ep = fx["episodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["label"] == env_label)
            .unwrap();
        let env = ep["env"].as_str().unwrap();
        let state = join(&ep["init_state"]);
        let actions = join(&ep["actions"]);
        let mut args = vec!["rollout", "--env", env, "--format", "jsonl"];
        let (s, a) = (format!("--state={state}"), format!("--actions={actions}"));
        args.push(&s);
        args.push(&a);
        let mes;
        if let Some(m) = ep["max_episode_steps"].as_u64() {
            mes = m.to_string();
            args.extend(["--max-steps", &mes]);
        }
        let out = funcrl(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        let lines: Vec<serde_json::Value> = stdout(&out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let steps = ep["steps"].as_array().unwrap();
        assert_eq!(
            lines.len(),
            steps.len() + 1,
            "reset line + one line per step"
        );
        assert_eq!(lines[0]["t"], 0);
        assert!(lines[0]["reward"].is_null());
        for (line, want) in lines[1..].iter().zip(steps) {
            let got: Vec<f32> = serde_json::from_value(line["obs"].clone()).unwrap();
            let exp: Vec<f32> = want["obs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(got, exp, "{env} t={}", line["t"]);
            let (r, wr) = (
                line["reward"].as_f64().unwrap(),
                want["reward"].as_f64().unwrap(),
            );
            assert!((r - wr).abs() <= 1e-12 * wr.abs().max(1.0), "{r} vs {wr}");
            assert_eq!(line["terminated"], want["terminated"]);
            assert_eq!(line["truncated"], want["truncated"]);
        }
    }
}

#[test]
fn random_policy_table_is_reproducible_and_seed_dependent() {
    let a = funcrl(&[
        "rollout",
        "--env",
        "CartPole-v1",
        "--episodes",
        "10",
        "--seed",
        "5",
    ]);
    let b = funcrl(&[
        "rollout",
        "--env",
        "CartPole-v1",
        "--episodes",
        "10",
        "--seed",
        "5",
    ]);
    let c = funcrl(&[
        "rollout",
        "--env",
        "CartPole-v1",
        "--episodes",
        "10",
        "--seed",
        "6",
    ]);
    assert!(a.status.success(), "{}", stderr(&a));
    assert_eq!(stdout(&a), stdout(&b));
    assert_ne!(stdout(&a), stdout(&c));
    let text = stdout(&a);
    assert_eq!(
        text.lines()
            .filter(|l| l.trim_end().ends_with("terminated") || l.trim_end().ends_with("truncated"))
            .count(),
        10,
        "{text}"
    );
    assert!(text.contains("mean return"), "{text}");
}

#[test]
fn config_file_and_overrides() {
    let out = funcrl(&[
        "rollout",
        "--config",
        "configs/rollout/cartpole_random.toml",
        "--set",
        "episodes=3",
        "--format",
        "jsonl",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let resets = stdout(&out)
        .lines()
        .filter(|l| l.contains("\"t\":0,"))
        .count();
    assert_eq!(resets, 3);
}

#[test]
fn max_steps_truncates() {
    let out = funcrl(&[
        "rollout",
        "--env",
        "Pendulum-v1",
        "--max-steps",
        "7",
        "--format",
        "jsonl",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8);
    assert_eq!(lines[7]["truncated"], true);
    assert!(lines[..7].iter().all(|l| l["truncated"] == false));
}

/// Bad input: exit code 2, a message that names the problem and what is allowed, no panic.
#[test]
fn bad_input_is_a_clear_error_with_exit_code_2() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["rollout", "--env", "CartPole-v9"],
            &["unknown environment id 'CartPole-v9'", "CartPole-v1"],
        ),
        (
            &["rollout", "--env", "CartPole-v1", "--state", "1,2"],
            &["invalid state", "expected 4 values"],
        ),
        (
            &["rollout", "--env", "CartPole-v1", "--actions", "0,2"],
            &["action #2", "Discrete(2)"],
        ),
        (
            &["rollout", "--env", "CartPole-v1", "--actions", "0.5"],
            &["action #1", "integers 0..=1"],
        ),
        (
            &["rollout", "--env", "Pendulum-v1", "--actions=nan"],
            &["not finite"],
        ),
        (
            &["rollout", "--env", "CartPole-v1", "--format", "xml"],
            &["possible values: table, jsonl"],
        ),
        (
            &["rollout", "--env", "CartPole-v1", "--set", "episode=3"],
            &["unknown field `episode`", "`episodes`"],
        ),
        (
            &[
                "rollout",
                "--env",
                "Acrobot-v1",
                "--kwarg",
                "book_or_nips=paper",
            ],
            &["'book', 'nips'"],
        ),
        (
            &["rollout", "--env", "CartPole-v1", "--kwarg", "gravity=3"],
            &["known options: sutton_barto_reward"],
        ),
        (
            &["rollout", "--env", "CartPole-v1", "--state", "0,0,x,0"],
            &["invalid value 'x'"],
        ),
        (&["rollout"], &["--env"]),
        (
            &["rollout", "--config", "no/such.toml"],
            &["cannot read config no/such.toml"],
        ),
        (
            &[
                "rollout",
                "--env",
                "CartPole-v1",
                "--actions",
                "1",
                "--episodes",
                "3",
            ],
            &["cannot be used with"],
        ),
    ];
    for (args, needles) in cases {
        let out = funcrl(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed before failing: {}",
            stdout(&out)
        );
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{args:?}: {err}"
        );
        for n in *needles {
            assert!(err.contains(n), "{args:?}: expected '{n}' in: {err}");
        }
    }
}

#[test]
fn help_explains_the_commands() {
    let out = funcrl(&["--help"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("rollout") && text.contains("envs"), "{text}");
    let out = funcrl(&["rollout", "--help"]);
    let text = stdout(&out);
    for flag in [
        "--env",
        "--seed",
        "--state",
        "--actions",
        "--policy",
        "--episodes",
        "--max-steps",
        "--format",
        "--config",
        "--set",
    ] {
        assert!(text.contains(flag), "rollout --help lacks {flag}");
    }
}
