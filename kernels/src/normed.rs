//! A fused host kernel for the parameter gradient of an IV network with a head (the instrument
//! net's inner steps): forward, then J_θᵀ g for a given g = ∂L/∂v.
//!
//! Why: an inner step on n = 2,500 rows of the 3→256→128→128→32 instrument net cost ≈ 60 ms
//! through burn's autodiff, of which ≈ 40 % was GEMM; the rest was per-op dispatch, allocation and
//! one memory pass per LayerNorm, activation and broadcast op. Here each layer's elementwise work is
//! one pass over its rows forward and one backward, and the GEMMs are the `gemm` crate's (the ones
//! burn flex calls). The maths is the burn description's (`funcrl_iv::nets::Net::run`), spectral
//! norm included (σ̂ = ‖uW‖ with u fixed, differentiated in W); the IV crate's tests check the
//! gradients against burn's autodiff on every layout it uses.

use serde::{Deserialize, Serialize};

use crate::gemm::{Real, Threads, gemm};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Act {
    Relu,
    Tanh,
    /// No activation (DFIV's demand treatment net ends with a plain linear layer).
    Identity,
}

/// One linear layer's post-processing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layer {
    pub layer_norm: bool,
    /// LayerNorm after the activation (else between the linear map and the activation).
    pub norm_after_act: bool,
    pub act: Act,
}

/// Σ over rows of an `[n, o]` matrix, as a `[1, o]` row.
fn col_sums<T: Real>(g: &[T], o: usize) -> Vec<T> {
    let mut s = vec![T::zero(); o];
    for row in g.chunks_exact(o) {
        s.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
    }
    s
}

/// One layer's parameters on the host, the spectrally normalised weight precomputed.
struct HostLayer<T> {
    /// Ŵ = W/σ̂, `[i, o]`.
    w: Vec<T>,
    b: Vec<T>,
    /// LayerNorm gain and bias, where the layer has one.
    norm: Option<(Vec<T>, Vec<T>)>,
    /// (σ̂, u, v) of spectral norm: dL/dW = (dL/dŴ − ⟨dL/dŴ, Ŵ⟩ uᵀv) / σ̂.
    spectral: Option<(T, Vec<T>, Vec<T>)>,
    i: usize,
    o: usize,
}

/// What one layer's forward keeps for the backward.
struct LayerTape<T> {
    input: Vec<T>,
    /// The activation's output (its derivative is a function of it) where LayerNorm follows it;
    /// otherwise it is the layer's output, kept once as the next layer's input (or the features).
    act_out: Option<Vec<T>>,
    /// LayerNorm's normalised values and per-row 1/√(var + ε).
    xhat: Vec<T>,
    inv: Vec<T>,
}

/// A forward pass's values: per-layer tapes, the features and the head's prediction.
pub struct Tape<T = f64> {
    n: usize,
    layers: Vec<LayerTape<T>>,
    features: Vec<T>,
    pub output: Vec<T>,
}

/// A network's parameters on the host, in the IV networks' layout (per layer W `[in, out]`, b,
/// and gain, bias where the layer has LayerNorm; then the head's W, b).
pub struct HostNet<T = f64> {
    specs: Vec<Layer>,
    layers: Vec<HostLayer<T>>,
    head_w: Vec<T>,
    head_b: Vec<T>,
    features: usize,
    head: usize,
}

fn act<T: Real>(a: Act, x: T) -> T {
    match a {
        Act::Relu => x.max(T::zero()),
        Act::Tanh => x.tanh(),
        Act::Identity => x,
    }
}

/// The activation's derivative from its output.
fn act_grad<T: Real>(a: Act, y: T) -> T {
    match a {
        Act::Relu => {
            if y > T::zero() {
                T::one()
            } else {
                T::zero()
            }
        }
        Act::Tanh => T::one() - y * y,
        Act::Identity => T::one(),
    }
}

/// LayerNorm of each row of `h` in place (gain, bias applied); keeps x̂ and 1/√(var + ε).
fn layer_norm<T: Real>(
    h: &mut [T],
    o: usize,
    gain: &[T],
    bias: &[T],
    xhat: &mut [T],
    inv: &mut [T],
) {
    for ((row, xr), iv) in h.chunks_exact_mut(o).zip(xhat.chunks_exact_mut(o)).zip(inv) {
        let m = row.iter().sum::<T>() / T::of(o as f64);
        let var = row.iter().map(|&y| (y - m) * (y - m)).sum::<T>() / T::of(o as f64);
        *iv = T::one() / (var + T::of(1e-5)).sqrt();
        for (k, y) in row.iter_mut().enumerate() {
            xr[k] = (*y - m) * *iv;
            *y = xr[k] * gain[k] + bias[k];
        }
    }
}

/// LayerNorm's backward in place: g ← dL/d(input) from g = dL/d(output); adds the gain's and
/// bias's gradients to `dgain`, `dbias`.
fn layer_norm_back<T: Real>(
    g: &mut [T],
    o: usize,
    gain: &[T],
    xhat: &[T],
    inv: &[T],
    dgain: &mut [T],
    dbias: &mut [T],
) {
    for ((row, xr), iv) in g.chunks_exact_mut(o).zip(xhat.chunks_exact(o)).zip(inv) {
        let (mut m1, mut m2) = (T::zero(), T::zero());
        for k in 0..o {
            dgain[k] += row[k] * xr[k];
            dbias[k] += row[k];
            let gk = row[k] * gain[k];
            m1 += gk;
            m2 += gk * xr[k];
        }
        let (m1, m2) = (m1 / T::of(o as f64), m2 / T::of(o as f64));
        for k in 0..o {
            row[k] = *iv * (row[k] * gain[k] - m1 - xr[k] * m2);
        }
    }
}

