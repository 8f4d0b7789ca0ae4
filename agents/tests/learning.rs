//! A fixed-seed short model-free run must beat the random policy's return by a clear margin.

use funcrl_agents::{ModelLearning, TrainConfig, Trainer};
use funcrl_envs::{Action, Env};
use rand::{RngExt, SeedableRng, rngs::StdRng};

#[test]
fn short_modelfree_run_beats_random() {
    let cfg: TrainConfig = toml::from_str(
        "total_steps = 3000\nwarmup_steps = 500\nbatch_size = 64\neval_every = 500\neval_episodes = 5\n\
         checkpoint_every = 0\n[agent]\nkind = \"modelfree\"\n",
    )
    .unwrap();
    assert_eq!(cfg.agent, ModelLearning::Modelfree);
    let mut t = Trainer::new(cfg).unwrap();
    let mut late = vec![];
    while !t.done() {
        t.env_step().unwrap();
        if t.step.is_multiple_of(500) && t.step >= 2000 {
            late.extend(t.evaluate().unwrap());
        }
    }
    let learned = late.iter().sum::<f64>() / late.len() as f64;
    // The random policy, same env, 50 episodes.
    let mut env = funcrl_envs::make("CartPole-v1").unwrap();
    let mut rng = StdRng::seed_from_u64(0);
    let mut total = 0.0;
    for ep in 0..50 {
        env.reset(Some(ep));
        loop {
            let s = env.step(Action::Discrete(rng.random_range(0..2))).unwrap();
            total += s.reward;
            if s.done() {
                break;
            }
        }
    }
    let random = total / 50.0;
    assert!(
        learned > 4.0 * random && learned > 100.0,
        "model-free {learned:.1} vs random {random:.1}"
    );
    eprintln!("model-free {learned:.1} vs random {random:.1}");
}
