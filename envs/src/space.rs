//! Observation and action spaces with gymnasium's names and sampling rules.

use rand::{Rng, RngExt};
use rand_distr::{Exp1, StandardNormal};

/// A value drawn from a [`Space`].
#[derive(Clone, Debug, PartialEq)]
pub enum SpaceSample {
    Discrete(i64),
    Box(Vec<f32>),
}

/// `Discrete(n, start)` holds the integers `start..start+n`; `Box` holds `f32` vectors with
/// elementwise bounds (infinite bounds allowed, as in gymnasium).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "type")]
pub enum Space {
    Discrete { n: u64, start: i64 },
    Box { low: Vec<f32>, high: Vec<f32> },
}

impl Space {
    pub fn discrete(n: u64) -> Self {
        Space::Discrete { n, start: 0 }
    }

    pub fn bounded(low: Vec<f32>, high: Vec<f32>) -> Self {
        assert_eq!(low.len(), high.len(), "Box bounds of different lengths");
        Space::Box { low, high }
    }

    /// Number of scalars in one element (1 for `Discrete`).
    pub fn flat_dim(&self) -> usize {
        match self {
            Space::Discrete { .. } => 1,
            Space::Box { low, .. } => low.len(),
        }
    }

    /// Draws an element with gymnasium's rules: uniform on a bounded coordinate, standard normal on
    /// an unbounded one, a shifted exponential on a half-bounded one. Seed the generator to
    /// reproduce samples.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> SpaceSample {
        match self {
            Space::Discrete { n, start } => {
                SpaceSample::Discrete(start + rng.random_range(0..*n) as i64)
            }
            Space::Box { low, high } => SpaceSample::Box(
                low.iter()
                    .zip(high)
                    .map(|(&lo, &hi)| sample_coordinate(rng, lo, hi))
                    .collect(),
            ),
        }
    }

    pub fn contains_discrete(&self, a: i64) -> bool {
        match self {
            Space::Discrete { n, start } => a >= *start && ((a - start) as u64) < *n,
            Space::Box { .. } => false,
        }
    }

    /// Right length, finite-or-bounded and inside the bounds (NaN is never contained).
    pub fn contains_box(&self, x: &[f32]) -> bool {
        match self {
            Space::Discrete { .. } => false,
            Space::Box { low, high } => {
                x.len() == low.len()
                    && x.iter()
                        .zip(low.iter().zip(high))
                        .all(|(v, (lo, hi))| *v >= *lo && *v <= *hi)
            }
        }
    }

    pub fn contains(&self, x: &SpaceSample) -> bool {
        match x {
            SpaceSample::Discrete(a) => self.contains_discrete(*a),
            SpaceSample::Box(v) => self.contains_box(v),
        }
    }
}

fn sample_coordinate<R: Rng + ?Sized>(rng: &mut R, lo: f32, hi: f32) -> f32 {
    let (lo_f, hi_f) = (lo.is_finite(), hi.is_finite());
    let x: f64 = match (lo_f, hi_f) {
        (true, true) => lo as f64 + (hi as f64 - lo as f64) * rng.random::<f64>(),
        (false, false) => rng.sample(StandardNormal),
        (true, false) => lo as f64 + rng.sample::<f64, _>(Exp1),
        (false, true) => hi as f64 - rng.sample::<f64, _>(Exp1),
    };
    // Rounding to f32 can step just past a bound; keep the sample inside the space.
    (x as f32).clamp(lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    #[test]
    fn discrete_samples_cover_the_range_and_are_contained() {
        let space = Space::Discrete { n: 3, start: -1 };
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
        let mut seen = [0usize; 3];
        for _ in 0..3000 {
            let SpaceSample::Discrete(a) = space.sample(&mut rng) else {
                panic!("wrong kind")
            };
            assert!(space.contains_discrete(a));
            seen[(a + 1) as usize] += 1;
        }
        // Each value has probability 1/3: 1000 ± 5 sd (sd ≈ 26) over 3000 draws.
        assert!(seen.iter().all(|&c| (870..1130).contains(&c)), "{seen:?}");
        assert!(!space.contains_discrete(2) && !space.contains_discrete(-2));
    }

    #[test]
    fn box_sampling_follows_bound_types() {
        let inf = f32::INFINITY;
        let space = Space::bounded(vec![-2.0, -inf, 1.0, -inf], vec![2.0, inf, inf, -1.0]);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let n = 20_000;
        let mut sums = [0.0f64; 4];
        for _ in 0..n {
            let SpaceSample::Box(v) = space.sample(&mut rng) else {
                panic!("wrong kind")
            };
            assert!(space.contains_box(&v));
            for (s, x) in sums.iter_mut().zip(&v) {
                *s += *x as f64;
            }
        }
        let means: Vec<f64> = sums.iter().map(|s| s / n as f64).collect();
        // Means: uniform(-2,2) → 0, normal → 0, 1 + Exp(1) → 2, -1 − Exp(1) → −2 (sd/√n ≤ 0.012).
        let expect = [0.0, 0.0, 2.0, -2.0];
        for (m, e) in means.iter().zip(expect) {
            assert!((m - e).abs() < 0.05, "means {means:?}");
        }
    }

    #[test]
    fn same_seed_same_samples() {
        let space = Space::bounded(vec![-1.0; 3], vec![1.0; 3]);
        let a = space.sample(&mut Xoshiro256PlusPlus::seed_from_u64(3));
        let b = space.sample(&mut Xoshiro256PlusPlus::seed_from_u64(3));
        let c = space.sample(&mut Xoshiro256PlusPlus::seed_from_u64(4));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn contains_rejects_nan_and_wrong_length() {
        let space = Space::bounded(vec![-1.0], vec![1.0]);
        assert!(space.contains_box(&[0.5]));
        assert!(!space.contains_box(&[f32::NAN]));
        assert!(!space.contains_box(&[0.5, 0.5]));
        assert!(!space.contains_box(&[1.5]));
        assert!(!space.contains(&SpaceSample::Discrete(0)));
    }
}
