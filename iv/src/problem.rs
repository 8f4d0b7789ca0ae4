//! Deep IV as a functional bilevel problem (docs/method.md, bilevel/README.md):
//! ω = treatment network φ_ω, inner h(z) = W[ψ(z); 1] (ψ = instrument network, the solver's
//! inner model), ℓ_in = ½‖v − φ_ω(t)‖² on stage-1 rows, and L_out = the stage-2 ridge loss
//! (1/N₂)‖y − [v,1]u*‖² + λ₂‖u*‖² with u* its exact minimiser on stage-2 rows.
//!
//! Because u* minimises L_out(v, ·) exactly, ∂_v L_out at fixed u* is the exact derivative of
//! the profiled loss (envelope theorem); no differentiable linear solve is needed.
//!
//! With a covariate network χ (DFIV's demand model, [`Covariate`]) the stage-2 design is the
//! row-wise outer product [v, 1] ⊗ [χ(x), 1] and χ's parameters are part of ω; they enter L_out
//! only, so their gradient is the direct term (again at fixed u*).

use std::cell::RefCell;

use burn::tensor::Tensor;
use funcrl_bilevel::{BilevelProblem, Ctx, Params, ctx::to_vec};

use crate::data::Matrix;
use crate::nets::Net;
use crate::tsls::{chol_solve, cholesky};

pub struct Stage1 {
    pub z: Tensor<2>,
    pub t: Tensor<2>,
    /// Identifies t for the feature cache (hashing 10M treatment values per call costs more
    /// than it saves); [`Stage1::new`] gives every batch its own.
    pub id: u64,
}

impl Stage1 {
    pub fn new(z: Tensor<2>, t: Tensor<2>) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self { z, t, id }
    }
}

pub struct Stage2 {
    pub z: Tensor<2>,
    pub y: Vec<f64>,
    pub y_t: Tensor<2>,
    /// Exogenous covariates of the stage-2 rows, for the covariate net (None without one).
    pub x: Option<Tensor<2>>,
}

/// DFIV's covariate network χ on the exogenous columns: its tensors follow the treatment
/// net's in ω, from index `split` on.
pub struct Covariate {
    pub net: Net,
    pub split: usize,
}

/// The IV problem: the treatment network, λ₂, and a cache of φ_ω(t₁) for the inner steps
/// (ω is constant during them; recomputing the 4096→1024 layer 20 times per outer step would
/// dominate the cost).
///
/// The cached forward is made on tracked copies of ω and its graph is kept: the cross term of
/// the total gradient, ∂_ω mean⟨v − φ_ω(t₁), a⟩ = −J_φᵀa/n, is then one backward through that
/// graph instead of a second forward and a backward ([`BilevelProblem::inner_cross_vjp`]).
pub struct IvProblem {
    pub ctx: Ctx,
    pub net: Net,
    pub lambda2: f64,
    /// Reuse the inner solve's forward for the cross term (off: a fresh forward each time).
    pub reuse_forward: bool,
    pub covariate: Option<Covariate>,
    cache: RefCell<Option<Cached>>,
}

struct Cached {
    key: Vec<f64>,
    values: Tensor<2>,
    /// The tracked leaves and features, until one backward has consumed the graph.
    graph: Option<(Params, Tensor<2>)>,
}

/// u* = argmin (1/N)‖y − Ṽu‖² + λ‖u‖², Ṽ = [v, 1]: (ṼᵀṼ/N + λI)u = Ṽᵀy/N.
pub fn stage2_ridge(v: &[f64], n: usize, p: usize, y: &[f64], lambda: f64) -> Option<Vec<f64>> {
    let row = |r: usize, i: usize| if i < p { v[r * p + i] } else { 1.0 };
    ridge(n, p + 1, row, y, lambda)
}

/// u* = argmin (1/N)‖y − Xu‖² + λ‖u‖² for the n×q design X given entry-wise.
fn ridge(
    n: usize,
    q: usize,
    x: impl Fn(usize, usize) -> f64,
    y: &[f64],
    lambda: f64,
) -> Option<Vec<f64>> {
    let mut a = vec![0.0; q * q];
    let mut b = vec![0.0; q];
    let inv = 1.0 / n as f64;
    for (r, &yr) in y.iter().enumerate().take(n) {
        for i in 0..q {
            let xi = x(r, i);
            b[i] += xi * yr * inv;
            for j in 0..=i {
                a[i * q + j] += xi * x(r, j) * inv;
            }
        }
    }
    for i in 0..q {
        for j in 0..i {
            a[j * q + i] = a[i * q + j];
        }
        a[i * q + i] += lambda;
    }
    let l = cholesky(&a, q)?;
    chol_solve(&l, q, &mut b, 1);
    Some(b)
}

