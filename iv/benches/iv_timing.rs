//! Wall time per outer iteration of deep IV on dSprites-shaped data (the protocol's networks, f64, full
//! batch, 20 inner steps), for FuncID, FuncID-linear, AID and DFIV, plus a breakdown of where an
//! iteration's time goes. Compare with benches/peers/iv_torch.py run in the same session.
//!
//!     cargo bench -p funcrl --bench iv_timing -- [n] [iterations] [methods,comma,separated]
//!
//! Like the PyTorch peer, the images are random (time only).

use std::time::Instant;

use funcrl_bilevel::{BilevelProblem, Ctx, InnerModel};
use funcrl_iv::data::Matrix;
use funcrl_iv::generate::IvDataset;
use funcrl_iv::run::{self, Resolved};
use rand::{RngExt, SeedableRng, rngs::StdRng};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
        "deep IV, dSprites-shaped random data, n = {n}, f64, full batch, {iters} outer iterations (median reported)"
    );
    println!(
        "{:<14} {:>10} {:>12} {:>12} {:>12}",
        "method", "s/iter", "inner s", "hypergrad s", "φ fwd+bwd s"
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
        println!(
            "{:<14} {:>10.3} {:>12.3} {:>12.3} {:>12.3}",
            m,
            median(total),
            median(inner),
            median(hyper),
            median(phi)
        );
    }
    Ok(())
}
