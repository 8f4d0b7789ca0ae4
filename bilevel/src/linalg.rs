//! Small dense linear algebra on the host (f64) and Krylov solvers generic over a vector type.
//! Kept pure and tiny: these are the pieces every method is tested through.

use crate::params::Params;

/// What CG and the Neumann series need from a vector.
pub trait Vector: Clone {
    /// self + s·other
    fn axpy(&self, s: f64, other: &Self) -> Self;
    fn scale(&self, s: f64) -> Self;
    fn dot(&self, other: &Self) -> f64;
}

impl Vector for Vec<f64> {
    fn axpy(&self, s: f64, other: &Self) -> Self {
        self.iter().zip(other).map(|(a, b)| a + s * b).collect()
    }
    fn scale(&self, s: f64) -> Self {
        self.iter().map(|a| a * s).collect()
    }
    fn dot(&self, other: &Self) -> f64 {
        self.iter().zip(other).map(|(a, b)| a * b).sum()
    }
}

impl Vector for Params {
    fn axpy(&self, s: f64, other: &Self) -> Self {
        Params::axpy(self, s, other)
    }
    fn scale(&self, s: f64) -> Self {
        Params::scale(self, s)
    }
    fn dot(&self, other: &Self) -> f64 {
        Params::dot(self, other)
    }
}

/// Conjugate gradient on A x = b from `x0`, at most `iters` products with A; stops early when the
/// residual norm falls below `tol`·‖b‖. Exact in n steps for symmetric positive definite A.
pub fn conjugate_gradient<V: Vector>(
    mut apply: impl FnMut(&V) -> V,
    b: &V,
    x0: V,
    iters: usize,
    tol: f64,
) -> V {
    let b_norm = b.dot(b).sqrt();
    let mut x = x0;
    let mut r = b.axpy(-1.0, &apply(&x));
    let mut p = r.clone();
    let mut rr = r.dot(&r);
    for _ in 0..iters {
        if rr.sqrt() <= tol * b_norm || rr == 0.0 {
            break;
        }
        let ap = apply(&p);
        let pap = p.dot(&ap);
        if pap == 0.0 || !pap.is_finite() {
            break;
        }
        // Negative curvature (a parametric Hessian away from a minimum) is not a stop: like the
        // reference implementations, AID runs its K iterations; damping is the user's remedy.
        let alpha = rr / pap;
        x = x.axpy(alpha, &p);
        r = r.axpy(-alpha, &ap);
        let rr_new = r.dot(&r);
        p = r.axpy(rr_new / rr, &p);
        rr = rr_new;
    }
    x
}

/// Neumann series for A x = b: x = η Σ_{k<K} (I − ηA)^k b. Converges when 0 < η < 2/λ_max(A).
pub fn neumann<V: Vector>(mut apply: impl FnMut(&V) -> V, b: &V, eta: f64, terms: usize) -> V {
    let mut term = b.clone();
    let mut sum = b.clone();
    for _ in 1..terms {
        term = term.axpy(-eta, &apply(&term));
        sum = sum.axpy(1.0, &term);
    }
    sum.scale(eta)
}

/// Solves the symmetric positive definite system A X = B (A n×n, B n×k, row-major) by Cholesky.
/// Returns `None` when A is not numerically positive definite.
pub fn cholesky_solve(a: &[f64], b: &[f64], n: usize, k: usize) -> Option<Vec<f64>> {
    assert_eq!(a.len(), n * n);
    assert_eq!(b.len(), n * k);
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = a[i * n + j] - (0..j).map(|m| l[i * n + m] * l[j * n + m]).sum::<f64>();
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    let mut x = b.to_vec();
    for c in 0..k {
        for i in 0..n {
            let s: f64 = x[i * k + c] - (0..i).map(|m| l[i * n + m] * x[m * k + c]).sum::<f64>();
            x[i * k + c] = s / l[i * n + i];
        }
        for i in (0..n).rev() {
            let s: f64 =
                x[i * k + c] - (i + 1..n).map(|m| l[m * n + i] * x[m * k + c]).sum::<f64>();
            x[i * k + c] = s / l[i * n + i];
        }
    }
    Some(x)
}

