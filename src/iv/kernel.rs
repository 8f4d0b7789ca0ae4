//! A fused host kernel for the parameter gradient of an IV network with a head (the instrument
//! net's inner steps): forward, then J_θᵀ g for a given g = ∂L/∂v.
//!
//! Why: an inner step on n = 2,500 rows of the 3→256→128→128→32 instrument net cost ≈ 60 ms
//! through burn's autodiff, of which ≈ 40 % was GEMM; the rest was per-op dispatch, allocation and
//! one memory pass per LayerNorm, activation and broadcast op. Here each layer's elementwise work is
//! one pass over its rows forward and one backward, and the GEMMs are the `gemm` crate's (the ones
//! burn flex calls). The maths is [`Net::run`]'s, spectral norm included (σ̂ = ‖uW‖ with u fixed,
//! differentiated in W); `tests` check the gradients against burn's autodiff.

use gemm::Parallelism;

use super::nets::{Act, Net};

/// burn flex's threshold for a multi-threaded GEMM (m·n·k), kept so both paths split work alike.
const PARALLEL_OPS: usize = 192 * 192 * 192;

/// c `[m, n]` (+)= a·b, all row-major; `ta`/`tb` read a (stored `[k, m]`) or b (stored `[n, k]`)
/// transposed; `acc` adds to c instead of overwriting it.
#[allow(clippy::too_many_arguments)]
fn gemm(m: usize, k: usize, n: usize, a: &[f64], ta: bool, b: &[f64], tb: bool, c: &mut [f64]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    let (a_cs, a_rs) = if ta { (m as isize, 1) } else { (1, k as isize) };
    let (b_cs, b_rs) = if tb { (k as isize, 1) } else { (1, n as isize) };
    let par = if m * n * k >= PARALLEL_OPS {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    // SAFETY: the assert bounds every element the strides above reach; `c` is a distinct
    // mutable borrow, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Σ over rows of an `[n, o]` matrix, as a `[1, o]` row.
fn col_sums(g: &[f64], o: usize) -> Vec<f64> {
    let mut s = vec![0.0; o];
    for row in g.chunks_exact(o) {
        s.iter_mut().zip(row).for_each(|(s, v)| *s += v);
    }
    s
}

/// One layer's parameters on the host, the spectrally normalised weight precomputed.
struct HostLayer {
    /// Ŵ = W/σ̂, `[i, o]`.
    w: Vec<f64>,
    b: Vec<f64>,
    /// LayerNorm gain and bias, where the layer has one.
    norm: Option<(Vec<f64>, Vec<f64>)>,
    /// (σ̂, u, v) of spectral norm: dL/dW = (dL/dŴ − ⟨dL/dŴ, Ŵ⟩ uᵀv) / σ̂.
    spectral: Option<(f64, Vec<f64>, Vec<f64>)>,
    i: usize,
    o: usize,
}

/// What one layer's forward keeps for the backward.
struct LayerTape {
    input: Vec<f64>,
    /// The activation's output (its derivative is a function of it) where LayerNorm follows it;
    /// otherwise it is the layer's output, kept once as the next layer's input (or the features).
    act_out: Option<Vec<f64>>,
    /// LayerNorm's normalised values and per-row 1/√(var + ε).
    xhat: Vec<f64>,
    inv: Vec<f64>,
}

/// A forward pass's values: per-layer tapes, the features and the head's prediction.
pub(crate) struct Tape {
    n: usize,
    layers: Vec<LayerTape>,
    features: Vec<f64>,
    pub(crate) output: Vec<f64>,
}

/// The network's parameters on the host, in [`Net`]'s layout (per layer W, b, [gain, bias]; then
/// the head's W, b).
pub(crate) struct HostNet<'a> {
    net: &'a Net,
    layers: Vec<HostLayer>,
    head_w: Vec<f64>,
    head_b: Vec<f64>,
    features: usize,
    head: usize,
}

fn act(a: Act, x: f64) -> f64 {
    match a {
        Act::Relu => x.max(0.0),
        Act::Tanh => x.tanh(),
        Act::Identity => x,
    }
}

/// The activation's derivative from its output.
fn act_grad(a: Act, y: f64) -> f64 {
    match a {
        Act::Relu => {
            if y > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Act::Tanh => 1.0 - y * y,
        Act::Identity => 1.0,
    }
}

/// LayerNorm of each row of `h` in place (gain, bias applied); keeps x̂ and 1/√(var + ε).
fn layer_norm(
    h: &mut [f64],
    o: usize,
    gain: &[f64],
    bias: &[f64],
    xhat: &mut [f64],
    inv: &mut [f64],
) {
    for ((row, xr), iv) in h.chunks_exact_mut(o).zip(xhat.chunks_exact_mut(o)).zip(inv) {
        let m = row.iter().sum::<f64>() / o as f64;
        let var = row.iter().map(|y| (y - m) * (y - m)).sum::<f64>() / o as f64;
        *iv = 1.0 / (var + 1e-5).sqrt();
        for (k, y) in row.iter_mut().enumerate() {
            xr[k] = (*y - m) * *iv;
            *y = xr[k] * gain[k] + bias[k];
        }
    }
}

/// LayerNorm's backward in place: g ← dL/d(input) from g = dL/d(output); adds the gain's and
/// bias's gradients to `dgain`, `dbias`.
fn layer_norm_back(
    g: &mut [f64],
    o: usize,
    gain: &[f64],
    xhat: &[f64],
    inv: &[f64],
    dgain: &mut [f64],
    dbias: &mut [f64],
) {
    for ((row, xr), iv) in g.chunks_exact_mut(o).zip(xhat.chunks_exact(o)).zip(inv) {
        let (mut m1, mut m2) = (0.0, 0.0);
        for k in 0..o {
            dgain[k] += row[k] * xr[k];
            dbias[k] += row[k];
            let gk = row[k] * gain[k];
            m1 += gk;
            m2 += gk * xr[k];
        }
        let (m1, m2) = (m1 / o as f64, m2 / o as f64);
        for k in 0..o {
            row[k] = iv * (row[k] * gain[k] - m1 - xr[k] * m2);
        }
    }
}

impl<'a> HostNet<'a> {
    /// `params` and the spectral-norm vectors `u` (one per layer, where refreshed) as host rows.
    pub(crate) fn new(net: &'a Net, params: &[Vec<f64>], u: &[Option<Vec<f64>>]) -> Self {
        let mut at = 0;
        let mut layers = Vec::with_capacity(net.layers.len());
        for (l, spec) in net.layers.iter().enumerate() {
            let (i, o) = (net.widths[l], net.widths[l + 1]);
            let mut w = params[at].clone();
            let spectral = match (&u[l], net.spectral_norm) {
                (Some(u), true) => {
                    // v = uW/‖uW‖, σ̂ = (uW)·v: the order of Net::weight's operations.
                    let mut uw = vec![0.0; o];
                    gemm(1, i, o, u, false, &w, false, &mut uw);
                    let norm = uw.iter().map(|x| x * x).sum::<f64>().sqrt();
                    let v: Vec<f64> = uw.iter().map(|x| x / norm).collect();
                    let sigma = uw.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>();
                    w.iter_mut().for_each(|x| *x *= sigma.recip());
                    Some((sigma, u.clone(), v))
                }
                _ => None,
            };
            let norm = spec
                .layer_norm
                .then(|| (params[at + 2].clone(), params[at + 3].clone()));
            layers.push(HostLayer {
                w,
                b: params[at + 1].clone(),
                norm,
                spectral,
                i,
                o,
            });
            at += if spec.layer_norm { 4 } else { 2 };
        }
        let features = *net.widths.last().expect("widths");
        let head = net.head.expect("a head");
        Self {
            net,
            layers,
            head_w: params[at].clone(),
            head_b: params[at + 1].clone(),
            features,
            head,
        }
    }

    /// The forward of [`Net::run`] on `x` (`[n, input]`, row-major).
    pub(crate) fn forward(&self, x: &[f64], n: usize) -> Tape {
        let mut h = x.to_vec();
        let mut tapes = Vec::with_capacity(self.layers.len());
        for (layer, spec) in self.layers.iter().zip(&self.net.layers) {
            let o = layer.o;
            let mut z = vec![0.0; n * o];
            gemm(n, layer.i, o, &h, false, &layer.w, false, &mut z);
            for row in z.chunks_exact_mut(o) {
                row.iter_mut().zip(&layer.b).for_each(|(y, b)| *y += b);
            }
            let (mut xhat, mut inv) = (Vec::new(), Vec::new());
            if let Some((gain, bias)) = &layer.norm {
                xhat = vec![0.0; n * o];
                inv = vec![0.0; n];
                if !spec.norm_after_act {
                    layer_norm(&mut z, o, gain, bias, &mut xhat, &mut inv);
                }
            }
            z.iter_mut().for_each(|y| *y = act(spec.act, *y));
            let act_out = match (&layer.norm, spec.norm_after_act) {
                (Some((gain, bias)), true) => {
                    let a = z.clone();
                    layer_norm(&mut z, o, gain, bias, &mut xhat, &mut inv);
                    Some(a)
                }
                _ => None,
            };
            tapes.push(LayerTape {
                input: std::mem::replace(&mut h, z),
                act_out,
                xhat,
                inv,
            });
        }
        let mut output = vec![0.0; n * self.head];
        gemm(
            n,
            self.features,
            self.head,
            &h,
            false,
            &self.head_w,
            false,
            &mut output,
        );
        for row in output.chunks_exact_mut(self.head) {
            row.iter_mut().zip(&self.head_b).for_each(|(y, b)| *y += b);
        }
        Tape {
            n,
            layers: tapes,
            features: h,
            output,
        }
    }

    /// J_θᵀ g for g = dL/d(prediction) (`[n, head]`): the gradients in [`Net`]'s parameter
    /// order, each as (values, rows, cols).
    pub(crate) fn backward(&self, tape: &Tape, g: &[f64]) -> Vec<(Vec<f64>, usize, usize)> {
        let n = tape.n;
        assert_eq!(g.len(), n * self.head);
        let mut d_head_w = vec![0.0; self.features * self.head];
        gemm(
            self.features,
            n,
            self.head,
            &tape.features,
            true,
            g,
            false,
            &mut d_head_w,
        );
        let d_head_b = col_sums(g, self.head);
        let mut grad = vec![0.0; n * self.features];
        gemm(
            n,
            self.head,
            self.features,
            g,
            false,
            &self.head_w,
            true,
            &mut grad,
        );

        let mut out: Vec<Vec<(Vec<f64>, usize, usize)>> = Vec::with_capacity(self.layers.len());
        for (l, (layer, spec)) in self.layers.iter().zip(&self.net.layers).enumerate().rev() {
            let (i, o) = (layer.i, layer.o);
            let t = &tape.layers[l];
            let act_out = t
                .act_out
                .as_deref()
                .unwrap_or(match tape.layers.get(l + 1) {
                    Some(next) => &next.input,
                    None => &tape.features,
                });
            let mut norm_grads = layer.norm.as_ref().map(|_| (vec![0.0; o], vec![0.0; o]));
            // LayerNorm's backward where it sits: after the activation (first) or before (last).
            let mut norm_back = |grad: &mut [f64], after: bool| {
                if let (Some((gain, _)), Some((dg, db))) = (&layer.norm, norm_grads.as_mut())
                    && spec.norm_after_act == after
                {
                    layer_norm_back(grad, o, gain, &t.xhat, &t.inv, dg, db);
                }
            };
            norm_back(&mut grad, true);
            grad.iter_mut()
                .zip(act_out)
                .for_each(|(g, y)| *g *= act_grad(spec.act, *y));
            norm_back(&mut grad, false);
            let db = col_sums(&grad, o);
            let mut dw = vec![0.0; i * o];
            gemm(i, n, o, &t.input, true, &grad, false, &mut dw);
            if l > 0 {
                let mut below = vec![0.0; n * i];
                gemm(n, o, i, &grad, false, &layer.w, true, &mut below);
                grad = below;
            }
            if let Some((sigma, u, v)) = &layer.spectral {
                let inner = dw.iter().zip(&layer.w).map(|(a, b)| a * b).sum::<f64>();
                for (r, ur) in u.iter().enumerate() {
                    for (c, vc) in v.iter().enumerate() {
                        let x = &mut dw[r * o + c];
                        *x = (*x - inner * ur * vc) / sigma;
                    }
                }
            }
            let mut block = vec![(dw, i, o), (db, 1, o)];
            if let Some((dg, dbias)) = norm_grads {
                block.push((dg, 1, o));
                block.push((dbias, 1, o));
            }
            out.push(block);
        }
        out.reverse();
        let mut flat: Vec<_> = out.into_iter().flatten().collect();
        flat.push((d_head_w, self.features, self.head));
        flat.push((d_head_b, 1, self.head));
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iv::problem::{IvProblem, Stage1, random_tensor};
    use burn::tensor::Tensor;
    use funcrl_bilevel::{
        Ctx, InnerModel, Params, Precision, ctx::to_vec, inner::inner_grad_theta,
    };
    use rand::{SeedableRng, rngs::StdRng};

    fn max_rel(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0.0_f64, |m, x| m.max(x.abs())).max(1e-300);
        a.iter()
            .zip(b)
            .fold(0.0_f64, |m, (x, y)| m.max((x - y).abs()))
            / scale
    }

    /// J_θᵀ g by burn's autodiff: the gradient of Σ ⟨h_θ(x), g⟩.
    fn autodiff(net: &Net, theta: &Params, x: &Tensor<2>, g: &Tensor<2>) -> Params {
        let th = theta.tracked();
        let v = net.forward(&th, x).output;
        th.grads(&(v * g.clone()).sum().backward())
    }

    /// Every layout the IV networks use — funcBO's instrument (LN after ReLU) and treatment
    /// (Tanh head) layouts, LN before the activation, identity output, with and without spectral
    /// norm, before and after the power-iteration vectors exist — gives the gradients of burn's
    /// autodiff, parameter by parameter, and the same prediction.
    #[test]
    fn fused_gradient_equals_autodiff() {
        let ctx = Ctx::flex(Precision::F64);
        let nets = [
            Net::funcbo(vec![3, 9, 7, 6, 5], Act::Relu, true, Some(4)),
            Net::funcbo(vec![4, 8, 6, 5, 3], Act::Tanh, true, Some(2)),
            Net::funcbo(vec![2, 7, 5], Act::Identity, true, Some(3)),
            Net::new(vec![4, 6, 5], Act::Tanh, true, false, Some(2)),
            Net::new(vec![3, 6, 6, 4], Act::Relu, true, true, Some(3)),
        ];
        for (k, net) in nets.iter().enumerate() {
            let mut rng = StdRng::seed_from_u64(k as u64);
            let theta = net.init(&ctx, &mut rng);
            // Non-trivial LayerNorm gains and biases.
            let theta = theta.axpy(
                0.3,
                &Params::new(
                    theta
                        .0
                        .iter()
                        .map(|p| {
                            let [r, c] = p.dims();
                            random_tensor(&ctx, &mut rng, r, c)
                        })
                        .collect(),
                ),
            );
            let n = 13;
            let x = random_tensor(&ctx, &mut rng, n, net.widths[0]).mul_scalar(2.0);
            let g = random_tensor(&ctx, &mut rng, n, net.head.unwrap());
            for refreshed in [false, true] {
                if refreshed {
                    for _ in 0..3 {
                        net.refresh(&ctx, &theta);
                    }
                }
                let want = autodiff(net, &theta, &x, &g);
                let mut seen = None;
                let got = net
                    .grad_through(&theta, &x, &mut |v| {
                        seen = Some(to_vec(&v));
                        g.clone()
                    })
                    .expect("f64 with a head uses the kernel");
                let out = to_vec(&net.forward(&theta, &x).output);
                assert!(max_rel(&seen.unwrap(), &out) < 1e-13, "net {k}: prediction");
                assert_eq!(got.len(), want.len());
                for (j, (a, b)) in got.0.iter().zip(&want.0).enumerate() {
                    assert_eq!(a.dims(), b.dims(), "net {k} param {j}");
                    let e = max_rel(&to_vec(a), &to_vec(b));
                    assert!(
                        e < 1e-12,
                        "net {k} (refreshed {refreshed}) param {j}: rel err {e}"
                    );
                }
            }
        }
    }

    /// Through the solver: `inner_grad_theta` (G = L_in + ½λ‖[W; b]‖²) gives the same gradient
    /// and value with the kernel as with autodiff, at λ ≠ 0.
    #[test]
    fn inner_gradient_with_the_kernel_equals_autodiff() {
        let ctx = Ctx::flex(Precision::F64);
        let mut rng = StdRng::seed_from_u64(5);
        let (n, dz, dt, feat) = (17, 3, 6, 4);
        let tnet = Net::funcbo(vec![dt, 8, 5, feat], Act::Tanh, true, None);
        let omega = tnet.init(&ctx, &mut rng);
        tnet.refresh(&ctx, &omega);
        let problem = IvProblem::new(ctx.clone(), tnet, 0.1);
        let b = Stage1::new(
            random_tensor(&ctx, &mut rng, n, dz),
            random_tensor(&ctx, &mut rng, n, dt),
        );
        let mut fused = Net::funcbo(vec![dz, 9, 7, 5], Act::Relu, true, Some(feat));
        let theta = fused.init(&ctx, &mut rng);
        fused.refresh(&ctx, &theta);
        let (g1, v1) = inner_grad_theta(&problem, &fused, &omega, &theta, &b.z, &b, 0.3);
        fused.host_kernel = false;
        let (g0, v0) = inner_grad_theta(&problem, &fused, &omega, &theta, &b.z, &b, 0.3);
        assert!((v1 - v0).abs() < 1e-13 * v0.abs(), "{v1} vs {v0}");
        let e = max_rel(&g1.to_flat(), &g0.to_flat());
        assert!(e < 1e-12, "rel err {e}");
    }
}
