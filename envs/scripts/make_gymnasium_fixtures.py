"""Records reference trajectories from Python gymnasium for funcrl's conformance tests.

    pip install gymnasium==1.4.0
    python3 envs/scripts/make_gymnasium_fixtures.py     # writes envs/tests/fixtures/*.json

Each episode records `reset(seed=...)`'s seed, state and observation (the Rust env must reproduce
them), then starts from a recorded internal state (that seeded reset, or an edge-case state written
into `env.unwrapped.state`), applies a recorded action sequence through `gym.make(...)` (so the
registered TimeLimit applies) and stores, after every step, the internal f64 state, the f32
observation, the reward and both flags, until termination or truncation. Floats are written with
Python's repr, which round-trips f64 exactly. The Rust tests replay these without Python.
"""
import json
import math
import os
import sys

import gymnasium as gym
import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")


def fl(x):
    return [float(v) for v in np.asarray(x, dtype=np.float64).ravel()]


def run_episode(env_id, kwargs, attrs, init, policy, rng, max_episode_steps=None, label=""):
    make_kwargs = dict(kwargs)
    if max_episode_steps is not None:
        make_kwargs["max_episode_steps"] = max_episode_steps
    env = gym.make(env_id, **make_kwargs)
    u = env.unwrapped
    for k, v in attrs.items():
        setattr(u, k, v)
    seed = int(rng.integers(1 << 31))
    obs, _ = env.reset(seed=seed)
    reset_state, reset_obs = fl(u.state), [float(v) for v in np.asarray(obs, dtype=np.float32)]
    if init is not None:
        u.state = np.array(init, dtype=np.float64)
        if hasattr(u, "steps_beyond_terminated"):
            u.steps_beyond_terminated = None
    start = fl(u.state)
    steps, actions = [], []
    while True:
        a = policy(np.asarray(u.state, dtype=np.float64), rng)
        obs, reward, terminated, truncated, _ = env.step(a)
        actions.append(fl(a) if isinstance(a, np.ndarray) else int(a))
        steps.append({
            "state": fl(u.state),
            "obs": [float(v) for v in np.asarray(obs, dtype=np.float32)],
            "reward": float(reward),
            "terminated": bool(terminated),
            "truncated": bool(truncated),
        })
        if terminated or truncated:
            break
    return {
        "label": label,
        "kwargs": {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in {**kwargs, **attrs}.items()},
        "max_episode_steps": max_episode_steps,
        "reset_seed": seed,
        "reset_state": reset_state,
        "reset_obs": reset_obs,
        "init_state": start,
        "actions": actions,
        "steps": steps,
    }


def random_discrete(n):
    return lambda s, rng: int(rng.integers(n))


def cartpole_controller(eps):
    # A linear state-feedback controller that balances for 500 steps, with ε random pushes.
    def pol(s, rng):
        if rng.random() < eps:
            return int(rng.integers(2))
        return int(0.05 * s[0] + 0.3 * s[1] + 8.0 * s[2] + 1.5 * s[3] > 0)
    return pol


def acrobot_pump(s, rng):
    # Energy pumping: torque along the second joint's velocity; reaches the goal in ~70 steps.
    return 2 if s[3] > 0 else 0


def mountain_car_pump(s, rng):
    return 2 if s[1] >= 0 else 0


def pendulum_random(s, rng):
    return rng.uniform(-2.0, 2.0, size=(1,)).astype(np.float32)


def pendulum_wide(s, rng):
    # Out-of-range torques exercise the clipping.
    return rng.uniform(-6.0, 6.0, size=(1,)).astype(np.float32)


