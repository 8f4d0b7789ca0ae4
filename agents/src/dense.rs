//! Host kernels for the agents' small networks: batched forward, backward (to the parameters
//! and/or the inputs) and forward-mode JVP of ReLU MLPs on flat `f64` parameters, and Adam over a
//! flat buffer.
//!
//! Why not burn here: one agent update is a few hundred operations on `[256, 32]` tensors, where
//! burn's per-op dispatch, allocation and graph bookkeeping cost more than the arithmetic (see the
//! agents bench). The parameter layout is exactly `Params::to_flat` of a `funcrl_bilevel::Mlp`
//! (per layer W `[in, out]` row-major, then b), so checkpoints, the burn-based hypergradient
//! methods and the autodiff oracle in `tests/native_vs_autodiff.rs` see the same numbers.

use funcrl_bilevel::Mlp;

thread_local! {
    /// Backward's two row buffers, reused across calls (an update runs a dozen backwards).
    static SCRATCH: std::cell::RefCell<(Vec<f64>, Vec<f64>)> = const {
        std::cell::RefCell::new((Vec::new(), Vec::new()))
    };
}

/// A ReLU MLP (linear output) described by its layer widths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dense {
    widths: Vec<usize>,
}

/// The activations of one batched forward pass, kept for backward and JVP.
/// `h[0]` is the input, `h[l]` the output of layer l (after ReLU for hidden layers).
#[derive(Debug, Clone, Default)]
pub struct Tape {
    h: Vec<Vec<f64>>,
    n: usize,
}

impl Tape {
    /// The network output of the last forward, `[n, out]` row-major.
    pub fn output(&self) -> &[f64] {
        self.h.last().map(Vec::as_slice).unwrap_or(&[])
    }
}

