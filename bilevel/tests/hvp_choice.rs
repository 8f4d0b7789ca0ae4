//! Why parameter-space Hessian-vector products are central finite differences (see `param_hvp`):
//! the alternative, burn 0.22.1's nested autodiff `Autodiff<Autodiff<Flex>>`, works only on raw
//! backend ops. Both are written here on the same raw-op network and compared with a closed form
//! (quadratic case) and with each other (tanh network), with their run times.

use std::time::Instant;

use burn_autodiff::Autodiff;
use burn_backend::{
    AutodiffBackend, Backend, DType, Scalar, TensorData, ops::FloatTensorOps, read_sync,
    tensor::FloatTensor,
};
use burn_flex::{Flex, FlexDevice};

type I = Autodiff<Flex>;
type O = Autodiff<I>;

/// L(W) = (0.5/n) ‖f(X W_0 …) − Y‖² with tanh between layers (no biases: X carries a ones column).
fn loss<B: Backend>(
    x: FloatTensor<B>,
    y: FloatTensor<B>,
    w: &[FloatTensor<B>],
    n: usize,
) -> FloatTensor<B> {
    let mut h = x;
    for (k, wk) in w.iter().enumerate() {
        if k > 0 {
            h = B::float_tanh(h);
        }
        h = B::float_matmul(h, wk.clone());
    }
    let r = B::float_sub(h, y);
    B::float_mul_scalar(
        B::float_sum(B::float_mul(r.clone(), r)),
        Scalar::new(0.5 / n as f64, &DType::F64),
    )
}

fn data<B: Backend>(v: &[f64], r: usize, c: usize) -> FloatTensor<B> {
    B::float_from_data(TensorData::new(v.to_vec(), [r, c]), &Default::default())
}

fn host<B: Backend>(t: FloatTensor<B>) -> Vec<f64> {
    read_sync(B::float_into_data(t))
        .unwrap()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .unwrap()
}

struct Net {
    x: Vec<f64>,
    y: Vec<f64>,
    n: usize,
    shapes: Vec<(usize, usize)>,
    w: Vec<Vec<f64>>,
}

fn lcg(seed: &mut u64) -> f64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
}

impl Net {
    fn new(n: usize, widths: &[usize], seed: u64) -> Self {
        let mut s = seed;
        let d = widths[0];
        let mut x: Vec<f64> = Vec::new();
        for _ in 0..n {
            x.extend((0..d - 1).map(|_| lcg(&mut s)));
            x.push(1.0);
        }
        let out = *widths.last().unwrap();
        let y = (0..n * out).map(|_| lcg(&mut s)).collect();
        let shapes: Vec<_> = widths.windows(2).map(|p| (p[0], p[1])).collect();
        let w = shapes
            .iter()
            .map(|&(a, b)| {
                (0..a * b)
                    .map(|_| lcg(&mut s) / (a as f64).sqrt())
                    .collect()
            })
            .collect();
        Self { x, y, n, shapes, w }
    }

    fn direction(&self, seed: u64) -> Vec<Vec<f64>> {
        let mut s = seed;
        self.shapes
            .iter()
            .map(|&(a, b)| (0..a * b).map(|_| lcg(&mut s)).collect())
            .collect()
    }

    fn grad(&self, w: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let (d, out) = (self.shapes[0].0, self.shapes.last().unwrap().1);
        let wt: Vec<FloatTensor<I>> = w
            .iter()
            .zip(&self.shapes)
            .map(|(v, &(a, b))| I::float_set_require_grad(data::<I>(v, a, b), true))
            .collect();
        let l = loss::<I>(
            data::<I>(&self.x, self.n, d),
            data::<I>(&self.y, self.n, out),
            &wt,
            self.n,
        );
        let g = I::backward(l);
        wt.iter()
            .map(|t| host::<Flex>(I::grad(t, &g).unwrap()))
            .collect()
    }

