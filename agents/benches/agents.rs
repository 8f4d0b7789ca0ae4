//! Wall time per 1,000 env steps with one update per step for every agent (CartPole-v1, the
//! protocol's shapes: batch 256, f64, Q 32-32, model width 3), and the FuncID update alone on the same
//! synthetic batch as benches/peers/rl_jax.py (delta model, B = 256, f64).
//!
//! `cargo bench -p funcrl-agents [-- STEPS]`; compare with `python benches/peers/rl_jax.py` run in the same
//! session (it prints seconds per 1k env steps, updates only).

use std::time::Instant;

use funcrl_agents::{
    Agent, AgentConfig, Batch, FuncidAdjoint, FuncidMode, ModelConfig, ModelLearning, QConfig,
    ReplayConfig, TrainConfig, Trainer, nets::Predict,
};
use funcrl_bilevel::Precision;
use rand::{RngExt, SeedableRng, rngs::StdRng};

fn agents() -> Vec<(&'static str, ModelLearning)> {
    vec![
        ("modelfree", ModelLearning::Modelfree),
        ("mle", ModelLearning::Mle),
        (
            "funcid",
            ModelLearning::Funcid {
                mode: FuncidMode::Full,
                adjoint_steps: 5,
                adjoint: FuncidAdjoint::CurrentQ,
            },
        ),
        (
            "funcid-paper",
            ModelLearning::Funcid {
                mode: FuncidMode::Paper,
                adjoint_steps: 5,
                adjoint: FuncidAdjoint::CurrentQ,
            },
        ),
        (
            "omd",
            ModelLearning::Omd {
                inverse: funcrl_agents::OmdInverse::Identity,
                cg_iterations: 5,
            },
        ),
        (
            "vep",
            ModelLearning::Vep {
                functions: 5,
                hidden: vec![32],
            },
        ),
    ]
}

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let steps: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000);

    // 1. The update alone, on rl_jax.py's batch: s ~ N(0,1), r = 1, s' = s + 0.01·noise, m = 1.
    let (b, s_dim) = (256, 4);
    let mut rng = StdRng::seed_from_u64(1);
    let mut normal = || -> f64 {
        // Box–Muller: the bench only needs plausible inputs
        let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    };
    let obs: Vec<f64> = (0..b * s_dim).map(|_| normal()).collect();
    let next: Vec<f64> = obs.iter().map(|x| x + 0.01 * normal()).collect();
    let batch = Batch {
        indices: (0..b).collect(),
        action: (0..b).map(|i| (i % 2) as f64).collect(),
        obs,
        next_obs: next,
        reward: vec![1.0; b],
        mask: vec![1.0; b],
        weight: vec![1.0; b],
        ..Batch::default()
    };
    let cfg = AgentConfig {
        learning: ModelLearning::Funcid {
            mode: FuncidMode::Full,
            adjoint_steps: 5,
            adjoint: FuncidAdjoint::CurrentQ,
        },
        q: QConfig::default(),
        model: ModelConfig {
            predict: Predict::Delta,
            ..ModelConfig::default()
        },
        precision: Precision::F64,
        action_values: None,
    };
    let mut agent = Agent::new(cfg, s_dim, 2, &mut StdRng::seed_from_u64(0));
    let mut r = StdRng::seed_from_u64(2);
    for _ in 0..20 {
        agent.update(&batch, &mut r);
    }
    let n = 500;
    let t = Instant::now();
    for _ in 0..n {
        agent.update(&batch, &mut r);
    }
    let dt = t.elapsed().as_secs_f64() / n as f64;
    println!(
        "funcrl funcid update (rl_jax.py batch, B=256, f64): {:.0} us per update -> {:.3} s per 1k env steps (updates only)",
        dt * 1e6,
        dt * 1000.0
    );

    // Why the agents use host kernels: one forward + backward of the Q loss on this batch with
    // burn's autodiff (flex backend) against the same with `dense`.
    {
        use funcrl_kernels::Tape;
        let time = |f: &mut dyn FnMut()| {
            f();
            let t = Instant::now();
            for _ in 0..200 {
                f();
            }
            t.elapsed().as_secs_f64() / 200.0 * 1e6
        };
        let d = agent.tensors(&batch);
        let qp = agent.q_params(&agent.q);
        let burn_fb = time(&mut || {
            let th = qp.tracked();
            let v = funcrl_bilevel::InnerModel::forward(&agent.qnet, &th, &d.s).output;
            let l = funcrl_agents::problem::q_loss_t(v, d.r.clone(), &d.onehot2, &d.w);
            let _ = th.grads(&l.backward());
        });
        let net = funcrl_agents::agent::dense(&agent.qnet.net);
        let k = net.numel();
        let mut tape = Tape::default();
        let mut grad = vec![0.0; 2 * k];
        let dout = vec![1e-3; b * 2];
        let host_fb = time(&mut || {
            for i in 0..2 {
                let p = &agent.q[i * k..(i + 1) * k];
                net.forward(p, &batch.obs, b, &mut tape);
                net.backward(p, &tape, &dout, Some(&mut grad[i * k..(i + 1) * k]), None);
            }
        });
        println!(
            "  Q loss forward+backward (both nets, B={b}): burn autodiff {burn_fb:.0} us, host kernels {host_fb:.0} us"
        );
    }

    // 2. Whole loop: `steps` env steps after warm-up, one update each (evaluation excluded).
    println!("\nwall time per 1,000 env steps (CartPole-v1, one update per step, batch 256, f64):");
    for (name, learning) in agents() {
        let cfg = TrainConfig {
            env: "CartPole-v1".into(),
            seed: 0,
            total_steps: 1000 + steps,
            warmup_steps: 1000,
            updates_per_step: 1,
            batch_size: 256,
            eval_every: 1_000_000,
            eval_episodes: 1,
            checkpoint_every: 0,
            log_every: 100,
            precision: Precision::F64,
            agent: learning,
            q: QConfig::default(),
            model: ModelConfig::default(),
            replay: ReplayConfig::default(),
            action_bins: None,
        };
        let mut tr = Trainer::new(cfg).expect("valid bench config");
        while tr.step < 1000 {
            tr.env_step().unwrap();
        }
        let t = Instant::now();
        while !tr.done() {
            tr.env_step().unwrap();
        }
        let per_k = t.elapsed().as_secs_f64() / steps as f64 * 1000.0;
        println!("  {name:<13} {per_k:.3} s");
    }
}
