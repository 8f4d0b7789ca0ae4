//! Replays trajectories recorded from Python gymnasium 1.4 (`envs/scripts/make_gymnasium_fixtures.py`)
//! through the Rust environments: `reset(seed)` gives gymnasium's initial state and observation
//! exactly; then internal f64 state within 1e-12 (relative to max(1, |x|)),
//! observations within one f32 ulp, rewards within 1e-12, and identical terminated/truncated
//! flags at every step, including the final (terminal or truncated) transition.

use funcrl_envs::{Action, MakeOptions, make_with};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    gymnasium: String,
    episodes: Vec<Episode>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FixtureAction {
    Discrete(i64),
    Continuous(Vec<f64>),
}

#[derive(Deserialize)]
struct Episode {
    env: String,
    label: String,
    kwargs: std::collections::BTreeMap<String, String>,
    max_episode_steps: Option<u64>,
    reset_seed: u64,
    reset_state: Vec<f64>,
    reset_obs: Vec<f64>,
    init_state: Vec<f64>,
    actions: Vec<FixtureAction>,
    steps: Vec<Expected>,
}

#[derive(Deserialize)]
struct Expected {
    state: Vec<f64>,
    obs: Vec<f64>,
    reward: f64,
    terminated: bool,
    truncated: bool,
}

const STATE_TOL: f64 = 1e-12;

fn rel_err(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1.0)
}

/// Replays every episode of one fixture file; returns (episodes, steps, worst state error).
fn replay(file: &str) -> (usize, usize, f64) {
    let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let fixture: Fixture = serde_json::from_str(&text).unwrap();
    assert!(
        fixture.gymnasium.starts_with("1."),
        "fixtures come from gymnasium 1.x"
    );
    let (mut steps, mut worst) = (0, 0.0f64);
    let mut ends = (0, 0);
    let mut seeded_resets = 0;
    for ep in &fixture.episodes {
        let opts = MakeOptions {
            max_episode_steps: ep.max_episode_steps,
            kwargs: ep
                .kwargs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let mut env = make_with(&ep.env, &opts).unwrap();
        // NumPy-compatible seeding: the same seed gives gymnasium's initial state, bit for bit.
        let (obs, _) = env.reset(Some(ep.reset_seed));
        assert_eq!(
            env.state(),
            &ep.reset_state[..],
            "{} [{}]: reset(seed={})",
            ep.env,
            ep.label,
            ep.reset_seed
        );
        let want_obs: Vec<f32> = ep.reset_obs.iter().map(|x| *x as f32).collect();
        assert_eq!(
            &obs[..],
            &want_obs[..],
            "{} [{}]: reset observation",
            ep.env,
            ep.label
        );
        seeded_resets += 1;
        env.set_state(&ep.init_state).unwrap();
        assert_eq!(ep.actions.len(), ep.steps.len());
        for (t, (a, want)) in ep.actions.iter().zip(&ep.steps).enumerate() {
            let ctx = || format!("{} [{}] step {t}", ep.env, ep.label);
            let cont: Vec<f32>;
            let action = match a {
                FixtureAction::Discrete(a) => Action::Discrete(*a),
                FixtureAction::Continuous(v) => {
                    cont = v.iter().map(|x| *x as f32).collect();
                    Action::Continuous(&cont)
                }
            };
            let got = env
                .step(action)
                .unwrap_or_else(|e| panic!("{}: {e}", ctx()));
            for (g, w) in env.state().iter().zip(&want.state) {
                let e = rel_err(*g, *w);
                worst = worst.max(e);
                assert!(
                    e <= STATE_TOL,
                    "{}: state {:?} vs gymnasium {:?}",
                    ctx(),
                    env.state(),
                    want.state
                );
            }
            assert_eq!(got.obs.len(), want.obs.len(), "{}", ctx());
            for (g, w) in got.obs.iter().zip(&want.obs) {
                let w = *w as f32;
                assert!(
                    *g == w || (g - w).abs() <= f32::EPSILON * w.abs().max(1.0),
                    "{}: obs {:?} vs gymnasium {:?}",
                    ctx(),
                    &got.obs[..],
                    want.obs
                );
            }
            assert!(
                rel_err(got.reward, want.reward) <= STATE_TOL,
                "{}: reward {} vs {}",
                ctx(),
                got.reward,
                want.reward
            );
            assert_eq!(
                (got.terminated, got.truncated),
                (want.terminated, want.truncated),
                "{}: flags",
                ctx()
            );
            steps += 1;
        }
        let last = ep.steps.last().unwrap();
        ends.0 += last.terminated as usize;
        ends.1 += last.truncated as usize;
        // The episode is over: the Rust env refuses another step, as the contract says.
        let again = match &ep.actions[0] {
            FixtureAction::Discrete(_) => env.step(Action::Discrete(0)),
            FixtureAction::Continuous(_) => env.step(Action::Continuous(&[0.0])),
        };
        assert!(
            again.is_err(),
            "{} [{}]: stepping after the end must fail",
            ep.env,
            ep.label
        );
    }
    eprintln!(
        "{file}: {} episodes, {seeded_resets} seeded resets equal, {steps} steps, {} terminal, {} truncated, worst state error {worst:.2e}",
        fixture.episodes.len(),
        ends.0,
        ends.1
    );
    assert_eq!(seeded_resets, fixture.episodes.len());
    (fixture.episodes.len(), steps, worst)
}

#[test]
fn cartpole_v0_v1_match_gymnasium() {
    let (eps, steps, _) = replay("cartpole.json");
    assert!(eps >= 20 && steps > 1000);
}

#[test]
fn acrobot_matches_gymnasium() {
    let (eps, steps, _) = replay("acrobot.json");
    assert!(eps >= 8 && steps > 1000);
}

#[test]
fn mountain_car_matches_gymnasium() {
    let (eps, steps, _) = replay("mountain_car.json");
    assert!(eps >= 7 && steps > 500);
}

#[test]
fn pendulum_matches_gymnasium() {
    let (eps, steps, _) = replay("pendulum.json");
    assert!(eps >= 7 && steps > 500);
}
