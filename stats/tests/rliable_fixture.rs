//! Our metrics against the Python `rliable` package on the committed fixture
//! (`fixtures/make_rliable_fixture.py` made `fixtures/rliable.json`).
//!
//! Point estimates (IQM, mean, median, P(X > Y), the profile) are deterministic: equal to 1e-9.
//! Interval endpoints come from different resampling streams (numpy's, ours), so each must lie
//! within 3× the spread that rliable's own endpoint shows over 8 numpy seeds, plus 1e-9: the
//! difference we accept is the Monte Carlo error of the reference itself.

use funcrl_stats::{
    Bootstrap, Interval, interval, iqm, mean, median, performance_profile, prob_improvement_point,
    probability_of_improvement,
};
use serde_json::Value;

fn f(v: &Value) -> f64 {
    v.as_f64().expect("number")
}

fn scores(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .expect("tasks")
        .iter()
        .map(|t| t.as_array().expect("runs").iter().map(f).collect())
        .collect()
}

fn close(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        (got - want).abs() <= tol + 1e-9 * want.abs().max(1.0),
        "{what}: ours {got}, rliable {want}, allowed {tol:e}"
    );
}

fn check_ci(got: Interval, ci: &Value, spread: &Value, what: &str) {
    let (lo, hi) = (f(&ci[0]), f(&ci[1]));
    close(got.lo, lo, 3.0 * f(&spread[0]), &format!("{what} lower"));
    close(got.hi, hi, 3.0 * f(&spread[1]), &format!("{what} upper"));
}

#[test]
fn metrics_match_rliable() {
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/rliable.json")).expect("fixture parses");
    let b = Bootstrap {
        reps: fixture["reps"].as_u64().unwrap() as usize,
        ..Bootstrap::default()
    };
    let pb = Bootstrap {
        reps: fixture["profile_reps"].as_u64().unwrap() as usize,
        ..Bootstrap::default()
    };
    let taus: Vec<f64> = fixture["taus"].as_array().unwrap().iter().map(f).collect();
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let all = &case["scores"];
        for key in ["a", "b"] {
            let s = scores(&all[key]);
            let fig = &case[key];
            let what = format!("{name}/{key}");
            close(iqm(&s), f(&fig["iqm"]), 0.0, &format!("{what} iqm"));
            close(mean(&s), f(&fig["mean"]), 0.0, &format!("{what} mean"));
            close(
                median(&s),
                f(&fig["median"]),
                0.0,
                &format!("{what} median"),
            );
            check_ci(
                interval(&s, iqm, b),
                &fig["iqm_ci"],
                &fig["iqm_ci_spread"],
                &format!("{what} iqm"),
            );
            check_ci(
                interval(&s, mean, b),
                &fig["mean_ci"],
                &fig["mean_ci_spread"],
                &format!("{what} mean"),
            );
            let prof = performance_profile(&s, &taus, pb);
            for (i, p) in prof.iter().enumerate() {
                let w = format!("{what} profile at τ = {}", taus[i]);
                close(p.point, f(&fig["profile"][i]), 0.0, &w);
                let ci = serde_json::json!([fig["profile_ci"][0][i], fig["profile_ci"][1][i]]);
                let sp = serde_json::json!([
                    fig["profile_ci_spread"][0][i],
                    fig["profile_ci_spread"][1][i]
                ]);
                check_ci(*p, &ci, &sp, &w);
            }
        }
        let (a, bb) = (scores(&all["a"]), scores(&all["b"]));
        close(
            prob_improvement_point(&a, &bb),
            f(&case["p_a_over_b"]),
            0.0,
            &format!("{name} P(a > b)"),
        );
        check_ci(
            probability_of_improvement(&a, &bb, b),
            &case["p_a_over_b_ci"],
            &case["p_a_over_b_ci_spread"],
            &format!("{name} P(a > b)"),
        );
    }
}
