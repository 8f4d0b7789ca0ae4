//! The installed binary works from any directory: shipped configs by name (`funcrl configs`), the
//! dSprites matrix compiled in, and data paths in a config read relative to the config's folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh empty directory outside the checkout, to run from.
fn elsewhere(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("funcrl-anywhere-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn funcrl(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_funcrl"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run funcrl")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The `test_mse` of `funcrl iv`'s JSON line.
fn test_mse(stdout: &str) -> f64 {
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    v["test_mse"].as_f64().unwrap()
}

/// `funcrl configs` lists exactly the files under configs/, and prints each one byte for byte.
#[test]
fn configs_lists_and_prints_every_shipped_file() {
    let mut want = Vec::new();
    for kind in std::fs::read_dir(repo().join("configs")).unwrap() {
        let kind = kind.unwrap().path();
        for f in std::fs::read_dir(&kind).unwrap() {
            let f = f.unwrap().path();
            let name = format!(
                "{}/{}",
                kind.file_name().unwrap().to_string_lossy(),
                f.file_stem().unwrap().to_string_lossy()
            );
            want.push((name, f));
        }
    }
    want.sort();
    let cwd = elsewhere("list");
    let listed = ok(&funcrl(&cwd, &["configs"]));
    let names: Vec<&str> = listed
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        names,
        want.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
    );
    for (name, path) in &want {
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(ok(&funcrl(&cwd, &["configs", name])), text, "{name}");
        let stem = name.rsplit('/').next().unwrap();
        assert_eq!(ok(&funcrl(&cwd, &["configs", stem])), text, "{stem}");
    }
    let bad = funcrl(&cwd, &["configs", "cartpole_nope"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("rl/cartpole_funcid"));
    let bad = funcrl(&cwd, &["train", "--config", "cartpole_nope"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("shipped configs"));
    std::fs::remove_dir_all(&cwd).ok();
}

/// `train --config cartpole_mle` from an empty directory gives the losses of the same run from
/// the checkout with the file's path.
#[test]
fn train_by_name_equals_train_by_path() {
    let cwd = elsewhere("train");
    let set = [
        "--seed",
        "2",
        "--quiet",
        "--set",
        "total_steps=1300",
        "--set",
        "eval_every=650",
        "--set",
        "eval_episodes=1",
    ];
    let mut losses = Vec::new();
    for (dir, cfg) in [
        (cwd.clone(), "cartpole_mle".to_string()),
        (
            repo().to_path_buf(),
            repo()
                .join("configs/rl/cartpole_mle.toml")
                .display()
                .to_string(),
        ),
    ] {
        let out = cwd.join(format!("runs{}", losses.len()));
        let mut args = vec!["train", "--config", &cfg, "--out"];
        let out_s = out.display().to_string();
        args.push(&out_s);
        args.extend(set);
        let run = PathBuf::from(ok(&funcrl(&dir, &args)).trim());
        losses.push(std::fs::read_to_string(run.join("losses.csv")).unwrap());
    }
    assert!(losses[0].lines().count() > 2, "{}", losses[0]);
    assert_eq!(losses[0], losses[1]);
    std::fs::remove_dir_all(&cwd).ok();
}

/// A config's `data.path` is read relative to the config's folder, and a dSprites run needs no
/// file: the compiled-in matrix gives the test MSE of the same run with the matrix file named.
#[test]
fn iv_paths_resolve_against_the_config_and_dsprites_needs_no_file() {
    let cwd = elsewhere("iv");
    let cfg_dir = cwd.join("study");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    std::fs::copy(
        repo().join("tests/fixtures/iv/tsls_2t_2z_2x.csv"),
        cfg_dir.join("mine.csv"),
    )
    .unwrap();
    std::fs::write(
        cfg_dir.join("mine.toml"),
        "iterations = 2\nout = \"runs\"\n[data]\nkind = \"file\"\npath = \"mine.csv\"\n\
         outcome = \"y\"\ntreatment = [\"t1\", \"t2\"]\ninstrument = [\"z1\", \"z2\"]\n\
         exog = [\"x1\", \"x2\"]\n[network]\ntreatment_hidden = [4]\ninstrument_hidden = [4]\n\
         features = 2\n[inner]\nsteps = 2\nridge = 0.1\n[method]\nmethod = \"dfiv\"\n",
    )
    .unwrap();
    // Run from the parent folder: the CSV is found next to the config, not in the cwd.
    ok(&funcrl(&cwd, &["iv", "--config", "study/mine.toml"]));

    let tiny = [
        "--set",
        "iterations=1",
        "--set",
        "data.n=60",
        "--set",
        "network.treatment_hidden=[6]",
        "--set",
        "network.instrument_hidden=[6]",
        "--set",
        "network.features=3",
    ];
    let mut args = vec!["iv", "--config", "dsprites_dfiv"];
    args.extend(tiny);
    let shipped = test_mse(&ok(&funcrl(&cwd, &args)));
    let matrix = format!(
        "data.matrix={}",
        repo().join("iv/data/dsprite_mat.npy").display()
    );
    args.extend(["--set", &matrix]);
    let from_file = test_mse(&ok(&funcrl(&cwd, &args)));
    assert!(shipped.is_finite());
    assert_eq!(shipped, from_file);
    std::fs::remove_dir_all(&cwd).ok();
}