/// c `[m, n]` = beta·c + a·b, all row-major; `ta`/`tb` read a (stored `[k, m]`) or b (stored
/// `[n, k]`) transposed.
#[allow(clippy::too_many_arguments)]
fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f64],
    ta: bool,
    b: &[f64],
    tb: bool,
    c: &mut [f64],
    beta: f64,
) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
    // SAFETY: the asserts above bound every index matrixmultiply reads or writes through these
    // strides; `c` does not alias `a` or `b` (distinct borrows).
    unsafe {
        matrixmultiply::dgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

impl Dense {
    pub fn new(input: usize, hidden: &[usize], output: usize) -> Self {
        let mut widths = vec![input];
        widths.extend_from_slice(hidden);
        widths.push(output);
        Self { widths }
    }

    /// The same network as a burn [`Mlp`] (ReLU hidden layers).
    pub fn from_mlp(m: &Mlp) -> Self {
        Self::new(m.input, &m.hidden, m.output)
    }

    pub fn input(&self) -> usize {
        self.widths[0]
    }

    pub fn output(&self) -> usize {
        *self.widths.last().expect("at least input and output")
    }

    fn n_layers(&self) -> usize {
        self.widths.len() - 1
    }

    /// (fan-in, fan-out, offset of W, offset of b) of layer `l`.
    fn layer(&self, l: usize) -> (usize, usize, usize, usize) {
        let mut off = 0;
        for j in 0..l {
            off += self.widths[j] * self.widths[j + 1] + self.widths[j + 1];
        }
        let (i, o) = (self.widths[l], self.widths[l + 1]);
        (i, o, off, off + i * o)
    }

    /// Number of parameters.
    pub fn numel(&self) -> usize {
        (0..self.n_layers())
            .map(|l| self.widths[l] * self.widths[l + 1] + self.widths[l + 1])
            .sum()
    }

    /// Forward `n` rows of `x` (`[n, input]`); the output is `tape.output()`.
    pub fn forward(&self, p: &[f64], x: &[f64], n: usize, tape: &mut Tape) {
        assert_eq!(
            p.len(),
            self.numel(),
            "parameter vector does not fit this network"
        );
        assert_eq!(x.len(), n * self.input());
        let layers = self.n_layers();
        tape.n = n;
        tape.h.resize_with(layers + 1, Vec::new);
        tape.h[0].clear();
        tape.h[0].extend_from_slice(x);
        for l in 0..layers {
            let (i, o, w, b) = self.layer(l);
            let (prev, next) = tape.h.split_at_mut(l + 1);
            let out = &mut next[0];
            out.clear();
            for _ in 0..n {
                out.extend_from_slice(&p[b..b + o]);
            }
            gemm(n, i, o, &prev[l], false, &p[w..w + i * o], false, out, 1.0);
            if l + 1 < layers {
                for v in out.iter_mut() {
                    *v = v.max(0.0);
                }
            }
        }
    }

    /// Backpropagates `dout` (`[n, output]`, the gradient w.r.t. the last forward's output):
    /// adds the parameter gradient into `grad` and writes the input gradient into `dx`
    /// (`[n, input]`), each when given.
    pub fn backward(
        &self,
        p: &[f64],
        tape: &Tape,
        dout: &[f64],
        mut grad: Option<&mut [f64]>,
        dx: Option<&mut [f64]>,
    ) {
        let n = tape.n;
        assert_eq!(dout.len(), n * self.output());
        SCRATCH.with_borrow_mut(|(g, dh)| {
            g.clear();
            g.extend_from_slice(dout);
            let mut dx = dx;
            for l in (0..self.n_layers()).rev() {
                let (i, o, w, b) = self.layer(l);
                let h_in = &tape.h[l];
                if let Some(gr) = grad.as_deref_mut() {
                    gemm(i, n, o, h_in, true, g, false, &mut gr[w..w + i * o], 1.0);
                    let db = &mut gr[b..b + o];
                    for row in g.chunks_exact(o) {
                        for (d, v) in db.iter_mut().zip(row) {
                            *d += v;
                        }
                    }
                }
                if l == 0 {
                    if let Some(dx) = dx.as_deref_mut() {
                        assert_eq!(dx.len(), n * i);
                        gemm(n, o, i, g, false, &p[w..w + i * o], true, dx, 0.0);
                    }
                    break;
                }
                dh.resize(n * i, 0.0);
                gemm(n, o, i, g, false, &p[w..w + i * o], true, dh, 0.0);
                // ReLU: h = max(z, 0) passes the gradient where z > 0, i.e. where h > 0
                // (a select, not a branch: half the units are off).
                for (d, h) in dh.iter_mut().zip(h_in) {
                    *d = if *h > 0.0 { *d } else { 0.0 };
                }
                std::mem::swap(g, dh);
            }
        });
    }

    /// Forward-mode derivative of the last forward's output in parameter direction `u`
    /// (`[n, output]`), at fixed input.
    pub fn jvp(&self, p: &[f64], u: &[f64], tape: &Tape) -> Vec<f64> {
        assert_eq!(u.len(), self.numel());
        let n = tape.n;
        let layers = self.n_layers();
        let mut t: Vec<f64> = Vec::new();
        for l in 0..layers {
            let (i, o, w, b) = self.layer(l);
            let mut dz = Vec::with_capacity(n * o);
            for _ in 0..n {
                dz.extend_from_slice(&u[b..b + o]);
            }
            gemm(
                n,
                i,
                o,
                &tape.h[l],
                false,
                &u[w..w + i * o],
                false,
                &mut dz,
                1.0,
            );
            if l > 0 {
                gemm(n, i, o, &t, false, &p[w..w + i * o], false, &mut dz, 1.0);
            }
            if l + 1 < layers {
                for (d, h) in dz.iter_mut().zip(&tape.h[l + 1]) {
                    *d = if *h > 0.0 { *d } else { 0.0 };
                }
            }
            t = dz;
        }
        t
    }

    /// Forward of one input row (acting and evaluation).
    pub fn forward_one(&self, p: &[f64], x: &[f64]) -> Vec<f64> {
        let mut tape = Tape::default();
        self.forward(p, x, 1, &mut tape);
        tape.h.pop().unwrap_or_default()
    }
}

/// Adam over a flat parameter buffer, with the same arithmetic as `funcrl_bilevel::Optimizer`
/// (no weight decay): m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², p ← p − lr·(m/c₁)/(√(v/c₂) + ε).
#[derive(Debug, Clone, PartialEq)]
pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub m: Vec<f64>,
    pub v: Vec<f64>,
    /// Steps taken.
    pub t: i32,
}

