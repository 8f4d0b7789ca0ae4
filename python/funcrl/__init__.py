"""funcrl from Python: the Gymnasium-faithful classic-control environments of the funcrl Rust
toolkit as drop-in ``gymnasium`` environments and fast vector environments.

>>> import funcrl
>>> env = funcrl.make("CartPole-v1")
>>> obs, info = env.reset(seed=0)
>>> envs = funcrl.make_vec("CartPole-v1", num_envs=1024)
>>> obs, info = envs.reset(seed=0)

The trainer, ``compare`` and the IV estimators run in-process:

>>> run = funcrl.train("cartpole_funcid", seed=0, total_steps=5000)
>>> run.summary["auc"], run.returns
>>> fit = funcrl.iv.tsls(y, treatment=t, instrument=z)

``python -m funcrl`` is the ``funcrl`` command line.

Importing the package registers ``funcrl/CartPole-v0``, ``funcrl/CartPole-v1``,
``funcrl/Acrobot-v1``, ``funcrl/MountainCar-v0`` and ``funcrl/Pendulum-v1`` with Gymnasium, so
``gymnasium.make("funcrl/CartPole-v1")`` (and its wrappers) works too.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from . import _core, iv
from ._run import CompareResult, TrainResult, compare, train

__all__ = [
    "FuncrlEnv",
    "FuncrlVectorEnv",
    "make",
    "make_vec",
    "ids",
    "register_envs",
    "train",
    "compare",
    "TrainResult",
    "CompareResult",
    "iv",
]

# (id, max_episode_steps, reward_threshold) of every registered environment.
_SPECS = {s[0]: s for s in _core.specs()}


def ids() -> list[str]:
    """The environment ids funcrl provides."""
    return list(_SPECS)


def _space(t: tuple) -> spaces.Space:
    if t[0] == "discrete":
        return spaces.Discrete(t[1], start=t[2])
    return spaces.Box(low=t[1], high=t[2], dtype=np.float32)


def _check_options(options: dict | None) -> None:
    if options:
        raise ValueError(f"reset options are not supported by funcrl envs: {sorted(options)}")


class FuncrlEnv(gym.Env):
    """One funcrl environment behind the ``gymnasium.Env`` API.

    Observations are float32 arrays, ``step`` returns ``(obs, reward, terminated, truncated,
    info)`` with Gymnasium's semantics, and the registered time limit is applied inside (pass
    ``max_episode_steps`` to change it). ``state()``/``set_state()`` expose the internal state, so
    the true dynamics can serve as a model.
    """

    metadata = {"render_modes": []}

    def __init__(self, id: str, render_mode: str | None = None, max_episode_steps: int | None = None, **kwargs: Any):
        if render_mode is not None:
            raise ValueError(f"funcrl envs do not render: render_mode must be None, got {render_mode!r}")
        self._env = _core.Env(id, max_episode_steps, kwargs or None)
        self.observation_space = _space(self._env.observation_space())
        self.action_space = _space(self._env.action_space())
        self.render_mode = None
        self._id = id

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        _check_options(options)
        super().reset(seed=seed)
        return self._env.reset(seed)

    def step(self, action):
        return self._env.step(action)

    def state(self) -> np.ndarray:
        """The internal state (float64), e.g. CartPole's (x, x_dot, theta, theta_dot)."""
        return self._env.state()

    def set_state(self, state) -> None:
        """Continue from ``state``: the next ``step`` starts there."""
        self._env.set_state([float(v) for v in state])

    def __repr__(self) -> str:
        return f"<FuncrlEnv {self._id}>"


