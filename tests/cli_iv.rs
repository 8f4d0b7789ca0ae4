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
