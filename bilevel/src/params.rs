//! A parameter set: an ordered list of 2-D tensors (weights, and biases as `[1, n]` rows).
//!
//! The solver needs flat-vector algebra on parameters (θ ± εu, CG, dot products); keeping every
//! parameter as a plain tensor makes that a zip over a `Vec`, with no module machinery.

use burn::tensor::{Gradients, Tensor};

use crate::ctx::{Ctx, to_vec};

#[derive(Debug, Clone)]
pub struct Params(pub Vec<Tensor<2>>);

impl Params {
    pub fn new(tensors: Vec<Tensor<2>>) -> Self {
        Self(tensors)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Total number of scalars.
    pub fn numel(&self) -> usize {
        self.0
            .iter()
            .map(|t| t.dims().iter().product::<usize>())
            .sum()
    }

    /// Fresh leaves that record gradients.
    pub fn tracked(&self) -> Self {
        Self(
            self.0
                .iter()
                .map(|t| t.clone().detach().require_grad())
                .collect(),
        )
    }

    /// Constants: cut from any graph and not recording gradients.
    pub fn detached(&self) -> Self {
        Self(
            self.0
                .iter()
                .map(|t| t.clone().detach().set_require_grad(false))
                .collect(),
        )
    }

    /// Gradients of these leaves (zero where a leaf did not take part in the loss).
    pub fn grads(&self, grads: &Gradients) -> Self {
        Self(
            self.0
                .iter()
                .map(|t| match t.grad(grads) {
                    Some(g) => g.autodiff(),
                    None => t.zeros_like().detach(),
                })
                .collect(),
        )
    }

    pub fn zeros_like(&self) -> Self {
        Self(self.0.iter().map(|t| t.zeros_like().detach()).collect())
    }

    fn zip(&self, other: &Self, f: impl Fn(Tensor<2>, Tensor<2>) -> Tensor<2>) -> Self {
        assert_eq!(
            self.len(),
            other.len(),
            "parameter sets of different length"
        );
        Self(
            self.0
                .iter()
                .zip(&other.0)
                .map(|(a, b)| f(a.clone(), b.clone()))
                .collect(),
        )
    }

    pub fn add(&self, other: &Self) -> Self {
        self.zip(other, |a, b| a + b)
    }

    pub fn sub(&self, other: &Self) -> Self {
        self.zip(other, |a, b| a - b)
    }

    pub fn scale(&self, s: f64) -> Self {
        Self(self.0.iter().map(|t| t.clone().mul_scalar(s)).collect())
    }

    /// self + s·other
    pub fn axpy(&self, s: f64, other: &Self) -> Self {
        self.zip(other, |a, b| a + b.mul_scalar(s))
    }

    pub fn dot(&self, other: &Self) -> f64 {
        assert_eq!(
            self.len(),
            other.len(),
            "parameter sets of different length"
        );
        self.0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| to_vec(&(a.clone() * b.clone()).sum())[0])
            .sum()
    }

    pub fn norm(&self) -> f64 {
        self.dot(self).sqrt()
    }

    /// All values, concatenated in order (for tests and logs).
    pub fn to_flat(&self) -> Vec<f64> {
        self.0.iter().flat_map(to_vec).collect()
    }

    /// Same shapes as `self`, values taken from `flat` in order.
    pub fn from_flat_like(&self, ctx: &Ctx, flat: &[f64]) -> Self {
        let mut at = 0;
        let out = self
            .0
            .iter()
            .map(|t| {
                let [r, c] = t.dims();
                let t = ctx.tensor2(flat[at..at + r * c].to_vec(), r, c);
                at += r * c;
                t
            })
            .collect();
        assert_eq!(
            at,
            flat.len(),
            "flat vector length does not match the parameter set"
        );
        Self(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::Precision;

    #[test]
    fn algebra_and_flat_round_trip() {
        let ctx = Ctx::from_env(Precision::F64);
        let a = Params::new(vec![
            ctx.tensor2(vec![1., 2., 3., 4.], 2, 2),
            ctx.tensor2(vec![5., 6.], 1, 2),
        ]);
        let b = a.scale(2.0);
        assert_eq!(a.numel(), 6);
        assert_eq!(a.axpy(-0.5, &b).to_flat(), vec![0.0; 6]);
        assert_eq!(a.dot(&b), 2.0 * (1. + 4. + 9. + 16. + 25. + 36.));
        assert_eq!(a.from_flat_like(&ctx, &b.to_flat()).to_flat(), b.to_flat());
    }

    #[test]
    fn grads_of_a_tracked_set() {
        let ctx = Ctx::from_env(Precision::F64);
        let p = Params::new(vec![
            ctx.tensor2(vec![1., -2.], 1, 2),
            ctx.tensor2(vec![3.], 1, 1),
        ])
        .tracked();
        // loss = sum(w²) ; the second leaf is unused and must get a zero gradient.
        let g = p.grads(&p.0[0].clone().square().sum().backward());
        assert_eq!(g.to_flat(), vec![2., -4., 0.]);
    }
}
