//! A linear-quadratic bilevel problem with analytic hypergradients: the oracle of the tests and
//! the workload of the benchmark. Public so that other crates can test against it too.
//!
//! Data rows (z, t, y). Outer variable ω = Ω (`[d_t, d_v]`). With v = h(z) ∈ R^{d_v}:
//!   ℓ_in(Ω, v; z, t)  = ½ c ‖v − tΩ‖²
//!   ℓ_out(Ω, v; z, y) = ½ ‖y − vC‖² + ½ ρ ‖Ω‖²       (C: `[d_v, d_y]`, fixed)
//! It is IV-shaped: the inner stage predicts the ω-features of the treatment from the instrument,
//! the outer stage fits the outcome on that prediction.

use burn::tensor::Tensor;
use rand::{RngExt, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

use crate::{
    ctx::{Ctx, to_vec},
    linalg::cholesky_solve,
    params::Params,
    problem::BilevelProblem,
};

/// One batch of rows; the same type serves as inner and outer data.
#[derive(Debug, Clone)]
pub struct LqBatch {
    pub z: Tensor<2>,
    pub t: Tensor<2>,
    pub y: Tensor<2>,
}

/// Which exact hypergradient `closed_form_total_gradient` returns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LqOracle {
    /// Inner function linear in [z; 1] with ridge λ on its coefficients (the parametric answer).
    LinearFeatures { ridge: f64 },
    /// Inner function unrestricted on the sample (the functional answer v_b = t_bΩ); inner and
    /// outer batches must be the same rows.
    Pointwise,
}

#[derive(Debug, Clone)]
pub struct LinearQuadratic {
    pub c: f64,
    pub rho: f64,
    /// C, `[d_v, d_y]`.
    pub head: Tensor<2>,
    pub oracle: LqOracle,
}

/// Row-major host matrix for the closed forms.
#[derive(Debug, Clone)]
struct Mat {
    r: usize,
    c: usize,
    d: Vec<f64>,
}

impl Mat {
    fn of(t: &Tensor<2>) -> Self {
        let [r, c] = t.dims();
        Self { r, c, d: to_vec(t) }
    }
    fn t(&self) -> Self {
        let mut d = vec![0.0; self.r * self.c];
        for i in 0..self.r {
            for j in 0..self.c {
                d[j * self.r + i] = self.d[i * self.c + j];
            }
        }
        Self {
            r: self.c,
            c: self.r,
            d,
        }
    }
    fn mul(&self, o: &Self) -> Self {
        assert_eq!(self.c, o.r);
        let mut d = vec![0.0; self.r * o.c];
        for i in 0..self.r {
            for k in 0..self.c {
                let a = self.d[i * self.c + k];
                for j in 0..o.c {
                    d[i * o.c + j] += a * o.d[k * o.c + j];
                }
            }
        }
        Self {
            r: self.r,
            c: o.c,
            d,
        }
    }
    fn augmented(&self) -> Self {
        let mut d = Vec::with_capacity(self.r * (self.c + 1));
        for i in 0..self.r {
            d.extend_from_slice(&self.d[i * self.c..(i + 1) * self.c]);
            d.push(1.0);
        }
        Self {
            r: self.r,
            c: self.c + 1,
            d,
        }
    }
}

impl LinearQuadratic {
    /// M such that the outer predictions at the inner solution are V_Q = M Ω (`[m, d_t]`).
    fn prediction_map(&self, inner: &LqBatch, outer: &LqBatch) -> Mat {
        match self.oracle {
            LqOracle::Pointwise => Mat::of(&outer.t),
            LqOracle::LinearFeatures { ridge } => {
                // W* = (c Z̃ᵀZ̃/n + λI)⁻¹ (c/n) Z̃ᵀ T Ω = A Ω;  M = Z̃_Q A.
                let z = Mat::of(&inner.z).augmented();
                let n = z.r as f64;
                let mut a = z.t().mul(&z);
                a.d.iter_mut().for_each(|x| *x *= self.c / n);
                for i in 0..a.r {
                    a.d[i * a.c + i] += ridge;
                }
                let mut rhs = z.t().mul(&Mat::of(&inner.t));
                rhs.d.iter_mut().for_each(|x| *x *= self.c / n);
                let sol = cholesky_solve(&a.d, &rhs.d, a.r, rhs.c)
                    .expect("Z̃ᵀZ̃ + λI is positive definite");
                Mat::of(&outer.z).augmented().mul(&Mat {
                    r: rhs.r,
                    c: rhs.c,
                    d: sol,
                })
            }
        }
    }

