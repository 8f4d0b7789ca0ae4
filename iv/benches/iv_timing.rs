//! Wall time per outer iteration of deep IV on dSprites-shaped data (the protocol's networks, f64, full
//! batch, 20 inner steps), for FuncID, FuncID-linear, AID and DFIV, plus a breakdown of where an
//! iteration's time goes. Compare with benches/peers/iv_torch.py run in the same session.
//!
//!     cargo bench -p funcrl --bench iv_timing -- [n] [iterations] [methods,comma,separated]
//!
//! Like the PyTorch peer, the images are random (time only).
//!
//! The last column is an arithmetic floor: the matrix products one outer iteration performs
//! (treatment net forward and backward on the stage-1 rows, instrument net forward and backward
//! per inner step, and for FuncID per adjoint step on both halves, in f32 where the config sets
//! `adjoint_precision = "f32"`), replayed through the same GEMM entry point with nothing else. An iteration cannot take less than that on this machine unless
//! it does less arithmetic.

use std::time::Instant;

use funcrl_bilevel::{BilevelProblem, Ctx, InnerModel, MethodConfig, Precision};
use funcrl_iv::data::Matrix;
use funcrl_iv::generate::IvDataset;
use funcrl_iv::run::{self, Resolved};
use funcrl_kernels::{Real, Threads};
use rand::{RngExt, SeedableRng, rngs::StdRng};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (m, k, n) of every product in one forward and one backward of a dense net with layer widths
/// `dims` on `rows` rows: forward XW, then dW = XᵀG per layer and G·Wᵀ below the first layer (the
/// input needs no gradient).
fn net_products(dims: &[usize], rows: usize) -> Vec<(usize, usize, usize)> {
    let layers: Vec<(usize, usize)> = dims.windows(2).map(|w| (w[0], w[1])).collect();
    let mut out: Vec<_> = layers.iter().map(|&(i, o)| (rows, i, o)).collect();
    for (l, &(i, o)) in layers.iter().enumerate().rev() {
        out.push((i, rows, o));
        if l > 0 {
            out.push((rows, o, i));
        }
    }
    out
}

/// A product's (m, k, n) and whether it runs in f32.
type Product = ((usize, usize, usize), bool);

/// The products of one outer iteration (DFIV, FuncID-linear and FuncID; None for the others,
/// whose corrections are not a fixed list of products).
fn iteration_products(
    cfg: &run::IvConfig,
    method: &MethodConfig,
    d_t: usize,
    d_z: usize,
    n1: usize,
    n2: usize,
) -> Option<Vec<Product>> {
    let net = &cfg.network;
    let treat: Vec<usize> = std::iter::once(d_t)
        .chain(net.treatment_hidden.iter().copied())
        .chain([net.features])
        .collect();
    let instr: Vec<usize> = std::iter::once(d_z)
        .chain(net.instrument_hidden.iter().copied())
        .chain([
            net.instrument_features.unwrap_or(net.features),
            net.features,
        ])
        .collect();
    let (adjoint_steps, adjoint_f32) = match method {
        MethodConfig::ClosedForm | MethodConfig::FuncidLinear { .. } => (0, false),
        MethodConfig::Funcid {
            steps,
            adjoint_precision,
            ..
        } => (*steps, *adjoint_precision == Some(Precision::F32)),
        _ => return None,
    };
    let run_f32 = cfg.precision == Precision::F32;
    let tag = |v: Vec<(usize, usize, usize)>, f32: bool| v.into_iter().map(move |p| (p, f32));
    let mut out: Vec<Product> = tag(net_products(&treat, n1), run_f32).collect();
    for _ in 0..cfg.inner.steps {
        out.extend(tag(net_products(&instr, n1), run_f32));
    }
    for _ in 0..adjoint_steps {
        for rows in [n1, n2] {
            out.extend(tag(net_products(&instr, rows), run_f32 || adjoint_f32));
        }
    }
    Some(out)
}

/// Seconds for the products alone (median of `reps`), and their floating-point operations.
fn gemm_floor(products: &[Product], reps: usize) -> (f64, f64) {
    enum Bufs {
        F64([Vec<f64>; 3]),
        F32([Vec<f32>; 3]),
    }
    fn bufs<T: Real>(m: usize, k: usize, n: usize) -> [Vec<T>; 3] {
        [m * k, k * n, m * n].map(|len| vec![T::of(0.5); len])
    }
    let mut times = vec![];
    for _ in 0..reps {
        // Buffers made before the clock starts, as a run's are.
        let mut all: Vec<Bufs> = products
            .iter()
            .map(|&((m, k, n), f32)| match f32 {
                true => Bufs::F32(bufs(m, k, n)),
                false => Bufs::F64(bufs(m, k, n)),
            })
            .collect();
        let t0 = Instant::now();
        for (&((m, k, n), _), bufs) in products.iter().zip(all.iter_mut()) {
            match bufs {
                Bufs::F64([a, b, c]) => {
                    funcrl_kernels::gemm(m, k, n, a, false, b, false, c, 0.0, Threads::Pool)
                }
                Bufs::F32([a, b, c]) => {
                    funcrl_kernels::gemm(m, k, n, a, false, b, false, c, 0.0, Threads::Pool)
                }
            }
        }
        times.push(t0.elapsed().as_secs_f64());
    }
    let flops = products
        .iter()
        .map(|&((m, k, n), _)| 2.0 * (m * k * n) as f64)
        .sum();
    (median(times), flops)
}