    /// Central difference of gradients, ε = cbrt(eps)·(1 + ‖W‖)/‖u‖ as in `param_hvp`.
    fn fd_hvp(&self, u: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let norm = |v: &[Vec<f64>]| v.iter().flatten().map(|a| a * a).sum::<f64>().sqrt();
        let eps = f64::EPSILON.cbrt() * (1.0 + norm(&self.w)) / norm(u);
        let shift = |s: f64| -> Vec<Vec<f64>> {
            self.w
                .iter()
                .zip(u)
                .map(|(w, u)| w.iter().zip(u).map(|(a, b)| a + s * b).collect())
                .collect()
        };
        let (gp, gm) = (self.grad(&shift(eps)), self.grad(&shift(-eps)));
        gp.iter()
            .zip(&gm)
            .map(|(p, m)| {
                p.iter()
                    .zip(m)
                    .map(|(a, b)| (a - b) / (2.0 * eps))
                    .collect()
            })
            .collect()
    }

    /// Reverse-over-reverse: ∇_W ⟨∇_W L, u⟩ with `Autodiff<Autodiff<Flex>>`.
    fn nested_hvp(&self, u: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let (d, out) = (self.shapes[0].0, self.shapes.last().unwrap().1);
        let wi: Vec<FloatTensor<I>> = self
            .w
            .iter()
            .zip(&self.shapes)
            .map(|(v, &(a, b))| I::float_set_require_grad(data::<I>(v, a, b), true))
            .collect();
        let wo: Vec<FloatTensor<O>> = wi
            .iter()
            .map(|t| O::float_set_require_grad(O::from_inner(t.clone()), true))
            .collect();
        let l = loss::<O>(
            data::<O>(&self.x, self.n, d),
            data::<O>(&self.y, self.n, out),
            &wo,
            self.n,
        );
        let grads = O::backward(l);
        let mut dot: Option<FloatTensor<I>> = None;
        for ((t, u), &(a, b)) in wo.iter().zip(u).zip(&self.shapes) {
            let g = O::grad(t, &grads).unwrap();
            let term = I::float_sum(I::float_mul(g, data::<I>(u, a, b)));
            dot = Some(match dot {
                None => term,
                Some(acc) => I::float_add(acc, term),
            });
        }
        let g2 = I::backward(dot.unwrap());
        wi.iter()
            .map(|t| host::<Flex>(I::grad(t, &g2).unwrap()))
            .collect()
    }
}

fn rel(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    let num: f64 = a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    (num / b.iter().flatten().map(|y| y * y).sum::<f64>()).sqrt()
}

#[test]
fn both_match_the_closed_form_on_a_quadratic() {
    // One linear layer: H u = X̃ᵀ X̃ U / n.
    let _ = FlexDevice;
    let net = Net::new(64, &[5, 3], 1);
    let u = net.direction(2);
    let (d, k) = net.shapes[0];
    let mut xu = vec![0.0; net.n * k];
    for s in 0..net.n {
        for j in 0..k {
            xu[s * k + j] = (0..d).map(|i| net.x[s * d + i] * u[0][i * k + j]).sum();
        }
    }
    let mut exact = vec![0.0; d * k];
    for i in 0..d {
        for j in 0..k {
            exact[i * k + j] = (0..net.n)
                .map(|s| net.x[s * d + i] * xu[s * k + j])
                .sum::<f64>()
                / net.n as f64;
        }
    }
    let exact = vec![exact];
    let (e_fd, e_nested) = (
        rel(&net.fd_hvp(&u), &exact),
        rel(&net.nested_hvp(&u), &exact),
    );
    println!("quadratic: finite differences {e_fd:.1e}, nested autodiff {e_nested:.1e}");
    assert!(e_fd < 1e-9 && e_nested < 1e-12, "{e_fd:e} {e_nested:e}");
}

#[test]
fn finite_differences_agree_with_nested_autodiff_on_a_tanh_network() {
    for (widths, n) in [(vec![6, 16, 16, 2], 40), (vec![33, 128, 128, 128, 4], 512)] {
        let net = Net::new(n, &widths, 3);
        let u = net.direction(4);
        let _ = (net.fd_hvp(&u), net.nested_hvp(&u)); // warm-up
        let t = Instant::now();
        let fd = net.fd_hvp(&u);
        let t_fd = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let nested = net.nested_hvp(&u);
        let t_nested = t.elapsed().as_secs_f64();
        let e = rel(&fd, &nested);
        println!(
            "widths {widths:?}, n {n}: FD vs nested rel diff {e:.1e}; time FD {:.2} ms, nested {:.2} ms",
            t_fd * 1e3,
            t_nested * 1e3
        );
        assert!(e < 1e-7, "{e:e}");
    }
}