    /// F(Ω) at the exact inner solution.
    pub fn value(&self, omega: &Params, inner: &LqBatch, outer: &LqBatch) -> f64 {
        let (m, om, c, y) = (
            self.prediction_map(inner, outer),
            Mat::of(&omega.0[0]),
            Mat::of(&self.head),
            Mat::of(&outer.y),
        );
        let pred = m.mul(&om).mul(&c);
        let fit: f64 =
            y.d.iter()
                .zip(&pred.d)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>()
                / (2.0 * y.r as f64);
        fit + 0.5 * self.rho * om.d.iter().map(|x| x * x).sum::<f64>()
    }
}

impl BilevelProblem for LinearQuadratic {
    type InnerBatch = LqBatch;
    type OuterBatch = LqBatch;

    fn inner_inputs(&self, batch: &LqBatch) -> Tensor<2> {
        batch.z.clone()
    }
    fn outer_inputs(&self, batch: &LqBatch) -> Tensor<2> {
        batch.z.clone()
    }

    fn inner_loss(&self, omega: &Params, v: Tensor<2>, batch: &LqBatch) -> Tensor<1> {
        let n = v.dims()[0] as f64;
        (v - batch.t.clone().matmul(omega.0[0].clone()))
            .square()
            .sum()
            .mul_scalar(0.5 * self.c / n)
    }

    fn outer_loss(&self, omega: &Params, v: Tensor<2>, batch: &LqBatch) -> Tensor<1> {
        let m = v.dims()[0] as f64;
        let fit = (batch.y.clone() - v.matmul(self.head.clone()))
            .square()
            .sum()
            .mul_scalar(0.5 / m);
        fit + omega.0[0].clone().square().sum().mul_scalar(0.5 * self.rho)
    }

    fn inner_grad_v(&self, omega: &Params, v: Tensor<2>, batch: &LqBatch) -> Tensor<2> {
        (v - batch.t.clone().matmul(omega.0[0].clone())).mul_scalar(self.c)
    }

    fn inner_hessian_diag(
        &self,
        _omega: &Params,
        v: Tensor<2>,
        _batch: &LqBatch,
    ) -> Option<Tensor<2>> {
        Some(v.ones_like().mul_scalar(self.c))
    }

    /// ∇F(Ω) = −(1/m) Mᵀ (Y − MΩC) Cᵀ + ρΩ.
    fn closed_form_total_gradient(
        &self,
        ctx: &Ctx,
        omega: &Params,
        inner: &LqBatch,
        outer: &LqBatch,
    ) -> Option<Params> {
        let (m, om, c, y) = (
            self.prediction_map(inner, outer),
            Mat::of(&omega.0[0]),
            Mat::of(&self.head),
            Mat::of(&outer.y),
        );
        let pred = m.mul(&om).mul(&c);
        let resid = Mat {
            r: y.r,
            c: y.c,
            d: y.d.iter().zip(&pred.d).map(|(a, b)| a - b).collect(),
        };
        let g = m.t().mul(&resid).mul(&c.t());
        let scale = -1.0 / y.r as f64;
        let d: Vec<f64> =
            g.d.iter()
                .zip(&om.d)
                .map(|(g, w)| scale * g + self.rho * w)
                .collect();
        Some(Params::new(vec![ctx.tensor2(d, om.r, om.c)]))
    }
}

