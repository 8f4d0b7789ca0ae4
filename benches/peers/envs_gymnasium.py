"""Python gymnasium peer for funcrl's env throughput bench
(`cargo bench -p funcrl-envs --bench throughput`).

Two CartPole-v1 cases, one process, CPU:
  single    gym.make("CartPole-v1") (with its TimeLimit and the default wrappers), one env.step
            per call, reset when an episode terminates or is truncated;
  vector64  gym.make_vec("CartPole-v1", 64, vectorization_mode="vector_entry_point"), gymnasium's
            own numpy-vectorised CartPole with next-step autoreset, one step call per 64 env steps.
Actions come from a fixed pre-drawn table, so the loop times the environment, not a generator.

Usage:   python3 envs_gymnasium.py [steps] [--repeats R]
         steps = env steps per measurement (default 500000; the vector case makes steps/64 calls),
         R = measurements per case (default 3), the best is reported.
Output:  gymnasium <version>
         single <steps/s>
         vector64 <steps/s>
"""
import argparse
import time

import gymnasium as gym
import numpy as np

NUM_ENVS = 64
TABLE = 4096  # length of the action table (a power of two)


def best_rate(run, steps, repeats):
    """Highest steps per second over `repeats` timed calls of run(steps)."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        run(steps)
        best = max(best, steps / (time.perf_counter() - start))
    return best


def single_env_loop():
    env = gym.make("CartPole-v1")
    env.reset(seed=0)
    actions = [int(a) for a in np.random.default_rng(0).integers(0, 2, size=TABLE)]
    cursor = [0]

    def run(steps):
        k = cursor[0]
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(actions[k & (TABLE - 1)])
            k += 1
            if terminated or truncated:
                env.reset()
        cursor[0] = k

    return run


def vector_env_loop():
    envs = gym.make_vec("CartPole-v1", NUM_ENVS, vectorization_mode="vector_entry_point")
    envs.reset(seed=0)
    rows = 64
    actions = np.random.default_rng(0).integers(0, 2, size=(rows, NUM_ENVS))
    cursor = [0]

    def run(steps):
        k = cursor[0]
        for _ in range(max(1, steps // NUM_ENVS)):
            envs.step(actions[k % rows])
            k += 1
        cursor[0] = k

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("steps", nargs="?", type=int, default=500_000,
                        help="env steps per measurement (default 500000)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per case (best kept)")
    args = parser.parse_args()
    vector_steps = max(NUM_ENVS, args.steps // NUM_ENVS * NUM_ENVS)
    print(f"gymnasium {gym.__version__}", flush=True)
    print(f"single {best_rate(single_env_loop(), args.steps, args.repeats):.0f}", flush=True)
    print(f"vector64 {best_rate(vector_env_loop(), vector_steps, args.repeats):.0f}", flush=True)


if __name__ == "__main__":
    main()