/// Weighted ridge solve, one output column at a time: for each column c of the right-hand side,
/// (Φᵀ diag(w_c) Φ / n + λ I) x_c = r_c.
/// `phi` is n×p, `weights` n×k (per-sample curvature of each output), `rhs` p×k; returns p×k.
/// This is the system of the linear adjoint and of a closed-form ridge head when the loss
/// curvature in the prediction is diagonal (for c·I every column shares one matrix).
pub fn weighted_ridge_solve(
    phi: &[f64],
    weights: &[f64],
    rhs: &[f64],
    n: usize,
    p: usize,
    k: usize,
    ridge: f64,
) -> Option<Vec<f64>> {
    // Squared losses weight every output alike: one Gram matrix and one factorisation then
    // serve all k right-hand sides (k = 32 IV features: 32× less work than per output).
    let gram = |c: usize| {
        let mut a = vec![0.0; p * p];
        for s in 0..n {
            let w = weights[s * k + c] / n as f64;
            if w == 0.0 {
                continue;
            }
            let row = &phi[s * p..(s + 1) * p];
            for i in 0..p {
                let wi = w * row[i];
                for j in 0..=i {
                    a[i * p + j] += wi * row[j];
                }
            }
        }
        for i in 0..p {
            for j in 0..i {
                a[j * p + i] = a[i * p + j];
            }
            a[i * p + i] += ridge;
        }
        a
    };
    let shared = (0..n).all(|s| {
        let row = &weights[s * k..(s + 1) * k];
        row.iter().all(|&w| w == row[0])
    });
    if shared && k > 0 {
        return cholesky_solve(&gram(0), rhs, p, k);
    }
    let mut out = vec![0.0; p * k];
    for c in 0..k {
        let a = gram(c);
        let r: Vec<f64> = (0..p).map(|i| rhs[i * k + c]).collect();
        let x = cholesky_solve(&a, &r, p, 1)?;
        for i in 0..p {
            out[i * k + c] = x[i];
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matvec(a: &[f64], x: &[f64]) -> Vec<f64> {
        let n = x.len();
        (0..n)
            .map(|i| (0..n).map(|j| a[i * n + j] * x[j]).sum())
            .collect()
    }

    const A: [f64; 9] = [4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 2.0];
    const B: [f64; 3] = [1.0, -2.0, 0.5];

    #[test]
    fn cholesky_solves_spd_and_rejects_indefinite() {
        let x = cholesky_solve(&A, &B, 3, 1).unwrap();
        let r = matvec(&A, &x);
        for i in 0..3 {
            assert!((r[i] - B[i]).abs() < 1e-14);
        }
        assert!(cholesky_solve(&[1.0, 2.0, 2.0, 1.0], &[1.0, 1.0], 2, 1).is_none());
    }

    #[test]
    fn cg_is_exact_in_n_steps_and_neumann_converges() {
        let exact = cholesky_solve(&A, &B, 3, 1).unwrap();
        let x = conjugate_gradient(
            |v: &Vec<f64>| matvec(&A, v),
            &B.to_vec(),
            vec![0.0; 3],
            3,
            0.0,
        );
        let y = neumann(|v: &Vec<f64>| matvec(&A, v), &B.to_vec(), 0.2, 400);
        for i in 0..3 {
            assert!((x[i] - exact[i]).abs() < 1e-12, "cg {x:?} vs {exact:?}");
            assert!(
                (y[i] - exact[i]).abs() < 1e-10,
                "neumann {y:?} vs {exact:?}"
            );
        }
        // One CG step is not exact: the test would catch a solver that ignores `iters`.
        let x1 = conjugate_gradient(
            |v: &Vec<f64>| matvec(&A, v),
            &B.to_vec(),
            vec![0.0; 3],
            1,
            0.0,
        );
        assert!((x1[0] - exact[0]).abs() > 1e-3);
    }

    #[test]
    fn weighted_ridge_matches_normal_equations() {
        // n=4 samples, p=2 features, k=2 outputs with different weights per output.
        let phi = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, -1.0];
        let w = [1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0];
        let rhs = [1.0, 0.5, -1.0, 2.0];
        let x = weighted_ridge_solve(&phi, &w, &rhs, 4, 2, 2, 0.1).unwrap();
        for c in 0..2 {
            let wc = (c + 1) as f64;
            // Φᵀ Φ = [[6, -1], [-1, 3]]
            let a = [
                6.0 * wc / 4.0 + 0.1,
                -wc / 4.0,
                -wc / 4.0,
                3.0 * wc / 4.0 + 0.1,
            ];
            let xc = [x[c], x[2 + c]];
            let r = matvec(&a, &xc);
            assert!((r[0] - rhs[c]).abs() < 1e-13 && (r[1] - rhs[2 + c]).abs() < 1e-13);
        }
        // Shared weights (the one-factorisation path): every column solves the same system.
        let x = weighted_ridge_solve(&phi, &[1.5; 8], &rhs, 4, 2, 2, 0.1).unwrap();
        let a = [
            6.0 * 1.5 / 4.0 + 0.1,
            -1.5 / 4.0,
            -1.5 / 4.0,
            3.0 * 1.5 / 4.0 + 0.1,
        ];
        for c in 0..2 {
            let r = matvec(&a, &[x[c], x[2 + c]]);
            assert!((r[0] - rhs[c]).abs() < 1e-13 && (r[1] - rhs[2 + c]).abs() < 1e-13);
        }
    }
}
