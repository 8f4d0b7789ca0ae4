"""The trainer, `compare` and the IV estimators from Python: 2SLS against the linearmodels
fixtures the Rust tests use, a `train` and a deep IV fit equal to the command line's run with
the same seed, and bad input as ValueError with the CLI's message."""

import csv
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import funcrl
import funcrl.iv

ROOT = pathlib.Path(__file__).resolve().parents[2]
IV_FIXTURES = ROOT / "tests" / "fixtures" / "iv"


def cli_command():
    """The Rust binary when it is built (as in .ci/run), else ``python -m funcrl``."""
    exe = os.environ.get("FUNCRL_BIN") or ROOT / "target" / "release" / "funcrl"
    if pathlib.Path(exe).is_file():
        return [str(exe)]
    return [sys.executable, "-m", "funcrl"]


def run_cli(*args, cwd):
    out = subprocess.run(cli_command() + list(args), cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("case", ["tsls_2t_3z", "tsls_2t_2z_2x", "tsls_1t_3z_1x", "tsls_3t_4z_3x"])
def test_tsls_matches_linearmodels(case):
    want = json.loads((IV_FIXTURES / f"{case}.json").read_text())
    with open(IV_FIXTURES / f"{case}.csv", newline="") as f:
        rows = list(csv.reader(f))
    data = {name: np.array([float(r[i]) for r in rows[1:]]) for i, name in enumerate(rows[0])}

    def block(names):
        if not names:
            return None
        # Named columns through a structured dict: a 2-D array plus the names the fixture uses.
        return _Frame({n: data[n] for n in names})

    fit = funcrl.iv.tsls(data["y"], block(want["treatment"]), block(want["instrument"]), block(want["exog"]))
    assert fit.nobs == len(data["y"])
    for key in ("coef", "se", "se_robust"):
        got = getattr(fit, key)
        assert sorted(got) == sorted(want[key])
        for name, value in want[key].items():
            assert got[name] == pytest.approx(value, rel=1e-8, abs=1e-12), (key, name)


class _Frame:
    """The part of a pandas DataFrame that tsls reads (``columns`` and ``__array__``), so the
    test needs no pandas."""

    def __init__(self, cols):
        self.columns = list(cols)
        self._a = np.column_stack([cols[c] for c in self.columns])

    def __array__(self, dtype=None, copy=None):
        return self._a if dtype is None else self._a.astype(dtype)


def test_tsls_default_names_and_bad_input():
    rng = np.random.default_rng(0)
    n = 300
    z = rng.normal(size=(n, 2))
    u = rng.normal(size=n)
    t = z @ [1.0, 0.5] + u + rng.normal(size=n)
    y = 2.0 * t + u
    fit = funcrl.iv.tsls(y, t, z)
    assert sorted(fit.coef) == ["const", "treatment"]
    assert abs(fit.coef["treatment"] - 2.0) < 5 * fit.se["treatment"]
    with pytest.raises(ValueError, match="rows"):
        funcrl.iv.tsls(y[:-1], t, z)
    bad = y.copy()
    bad[7] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        funcrl.iv.tsls(bad, t, z)
    with pytest.raises(ValueError):
        funcrl.iv.tsls(y, t, z[:, :0])  # no instrument: under-identified


def test_train_equals_the_command_line(tmp_path):
    run = funcrl.train("cartpole_funcid", seed=3, out=tmp_path / "py", quiet=True, total_steps=3000, eval_every=1000)
    out = run_cli(
        "train", "--config", "cartpole_funcid", "--seed", "3", "--out", str(tmp_path / "cli"), "--quiet",
        "--set", "total_steps=3000", "--set", "eval_every=1000", cwd=tmp_path,
    )
    cli_dir = pathlib.Path(out.strip().splitlines()[-1])
    if not cli_dir.is_absolute():
        cli_dir = tmp_path / cli_dir
    cli = funcrl.TrainResult.load(cli_dir)
    assert len(run.steps) == 3
    np.testing.assert_array_equal(run.steps, cli.steps)
    np.testing.assert_array_equal(run.returns, cli.returns)
    np.testing.assert_array_equal(run.losses["losses/q_loss"], cli.losses["losses/q_loss"])
    assert run.summary == cli.summary
    # The run directory holds what the CLI's does.
    for name in ("config.toml", "meta.json", "evals.csv", "summary.json"):
        assert (pathlib.Path(run.run_dir) / name).is_file(), name


def test_train_rejects_bad_config_with_the_cli_message(tmp_path):
    with pytest.raises(ValueError, match="q.lr"):
        funcrl.train("cartpole_funcid", out=tmp_path, quiet=True, q__lr="fast")
    with pytest.raises(ValueError, match="shipped configs"):
        funcrl.train("no_such_config", out=tmp_path, quiet=True)
    with pytest.raises(ValueError, match="exactly one"):
        funcrl.train(out=tmp_path)
    with pytest.raises(ValueError, match="cannot pass"):
        funcrl.train("cartpole_funcid", out=tmp_path, quiet=True, q__lr=object())


def test_iv_fit_equals_the_command_line(tmp_path):
    fit = funcrl.iv.fit("iv/demand_dfiv", seed=1, out=tmp_path / "py", quiet=True, iterations=3, data__n=400)
    out = run_cli(
        "iv", "--config", "iv/demand_dfiv", "--seed", "1", "--out", str(tmp_path / "cli"),
        "--set", "iterations=3", "--set", "data.n=400", cwd=tmp_path,
    )
    cli = json.loads(out.strip().splitlines()[-1])
    assert fit.test_mse == cli["test_mse"]
    assert fit.result["n"] == 400 and fit.result["iterations"] == 3
    assert fit.predictions.shape[1] == 2
    assert len(fit.curves["outer_loss"]) == 3
    # The predictions' MSE against f is the reported test MSE.
    f, pred = fit.predictions[:, 0], fit.predictions[:, 1]
    assert np.mean((f - pred) ** 2) == pytest.approx(fit.test_mse, rel=1e-9)
    with pytest.raises(ValueError, match="method"):
        funcrl.iv.fit("iv/demand_dfiv", out=tmp_path, quiet=True, method="nope")


def test_iv_fit_resumes_a_stopped_run_to_the_uninterrupted_numbers(tmp_path):
    import signal
    import time

    settings = "data__n=300, eval_every=2, checkpoint_every=2, inner__steps=2"
    code = (
        "import funcrl.iv\n"
        f"funcrl.iv.fit('iv/demand_dfiv', out={str(tmp_path / 'a')!r}, quiet=True, iterations=1000000, {settings})\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 60
    while not list((tmp_path / "a").glob("*/checkpoint.h5")):
        assert time.time() < deadline, "no checkpoint after 60 s"
        time.sleep(0.02)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    # In Python the stop is a KeyboardInterrupt, raised after the checkpoint was written (uncaught,
    # it ends the interpreter as SIGINT would).
    assert child.returncode != 0 and "KeyboardInterrupt" in err and "checkpoint written" in err, err
    (run_dir,) = (tmp_path / "a").iterdir()
    with open(run_dir / "metrics.csv") as f:
        n = sum(1 for _ in f) - 1 + 3
    resumed = funcrl.iv.fit(resume=run_dir, quiet=True, iterations=n)
    whole = funcrl.iv.fit(
        "iv/demand_dfiv", out=tmp_path / "b", quiet=True, iterations=n,
        data__n=300, eval_every=2, checkpoint_every=2, inner__steps=2,
    )
    assert resumed.test_mse == whole.test_mse
    for name in ("outer_loss", "inner_loss", "grad_norm"):
        np.testing.assert_array_equal(resumed.curves[name], whole.curves[name])
    with pytest.raises(ValueError, match="exactly one"):
        funcrl.iv.fit(out=tmp_path, quiet=True)


def test_compare_runs_children_through_python(tmp_path):
    res = funcrl.compare(
        ["cartpole_mle", "cartpole_funcid"], seeds=[0, 1], out=tmp_path / "cmp", jobs=2,
        reps=200, total_steps=1500, eval_every=500,
    )
    assert "| mle |" in res.table and "| funcid |" in res.table
    assert sorted(a["name"] for a in res.stats["agents"]) == ["funcid", "mle"]
    assert (tmp_path / "cmp" / "curves.png").is_file()


def test_python_m_funcrl_is_the_cli():
    out = subprocess.run([sys.executable, "-m", "funcrl", "envs"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "CartPole-v1" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "funcrl", "train", "--config", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "shipped configs" in bad.stderr


def test_sigterm_still_terminates_python_after_a_run(tmp_path):
    """While a run is going SIGTERM asks it to stop at a checkpoint; afterwards the interpreter's
    own disposition (terminate) is back."""
    code = (
        "import os, signal, time, funcrl\n"
        f"funcrl.train('cartpole_mle', out={str(tmp_path)!r}, quiet=True, total_steps=1500, eval_every=500)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(10)\n"
        "print('still alive')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == -15, (out.returncode, out.stdout, out.stderr)
    assert "still alive" not in out.stdout
