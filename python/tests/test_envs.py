"""The Python package against Gymnasium itself: its env checker, the trajectories recorded from
gymnasium 1.x that the Rust conformance tests replay, and live gymnasium envs and vector envs
stepped side by side with the same seeds and actions."""

import json
import pathlib

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.wrappers import RecordEpisodeStatistics

import funcrl

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "envs" / "tests" / "fixtures"
IDS = ["CartPole-v0", "CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1"]


def actions_for(space, rng, n=None):
    if isinstance(space, gym.spaces.Discrete):
        return rng.integers(space.start, space.start + space.n, size=n)
    shape = space.shape if n is None else (n,) + space.shape
    return rng.uniform(space.low, space.high, size=shape).astype(np.float32)


def test_ids():
    assert funcrl.ids() == IDS


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_env_checker(env_id):
    check_env(funcrl.make(env_id), skip_render_check=True)
    check_env(gym.make(f"funcrl/{env_id}").unwrapped, skip_render_check=True)


@pytest.mark.parametrize("name", ["cartpole", "acrobot", "mountain_car", "pendulum"])
def test_recorded_gymnasium_trajectories_replay_exactly(name):
    fixture = json.loads((FIXTURES / f"{name}.json").read_text())
    assert fixture["gymnasium"].startswith("1.")
    steps = 0
    for ep in fixture["episodes"]:
        # Keyword values go through as the recorded text (the Rust env parses them).
        env = funcrl.make(ep["env"], max_episode_steps=ep["max_episode_steps"], **ep["kwargs"])
        obs, info = env.reset(seed=ep["reset_seed"])
        assert env.state().tolist() == ep["reset_state"]
        assert obs.dtype == np.float32 and obs.tolist() == np.float32(ep["reset_obs"]).tolist()
        assert info == {}
        env.set_state(ep["init_state"])
        for a, want in zip(ep["actions"], ep["steps"]):
            action = np.float32(a) if isinstance(a, list) else a
            obs, reward, terminated, truncated, info = env.step(action)
            np.testing.assert_allclose(env.state(), want["state"], rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(obs, np.float32(want["obs"]), rtol=2e-7, atol=2e-7)
            assert reward == pytest.approx(want["reward"], rel=1e-12, abs=1e-12)
            assert (terminated, truncated) == (want["terminated"], want["truncated"])
            steps += 1
    assert steps > 100


@pytest.mark.parametrize("env_id", IDS)
def test_single_env_steps_like_gymnasium(env_id):
    ours, theirs = funcrl.make(env_id), gym.make(env_id)
    rng = np.random.default_rng(7)
    episodes = 0
    for seed in range(3):
        a, _ = ours.reset(seed=seed)
        b, _ = theirs.reset(seed=seed)
        assert np.array_equal(a, b)
        for _ in range(600):
            act = actions_for(ours.action_space, rng)
            x, y = ours.step(act), theirs.step(act)
            np.testing.assert_allclose(x[0], y[0], rtol=2e-7, atol=2e-7)
            assert x[1] == pytest.approx(y[1], rel=1e-12, abs=1e-12)
            assert x[2:4] == y[2:4]
            if x[2] or x[3]:
                episodes += 1
                break
    assert episodes >= 1


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1"])
def test_vector_env_steps_like_gymnasium_vector_env(env_id):
    n = 8
    ours = funcrl.make_vec(env_id, n)
    theirs = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync")
    assert ours.metadata["autoreset_mode"] == theirs.metadata["autoreset_mode"]
    assert ours.single_observation_space == theirs.single_observation_space
    assert ours.action_space == theirs.action_space
    a, _ = ours.reset(seed=3)
    b, _ = theirs.reset(seed=3)
    assert np.array_equal(a, b)
    rng = np.random.default_rng(11)
    ends = 0
    for _ in range(700):
        act = actions_for(ours.single_action_space, rng, n)
        x, y = ours.step(act), theirs.step(act)
        np.testing.assert_allclose(x[0], y[0], rtol=2e-7, atol=2e-7)
        np.testing.assert_allclose(x[1], y[1], rtol=1e-12, atol=1e-12)
        assert np.array_equal(x[2], y[2]) and np.array_equal(x[3], y[3])
        assert x[0].dtype == np.float32 and x[1].dtype == np.float64 and x[2].dtype == np.bool_
        ends += int((x[2] | x[3]).sum())
    assert ends >= 1, "the comparison must cover an autoreset"


def test_vector_env_episode_statistics_and_in_place_buffers():
    envs = funcrl.make_vec("CartPole-v1", 4, copy=False)
    obs, _ = envs.reset(seed=0)
    lengths = np.zeros(4, dtype=np.int64)
    returns = np.zeros(4)
    resetting = np.zeros(4, dtype=np.bool_)
    ended = 0
    rng = np.random.default_rng(1)
    for _ in range(300):
        obs2, rew, term, trunc, info = envs.step(rng.integers(0, 2, size=4))
        assert obs2 is obs, "copy=False returns the env's own buffer"
        # A copy that ended last step is reset by this one (reward 0, not counted).
        assert np.all(rew[resetting] == 0.0)
        lengths = np.where(resetting, 0, lengths + 1)
        returns = np.where(resetting, 0.0, returns + rew)
        done = (term | trunc).copy()
        if done.any():
            ended += int(done.sum())
            assert np.array_equal(info["_episode"], done)
            assert np.array_equal(info["episode"]["l"][done], lengths[done])
            np.testing.assert_allclose(info["episode"]["r"][done], returns[done])
        else:
            assert "episode" not in info
        resetting = done
    assert ended >= 4


def test_registered_ids_work_with_gymnasium_wrappers():
    env = RecordEpisodeStatistics(gym.make("funcrl/CartPole-v1"))
    ref = RecordEpisodeStatistics(gym.make("CartPole-v1"))
    assert env.spec.max_episode_steps == 500 and env.spec.reward_threshold == 475.0
    a, _ = env.reset(seed=5)
    b, _ = ref.reset(seed=5)
    assert np.array_equal(a, b)
    while True:
        x, y = env.step(1), ref.step(1)
        np.testing.assert_allclose(x[0], y[0], rtol=2e-7, atol=2e-7)
        assert x[1:4] == y[1:4]
        if x[2] or x[3]:
            assert x[4]["episode"]["l"] == y[4]["episode"]["l"]
            assert x[4]["episode"]["r"] == y[4]["episode"]["r"]
            break
    # The time limit is gymnasium's wrapper's: a shorter one truncates there.
    env = gym.make("funcrl/CartPole-v1", max_episode_steps=3)
    env.reset(seed=0)
    flags = [env.step(i % 2)[3] for i in range(3)]
    assert flags == [False, False, True]


def test_state_and_set_state_use_the_true_dynamics():
    env = funcrl.make("CartPole-v1")
    env.reset(seed=0)
    env.set_state([0.1, 0.0, 0.05, 0.0])
    ref = gym.make("CartPole-v1").unwrapped
    ref.reset(seed=0)
    ref.state = np.array([0.1, 0.0, 0.05, 0.0])
    for a in [1, 0, 0, 1]:
        x, y = env.step(a), ref.step(a)
        np.testing.assert_allclose(x[0], y[0], rtol=2e-7, atol=2e-7)
    np.testing.assert_allclose(env.state(), ref.state, rtol=1e-12)
    envs = funcrl.make_vec("CartPole-v1", 2)
    envs.reset(seed=0)
    envs.set_state(1, [0.0, 0.0, 0.3, 0.0])
    assert envs.state(1).tolist() == [0.0, 0.0, 0.3, 0.0]


def test_bad_input_raises_value_error_with_the_message():
    with pytest.raises(ValueError, match="CartPole-v1"):
        funcrl.make("CartPole-v9")
    env = funcrl.make("CartPole-v1")
    with pytest.raises(ValueError, match="reset"):
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="invalid action"):
        env.step(5)
    with pytest.raises(ValueError, match="render"):
        funcrl.make("CartPole-v1", render_mode="human")
    with pytest.raises(ValueError):
        funcrl.make("CartPole-v1", no_such_option=1)
    with pytest.raises(ValueError, match="num_envs"):
        funcrl.make_vec("CartPole-v1", 0)
    envs = funcrl.make_vec("CartPole-v1", 3)
    with pytest.raises(ValueError, match="seed"):
        envs.reset(seed=[0, 5, 9])
    envs.reset(seed=[4, 5, 6])
    with pytest.raises(ValueError):
        envs.step(np.array([0, 1, 7]))
    with pytest.raises(ValueError, match="not supported"):
        envs.reset(options={"low": -0.1})