class FuncrlVectorEnv(VectorEnv):
    """``num_envs`` copies stepped by one Rust call (structure-of-arrays layout).

    Autoreset is Gymnasium's default (next step): the step after an episode ends resets that copy
    and returns its first observation with reward 0. ``reset(seed=s)`` seeds copy ``i`` with
    ``s + i``. Observations, rewards and flags are written into preallocated arrays; with
    ``copy=False`` the returned observation array is that buffer itself (overwritten by the next
    call). ``info["episode"]`` holds the return ``r`` and length ``l`` of episodes that ended on
    this step, with the mask ``info["_episode"]``.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, id: str, num_envs: int, max_episode_steps: int | None = None, copy: bool = True, **kwargs: Any):
        self._env = _core.VecEnv(id, int(num_envs), max_episode_steps, kwargs or None)
        self.num_envs = int(num_envs)
        self.single_observation_space = _space(self._env.single_observation_space())
        self.single_action_space = _space(self._env.single_action_space())
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.render_mode = None
        self.copy = copy
        n = self.num_envs
        self._discrete = isinstance(self.single_action_space, spaces.Discrete)
        self._obs = np.zeros((n,) + self.single_observation_space.shape, dtype=np.float32)
        self._rew = np.zeros(n, dtype=np.float64)
        self._term = np.zeros(n, dtype=np.bool_)
        self._trunc = np.zeros(n, dtype=np.bool_)
        self._ep_done = np.zeros(n, dtype=np.bool_)
        self._ep_r = np.zeros(n, dtype=np.float64)
        self._ep_l = np.zeros(n, dtype=np.int64)
        self._id = id

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        _check_options(options)
        if isinstance(seed, (list, tuple)):
            if list(seed) != list(range(seed[0], seed[0] + self.num_envs)):
                raise ValueError("funcrl vector envs seed copy i with seed + i: pass an int (or [s, s+1, ...])")
            seed = seed[0]
        self._env.reset(self._obs, seed)
        return self._out(self._obs), {}

    def step(self, actions):
        if self._discrete:
            a = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)
        else:
            a = np.asarray(actions, dtype=np.float32).reshape(self.num_envs, -1)
        self._env.step(a, self._obs, self._rew, self._term, self._trunc, self._ep_done, self._ep_r, self._ep_l)
        info: dict = {}
        if self._ep_done.any():
            mask = self._ep_done.copy()
            info["episode"] = {"r": np.where(mask, self._ep_r, 0.0), "l": np.where(mask, self._ep_l, 0)}
            info["_episode"] = mask
        return self._out(self._obs), self._out(self._rew), self._out(self._term), self._out(self._trunc), info

    def _out(self, a: np.ndarray) -> np.ndarray:
        return a.copy() if self.copy else a

    def state(self, i: int) -> np.ndarray:
        return self._env.state(i)

    def set_state(self, i: int, state) -> None:
        self._env.set_state(i, [float(v) for v in state])

    def __repr__(self) -> str:
        return f"<FuncrlVectorEnv {self._id} × {self.num_envs}>"


def make(id: str, max_episode_steps: int | None = None, render_mode: str | None = None, **kwargs: Any) -> FuncrlEnv:
    """A funcrl environment (the registered time limit applied inside, no other wrapper)."""
    return FuncrlEnv(id, render_mode=render_mode, max_episode_steps=max_episode_steps, **kwargs)


def make_vec(id: str, num_envs: int, max_episode_steps: int | None = None, copy: bool = True, **kwargs: Any) -> FuncrlVectorEnv:
    """``num_envs`` copies of a funcrl environment as one ``gymnasium.vector.VectorEnv``."""
    return FuncrlVectorEnv(id, num_envs, max_episode_steps=max_episode_steps, copy=copy, **kwargs)


def _registered(id: str, **kwargs: Any) -> FuncrlEnv:
    # Gymnasium's TimeLimit wrapper applies the limit; the inner one must never fire first.
    return FuncrlEnv(id, max_episode_steps=2**62, **kwargs)


def register_envs() -> None:
    """Registers ``funcrl/<id>`` for every funcrl environment (done on import)."""
    for env_id, limit, threshold in _SPECS.values():
        name = f"funcrl/{env_id}"
        if name in gym.registry:
            continue
        gym.register(
            id=name,
            entry_point="funcrl:_registered",
            max_episode_steps=limit,
            reward_threshold=threshold,
            kwargs={"id": env_id},
        )


register_envs()
