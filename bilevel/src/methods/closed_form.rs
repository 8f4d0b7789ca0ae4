use super::{HyperInput, Hypergradient, HypergradientMethod, outer_value_and_grad_v};
use crate::{error::BilevelError, model::InnerModel, problem::BilevelProblem};

/// The problem's exact total gradient: the oracle every other method is tested against.
pub struct ClosedForm;

impl<P: BilevelProblem, M: InnerModel> HypergradientMethod<P, M> for ClosedForm {
    fn name(&self) -> &'static str {
        "closed_form"
    }

    fn total_gradient(&mut self, i: HyperInput<'_, P, M>) -> Result<Hypergradient, BilevelError> {
        let grad = i
            .problem
            .closed_form_total_gradient(i.ctx, i.omega, i.inner, i.outer)
            .ok_or(BilevelError::NoClosedForm)?;
        let v_out = i
            .model
            .forward(&i.theta.detached(), &i.problem.outer_inputs(i.outer))
            .output;
        let (outer_loss, _) = outer_value_and_grad_v(i.problem, i.omega, &v_out, i.outer);
        Ok(Hypergradient::plain(grad, outer_loss))
    }
}
