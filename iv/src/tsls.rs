//! Linear two-stage least squares with homoskedastic and heteroskedasticity-robust (HC0) standard
//! errors, matching `linearmodels.IV2SLS(...).fit(cov_type="unadjusted" | "robust", debiased=False)`.
//!
//! Regressors X = [const, exog, treatments], instruments Z = [const, exog, instruments];
//! X̂ = P_Z X, β = (X̂ᵀX̂)⁻¹X̂ᵀy, ε = y − Xβ,
//! V_unadj = (εᵀε/n)(X̂ᵀX̂)⁻¹, V_HC0 = (X̂ᵀX̂)⁻¹(Σ ε_i² x̂_i x̂_iᵀ)(X̂ᵀX̂)⁻¹.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::InputError;
use crate::data::{Matrix, Table};

/// Which columns play which role.
#[derive(Debug, Clone, PartialEq)]
pub struct TslsSpec {
    pub outcome: String,
    pub treatment: Vec<String>,
    pub instrument: Vec<String>,
    pub exog: Vec<String>,
    pub intercept: bool,
}

/// Coefficients and standard errors keyed by regressor name (`const` for the intercept).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TslsFit {
    pub coef: BTreeMap<String, f64>,
    pub se: BTreeMap<String, f64>,
    pub se_robust: BTreeMap<String, f64>,
    pub nobs: usize,
}

/// Lower Cholesky factor of a symmetric positive-definite k×k matrix; `None` if not SPD.
pub fn cholesky(a: &[f64], k: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; k * k];
    for i in 0..k {
        for j in 0..=i {
            let mut s = a[i * k + j];
            for p in 0..j {
                s -= l[i * k + p] * l[j * k + p];
            }
            if i == j {
                // Relative pivot test: a collinear design gives a pivot at rounding level.
                if s <= 1e-12 * a[i * k + i].abs().max(f64::MIN_POSITIVE) {
                    return None;
                }
                l[i * k + i] = s.sqrt();
            } else {
                l[i * k + j] = s / l[j * k + j];
            }
        }
    }
    Some(l)
}

/// Solves (L Lᵀ) X = B for B k×m (row-major), in place.
pub fn chol_solve(l: &[f64], k: usize, b: &mut [f64], m: usize) {
    for c in 0..m {
        for i in 0..k {
            let mut s = b[i * m + c];
            for p in 0..i {
                s -= l[i * k + p] * b[p * m + c];
            }
            b[i * m + c] = s / l[i * k + i];
        }
        for i in (0..k).rev() {
            let mut s = b[i * m + c];
            for p in i + 1..k {
                s -= l[p * k + i] * b[p * m + c];
            }
            b[i * m + c] = s / l[i * k + i];
        }
    }
}

/// AᵀB for A n×p, B n×q.
pub fn at_b(a: &Matrix, b: &Matrix) -> Vec<f64> {
    assert_eq!(a.rows, b.rows);
    let (p, q) = (a.cols, b.cols);
    let mut out = vec![0.0; p * q];
    for r in 0..a.rows {
        let (ar, br) = (a.row(r), b.row(r));
        for i in 0..p {
            let x = ar[i];
            for j in 0..q {
                out[i * q + j] += x * br[j];
            }
        }
    }
    out
}

fn with_const(m: &Matrix, intercept: bool) -> Matrix {
    if intercept {
        Matrix::new(m.rows, 1, vec![1.0; m.rows]).hcat(m)
    } else {
        m.clone()
    }
}

