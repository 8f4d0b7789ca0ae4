use burn::tensor::Tensor;

use super::{
    HyperInput, Hypergradient, HypergradientMethod, outer_value_and_grad_v, total_from_adjoint,
};
use crate::{
    ctx::{Ctx, scalar, to_vec},
    error::BilevelError,
    inner::augmented_features,
    linalg::weighted_ridge_solve,
    model::{Forward, InnerModel},
    params::Params,
    problem::BilevelProblem,
};

/// FuncID with a linear adjoint a(x) = [φ(x); 1]ᵀ V on the inner network's last features φ.
/// V minimises ½ mean_P aᵀ H a + Σ_Q aᵀ D + ½ λ ‖V‖², i.e. per output c:
/// (Φ̃_Pᵀ diag(H_c) Φ̃_P / n + λI) V_c = −Φ̃_Qᵀ D_c.
pub struct FuncIdLinear {
    pub ridge: Option<f64>,
}

/// The linear adjoint on given features: its coefficients `v` (`[q, d_v]`, q = features + 1, the
/// head's layout with the bias row last), its values on the inner and outer rows, and its
/// adjoint objective.
pub(crate) struct LinearAdjoint {
    pub v: Tensor<2>,
    pub a_in: Tensor<2>,
    pub objective: f64,
}

/// Solves for the linear adjoint at the inner forward `f_in`/outer forward `f_out`, with
/// D = ∂L_out/∂v on the outer rows.
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear_adjoint<P: BilevelProblem>(
    ctx: &Ctx,
    problem: &P,
    omega: &Params,
    inner: &P::InnerBatch,
    f_in: &Forward,
    f_out: &Forward,
    d: &Tensor<2>,
    ridge: f64,
) -> Result<LinearAdjoint, BilevelError> {
    let v_in = f_in.output.clone().detach();
    let h = problem
        .inner_hessian_diag(&omega.detached(), v_in.clone(), inner)
        .ok_or(BilevelError::MissingCurvature("funcid_linear"))?;
    let (phi_p, n, q) = augmented_features(&f_in.features);
    let (phi_q, m, _) = augmented_features(&f_out.features);
    let dv = v_in.dims()[1];
    let d_host = to_vec(d);
    let mut rhs = vec![0.0; q * dv];
    for s in 0..m {
        for r in 0..q {
            for c in 0..dv {
                rhs[r * dv + c] -= phi_q[s * q + r] * d_host[s * dv + c];
            }
        }
    }
    let v = weighted_ridge_solve(&phi_p, &to_vec(&h), &rhs, n, q, dv, ridge)
        .ok_or_else(|| BilevelError::failed_solve("linear adjoint", &[&phi_p, &rhs]))?;
    let vt = ctx.tensor2(v, q, dv);
    let a_in = ctx.tensor2(phi_p, n, q).matmul(vt.clone());
    let a_out = ctx.tensor2(phi_q, m, q).matmul(vt.clone());
    let objective = scalar(
        (h * a_in.clone().square()).sum().mul_scalar(0.5 / n as f64) + (a_out * d.clone()).sum(),
    ) + 0.5 * ridge * scalar(vt.clone().square().sum());
    Ok(LinearAdjoint {
        v: vt,
        a_in,
        objective,
    })
}

impl<P: BilevelProblem, M: InnerModel> HypergradientMethod<P, M> for FuncIdLinear {
    fn name(&self) -> &'static str {
        "funcid_linear"
    }

    fn total_gradient(&mut self, i: HyperInput<'_, P, M>) -> Result<Hypergradient, BilevelError> {
        let ridge = self.ridge.unwrap_or(i.inner_ridge);
        let theta = i.theta.detached();
        let (x_in, x_out) = i.inputs();
        let (f_in, f_out) = (
            i.model.forward(&theta, &x_in),
            i.model.forward(&theta, &x_out),
        );
        let (v_in, v_out) = (f_in.output.clone().detach(), f_out.output.clone().detach());
        let (outer_loss, d) = outer_value_and_grad_v(i.problem, i.omega, &v_out, i.outer);
        let lin = linear_adjoint(i.ctx, i.problem, i.omega, i.inner, &f_in, &f_out, &d, ridge)?;
        let grad = total_from_adjoint(
            i.problem, i.omega, &v_in, &lin.a_in, &v_out, i.inner, i.outer,
        );
        Ok(Hypergradient {
            grad,
            outer_loss,
            adjoint_loss: Some(lin.objective),
            adjoint_cosine: None,
        })
    }
}
