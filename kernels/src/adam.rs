//! Adam over a flat parameter buffer.

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
    use funcrl_bilevel::{Ctx, Optimizer, OptimizerConfig, Params, Precision};
    use rand::{RngExt, SeedableRng, rngs::StdRng};

    fn draw(rng: &mut StdRng, n: usize) -> Vec<f64> {
        (0..n).map(|_| rng.random::<f64>() - 0.5).collect()
    }

    /// A fresh Adam's first step is −lr·g/(|g| + ε): −lr·sign(g) up to ε (what resetting the
    /// state before every step, as the reference RL code does, reduces Adam to).
    #[test]
    fn first_step_of_a_fresh_adam_is_lr_times_the_sign() {
        let g = [3.0, -1e-3, 0.0, 2e-9];
        let mut p = [1.0; 4];
        let mut a = Adam::new(0.01, 4);
        a.step(&mut p, &g);
        for (pi, gi) in p.iter().zip(g) {
            let want = 1.0 - 0.01 * gi / (gi.abs() + 1e-8);
            assert!((pi - want).abs() < 1e-15, "{pi} vs {want}");
        }
        assert!((p[0] - 0.99).abs() < 1e-10 && (p[1] - 1.01).abs() < 1e-7);
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