/// Row-wise [a, 1] ⊗ [b, 1], flattened: `[n, (p+1)(q+1)]` (DFIV's stage-2 features).
pub fn outer_design(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    let ([n, p], q) = (a.dims(), b.dims()[1]);
    let ones = Tensor::<2>::ones([n, 1], (&a.device(), a.dtype()));
    let a1 = Tensor::cat(vec![a, ones.clone()], 1).reshape([n, p + 1, 1]);
    let b1 = Tensor::cat(vec![b, ones], 1).reshape([n, 1, q + 1]);
    (a1 * b1).reshape([n, (p + 1) * (q + 1)])
}

impl IvProblem {
    pub fn new(ctx: Ctx, net: Net, lambda2: f64) -> Self {
        Self {
            ctx,
            net,
            lambda2,
            reuse_forward: true,
            covariate: None,
            cache: RefCell::new(None),
        }
    }

    /// One spectral-norm power step for the treatment net and the covariate net. The step
    /// changes φ_ω for the same ω, so the feature cache (keyed by ω alone) is dropped: a value
    /// cached before it — by an evaluation between iterations — would otherwise be reused with
    /// the previous normalisation, and the run would depend on how often it is evaluated.
    pub fn refresh(&self, ctx: &Ctx, omega: &Params) {
        *self.cache.borrow_mut() = None;
        self.net.refresh(ctx, omega);
        if let Some(c) = &self.covariate {
            c.net
                .refresh(ctx, &Params::new(omega.0[c.split..].to_vec()));
        }
    }

    /// With a covariate net: the stage-2 design [v, 1] ⊗ [χ(x), 1] (differentiable in v and in
    /// χ's part of ω). None without one.
    pub fn covariate_design(
        &self,
        omega: &Params,
        v: Tensor<2>,
        x: &Tensor<2>,
    ) -> Option<Tensor<2>> {
        let c = self.covariate.as_ref()?;
        let chi = c.net.run(&Params::new(omega.0[c.split..].to_vec()), x).0;
        Some(outer_design(v, chi))
    }

    /// u* for the stage-2 rows of `b` at predicted features v (host values).
    pub fn stage2_weights(&self, omega: &Params, v: &Tensor<2>, b: &Stage2) -> Vec<f64> {
        match b
            .x
            .as_ref()
            .and_then(|x| self.covariate_design(omega, v.clone(), x))
        {
            Some(d) => {
                let [n, q] = d.dims();
                let d = to_vec(&d);
                ridge(n, q, |r, i| d[r * q + i], &b.y, self.lambda2)
                    .expect("λ₂ > 0 makes the stage-2 system SPD")
            }
            None => self.stage2(v, &b.y),
        }
    }

    fn fingerprint(omega: &Params, b: &Stage1) -> Vec<f64> {
        let mut f: Vec<f64> = omega
            .0
            .iter()
            .map(|p| to_vec(&p.clone().sum())[0])
            .collect();
        f.extend(to_vec(omega.0.last().expect("params")));
        f.extend(to_vec(&omega.0[omega.len() - 2]));
        f.push(b.id as f64);
        f
    }

    /// φ_ω(t): a fresh graph when ω is tracked, else cached.
    pub fn features(&self, omega: &Params, b: &Stage1) -> Tensor<2> {
        let t = &b.t;
        if omega.0.iter().any(|p| p.is_require_grad()) {
            return self.net.run(omega, t).0;
        }
        let key = Self::fingerprint(omega, b);
        if let Some(c) = self.cache.borrow().as_ref()
            && c.key == key
        {
            return c.values.clone();
        }
        let (values, graph) = if self.reuse_forward {
            let leaves = omega.tracked();
            let f = self.net.run(&leaves, t).0;
            (f.clone().detach(), Some((leaves, f)))
        } else {
            (self.net.run(omega, t).0.detach(), None)
        };
        *self.cache.borrow_mut() = Some(Cached {
            key,
            values: values.clone(),
            graph,
        });
        values
    }

