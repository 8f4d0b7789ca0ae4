use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::{
    HyperInput, Hypergradient, HypergradientMethod, funcid_linear::linear_adjoint,
    outer_value_and_grad_v, total_from_adjoint,
};
use crate::{
    ctx::{Ctx, Precision, scalar, to_vec},
    error::BilevelError,
    model::InnerModel,
    optim::{Optimizer, OptimizerConfig},
    params::Params,
    problem::{BilevelProblem, inner_hvp_v},
    state::State,
};

/// Where the adjoint network ψ starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AdjointInit {
    /// An independent draw of the inner model's initialiser (then warm-started if asked).
    #[default]
    Independent,
    /// A copy of the inner model's initial parameters θ₀, made once before the first inner
    /// solve: the reference code's `DualNetwork` (a deep copy of the untrained inner model).
    CopyInner,
    /// An independent draw with the head set to zero, so a ≡ 0 at the start: no random adjoint
    /// enters the first hypergradients.
    ZeroOutput,
    /// Every outer iteration, θ's feature layers with the closed-form linear adjoint as head:
    /// the steps then only add to FuncID-linear what the last features cannot express.
    Linear,
}

/// FuncID with a network adjoint a_ψ (same architecture as h), trained for `steps` optimiser
/// steps on J(a) = ½κ mean_P aᵀ (∂²_v ℓ_in) a + Σ_Q aᵀ D, D = ∂L_out/∂v.
/// The curvature is taken w.r.t. the prediction only, so no second derivative goes through a
/// network: the gradient of J w.r.t. the outputs is (κ H a / n, D), and backpropagating the
/// surrogate ⟨a_P, sg(κ H a_P)⟩/n + ⟨a_Q, D⟩ gives ∇_ψ J in one first-order backward.
pub struct FuncId {
    pub steps: usize,
    pub warm_start: bool,
    pub init: AdjointInit,
    /// κ above; the hypergradient uses κ·a (the minimiser of J is a*/κ).
    pub curvature_scale: f64,
    pub own_norm_state: bool,
    pub log_cosine: bool,
    /// Precision of the adjoint steps' fused route (`None`: the run's).
    pub adjoint_precision: Option<Precision>,
    optimizer: Optimizer,
    psi: Option<Params>,
    theta0: Option<Params>,
}

impl FuncId {
    pub fn new(steps: usize, optimizer: OptimizerConfig, warm_start: bool) -> Self {
        Self {
            steps,
            warm_start,
            init: AdjointInit::Independent,
            curvature_scale: 1.0,
            own_norm_state: false,
            log_cosine: false,
            adjoint_precision: None,
            optimizer: Optimizer::new(optimizer),
            psi: None,
            theta0: None,
        }
    }
}

/// `theta` with its head (the last two tensors) replaced by the `[q, d_v]` coefficients `v`.
fn with_head(theta: &Params, v: &Tensor<2>) -> Params {
    let [q, dv] = v.dims();
    let k = theta.len();
    let mut out = theta.detached();
    out.0[k - 2] = v.clone().slice([0..q - 1, 0..dv]);
    out.0[k - 1] = v.clone().slice([q - 1..q, 0..dv]);
    out
}