fn main() -> anyhow::Result<()> {
    // As the CLI does (memory.rs).
    funcrl_iv::memory::keep_freed_memory();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let n: usize = args.first().map_or(Ok(5000), |s| s.parse())?;
    let iters: usize = args.get(1).map_or(Ok(3), |s| s.parse())?;
    let methods: Vec<String> = args
        .get(2)
        .map_or("dfiv,funcid_linear,funcid,aid", String::as_str)
        .split(',')
        .map(str::to_string)
        .collect();
    let mut rng = StdRng::seed_from_u64(0);
    let mut rand =
        |r: usize, c: usize| Matrix::new(r, c, (0..r * c).map(|_| rng.random::<f64>()).collect());
    let ds = IvDataset {
        treatment: rand(n, 4096),
        instrument: rand(n, 3),
        outcome: rand(n, 1),
        test_treatment: Matrix::zeros(0, 4096),
        test_structural: Matrix::zeros(0, 1),
    };
    println!(
        "deep IV, dSprites-shaped random data, n = {n}, each config's precision, full batch, {iters} outer iterations (median reported)"
    );
    println!(
        "{:<14} {:>10} {:>12} {:>12} {:>12} {:>8} {:>14}",
        "method", "s/iter", "inner s", "hypergrad s", "φ fwd+bwd s", "GFLOP", "GEMM floor s"
    );
    for m in &methods {
        let root = env!("CARGO_MANIFEST_DIR");
        let path = format!("{root}/../configs/iv/dsprites_{m}.toml");
        let cfg: run::IvConfig = toml::from_str(&std::fs::read_to_string(&path)?)?;
        let Resolved::Deep { solver: scfg, .. } = cfg.resolve()? else {
            anyhow::bail!("{m} is not a deep method");
        };
        let ctx = Ctx::flex(cfg.precision);
        let (mut solver, s1, s2) = run::setup(&cfg, &scfg, &ds, &ctx);
        let (mut total, mut inner, mut hyper, mut phi) = (vec![], vec![], vec![], vec![]);
        // Whole outer iterations, as `funcrl iv` runs them.
        for _ in 0..iters {
            solver.problem.refresh(&ctx, &solver.omega);
            solver.model.refresh(&ctx, &solver.theta);
            total.push(solver.step(&s1, &s2)?.seconds);
        }
        // Then the parts, at the reached ω (not timed as a whole: the pieces share caches).
        for _ in 0..iters {
            solver.problem.refresh(&ctx, &solver.omega);
            solver.model.refresh(&ctx, &solver.theta);
            let t0 = Instant::now();
            solver.solve_inner(&s1)?;
            let t1 = Instant::now();
            let g = solver.total_gradient(&s1, &s2)?;
            let t2 = Instant::now();
            // One tracked treatment-net forward + backward on the stage-1 rows (the unit of cost).
            let om = solver.omega.tracked();
            let v = solver.model.forward(&solver.theta, &s1.z).output.detach();
            let loss = solver.problem.inner_loss(&om, v, &s1);
            let _ = om.grads(&loss.backward());
            let t3 = Instant::now();
            solver.omega = solver.omega.axpy(-1e-3, &g.grad);
            inner.push((t1 - t0).as_secs_f64());
            hyper.push((t2 - t1).as_secs_f64());
            phi.push((t3 - t2).as_secs_f64());
        }
        let floor = iteration_products(
            &cfg,
            &scfg.method,
            ds.treatment.cols,
            ds.instrument.cols,
            s1.z.dims()[0],
            s2.z.dims()[0],
        )
        .map(|p| gemm_floor(&p, iters));
        let (gflop, floor_s) = floor.map_or(("-".into(), "-".into()), |(s, f)| {
            (format!("{:.1}", f / 1e9), format!("{s:.3}"))
        });
        println!(
            "{:<14} {:>10.3} {:>12.3} {:>12.3} {:>12.3} {:>8} {:>14}",
            m,
            median(total),
            median(inner),
            median(hyper),
            median(phi),
            gflop,
            floor_s
        );
    }
    Ok(())
}