    /// u* on stage-2 rows for predicted features v (host values).
    pub fn stage2(&self, v: &Tensor<2>, y: &[f64]) -> Vec<f64> {
        let [n, p] = v.dims();
        stage2_ridge(&to_vec(v), n, p, y, self.lambda2)
            .expect("λ₂ > 0 makes the stage-2 system SPD")
    }

    /// f̂(t) = [φ_ω(t), 1]·u for test treatments (host matrix), in chunks. With a covariate net
    /// the last columns of `t` are the covariates x and f̂ = ([φ_ω(t), 1] ⊗ [χ(x), 1])·u.
    pub fn predict(&self, omega: &Params, u: &[f64], t: &Matrix) -> Vec<f64> {
        let mut out = Vec::with_capacity(t.rows);
        let om = omega.detached();
        let d_cov = self.covariate.as_ref().map_or(0, |c| c.net.widths[0]);
        let d_t = t.cols - d_cov;
        for lo in (0..t.rows).step_by(1024) {
            let hi = (lo + 1024).min(t.rows);
            let (tp, xp) = t.slice_rows(lo, hi).split_cols(d_t);
            let tensor = |m: Matrix| self.ctx.tensor2(m.data, m.rows, m.cols);
            let phi = self.net.run(&om, &tensor(tp)).0;
            let design = if d_cov > 0 {
                self.covariate_design(&om, phi.clone(), &tensor(xp))
            } else {
                None
            };
            // The covariate design carries its own constant column (1 ⊗ 1).
            let (f, p, bias) = match design {
                Some(d) => (to_vec(&d), d.dims()[1], 0.0),
                None => (to_vec(&phi), u.len() - 1, u[u.len() - 1]),
            };
            for r in 0..hi - lo {
                out.push((0..p).map(|i| f[r * p + i] * u[i]).sum::<f64>() + bias);
            }
        }
        out
    }
}

impl BilevelProblem for IvProblem {
    type InnerBatch = Stage1;
    type OuterBatch = Stage2;

    fn inner_inputs(&self, b: &Stage1) -> Tensor<2> {
        b.z.clone()
    }
    fn outer_inputs(&self, b: &Stage2) -> Tensor<2> {
        b.z.clone()
    }

    fn inner_loss(&self, omega: &Params, v: Tensor<2>, b: &Stage1) -> Tensor<1> {
        let n = v.dims()[0] as f64;
        (v - self.features(omega, b))
            .square()
            .sum()
            .mul_scalar(0.5 / n)
    }

    fn inner_grad_v(&self, omega: &Params, v: Tensor<2>, b: &Stage1) -> Tensor<2> {
        v - self.features(omega, b)
    }

    fn inner_hessian_diag(&self, _o: &Params, v: Tensor<2>, _b: &Stage1) -> Option<Tensor<2>> {
        Some(v.ones_like())
    }

    /// ∂_ω Σ_i mean⟨v_i − φ_ω(t₁), a_i⟩ = −J_φᵀ(Σ_i a_i)/n: v_i drops out, so all pairs share
    /// one backward, through the inner solve's forward when it is still there.
    fn inner_cross_vjp(
        &self,
        omega: &Params,
        pairs: &[(Tensor<2>, Tensor<2>)],
        b: &Stage1,
    ) -> Option<Params> {
        let n = b.t.dims()[0] as f64;
        let a = pairs
            .iter()
            .map(|(_, a)| a.clone().detach())
            .reduce(|x, y| x + y)?;
        let omega = omega.detached();
        let cached = if self.reuse_forward {
            let key = Self::fingerprint(&omega, b);
            let mut cache = self.cache.borrow_mut();
            cache
                .as_mut()
                .filter(|c| c.key == key)
                .and_then(|c| c.graph.take())
        } else {
            None
        };
        let (leaves, f) = cached.unwrap_or_else(|| {
            let leaves = omega.tracked();
            let f = self.net.run(&leaves, &b.t).0;
            (leaves, f)
        });
        let pairing = (f * a).sum().mul_scalar(-1.0 / n);
        Some(leaves.grads(&pairing.backward()))
    }

