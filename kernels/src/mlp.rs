//! The agents' small networks: batched forward, backward (to the parameters and/or the inputs)
//! and forward-mode JVP of ReLU MLPs on flat `f64` parameters.
//!
//! The parameter layout is exactly `Params::to_flat` of a `funcrl_bilevel::Mlp`
//! (per layer W `[in, out]` row-major, then b), so checkpoints, the burn-based hypergradient
//! methods and the autodiff oracle in `tests/native_vs_autodiff.rs` see the same numbers.

use crate::gemm::{Threads, gemm};

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

impl Dense {
    pub fn new(input: usize, hidden: &[usize], output: usize) -> Self {
        let mut widths = vec![input];
        widths.extend_from_slice(hidden);
        widths.push(output);
        Self { widths }
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
            gemm(
                n,
                i,
                o,
                &prev[l],
                false,
                &p[w..w + i * o],
                false,
                out,
                1.0,
                Threads::One,
            );
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
                    gemm(
                        i,
                        n,
                        o,
                        h_in,
                        true,
                        g,
                        false,
                        &mut gr[w..w + i * o],
                        1.0,
                        Threads::One,
                    );
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
                        gemm(
                            n,
                            o,
                            i,
                            g,
                            false,
                            &p[w..w + i * o],
                            true,
                            dx,
                            0.0,
                            Threads::One,
                        );
                    }
                    break;
                }
                dh.resize(n * i, 0.0);
                gemm(
                    n,
                    o,
                    i,
                    g,
                    false,
                    &p[w..w + i * o],
                    true,
                    dh,
                    0.0,
                    Threads::One,
                );
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
                Threads::One,
            );
            if l > 0 {
                gemm(
                    n,
                    i,
                    o,
                    &t,
                    false,
                    &p[w..w + i * o],
                    false,
                    &mut dz,
                    1.0,
                    Threads::One,
                );
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

#[cfg(test)]
mod tests {
    use super::*;
    use funcrl_bilevel::{Activation, Ctx, InnerModel, Mlp, Params, Precision, ctx::to_vec};
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
        let net = Dense::new(mlp.input, &mlp.hidden, mlp.output);
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

    /// The oracle: burn's autodiff of Σ c ⊙ mlp(x) w.r.t. the parameters and the input equals
    /// the kernel's backward, and the kernel's JVP satisfies ⟨J_θ u, c⟩ = ⟨u, ∇_θ Σ c ⊙ mlp(x)⟩
    /// with burn's gradient on the right.
    #[test]
    fn backward_and_jvp_match_burn_autodiff() {
        let ctx = Ctx::flex(Precision::F64);
        let mlp = Mlp::new(4, vec![6, 5], 3, Activation::Relu);
        let mut rng = StdRng::seed_from_u64(11);
        let theta = mlp.init(&ctx, &mut rng);
        let net = Dense::new(mlp.input, &mlp.hidden, mlp.output);
        let n = 9;
        let (x, c, u) = (
            draw(&mut rng, n * 4),
            draw(&mut rng, n * 3),
            draw(&mut rng, theta.numel()),
        );
        // Parameters and input as one tracked set: [θ.., x].
        let mut all = theta.0.clone();
        all.push(ctx.tensor2(x.clone(), n, 4));
        let tracked = Params::new(all).tracked();
        let k = tracked.len() - 1;
        let out = mlp
            .forward(&Params::new(tracked.0[..k].to_vec()), &tracked.0[k])
            .output;
        let grads = tracked.grads(&(out * ctx.tensor2(c.clone(), n, 3)).sum().backward());
        let want = grads.to_flat();
        let (want_p, want_x) = want.split_at(theta.numel());

        let p = theta.to_flat();
        let mut t = Tape::default();
        net.forward(&p, &x, n, &mut t);
        let (mut gp, mut gx) = (vec![0.0; p.len()], vec![0.0; x.len()]);
        net.backward(&p, &t, &c, Some(&mut gp), Some(&mut gx));
        for (name, got, want) in [("params", &gp, want_p), ("input", &gx, want_x)] {
            for (a, b) in got.iter().zip(want) {
                assert!((a - b).abs() < 1e-12, "{name}: {a} vs {b}");
            }
        }
        // ⟨J_θ u, c⟩ = ⟨u, J_θᵀ c⟩.
        let jv = net.jvp(&p, &u, &t);
        let lhs: f64 = jv.iter().zip(&c).map(|(a, b)| a * b).sum();
        let rhs: f64 = u.iter().zip(want_p).map(|(a, b)| a * b).sum();
        assert!(
            (lhs - rhs).abs() < 1e-12 * rhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );
    }
}