impl Adam {
    pub fn new(lr: f64, numel: usize) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            m: vec![0.0; numel],
            v: vec![0.0; numel],
            t: 0,
        }
    }

    pub fn step(&mut self, p: &mut [f64], g: &[f64]) {
        assert!(p.len() == g.len() && p.len() == self.m.len());
        let (b1, b2) = (self.beta1, self.beta2);
        self.t += 1;
        let c1 = 1.0 - b1.powi(self.t);
        let c2 = 1.0 - b2.powi(self.t);
        for (((p, g), m), v) in p.iter_mut().zip(g).zip(&mut self.m).zip(&mut self.v) {
            *m = *m * b1 + g * (1.0 - b1);
            *v = *v * b2 + g * g * (1.0 - b2);
            let step = *m * (1.0 / c1) / ((*v * (1.0 / c2)).sqrt() + self.eps);
            *p -= step * self.lr;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use funcrl_bilevel::{Activation, Ctx, InnerModel, Optimizer, OptimizerConfig, Precision};
    use funcrl_bilevel::{Params, ctx::to_vec};
    use rand::{RngExt, SeedableRng, rngs::StdRng};

    fn draw(rng: &mut StdRng, n: usize) -> Vec<f64> {
        (0..n).map(|_| rng.random::<f64>() - 0.5).collect()
    }

    /// ½‖net(x)‖²-weighted test function: L = Σ c ⊙ out, so dL/dout = c.
    fn setup() -> (Dense, Vec<f64>, Vec<f64>, Vec<f64>, usize) {
        let net = Dense::new(3, &[5, 4], 2);
        let mut rng = StdRng::seed_from_u64(3);
        let n = 7;
        let p = draw(&mut rng, net.numel());
        let x = draw(&mut rng, n * 3);
        let c = draw(&mut rng, n * 2);
        (net, p, x, c, n)
    }

    fn loss(net: &Dense, p: &[f64], x: &[f64], c: &[f64], n: usize) -> f64 {
        let mut t = Tape::default();
        net.forward(p, x, n, &mut t);
        t.output().iter().zip(c).map(|(a, b)| a * b).sum()
    }

    #[test]
    fn forward_matches_burn_mlp() {
        let ctx = Ctx::flex(Precision::F64);
        let mlp = Mlp::new(3, vec![5, 4], 2, Activation::Relu);
        let theta = mlp.init(&ctx, &mut StdRng::seed_from_u64(1));
        let net = Dense::from_mlp(&mlp);
        assert_eq!(net.numel(), theta.numel());
        let x = draw(&mut StdRng::seed_from_u64(2), 6 * 3);
        let want = to_vec(&mlp.forward(&theta, &ctx.tensor2(x.clone(), 6, 3)).output);
        let mut t = Tape::default();
        net.forward(&theta.to_flat(), &x, 6, &mut t);
        for (g, w) in t.output().iter().zip(&want) {
            assert!((g - w).abs() < 1e-13, "{g} vs {w}");
        }
        let one = net.forward_one(&theta.to_flat(), &x[3..6]);
        assert!((one[0] - want[2]).abs() < 1e-13 && (one[1] - want[3]).abs() < 1e-13);
    }

    #[test]
    fn backward_matches_finite_differences() {
        let (net, p, x, c, n) = setup();
        let mut t = Tape::default();
        net.forward(&p, &x, n, &mut t);
        let mut grad = vec![0.0; p.len()];
        let mut dx = vec![0.0; x.len()];
        net.backward(&p, &t, &c, Some(&mut grad), Some(&mut dx));
        let h = 1e-6;
        for k in 0..p.len() {
            let (mut a, mut b) = (p.clone(), p.clone());
            a[k] += h;
            b[k] -= h;
            let fd = (loss(&net, &a, &x, &c, n) - loss(&net, &b, &x, &c, n)) / (2.0 * h);
            assert!(
                (fd - grad[k]).abs() < 1e-8,
                "param {k}: fd {fd} vs {}",
                grad[k]
            );
        }
        for k in 0..x.len() {
            let (mut a, mut b) = (x.clone(), x.clone());
            a[k] += h;
            b[k] -= h;
            let fd = (loss(&net, &p, &a, &c, n) - loss(&net, &p, &b, &c, n)) / (2.0 * h);
            assert!((fd - dx[k]).abs() < 1e-8, "input {k}: fd {fd} vs {}", dx[k]);
        }
        // gradients accumulate
        net.backward(&p, &t, &c, Some(&mut grad), None);
        let mut once = vec![0.0; p.len()];
        net.backward(&p, &t, &c, Some(&mut once), None);
        assert!(
            grad.iter()
                .zip(&once)
                .all(|(a, b)| (a - 2.0 * b).abs() < 1e-14)
        );
    }

    #[test]
    fn jvp_matches_finite_differences() {
        let (net, p, x, _, n) = setup();
        let u = draw(&mut StdRng::seed_from_u64(9), p.len());
        let mut t = Tape::default();
        net.forward(&p, &x, n, &mut t);
        let jv = net.jvp(&p, &u, &t);
        let h = 1e-6;
        let at = |s: f64| {
            let q: Vec<f64> = p.iter().zip(&u).map(|(a, b)| a + s * h * b).collect();
            let mut t = Tape::default();
            net.forward(&q, &x, n, &mut t);
            t.output().to_vec()
        };
        let (a, b) = (at(1.0), at(-1.0));
        for k in 0..jv.len() {
            let fd = (a[k] - b[k]) / (2.0 * h);
            assert!((fd - jv[k]).abs() < 1e-8, "{k}: fd {fd} vs {}", jv[k]);
        }
    }

    #[test]
    fn adam_matches_the_solver_optimizer() {
        let ctx = Ctx::flex(Precision::F64);
        let mut rng = StdRng::seed_from_u64(4);
        let p0 = draw(&mut rng, 6);
        let like = Params::new(vec![ctx.tensor2(p0.clone(), 2, 3)]);
        let mut burn_opt = Optimizer::new(OptimizerConfig::adam(0.01));
        let mut host = Adam::new(0.01, 6);
        let (mut pb, mut ph) = (like.clone(), p0);
        for _ in 0..5 {
            let g = draw(&mut rng, 6);
            pb = burn_opt.step(&pb, &like.from_flat_like(&ctx, &g));
            host.step(&mut ph, &g);
        }
        for (a, b) in pb.to_flat().iter().zip(&ph) {
            assert!((a - b).abs() < 1e-15, "{a} vs {b}");
        }
    }
}
