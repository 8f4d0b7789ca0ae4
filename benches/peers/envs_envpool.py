"""EnvPool peer for funcrl's env throughput bench
(`cargo bench -p funcrl-envs --bench throughput`, its vector-env rows).

EnvPool runs C++ CartPole-v1 copies on its own thread pool. Each case makes
    envpool.make("CartPole-v1", env_type="gymnasium", num_envs=N, batch_size=N, num_threads=T)
(synchronous: every step call advances all N copies) and times step calls with a fixed table of
random actions; copies reset themselves when their episodes end. Cases (N, T): (64, 1), (64, 2),
(1024, 2).

Usage:   python3 envs_envpool.py [steps] [--repeats R]
         steps = env steps per measurement (default 2000000, rounded to whole step calls),
         R = measurements per case (default 3), the best is reported.
Output:  envpool <version>
         envpool N=<N> threads=<T> <steps/s>
"""
import argparse
import time

import envpool
import numpy as np

CASES = ((64, 1), (64, 2), (1024, 2))
ROWS = 64  # rows of the action table


def rate(num_envs, num_threads, steps, repeats):
    env = envpool.make("CartPole-v1", env_type="gymnasium", num_envs=num_envs,
                       batch_size=num_envs, num_threads=num_threads)
    env.reset()
    actions = np.random.default_rng(0).integers(0, 2, size=(ROWS, num_envs)).astype(np.int32)
    calls = max(1, steps // num_envs)
    best, k = 0.0, 0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            env.step(actions[k % ROWS])
            k += 1
        best = max(best, calls * num_envs / (time.perf_counter() - start))
    env.close()
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("steps", nargs="?", type=int, default=2_000_000,
                        help="env steps per measurement (default 2000000)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per case (best kept)")
    args = parser.parse_args()
    print(f"envpool {envpool.__version__}", flush=True)
    for n, t in CASES:
        print(f"envpool N={n} threads={t} {rate(n, t, args.steps, args.repeats):.0f}", flush=True)


if __name__ == "__main__":
    main()
