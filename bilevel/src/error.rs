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
}
