use thiserror::Error;

/// What can go wrong in the solver, phrased as what to change.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum BilevelError {
    #[error(
        "{0} needs the problem's inner_hessian_diag (a diagonal curvature of the inner loss in v); implement it or pick another method"
    )]
    MissingCurvature(&'static str),
    #[error(
        "the closed_form method needs the problem's closed_form_total_gradient; this problem has none"
    )]
    NoClosedForm,
    #[error("the {0} linear system is singular; add ridge (inner.ridge or the method's ridge)")]
    Singular(&'static str),
    #[error("{0}: a value is not finite (a step too large?); lower the learning rates")]
    NotFinite(&'static str),
    #[error("the checkpoint does not fit this run: {0}")]
    State(String),
}

impl BilevelError {
    /// `Singular(what)`, or `NotFinite(what)` when the system's inputs hold NaN/Inf (then the
    /// solve failed because the run diverged, not because a ridge is missing).
    pub fn failed_solve(what: &'static str, inputs: &[&[f64]]) -> Self {
        if inputs.iter().all(|v| v.iter().all(|x| x.is_finite())) {
            BilevelError::Singular(what)
        } else {
            BilevelError::NotFinite(what)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_solve_on_non_finite_inputs_says_so() {
        let ok = [1.0, 2.0];
        assert_eq!(
            BilevelError::failed_solve("x", &[&ok, &ok]),
            BilevelError::Singular("x")
        );
        let bad = [1.0, f64::NAN];
        let e = BilevelError::failed_solve("x", &[&ok, &bad]);
        assert_eq!(e, BilevelError::NotFinite("x"));
        assert!(e.to_string().contains("is not finite"), "{e}");
    }
}
