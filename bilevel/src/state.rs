//! A solver's state between two outer iterations, as named parameter lists and numbers, so that a
//! caller can checkpoint it (funcrl-iv writes it to HDF5) and resume to the same numbers as an
//! uninterrupted run. The solver, its optimisers and its methods put what they carry into a
//! [`State`]; restoring checks every shape against the live objects, so a checkpoint of another
//! config is refused instead of silently resuming a different problem.

use std::collections::BTreeMap;

use crate::{ctx::Ctx, ctx::to_vec, error::BilevelError, optim::Optimizer, params::Params};

/// A list of 2-D tensors stored flat: their shapes and their values, concatenated row-major.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stored {
    pub shapes: Vec<[usize; 2]>,
    pub values: Vec<f64>,
}

impl Stored {
    pub fn of(p: &Params) -> Self {
        Self {
            shapes: p.0.iter().map(|t| t.dims()).collect(),
            values: p.0.iter().flat_map(to_vec).collect(),
        }
    }

    /// The tensors on `ctx`'s device and precision; an error if `values` does not fill `shapes`.
    pub fn params(&self, ctx: &Ctx, name: &str) -> Result<Params, BilevelError> {
        let total: usize = self.shapes.iter().map(|[r, c]| r * c).sum();
        if total != self.values.len() {
            return Err(BilevelError::State(format!(
                "{name}: {} values for shapes holding {total}",
                self.values.len()
            )));
        }
        let mut at = 0;
        Ok(Params::new(
            self.shapes
                .iter()
                .map(|&[r, c]| {
                    let t = ctx.tensor2(self.values[at..at + r * c].to_vec(), r, c);
                    at += r * c;
                    t
                })
                .collect(),
        ))
    }
}

/// Named tensor lists and numbers. Names are dotted paths (`omega`, `outer_optimizer.m`,
/// `method.psi`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct State {
    pub tensors: BTreeMap<String, Stored>,
    pub numbers: BTreeMap<String, f64>,
}

impl State {
    pub fn put(&mut self, name: &str, p: &Params) {
        self.tensors.insert(name.to_string(), Stored::of(p));
    }

    pub fn put_number(&mut self, name: &str, v: f64) {
        self.numbers.insert(name.to_string(), v);
    }

    /// The tensor list `name`, if stored.
    pub fn get(&self, ctx: &Ctx, name: &str) -> Result<Option<Params>, BilevelError> {
        self.tensors
            .get(name)
            .map(|s| s.params(ctx, name))
            .transpose()
    }

    /// The tensor list `name`, which must be stored with the shapes of `like`.
    pub fn get_like(&self, ctx: &Ctx, name: &str, like: &Params) -> Result<Params, BilevelError> {
        let s = self
            .tensors
            .get(name)
            .ok_or_else(|| BilevelError::State(format!("{name} is missing")))?;
        let want: Vec<[usize; 2]> = like.0.iter().map(|t| t.dims()).collect();
        if s.shapes != want {
            return Err(BilevelError::State(format!(
                "{name} has shapes {:?}, this config's are {want:?}",
                s.shapes
            )));
        }
        s.params(ctx, name)
    }

    pub fn number(&self, name: &str) -> Result<f64, BilevelError> {
        self.numbers
            .get(name)
            .copied()
            .ok_or_else(|| BilevelError::State(format!("{name} is missing")))
    }

    /// An optimiser's running state (Adam's moments and step count) under `prefix`.
    pub fn put_optimizer(&mut self, prefix: &str, opt: &Optimizer) {
        let (moments, t) = opt.state();
        self.put_number(&format!("{prefix}.t"), t as f64);
        if let Some((m, v)) = moments {
            self.put(&format!("{prefix}.m"), m);
            self.put(&format!("{prefix}.v"), v);
        }
    }

    /// Restores what [`put_optimizer`](Self::put_optimizer) stored; the moments must have the
    /// shapes of `like` (the parameters the optimiser moves), where given.
    pub fn restore_optimizer(
        &self,
        ctx: &Ctx,
        prefix: &str,
        opt: &mut Optimizer,
        like: Option<&Params>,
    ) -> Result<(), BilevelError> {
        let t = self.number(&format!("{prefix}.t"))?;
        let get = |name: &str| match like {
            Some(like) if self.tensors.contains_key(name) => {
                self.get_like(ctx, name, like).map(Some)
            }
            _ => self.get(ctx, name),
        };
        let moments = match (get(&format!("{prefix}.m"))?, get(&format!("{prefix}.v"))?) {
            (Some(m), Some(v)) => Some((m, v)),
            (None, None) => None,
            _ => {
                return Err(BilevelError::State(format!(
                    "{prefix}: one of its two Adam moments is missing"
                )));
            }
        };
        opt.set_state(moments, t as i32);
        Ok(())
    }

    /// Whether every stored value is finite (a state to keep as the last good checkpoint);
    /// otherwise the first entry that is not.
    pub fn first_non_finite(&self) -> Option<&str> {
        self.tensors
            .iter()
            .find(|(_, s)| s.values.iter().any(|v| !v.is_finite()))
            .map(|(k, _)| k.as_str())
            .or_else(|| {
                self.numbers
                    .iter()
                    // NaN numbers are allowed where they mean "none yet" (a test MSE before the
                    // first evaluation); infinities never are.
                    .find(|(_, v)| v.is_infinite())
                    .map(|(k, _)| k.as_str())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::Precision;
    use crate::optim::OptimizerConfig;

    #[test]
    fn params_and_adam_state_round_trip_and_wrong_shapes_are_refused() {
        let ctx = Ctx::from_env(Precision::F64);
        let p = Params::new(vec![
            ctx.tensor2(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3),
            ctx.tensor2(vec![-1.0, 0.5], 1, 2),
        ]);
        let g = p.scale(0.3);
        let mut opt = Optimizer::new(OptimizerConfig::adam(0.1));
        let p1 = opt.step(&p, &g);
        let mut s = State::default();
        s.put("omega", &p1);
        s.put_optimizer("opt", &opt);
        let back = s.get_like(&ctx, "omega", &p).unwrap();
        assert_eq!(back.to_flat(), p1.to_flat());
        // A restored optimiser takes the same next step as the original.
        let mut fresh = Optimizer::new(OptimizerConfig::adam(0.1));
        s.restore_optimizer(&ctx, "opt", &mut fresh, Some(&p))
            .unwrap();
        assert_eq!(fresh.step(&p1, &g).to_flat(), opt.step(&p1, &g).to_flat());
        let other = Params::new(vec![ctx.tensor2(vec![1.0; 6], 3, 2)]);
        let e = s.get_like(&ctx, "omega", &other).unwrap_err().to_string();
        assert!(e.contains("omega has shapes"), "{e}");
        assert!(s.get_like(&ctx, "theta", &p).is_err());
        assert_eq!(s.first_non_finite(), None);
        s.put("bad", &Params::new(vec![ctx.tensor2(vec![f64::NAN], 1, 1)]));
        assert_eq!(s.first_non_finite(), Some("bad"));
    }
}
