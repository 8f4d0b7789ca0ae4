//! No model: soft-Q on real data, the model-free reference.

use rand::rngs::StdRng;

use super::{LearningRule, StepData};
use crate::agent::Agent;

pub struct Modelfree;

impl LearningRule for Modelfree {
    fn q_on_model_data(&self) -> bool {
        false
    }

    fn model_step(&mut self, _: &Agent, _: &StepData, _: &mut StdRng) -> (Option<Vec<f64>>, f64) {
        (None, 0.0)
    }
}