/// Sizes of a generated problem.
#[derive(Debug, Clone, Copy)]
pub struct LqDims {
    pub d_z: usize,
    pub d_t: usize,
    pub d_v: usize,
    pub d_y: usize,
}

/// A generated instance: confounded IV-style data from a ground-truth Ω*.
pub struct LqInstance {
    pub problem: LinearQuadratic,
    pub inner: LqBatch,
    pub outer: LqBatch,
    pub omega_true: Params,
    /// A random starting point for ω.
    pub omega0: Params,
}

fn normal(rng: &mut StdRng, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| rng.sample::<f64, _>(StandardNormal))
        .collect()
}

/// z ~ N(0, I); confounder e ~ N(0, I_{d_t}); t = zB + e + 0.1ξ; y = tΩ*C + γ Σe + 0.1ζ.
/// Because e enters both t and y, regressing y on t is biased; through z it is not.
/// `same_rows`: the outer batch is the inner batch (the pointwise oracle needs that).
#[allow(clippy::too_many_arguments)]
pub fn generate(
    ctx: &Ctx,
    dims: LqDims,
    n: usize,
    m: usize,
    c: f64,
    rho: f64,
    oracle: LqOracle,
    same_rows: bool,
    seed: u64,
) -> LqInstance {
    let mut rng = StdRng::seed_from_u64(seed);
    let b = normal(&mut rng, dims.d_z * dims.d_t);
    let omega_true = normal(&mut rng, dims.d_t * dims.d_v);
    let head = normal(&mut rng, dims.d_v * dims.d_y)
        .iter()
        .map(|x| x / (dims.d_v as f64).sqrt())
        .collect::<Vec<_>>();
    let omega0 = normal(&mut rng, dims.d_t * dims.d_v)
        .iter()
        .map(|x| 0.3 * x)
        .collect::<Vec<_>>();
    let (bm, om, cm) = (
        Mat {
            r: dims.d_z,
            c: dims.d_t,
            d: b,
        },
        Mat {
            r: dims.d_t,
            c: dims.d_v,
            d: omega_true.clone(),
        },
        Mat {
            r: dims.d_v,
            c: dims.d_y,
            d: head.clone(),
        },
    );
    let mut draw = |rows: usize| {
        let z = Mat {
            r: rows,
            c: dims.d_z,
            d: normal(&mut rng, rows * dims.d_z),
        };
        let e = normal(&mut rng, rows * dims.d_t);
        let mut t = z.mul(&bm);
        let xi = normal(&mut rng, rows * dims.d_t);
        for k in 0..t.d.len() {
            t.d[k] += e[k] + 0.1 * xi[k];
        }
        let mut y = t.mul(&om).mul(&cm);
        let zeta = normal(&mut rng, rows * dims.d_y);
        for r in 0..rows {
            let conf: f64 = e[r * dims.d_t..(r + 1) * dims.d_t].iter().sum();
            for j in 0..dims.d_y {
                y.d[r * dims.d_y + j] += 0.5 * conf + 0.1 * zeta[r * dims.d_y + j];
            }
        }
        LqBatch {
            z: ctx.tensor2(z.d, rows, dims.d_z),
            t: ctx.tensor2(t.d, rows, dims.d_t),
            y: ctx.tensor2(y.d, rows, dims.d_y),
        }
    };
    let inner = draw(n);
    let outer = if same_rows { inner.clone() } else { draw(m) };
    LqInstance {
        problem: LinearQuadratic {
            c,
            rho,
            head: ctx.tensor2(head, dims.d_v, dims.d_y),
            oracle,
        },
        inner,
        outer,
        omega_true: Params::new(vec![ctx.tensor2(omega_true, dims.d_t, dims.d_v)]),
        omega0: Params::new(vec![ctx.tensor2(omega0, dims.d_t, dims.d_v)]),
    }
}