def main():
    rng = np.random.default_rng(20241125)
    out = {}

    cp = []
    for ver in ["CartPole-v1", "CartPole-v0"]:
        for i in range(3):
            cp.append(dict(env=ver, kw={}, at={}, init=None, pol=random_discrete(2), label=f"{ver} seeded reset, random"))
        cp.append(dict(env=ver, kw={}, at={}, init=None, pol=cartpole_controller(0.1), label=f"{ver} controller to truncation"))
    edge = [
        [2.39, 0.5, 0.0, 0.0], [-2.39, -0.5, 0.0, 0.0], [0.0, 0.0, 0.2, 0.5], [0.0, 0.0, -0.2, -0.5],
        [0.0, 3.0, 0.05, -2.0], [1.0, -1.0, 0.1, 1.0], [0.0, 0.0, 0.0, 0.0],
    ]
    for init in edge:
        cp.append(dict(env="CartPole-v1", kw={}, at={}, init=init, pol=random_discrete(2), label="edge state"))
    cp.append(dict(env="CartPole-v1", kw={"sutton_barto_reward": True}, at={}, init=None, pol=random_discrete(2), label="sutton_barto_reward"))
    cp.append(dict(env="CartPole-v1", kw={"sutton_barto_reward": True}, at={}, init=None, pol=cartpole_controller(0.05), label="sutton_barto_reward long", mes=120))
    for k in range(2):
        cp.append(dict(env="CartPole-v1", kw={}, at={"kinematics_integrator": "semi-implicit euler"}, init=None, pol=random_discrete(2), label="semi-implicit euler"))
    cp.append(dict(env="CartPole-v1", kw={}, at={"kinematics_integrator": "semi-implicit euler"}, init=None, pol=cartpole_controller(0.1), label="semi-implicit euler, controller"))
    cp.append(dict(env="CartPole-v1", kw={}, at={}, init=None, pol=cartpole_controller(0.0), label="custom max_episode_steps", mes=37))
    out["cartpole"] = cp

    ac = []
    for i in range(3):
        ac.append(dict(env="Acrobot-v1", kw={}, at={}, init=None, pol=random_discrete(3), label="random, seeded reset", mes=150))
    ac.append(dict(env="Acrobot-v1", kw={}, at={}, init=None, pol=acrobot_pump, label="energy pump to the goal"))
    ac.append(dict(env="Acrobot-v1", kw={}, at={"book_or_nips": "nips"}, init=None, pol=acrobot_pump, label="nips variant"))
    ac.append(dict(env="Acrobot-v1", kw={}, at={}, init=[3.0, -3.0, 12.0, 28.0], pol=random_discrete(3), label="wrap and bound edge", mes=60))
    ac.append(dict(env="Acrobot-v1", kw={}, at={}, init=[3.1, 0.05, 0.0, 0.0], pol=random_discrete(3), label="near goal"))
    ac.append(dict(env="Acrobot-v1", kw={}, at={}, init=None, pol=random_discrete(3), label="random to truncation"))
    out["acrobot"] = ac

    mc = []
    for i in range(3):
        mc.append(dict(env="MountainCar-v0", kw={}, at={}, init=None, pol=random_discrete(3), label="random to truncation"))
    mc.append(dict(env="MountainCar-v0", kw={}, at={}, init=None, pol=mountain_car_pump, label="pump to the goal"))
    mc.append(dict(env="MountainCar-v0", kw={}, at={}, init=[-1.19, -0.05], pol=lambda s, r: 0, label="left wall", mes=30))
    mc.append(dict(env="MountainCar-v0", kw={}, at={}, init=[0.49, 0.02], pol=random_discrete(3), label="at the goal"))
    mc.append(dict(env="MountainCar-v0", kw={"goal_velocity": 0.01}, at={}, init=None, pol=mountain_car_pump, label="goal_velocity"))
    out["mountain_car"] = mc

    pe = []
    for i in range(3):
        pe.append(dict(env="Pendulum-v1", kw={}, at={}, init=None, pol=pendulum_random, label="random torques to truncation"))
    pe.append(dict(env="Pendulum-v1", kw={}, at={}, init=None, pol=pendulum_wide, label="clipped torques"))
    pe.append(dict(env="Pendulum-v1", kw={}, at={}, init=[3.14159, 7.9], pol=pendulum_wide, label="speed clip near pi", mes=50))
    pe.append(dict(env="Pendulum-v1", kw={}, at={}, init=[-9.0, -3.0], pol=pendulum_random, label="angle normalisation", mes=50))
    pe.append(dict(env="Pendulum-v1", kw={"g": 9.81}, at={}, init=None, pol=pendulum_random, label="g=9.81", mes=60))
    out["pendulum"] = pe

    os.makedirs(OUT, exist_ok=True)
    for name, cases in out.items():
        eps = [run_episode(c["env"], c["kw"], c["at"], c["init"], c["pol"], rng, c.get("mes"), c["label"]) | {"env": c["env"]} for c in cases]
        doc = {"generator": "envs/scripts/make_gymnasium_fixtures.py", "gymnasium": gym.__version__,
               "numpy": np.__version__, "python": sys.version.split()[0], "episodes": eps}
        path = os.path.join(OUT, f"{name}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(doc, f, separators=(",", ":"))
        os.replace(path + ".tmp", path)
        ends = [("T" if e["steps"][-1]["terminated"] else "") + ("t" if e["steps"][-1]["truncated"] else "") for e in eps]
        print(f"{name}: {len(eps)} episodes, {sum(len(e['steps']) for e in eps)} steps, ends {ends}")


if __name__ == "__main__":
    main()