fn cosine(a: &Tensor<2>, b: &Tensor<2>) -> f64 {
    let (a, b) = (to_vec(a), to_vec(b));
    let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

impl<P: BilevelProblem, M: InnerModel> HypergradientMethod<P, M> for FuncId {
    fn name(&self) -> &'static str {
        "funcid"
    }

    fn begin(&mut self, theta0: &Params) {
        self.theta0 = Some(theta0.detached());
    }

    // θ₀ is not saved: `begin` sees it again when the solver is rebuilt from the config.
    fn save(&self, state: &mut State) {
        if let Some(psi) = &self.psi {
            state.put("method.psi", psi);
        }
        state.put_optimizer("method.optimizer", &self.optimizer);
    }

    fn restore(&mut self, ctx: &Ctx, state: &State, theta: &Params) -> Result<(), BilevelError> {
        self.psi = if state.tensors.contains_key("method.psi") {
            Some(state.get_like(ctx, "method.psi", theta)?)
        } else {
            None
        };
        state.restore_optimizer(ctx, "method.optimizer", &mut self.optimizer, Some(theta))
    }

    fn total_gradient(&mut self, i: HyperInput<'_, P, M>) -> Result<Hypergradient, BilevelError> {
        let theta = i.theta.detached();
        let (x_in, x_out) = i.inputs();
        let f_in = i.model.forward(&theta, &x_in);
        let f_out = i.model.forward(&theta, &x_out);
        let v_in = f_in.output.clone().detach();
        let v_out = f_out.output.clone().detach();
        let (outer_loss, d) = outer_value_and_grad_v(i.problem, i.omega, &v_out, i.outer);
        let n = v_in.dims()[0] as f64;
        let kappa = self.curvature_scale;

        let linear = if self.init == AdjointInit::Linear || self.log_cosine {
            Some(linear_adjoint(
                i.ctx,
                i.problem,
                i.omega,
                i.inner,
                &f_in,
                &f_out,
                &d,
                i.inner_ridge,
            )?)
        } else {
            None
        };
        let mut psi = match (&self.psi, self.warm_start, self.init, &linear) {
            // The minimiser of J is a*/κ: start there.
            (_, _, AdjointInit::Linear, Some(lin)) => {
                self.optimizer.reset();
                with_head(&theta, &lin.v.clone().mul_scalar(1.0 / kappa))
            }
            (Some(psi), true, _, _) => psi.detached(),
            _ => {
                self.optimizer.reset();
                match self.init {
                    AdjointInit::CopyInner => self.theta0.clone().unwrap_or_else(|| theta.clone()),
                    AdjointInit::ZeroOutput => {
                        let mut p = i.model.init(i.ctx, i.rng);
                        let k = p.len();
                        for j in [k - 2, k - 1] {
                            p.0[j] = p.0[j].clone().zeros_like();
                        }
                        p
                    }
                    AdjointInit::Independent | AdjointInit::Linear => i.model.init(i.ctx, i.rng),
                }
            }
        };
        if self.own_norm_state {
            i.model.select_state(1);
            i.model.refresh(i.ctx, &psi);
        }
        let mut adjoint_loss = f64::NAN;
        let arith = self.adjoint_precision;
        for _ in 0..self.steps {
            // A model with its own gradient route: ∂J/∂a_P = κ H a_P / n and ∂J/∂a_Q = D.
            let (mut quad, mut lin) = (0.0, 0.0);
            let fused = i
                .model
                .grad_through(&psi, &x_in, arith, &mut |a| {
                    let ha = inner_hvp_v(i.ctx, i.problem, i.omega, &v_in, &a, i.inner);
                    quad = scalar((a * ha.clone()).sum()) / n;
                    ha.mul_scalar(kappa / n)
                })
                .and_then(|g_in| {
                    let g_out = i.model.grad_through(&psi, &x_out, arith, &mut |a| {
                        lin = scalar((a * d.clone()).sum());
                        d.clone()
                    })?;
                    Some(g_in.add(&g_out))
                });
            if let Some(g) = fused {
                adjoint_loss = 0.5 * kappa * quad + lin;
                psi = self.optimizer.step(&psi, &g);
                continue;
            }
            let ps = psi.tracked();
            let a_in = i.model.forward(&ps, &x_in).output;
            let a_out = i.model.forward(&ps, &x_out).output;
            let ha = inner_hvp_v(i.ctx, i.problem, i.omega, &v_in, &a_in, i.inner);
            let quad = (a_in * ha).sum().mul_scalar(kappa / n);
            let lin = (a_out * d.clone()).sum();
            adjoint_loss = scalar(quad.clone().detach()) * 0.5 + scalar(lin.clone().detach());
            let g = ps.grads(&(quad + lin).backward());
            psi = self.optimizer.step(&psi, &g);
        }
        let a_in = i
            .model
            .forward(&psi, &x_in)
            .output
            .detach()
            .mul_scalar(kappa);
        if self.own_norm_state {
            i.model.select_state(0);
        }
        let adjoint_cosine = linear.as_ref().map(|lin| cosine(&a_in, &lin.a_in));
        let grad = total_from_adjoint(i.problem, i.omega, &v_in, &a_in, &v_out, i.inner, i.outer);
        self.psi = Some(psi);
        Ok(Hypergradient {
            grad,
            outer_loss,
            adjoint_loss: Some(adjoint_loss),
            adjoint_cosine,
        })
    }
}