/// Fits 2SLS on the table; errors name the problem (missing column, NaN, under-identification,
/// collinear instruments or regressors).
pub fn fit(table: &Table, spec: &TslsSpec) -> Result<TslsFit, InputError> {
    if spec.treatment.is_empty() {
        return Err(InputError::new("2SLS needs at least one treatment column"));
    }
    if spec.instrument.len() < spec.treatment.len() {
        return Err(InputError::new(format!(
            "under-identified: {} instrument(s) ({}) for {} treatment(s) ({}); 2SLS needs at least as many excluded instruments as treatments",
            spec.instrument.len(),
            spec.instrument.join(","),
            spec.treatment.len(),
            spec.treatment.join(",")
        )));
    }
    let y = table.matrix(std::slice::from_ref(&spec.outcome))?;
    let exog = with_const(&table.matrix(&spec.exog)?, spec.intercept);
    let x = exog.hcat(&table.matrix(&spec.treatment)?);
    let z = exog.hcat(&table.matrix(&spec.instrument)?);
    let (n, k, kz) = (x.rows, x.cols, z.cols);
    if n <= k {
        return Err(InputError::new(format!(
            "{n} rows for {k} regressors: 2SLS needs more observations than regressors"
        )));
    }
    // ZᵀZ is singular whenever there are fewer rows than instrument columns; say so, rather than
    // "collinear", which would send the user looking for a dependence that is not there.
    if n < kz {
        return Err(InputError::new(format!(
            "{n} rows for {kz} instrument columns (excluded instruments, exogenous regressors and constant): 2SLS needs at least as many rows"
        )));
    }
    let mut names: Vec<String> = Vec::new();
    if spec.intercept {
        names.push("const".into());
    }
    names.extend(spec.exog.iter().cloned());
    names.extend(spec.treatment.iter().cloned());

    // First stage: Π = (ZᵀZ)⁻¹ZᵀX, X̂ = ZΠ.
    let lz = cholesky(&at_b(&z, &z), kz).ok_or_else(|| {
        InputError::new("the instruments (with exogenous regressors and constant) are collinear")
    })?;
    let mut pi = at_b(&z, &x);
    chol_solve(&lz, kz, &mut pi, k);
    let mut xhat = Matrix::zeros(n, k);
    for r in 0..n {
        let zr = z.row(r);
        for j in 0..k {
            xhat.data[r * k + j] = (0..kz).map(|i| zr[i] * pi[i * k + j]).sum();
        }
    }
    let lx = cholesky(&at_b(&xhat, &xhat), k).ok_or_else(|| {
        InputError::new(
            "under-identified: the instruments do not move the treatments independently (rank-deficient first stage)",
        )
    })?;
    let mut beta = at_b(&xhat, &y);
    chol_solve(&lx, k, &mut beta, 1);
    let eps: Vec<f64> = (0..n)
        .map(|r| y.data[r] - x.row(r).iter().zip(&beta).map(|(a, b)| a * b).sum::<f64>())
        .collect();
    let s2 = eps.iter().map(|e| e * e).sum::<f64>() / n as f64;
    // (X̂ᵀX̂)⁻¹
    let mut inv = vec![0.0; k * k];
    for i in 0..k {
        inv[i * k + i] = 1.0;
    }
    chol_solve(&lx, k, &mut inv, k);
    // Meat Σ ε² x̂ x̂ᵀ.
    let mut meat = vec![0.0; k * k];
    for (r, e) in eps.iter().enumerate() {
        let xr = xhat.row(r);
        let w = e * e;
        for i in 0..k {
            for j in 0..k {
                meat[i * k + j] += w * xr[i] * xr[j];
            }
        }
    }
    let mul = |a: &[f64], b: &[f64]| -> Vec<f64> {
        let mut o = vec![0.0; k * k];
        for i in 0..k {
            for p in 0..k {
                for j in 0..k {
                    o[i * k + j] += a[i * k + p] * b[p * k + j];
                }
            }
        }
        o
    };
    let robust = mul(&mul(&inv, &meat), &inv);
    let mut out = TslsFit {
        coef: BTreeMap::new(),
        se: BTreeMap::new(),
        se_robust: BTreeMap::new(),
        nobs: n,
    };
    for (i, name) in names.iter().enumerate() {
        out.coef.insert(name.clone(), beta[i]);
        out.se.insert(name.clone(), (s2 * inv[i * k + i]).sqrt());
        out.se_robust.insert(name.clone(), robust[i * k + i].sqrt());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_instrument_columns_than_rows_is_said_so() {
        let t = Table {
            names: ["y", "t", "z1", "z2", "z3", "z4"]
                .map(String::from)
                .to_vec(),
            columns: vec![
                vec![1.0, 2.0, 3.0, 5.0],
                vec![0.5, 1.0, 2.0, 2.5],
                vec![1.0, 0.0, 2.0, 1.0],
                vec![0.0, 1.0, 1.0, 3.0],
                vec![2.0, 1.0, 0.0, 1.0],
                vec![1.0, 1.0, 3.0, 0.0],
            ],
        };
        let spec = TslsSpec {
            outcome: "y".into(),
            treatment: vec!["t".into()],
            instrument: ["z1", "z2", "z3", "z4"].map(String::from).to_vec(),
            exog: vec![],
            intercept: true,
        };
        let e = fit(&t, &spec).unwrap_err().to_string();
        assert!(e.contains("4 rows for 5 instrument columns"), "{e}");
    }

    /// Exactly identified, one treatment: β_t = cov(z, y)/cov(z, t) (the Wald/IV estimator).
    #[test]
    fn just_identified_equals_the_iv_ratio() {
        let z: Vec<f64> = (0..50).map(|i| ((i * 7) % 11) as f64).collect();
        let t: Vec<f64> = z
            .iter()
            .enumerate()
            .map(|(i, z)| z + ((i * 3) % 5) as f64)
            .collect();
        let y: Vec<f64> = t
            .iter()
            .enumerate()
            .map(|(i, t)| 2.0 * t + ((i * 13) % 7) as f64)
            .collect();
        let table = Table {
            names: vec!["y".into(), "t".into(), "z".into()],
            columns: vec![y.clone(), t.clone(), z.clone()],
        };
        let spec = TslsSpec {
            outcome: "y".into(),
            treatment: vec!["t".into()],
            instrument: vec!["z".into()],
            exog: vec![],
            intercept: true,
        };
        let fit = fit(&table, &spec).unwrap();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let cov = |a: &[f64], b: &[f64]| {
            let (ma, mb) = (mean(a), mean(b));
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - ma) * (y - mb))
                .sum::<f64>()
        };
        let want = cov(&z, &y) / cov(&z, &t);
        assert!((fit.coef["t"] - want).abs() < 1e-12 * want.abs());
        let mut under = spec.clone();
        under.treatment = vec!["t".into(), "z".into()];
        assert!(
            super::fit(&table, &under)
                .unwrap_err()
                .to_string()
                .contains("under-identified")
        );
    }
}