    fn outer_loss(&self, omega: &Params, v: Tensor<2>, b: &Stage2) -> Tensor<1> {
        let [n, p] = v.dims();
        if let Some(d) =
            b.x.as_ref()
                .and_then(|x| self.covariate_design(omega, v.clone(), x))
        {
            let u = self.stage2_weights(&omega.detached(), &v.clone().detach(), b);
            let q = u.len();
            let pen: f64 = u.iter().map(|x| x * x).sum::<f64>() * self.lambda2;
            let w = self.ctx.tensor2(u, q, 1);
            return (b.y_t.clone() - d.matmul(w))
                .square()
                .sum()
                .mul_scalar(1.0 / n as f64)
                .add_scalar(pen);
        }
        let u = self.stage2(&v, &b.y);
        let w = self.ctx.tensor2(u[..p].to_vec(), p, 1);
        let resid = b.y_t.clone() - v.matmul(w).add_scalar(u[p]);
        let pen: f64 = u.iter().map(|x| x * x).sum::<f64>() * self.lambda2;
        resid
            .square()
            .sum()
            .mul_scalar(1.0 / n as f64)
            .add_scalar(pen)
    }
}

/// A `[r, c]` tensor of U(−1, 1) values (tests).
#[cfg(test)]
pub(crate) fn random_tensor(
    ctx: &Ctx,
    rng: &mut rand::rngs::StdRng,
    r: usize,
    c: usize,
) -> Tensor<2> {
    use rand::RngExt;
    ctx.tensor2(
        (0..r * c)
            .map(|_| rng.random::<f64>() * 2.0 - 1.0)
            .collect(),
        r,
        c,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DFIV as the solver runs it: closed-form stage-1 head with ridge `l1`, no inner steps.
    fn dfiv_config(l1: f64) -> SolverConfig {
        SolverConfig {
            inner: InnerConfig {
                steps: 0,
                ridge: l1,
                closed_form_head: true,
                ..InnerConfig::default()
            },
            method: MethodConfig::FuncidLinear { ridge: None },
            outer_optimizer: funcrl_bilevel::OptimizerConfig::adam(1e-3),
            seed: 0,
        }
    }
    use crate::nets::Act;
    use funcrl_bilevel::{
        InnerModel, MethodConfig, Precision, Solver, SolverConfig, inner::InnerConfig,
    };
    use rand::{RngExt, SeedableRng, rngs::StdRng};

    /// Host DFIV objective: stage 1 W = (Ψ̃₁ᵀΨ̃₁/N₁ + λ₁I)⁻¹Ψ̃₁ᵀφ_ω(t₁)/N₁, v₂ = Ψ̃₂W, then the
    /// stage-2 ridge loss — the two closed-form ridge solves DFIV differentiates through.
    /// Host stage 1: W = (Ψ̃₁ᵀΨ̃₁/N₁ + λ₁I)⁻¹Ψ̃₁ᵀφ/N₁ and the stage-2 predictions v₂ = Ψ̃₂W
    /// (row-major `[N₂, d_v]`).
    fn host_stage1(phi: &[f64], psi1: &Matrix, psi2: &Matrix, l1: f64) -> Vec<f64> {
        let (n1, q) = (psi1.rows, psi1.cols);
        let dv = phi.len() / n1;
        let mut a = crate::tsls::at_b(psi1, psi1);
        a.iter_mut().for_each(|x| *x /= n1 as f64);
        for i in 0..q {
            a[i * q + i] += l1;
        }
        let mut w = crate::tsls::at_b(psi1, &Matrix::new(n1, dv, phi.to_vec()));
        w.iter_mut().for_each(|x| *x /= n1 as f64);
        chol_solve(&cholesky(&a, q).unwrap(), q, &mut w, dv);
        let n2 = psi2.rows;
        let mut v2 = vec![0.0; n2 * dv];
        for r in 0..n2 {
            for c in 0..dv {
                v2[r * dv + c] = (0..q).map(|i| psi2.at(r, i) * w[i * dv + c]).sum();
            }
        }
        v2
    }

    /// Instrument features ψ(z) with the augmenting 1, at the solver's θ (held fixed: DFIV's
    /// ω-gradient does not move the instrument net).
    fn augmented(solver: &Solver<IvProblem, Net>, z: &Tensor<2>) -> Matrix {
        let f = to_vec(&solver.model.forward(&solver.theta, z).features);
        let n = z.dims()[0];
        let p = f.len() / n;
        let mut d = Vec::new();
        for r in 0..n {
            d.extend_from_slice(&f[r * p..(r + 1) * p]);
            d.push(1.0);
        }
        Matrix::new(n, p + 1, d)
    }

    fn dfiv_objective(
        p: &IvProblem,
        omega: &Params,
        psi1: &Matrix,
        psi2: &Matrix,
        t1: &Tensor<2>,
        y2: &[f64],
        l1: f64,
    ) -> f64 {
        let phi = to_vec(&p.net.run(&omega.detached(), t1).0);
        let v2 = host_stage1(&phi, psi1, psi2, l1);
        let (n2, dv) = (psi2.rows, phi.len() / psi1.rows);
        let u = stage2_ridge(&v2, n2, dv, y2, p.lambda2).unwrap();
        let mut loss = 0.0;
        for r in 0..n2 {
            let pred: f64 = (0..dv).map(|c| v2[r * dv + c] * u[c]).sum::<f64>() + u[dv];
            loss += (y2[r] - pred).powi(2) / n2 as f64;
        }
        loss + p.lambda2 * u.iter().map(|x| x * x).sum::<f64>()
    }

    /// The problem without its `inner_cross_vjp`: the bilevel crate's generic cross term.
    struct Generic<'a>(&'a IvProblem);

    impl BilevelProblem for Generic<'_> {
        type InnerBatch = Stage1;
        type OuterBatch = Stage2;
        fn inner_inputs(&self, b: &Stage1) -> Tensor<2> {
            self.0.inner_inputs(b)
        }
        fn outer_inputs(&self, b: &Stage2) -> Tensor<2> {
            self.0.outer_inputs(b)
        }
        fn inner_loss(&self, o: &Params, v: Tensor<2>, b: &Stage1) -> Tensor<1> {
            self.0.inner_loss(o, v, b)
        }
        fn outer_loss(&self, o: &Params, v: Tensor<2>, b: &Stage2) -> Tensor<1> {
            self.0.outer_loss(o, v, b)
        }
        fn inner_grad_v(&self, o: &Params, v: Tensor<2>, b: &Stage1) -> Tensor<2> {
            self.0.inner_grad_v(o, v, b)
        }
    }

    /// IV's cross term −J_φᵀ(Σ a_i)/n (one backward, through the cached forward) equals the
    /// generic ∂_ω Σ_i mean⟨∂_v ℓ_in(ω, v_i), a_i⟩ (a backward through `inner_grad_v` per pair),
    /// for three pairs with different v_i, before and after the cached graph is used up.
    #[test]
    fn iv_cross_term_equals_the_generic_backward() {
        use funcrl_bilevel::problem::cross_vjp;
        let ctx = Ctx::flex(Precision::F64);
        let mut rng = StdRng::seed_from_u64(9);
        let (n, dt, feat) = (25, 7, 4);
        let mut m = |r: usize, c: usize| random_tensor(&ctx, &mut rng, r, c);
        let b = Stage1::new(m(n, 2), m(n, dt));
        let pairs: Vec<_> = (0..3).map(|_| (m(n, feat), m(n, feat))).collect();
        let tnet = Net::funcbo(vec![dt, 9, 6, feat], Act::Tanh, true, None);
        let omega = tnet.init(&ctx, &mut StdRng::seed_from_u64(1));
        tnet.refresh(&ctx, &omega);
        let problem = IvProblem::new(ctx.clone(), tnet, 0.1);
        let want = cross_vjp(&Generic(&problem), &omega, &pairs, &b).to_flat();
        // A forward at ω as the inner solve makes it: the next cross term goes through it.
        let _ = problem.features(&omega, &b);
        for round in 0..2 {
            let got = cross_vjp(&problem, &omega, &pairs, &b).to_flat();
            let scale = want.iter().map(|x| x.abs()).fold(0.0, f64::max);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-13 * scale,
                    "round {round}: {g} vs {w} (scale {scale})"
                );
            }
        }
    }

    /// Reusing the inner solve's forward for the cross term changes no number: for every method,
    /// two outer steps (each with 3 inner steps run while the graph is held, and its total
    /// gradient) give the same gradients and ω as fresh forwards. Likewise the instrument net's
    /// fused host kernel (inner steps, FuncID's adjoint steps, AID/ITD/penalty Hessian products)
    /// against burn's autodiff, and FuncID's adjoint steps in f32 against f64 autodiff to f32
    /// rounding.
    #[test]
    fn reused_forward_and_host_kernel_give_the_same_steps_for_every_method() {
        use funcrl_bilevel::OptimizerConfig;
        let ctx = Ctx::flex(Precision::F64);
        let mut rng = StdRng::seed_from_u64(5);
        let (n1, n2, dt, dz, feat) = (30, 20, 6, 3, 4);
        let mut m = |r: usize, c: usize| random_tensor(&ctx, &mut rng, r, c);
        let (t1, z1, z2) = (m(n1, dt), m(n1, dz), m(n2, dz));
        let y2: Vec<f64> = to_vec(&m(n2, 1));
        let methods = [
            MethodConfig::FuncidLinear { ridge: None },
            MethodConfig::funcid(3, OptimizerConfig::adam(1e-3), true),
            {
                let mut f = MethodConfig::funcid(3, OptimizerConfig::adam(1e-3), true);
                if let MethodConfig::Funcid {
                    adjoint_precision, ..
                } = &mut f
                {
                    *adjoint_precision = Some(Precision::F32);
                }
                f
            },
            MethodConfig::Aid {
                solver: Default::default(),
                iterations: 2,
                damping: 0.0,
                warm_start: true,
                neumann_lr: 0.1,
                fd_step: None,
                eliminate_head: false,
            },
            MethodConfig::Itd {
                unroll: 2,
                lr: 1e-2,
                fd_step: None,
                eliminate_head: false,
            },
            MethodConfig::Penalty {
                lambda: 0.5,
                fd_step: None,
                eliminate_head: false,
                network_optimizer: OptimizerConfig::adam(1e-3),
            },
        ];
        for method in methods {
            let run = |reuse: bool, kernel: bool| {
                let tnet = Net::new(vec![dt, 8, feat], Act::Tanh, true, true, None);
                let mut inet = Net::new(vec![dz, 8, 5], Act::Relu, true, true, Some(feat));
                inet.host_kernel = kernel;
                let mut r2 = StdRng::seed_from_u64(4);
                let omega = tnet.init(&ctx, &mut r2);
                tnet.refresh(&ctx, &omega);
                let theta0 = inet.init(&ctx, &mut r2);
                inet.refresh(&ctx, &theta0);
                let mut problem = IvProblem::new(ctx.clone(), tnet, 0.1);
                problem.reuse_forward = reuse;
                let cfg = SolverConfig {
                    inner: InnerConfig {
                        steps: 3,
                        ridge: 0.1,
                        ..InnerConfig::default()
                    },
                    method: method.clone(),
                    outer_optimizer: OptimizerConfig::adam(1e-2),
                    seed: 0,
                };
                let mut solver = Solver::new(ctx.clone(), problem, inet, omega, &cfg);
                solver.theta = theta0;
                let s1 = Stage1::new(z1.clone(), t1.clone());
                let s2 = Stage2 {
                    z: z2.clone(),
                    y: y2.clone(),
                    y_t: ctx.tensor2(y2.clone(), n2, 1),
                    x: None,
                };
                let mut out = vec![];
                for _ in 0..2 {
                    solver.problem.net.refresh(&ctx, &solver.omega);
                    solver.solve_inner(&s1).unwrap();
                    out.extend(solver.total_gradient(&s1, &s2).unwrap().grad.to_flat());
                    solver.step(&s1, &s2).unwrap();
                }
                out.extend(solver.omega.to_flat());
                out
            };
            let fresh = run(false, false);
            let scale = fresh.iter().map(|x| x.abs()).fold(0.0, f64::max);
            assert!(scale > 0.0);
            // AID/ITD/penalty take Hessian products by finite differences of ∇_θG (step ≈ 1e-8
            // relative), which amplify the kernel's different rounding ≈ 1e8-fold.
            let fd = matches!(
                method,
                MethodConfig::Aid { .. } | MethodConfig::Itd { .. } | MethodConfig::Penalty { .. }
            );
            // FuncID's adjoint steps in f32 round each product to 6e-8 relative.
            let f32_adjoint = matches!(
                method,
                MethodConfig::Funcid {
                    adjoint_precision: Some(Precision::F32),
                    ..
                }
            );
            let kernel_bound = if fd {
                1e-9
            } else if f32_adjoint {
                // Measured 1.6e-9: the adjoint's Adam steps normalise away most of the rounding.
                1e-6
            } else {
                1e-12
            };
            for (what, other, bound) in [
                ("reused forward", run(true, false), 1e-12),
                ("host kernel", run(false, true), kernel_bound),
            ] {
                let worst = fresh
                    .iter()
                    .zip(&other)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                println!(
                    "{}: {what} differs by {:.1e} relative",
                    method.name(),
                    worst / scale
                );
                assert!(
                    worst <= bound * scale,
                    "{}: {what} differs by {worst:e} (scale {scale:e})",
                    method.name()
                );
                // Without the kernel there is no f32 route: the option must change the kernel run.
                if f32_adjoint && what == "host kernel" {
                    assert!(worst > 1e-12 * scale, "the f32 adjoint did not round");
                }
            }
        }
    }

    /// FuncID-linear's total gradient (adjoint ridge = stage-1 ridge, closed-form head) equals
    /// the exact gradient of the DFIV objective through both closed-form ridge solves, with the
    /// stage-1 ridge λ₁ = 0.1 in mean form (DFIV's λ₁·N₁ = 0.1·N₁ in sum form). Checked against
    /// central finite differences of the host DFIV objective along random directions.
    #[test]
    fn funcid_linear_gradient_equals_dfiv_exact_gradient() {
        let ctx = Ctx::flex(Precision::F64);
        let mut rng = StdRng::seed_from_u64(3);
        let (n1, n2, dt, dz, feat) = (40, 30, 6, 3, 4);
        let mut m = |r: usize, c: usize| random_tensor(&ctx, &mut rng, r, c);
        let (t1, z1, z2) = (m(n1, dt), m(n1, dz), m(n2, dz));
        let y2: Vec<f64> = to_vec(&m(n2, 1));
        let tnet = Net::new(vec![dt, 8, feat], Act::Tanh, true, true, None);
        let inet = Net::new(vec![dz, 8, 5], Act::Relu, true, true, Some(feat));
        let mut r2 = StdRng::seed_from_u64(4);
        let omega = tnet.init(&ctx, &mut r2);
        tnet.refresh(&ctx, &omega);
        let theta0 = inet.init(&ctx, &mut r2);
        inet.refresh(&ctx, &theta0);
        let l1 = 0.1;
        let problem = IvProblem::new(ctx.clone(), tnet, 0.1);
        let cfg = dfiv_config(l1);
        let mut solver = Solver::new(ctx.clone(), problem, inet, omega.clone(), &cfg);
        solver.theta = theta0.clone();
        let s1 = Stage1::new(z1.clone(), t1.clone());
        let s2 = Stage2 {
            z: z2.clone(),
            y: y2.clone(),
            y_t: ctx.tensor2(y2.clone(), n2, 1),
            x: None,
        };
        solver.solve_inner(&s1).unwrap();
        let g = solver.total_gradient(&s1, &s2).unwrap().grad;
        let (psi1, psi2) = (augmented(&solver, &z1), augmented(&solver, &z2));
        let mut worst: f64 = 0.0;
        for k in 0..3 {
            let mut rd = StdRng::seed_from_u64(10 + k);
            let dir: Vec<f64> = (0..omega.numel())
                .map(|_| rd.random::<f64>() - 0.5)
                .collect();
            let d = omega.from_flat_like(&ctx, &dir);
            let eps = 1e-5;
            let f = |s: f64| {
                dfiv_objective(
                    &solver.problem,
                    &omega.axpy(s, &d),
                    &psi1,
                    &psi2,
                    &t1,
                    &y2,
                    l1,
                )
            };
            let fd = (f(eps) - f(-eps)) / (2.0 * eps);
            let an = g.dot(&d);
            let rel = (an - fd).abs() / fd.abs();
            worst = worst.max(rel);
            assert!(
                rel < 1e-6,
                "direction {k}: FuncID-linear {an} vs DFIV FD {fd} (rel {rel:e})"
            );
        }
        eprintln!("FuncID-linear vs DFIV exact gradient (FD): worst relative error {worst:e}");
    }

    /// DFIV's demand model: ω = (treatment net, covariate net χ), stage 2 on [v̂, 1] ⊗ [χ(x), 1].
    /// The total gradient (closed-form head, FuncID-linear = DFIV) equals central finite
    /// differences of the host objective — both ridge solves redone at every perturbed ω, the
    /// outer-product design built row by row on the host — along random directions in all of ω,
    /// and χ's own part of the gradient is not zero.
    #[test]
    fn covariate_model_gradient_equals_finite_differences() {
        let ctx = Ctx::flex(Precision::F64);
        let mut rng = StdRng::seed_from_u64(21);
        let (n1, n2, dt, dx, dz, feat, cf) = (40, 30, 1, 2, 3, 2, 3);
        let mut m = |r: usize, c: usize| random_tensor(&ctx, &mut rng, r, c);
        let (t1, z1, z2, x2) = (m(n1, dt), m(n1, dz), m(n2, dz), m(n2, dx));
        let y2: Vec<f64> = to_vec(&m(n2, 1));
        let tnet = Net::new(vec![dt, 6, feat], Act::Identity, false, false, None);
        let cnet = Net::new(vec![dx, 5, cf], Act::Relu, false, false, None);
        let inet = Net::new(vec![dz, 8, 5], Act::Relu, false, false, Some(feat));
        let mut r2 = StdRng::seed_from_u64(4);
        let omega_t = tnet.init(&ctx, &mut r2);
        let chi = cnet.init(&ctx, &mut r2);
        let split = omega_t.len();
        let omega = Params::new(omega_t.0.iter().chain(&chi.0).cloned().collect());
        let theta0 = inet.init(&ctx, &mut r2);
        let (l1, l2) = (0.1, 0.05);
        let mut problem = IvProblem::new(ctx.clone(), tnet, l2);
        problem.covariate = Some(Covariate { net: cnet, split });
        let cfg = dfiv_config(l1);
        let mut solver = Solver::new(ctx.clone(), problem, inet, omega.clone(), &cfg);
        solver.theta = theta0;
        let s1 = Stage1::new(z1.clone(), t1.clone());
        let s2 = Stage2 {
            z: z2.clone(),
            y: y2.clone(),
            y_t: ctx.tensor2(y2.clone(), n2, 1),
            x: Some(x2.clone()),
        };
        solver.solve_inner(&s1).unwrap();
        let g = solver.total_gradient(&s1, &s2).unwrap().grad;
        let (psi1, psi2) = (augmented(&solver, &z1), augmented(&solver, &z2));
        let problem = &solver.problem;
        let objective = |om: &Params| -> f64 {
            let phi = to_vec(&problem.net.run(&om.detached(), &t1).0);
            let v2 = host_stage1(&phi, &psi1, &psi2, l1);
            let c = Params::new(om.detached().0[split..].to_vec());
            let chi = to_vec(&problem.covariate.as_ref().unwrap().net.run(&c, &x2).0);
            // Design row r: (v₂[r], 1) ⊗ (χ[r], 1), v-index major.
            let k = (feat + 1) * (cf + 1);
            let mut d = Vec::with_capacity(n2 * k);
            for r in 0..n2 {
                for i in 0..=feat {
                    let vi = if i < feat { v2[r * feat + i] } else { 1.0 };
                    for j in 0..=cf {
                        d.push(vi * if j < cf { chi[r * cf + j] } else { 1.0 });
                    }
                }
            }
            let dm = Matrix::new(n2, k, d);
            let mut g = crate::tsls::at_b(&dm, &dm);
            g.iter_mut().for_each(|x| *x /= n2 as f64);
            (0..k).for_each(|i| g[i * k + i] += l2);
            let mut u = crate::tsls::at_b(&dm, &Matrix::new(n2, 1, y2.clone()));
            u.iter_mut().for_each(|x| *x /= n2 as f64);
            chol_solve(&cholesky(&g, k).unwrap(), k, &mut u, 1);
            let fit: f64 = (0..n2)
                .map(|r| (y2[r] - (0..k).map(|i| dm.at(r, i) * u[i]).sum::<f64>()).powi(2))
                .sum::<f64>()
                / n2 as f64;
            fit + l2 * u.iter().map(|x| x * x).sum::<f64>()
        };
        let flat = g.to_flat();
        let n_t: usize = omega_t.numel();
        assert!(
            flat[n_t..].iter().any(|x| x.abs() > 1e-8),
            "χ gets no gradient"
        );
        for k in 0..4 {
            let mut rd = StdRng::seed_from_u64(30 + k);
            let dir: Vec<f64> = (0..omega.numel())
                .map(|i| {
                    // Directions 0 and 1 move only the treatment net / only χ.
                    let on = match k {
                        0 => i < n_t,
                        1 => i >= n_t,
                        _ => true,
                    };
                    if on { rd.random::<f64>() - 0.5 } else { 0.0 }
                })
                .collect();
            let d = omega.from_flat_like(&ctx, &dir);
            let eps = 1e-5;
            let fd =
                (objective(&omega.axpy(eps, &d)) - objective(&omega.axpy(-eps, &d))) / (2.0 * eps);
            let an = g.dot(&d);
            let rel = (an - fd).abs() / fd.abs();
            assert!(
                rel < 1e-6,
                "direction {k}: gradient {an} vs FD {fd} (rel {rel:e})"
            );
        }
    }
}
