//! Cost per total-gradient estimate (time and peak heap) as the inner MLP deepens, plus a check
//! of the CPU backend on an IV-sized matmul. Run: `cargo bench -p funcrl-bilevel`
//! (add `--features ndarray` to time the deprecated ndarray backend beside flex).

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

use burn::tensor::{Device, Tensor};
use funcrl_bilevel::{
    Activation, Ctx, HyperInput, InnerConfig, InnerModel, LinearSolver, MethodConfig, Mlp,
    OptimizerConfig, Precision,
    inner::InnerSolver,
    toy::{LinearQuadratic, LqDims, LqOracle, generate},
};
use rand::{SeedableRng, rngs::StdRng};

/// Counts live heap bytes and their high-water mark.
struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                    - layout.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WIDTH: usize = 128;
const BATCH: usize = 512;
const REPEATS: usize = 5;

fn methods() -> Vec<(&'static str, MethodConfig)> {
    let aid = |k| MethodConfig::Aid {
        solver: LinearSolver::Cg,
        iterations: k,
        damping: 0.0,
        warm_start: true,
        neumann_lr: 0.0,
        fd_step: None,
        eliminate_head: false,
    };
    vec![
        (
            "FuncID (10 adjoint steps)",
            MethodConfig::funcid(10, OptimizerConfig::adam(1e-3), true),
        ),
        (
            "FuncID-linear",
            MethodConfig::FuncidLinear { ridge: Some(1e-3) },
        ),
        ("AID-CG K=2", aid(2)),
        ("AID-CG K=10", aid(10)),
        (
            "ITD k=2",
            MethodConfig::Itd {
                unroll: 2,
                lr: 1e-3,
                fd_step: None,
                eliminate_head: false,
            },
        ),
        (
            "ITD k=10",
            MethodConfig::Itd {
                unroll: 10,
                lr: 1e-3,
                fd_step: None,
                eliminate_head: false,
            },
        ),
    ]
}

/// (median seconds, peak extra heap bytes) of one total-gradient estimate.
fn measure(ctx: &Ctx, depth: usize, method: &MethodConfig) -> (f64, usize) {
    let dims = LqDims {
        d_z: 32,
        d_t: 8,
        d_v: 4,
        d_y: 4,
    };
    let inst = generate(
        ctx,
        dims,
        BATCH,
        BATCH,
        1.0,
        0.0,
        LqOracle::Pointwise,
        false,
        1,
    );
    let model = Mlp::new(dims.d_z, vec![WIDTH; depth], dims.d_v, Activation::Relu);
    let mut rng = StdRng::seed_from_u64(0);
    let mut theta = model.init(ctx, &mut rng);
    let mut inner = InnerSolver::new(InnerConfig {
        steps: 5,
        ..InnerConfig::default()
    });
    theta = inner
        .solve(
            ctx,
            &inst.problem,
            &model,
            &inst.omega0,
            &theta,
            &inst.inner,
        )
        .unwrap()
        .0;
    let mut m = method.build::<LinearQuadratic, Mlp>();
    let mut call = |theta: &mut _, rng: &mut StdRng| {
        m.total_gradient(HyperInput {
            ctx,
            problem: &inst.problem,
            model: &model,
            omega: &inst.omega0,
            theta,
            inner: &inst.inner,
            outer: &inst.outer,
            inner_ridge: 0.0,
            rng,
        })
        .unwrap()
    };
    call(&mut theta, &mut rng); // warm-up (and warm starts)
    let mut times = Vec::new();
    let mut peak = 0;
    for _ in 0..REPEATS {
        let base = CURRENT.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let t = Instant::now();
        let hg = call(&mut theta, &mut rng);
        let _ = ctx.device.sync();
        times.push(t.elapsed().as_secs_f64());
        peak = peak.max(PEAK.load(Ordering::Relaxed).saturating_sub(base));
        drop(hg);
    }
    times.sort_by(f64::total_cmp);
    (times[REPEATS / 2], peak)
}

/// Seconds of one 2500×4096 · 4096×1024 product (after a warm-up).
fn matmul_seconds(device: &Device, precision: Precision) -> f64 {
    let opts = (device, precision.dtype());
    let a: Tensor<2> = Tensor::random([2500, 4096], burn::tensor::Distribution::Default, opts);
    let b: Tensor<2> = Tensor::random([4096, 1024], burn::tensor::Distribution::Default, opts);
    let _ = a.clone().matmul(b.clone()).sum().into_scalar::<f64>();
    let t = Instant::now();
    let _ = a.matmul(b).sum().into_scalar::<f64>();
    t.elapsed().as_secs_f64()
}

fn main() {
    #[allow(unused_mut)] // pushed to only with the `ndarray` feature
    let mut backends: Vec<(&str, Device)> = vec![("flex", Device::flex())];
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    backends.push(("ndarray", Device::ndarray()));
    println!("## IV-sized matmul 2500x4096 · 4096x1024: best of 5 rounds, backends interleaved");
    for p in [Precision::F32, Precision::F64] {
        let mut best = vec![f64::MAX; backends.len()];
        for _ in 0..5 {
            for (k, (_, dev)) in backends.iter().enumerate() {
                best[k] = best[k].min(matmul_seconds(dev, p));
            }
        }
        for (k, (name, _)) in backends.iter().enumerate() {
            println!(
                "{name:<8} {p:?}: {:.1} GFLOP/s",
                2.0 * 2500.0 * 4096.0 * 1024.0 / best[k] / 1e9
            );
        }
    }
    #[cfg(feature = "ndarray")]
    {
        println!(
            "\n## Same solver work on both CPU backends (f64, 4 hidden layers, median of {REPEATS})"
        );
        #[allow(deprecated)]
        let nd = Ctx::new(Device::ndarray(), Precision::F64);
        for (name, m) in methods()
            .into_iter()
            .filter(|(n, _)| n.starts_with("FuncID (") || *n == "AID-CG K=2")
        {
            let (t_flex, _) = measure(&Ctx::flex(Precision::F64), 4, &m);
            let (t_nd, _) = measure(&nd, 4, &m);
            println!(
                "{name}: flex {:.1} ms, ndarray {:.1} ms (ndarray/flex {:.2})",
                t_flex * 1e3,
                t_nd * 1e3,
                t_nd / t_flex
            );
        }
    }
    if std::env::var("FUNCRL_BENCH").is_ok_and(|v| v == "matmul") {
        return;
    }

    let ctx = Ctx::flex(Precision::F64);
    println!(
        "\n## Cost per total-gradient estimate: flex, f64, MLP width {WIDTH}, batch {BATCH} (inner and outer), median of {REPEATS}"
    );
    println!("| hidden layers | method | time (ms) | × FuncID | peak heap (MiB) | × FuncID |");
    println!("|---:|---|---:|---:|---:|---:|");
    for depth in [2, 4, 8, 16] {
        let rows: Vec<_> = methods()
            .into_iter()
            .map(|(name, m)| (name, measure(&ctx, depth, &m)))
            .collect();
        let (t0, m0) = rows[0].1;
        for (name, (t, m)) in rows {
            println!(
                "| {depth} | {name} | {:.1} | {:.2} | {:.2} | {:.2} |",
                t * 1e3,
                t / t0,
                m as f64 / (1 << 20) as f64,
                m as f64 / m0 as f64
            );
        }
    }
}
