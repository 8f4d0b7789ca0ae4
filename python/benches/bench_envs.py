"""CartPole-v1 steps per second from Python, funcrl against gymnasium (and EnvPool when it is
installed), side by side in one process with the same pre-drawn random actions.

    python python/benches/bench_envs.py [--seconds 2] [--threads 2]

Single env: ``funcrl.make`` vs ``gymnasium.make`` (TimeLimit + the checker wrappers
``gymnasium.make`` adds, as users get it) and ``gymnasium.make(...).unwrapped``-free baseline is
not used: the wrapped env is what people step. Vector env at N = 1, 64, 1024: ``funcrl.make_vec``
(copy=True, as gymnasium's default; copy=False in an extra row) vs ``gymnasium.make_vec``
(CartPole's numpy-vectorised entry point) and ``envpool.make_gymnasium`` (``num_threads``).
Episodes end and autoreset inside the timed loops. Each figure is the best of three timed runs.
"""

import argparse
import time

import gymnasium as gym
import numpy as np

import funcrl


def rate(step, n, actions, seconds):
    """Best steps/s of three runs of at least `seconds / 3` each."""
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        steps = 0
        k = 0
        while True:
            for _ in range(200):
                step(actions[k % len(actions)])
                k += 1
            steps += 200 * n
            dt = time.perf_counter() - t0
            if dt >= seconds / 3:
                break
        best = max(best, steps / dt)
    return best


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=2, help="EnvPool worker threads")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    rows = []

    for name, env in [("funcrl.make", funcrl.make("CartPole-v1")), ("gymnasium.make", gym.make("CartPole-v1"))]:
        env.reset(seed=0)
        acts = rng.integers(0, 2, size=4096)

        def step(a, env=env):
            _, _, term, trunc, _ = env.step(int(a))
            if term or trunc:
                env.reset()

        rows.append((name, 1, rate(step, 1, acts, args.seconds)))

    try:
        import envpool
    except ImportError:
        envpool = None
    for n in [1, 64, 1024]:
        acts = rng.integers(0, 2, size=(256, n)).astype(np.int64)
        makers = [
            ("funcrl.make_vec", lambda: funcrl.make_vec("CartPole-v1", n)),
            ("funcrl.make_vec copy=False", lambda: funcrl.make_vec("CartPole-v1", n, copy=False)),
            ("gymnasium.make_vec", lambda: gym.make_vec("CartPole-v1", num_envs=n)),
        ]
        if envpool is not None:
            makers.append(
                (
                    f"envpool ({args.threads} threads)",
                    lambda: envpool.make_gymnasium("CartPole-v1", num_envs=n, num_threads=min(args.threads, n)),
                )
            )
        for name, make in makers:
            env = make()
            env.reset(seed=0)
            rows.append((name, n, rate(env.step, n, acts, args.seconds)))
            env.close()

    print(f"gymnasium {gym.__version__}, numpy {np.__version__}" + (f", envpool {envpool.__version__}" if envpool else ""))
    print("| env | N | steps/s |\n|---|---:|---:|")
    for name, n, r in rows:
        print(f"| {name} | {n} | {r:,.0f} |")
    by = {(name, n): r for name, n, r in rows}
    print()
    print(f"single env: funcrl / gymnasium = {by[('funcrl.make', 1)] / by[('gymnasium.make', 1)]:.1f}x")
    for n in [1, 64, 1024]:
        ours = by[("funcrl.make_vec", n)]
        line = f"N = {n}: funcrl / gymnasium.make_vec = {ours / by[('gymnasium.make_vec', n)]:.1f}x"
        for (name, m), r in by.items():
            if m == n and name.startswith("envpool"):
                line += f", funcrl / envpool = {ours / r:.1f}x"
        print(line)


if __name__ == "__main__":
    main()