impl<T: Real> HostNet<T> {
    /// A network of `widths` = [input, hidden.., features] with per-layer `specs`, spectral norm
    /// where `u` (one per layer, where refreshed) has a vector and `spectral_norm` is set, and a
    /// linear head of width `head`; `params` and `u` as host rows.
    pub fn new(
        widths: &[usize],
        specs: &[Layer],
        spectral_norm: bool,
        head: usize,
        params: &[Vec<T>],
        u: &[Option<Vec<T>>],
    ) -> Self {
        let mut at = 0;
        let mut layers = Vec::with_capacity(specs.len());
        for (l, spec) in specs.iter().enumerate() {
            let (i, o) = (widths[l], widths[l + 1]);
            let mut w = params[at].clone();
            let spectral = match (&u[l], spectral_norm) {
                (Some(u), true) => {
                    // v = uW/‖uW‖, σ̂ = (uW)·v: the order of Net::weight's operations.
                    let mut uw = vec![T::zero(); o];
                    gemm(
                        1,
                        i,
                        o,
                        u,
                        false,
                        &w,
                        false,
                        &mut uw,
                        T::zero(),
                        Threads::Pool,
                    );
                    let norm = uw.iter().map(|&x| x * x).sum::<T>().sqrt();
                    let v: Vec<T> = uw.iter().map(|&x| x / norm).collect();
                    let sigma = uw.iter().zip(&v).map(|(&a, &b)| a * b).sum::<T>();
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
        let features = *widths.last().expect("widths");
        Self {
            specs: specs.to_vec(),
            layers,
            head_w: params[at].clone(),
            head_b: params[at + 1].clone(),
            features,
            head,
        }
    }

    /// The forward on `x` (`[n, input]`, row-major).
    pub fn forward(&self, x: &[T], n: usize) -> Tape<T> {
        let mut h = x.to_vec();
        let mut tapes = Vec::with_capacity(self.layers.len());
        for (layer, spec) in self.layers.iter().zip(&self.specs) {
            let o = layer.o;
            let mut z = vec![T::zero(); n * o];
            gemm(
                n,
                layer.i,
                o,
                &h,
                false,
                &layer.w,
                false,
                &mut z,
                T::zero(),
                Threads::Pool,
            );
            for row in z.chunks_exact_mut(o) {
                row.iter_mut().zip(&layer.b).for_each(|(y, &b)| *y += b);
            }
            let (mut xhat, mut inv) = (Vec::new(), Vec::new());
            if let Some((gain, bias)) = &layer.norm {
                xhat = vec![T::zero(); n * o];
                inv = vec![T::zero(); n];
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
        let mut output = vec![T::zero(); n * self.head];
        gemm(
            n,
            self.features,
            self.head,
            &h,
            false,
            &self.head_w,
            false,
            &mut output,
            T::zero(),
            Threads::Pool,
        );
        for row in output.chunks_exact_mut(self.head) {
            row.iter_mut().zip(&self.head_b).for_each(|(y, &b)| *y += b);
        }
        Tape {
            n,
            layers: tapes,
            features: h,
            output,
        }
    }

    /// J_θᵀ g for g = dL/d(prediction) (`[n, head]`): the gradients in the parameter
    /// order, each as (values, rows, cols).
    pub fn backward(&self, tape: &Tape<T>, g: &[T]) -> Vec<(Vec<T>, usize, usize)> {
        let n = tape.n;
        assert_eq!(g.len(), n * self.head);
        let mut d_head_w = vec![T::zero(); self.features * self.head];
        gemm(
            self.features,
            n,
            self.head,
            &tape.features,
            true,
            g,
            false,
            &mut d_head_w,
            T::zero(),
            Threads::Pool,
        );
        let d_head_b = col_sums(g, self.head);
        let mut grad = vec![T::zero(); n * self.features];
        gemm(
            n,
            self.head,
            self.features,
            g,
            false,
            &self.head_w,
            true,
            &mut grad,
            T::zero(),
            Threads::Pool,
        );

        let mut out: Vec<Vec<(Vec<T>, usize, usize)>> = Vec::with_capacity(self.layers.len());
        for (l, (layer, spec)) in self.layers.iter().zip(&self.specs).enumerate().rev() {
            let (i, o) = (layer.i, layer.o);
            let t = &tape.layers[l];
            let act_out = t
                .act_out
                .as_deref()
                .unwrap_or(match tape.layers.get(l + 1) {
                    Some(next) => &next.input,
                    None => &tape.features,
                });
            let mut norm_grads = layer
                .norm
                .as_ref()
                .map(|_| (vec![T::zero(); o], vec![T::zero(); o]));
            // LayerNorm's backward where it sits: after the activation (first) or before (last).
            let mut norm_back = |grad: &mut [T], after: bool| {
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
            let mut dw = vec![T::zero(); i * o];
            gemm(
                i,
                n,
                o,
                &t.input,
                true,
                &grad,
                false,
                &mut dw,
                T::zero(),
                Threads::Pool,
            );
            if l > 0 {
                let mut below = vec![T::zero(); n * i];
                gemm(
                    n,
                    o,
                    i,
                    &grad,
                    false,
                    &layer.w,
                    true,
                    &mut below,
                    T::zero(),
                    Threads::Pool,
                );
                grad = below;
            }
            if let Some((sigma, u, v)) = &layer.spectral {
                let inner = dw.iter().zip(&layer.w).map(|(&a, &b)| a * b).sum::<T>();
                for (r, ur) in u.iter().enumerate() {
                    for (c, vc) in v.iter().enumerate() {
                        let x = &mut dw[r * o + c];
                        *x = (*x - inner * *ur * *vc) / *sigma;
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
