"""Python gymnasium peer for funcrl's env throughput bench (run side by side, same machine).

    pip install gymnasium==1.4.0 && python3 envs/scripts/bench_gymnasium.py

Prints `single <steps/s>` for a CartPole-v1 `env.step` loop (reset on episode end) and
`vector64 <steps/s>` for `gym.make_vec("CartPole-v1", 64, vectorization_mode="vector_entry_point")`.
"""
import time

import gymnasium as gym
import numpy as np


def single(seconds=2.0):
    env = gym.make("CartPole-v1")
    env.reset(seed=0)
    acts = np.random.default_rng(0).integers(0, 2, size=4096)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for i in range(1000):
            _, _, term, trunc, _ = env.step(int(acts[(n + i) & 4095]))
            if term or trunc:
                env.reset()
        n += 1000
    return n / (time.perf_counter() - t0)


def vector(num_envs=64, seconds=2.0):
    envs = gym.make_vec("CartPole-v1", num_envs, vectorization_mode="vector_entry_point")
    envs.reset(seed=0)
    acts = np.random.default_rng(0).integers(0, 2, size=(64, num_envs))
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for i in range(100):
            envs.step(acts[i & 63])
        n += 100
    return n * num_envs / (time.perf_counter() - t0)


if __name__ == "__main__":
    print(f"gymnasium {gym.__version__}")
    print(f"single {single():.0f}")
    print(f"vector64 {vector():.0f}")
