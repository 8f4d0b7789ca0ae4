//! The hot path allocates nothing: a counting global allocator watches thousands of steps
//! (with episode ends, resets and autoresets) of every single env and of the vector envs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use funcrl_envs::{
    Action, Env, MakeOptions, RecordEpisodeStatistics, SPECS, VecAction, make, make_vec,
};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Only the measuring thread counts: the test harness's own threads may allocate meanwhile.
    // A const-initialised Cell needs no allocation or destructor, so the allocator may read it.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCS.load(Ordering::SeqCst);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCS.load(Ordering::SeqCst) - before
}

// One test function, to keep the measurement away from other tests' setup.
#[test]
fn stepping_allocates_nothing() {
    // The counter itself works.
    assert!(allocations_during(|| drop(std::hint::black_box(vec![1u8; 16]))) > 0);
    for spec in SPECS {
        let mut env = RecordEpisodeStatistics::new(make(spec.id).unwrap());
        env.reset(Some(0));
        let discrete = matches!(env.action_space(), funcrl_envs::Space::Discrete { .. });
        let mut ends = 0;
        let n = allocations_during(|| {
            for t in 0..5_000i64 {
                let torque = [((t % 5) as f32) - 2.0];
                let a = if discrete {
                    Action::Discrete(t % 2)
                } else {
                    Action::Continuous(&torque)
                };
                let s = env.step(a).unwrap();
                if s.terminated || s.truncated {
                    ends += 1;
                    env.reset(None);
                }
            }
        });
        assert_eq!(n, 0, "{}: {n} allocations in 5,000 steps", spec.id);
        assert!(
            ends > 0,
            "{}: no episode ended, resets not exercised",
            spec.id
        );
    }

    for (id, n_envs) in [("CartPole-v1", 64), ("Acrobot-v1", 5), ("Pendulum-v1", 3)] {
        let mut venv = make_vec(
            id,
            n_envs,
            &MakeOptions {
                max_episode_steps: Some(50),
                ..Default::default()
            },
        )
        .unwrap();
        venv.reset(Some(1));
        let discrete: Vec<i64> = (0..n_envs as i64).map(|i| i % 2).collect();
        let continuous: Vec<f32> = (0..n_envs).map(|i| i as f32 * 0.3 - 1.0).collect();
        let mut ends = 0;
        let n = allocations_during(|| {
            for _ in 0..500 {
                let a = if id == "Pendulum-v1" {
                    VecAction::Continuous(&continuous)
                } else {
                    VecAction::Discrete(&discrete)
                };
                let out = venv.step(a).unwrap();
                ends += out.episode.iter().filter(|e| e.is_some()).count();
            }
        });
        assert_eq!(n, 0, "{id} x{n_envs}: {n} allocations in 500 vector steps");
        assert!(ends > 0, "{id}: no episode ended");
    }
}
