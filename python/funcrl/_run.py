"""The trainer and ``compare`` in-process, with results as numpy arrays."""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from . import _core

__all__ = ["TrainResult", "CompareResult", "train", "compare", "child_command"]


def child_command() -> list[str]:
    """How funcrl starts child runs from Python (``compare``'s parallel jobs): this
    interpreter running ``python -m funcrl``."""
    return [sys.executable, "-m", "funcrl"]


def _toml(v: Any) -> str:
    """A Python value as the TOML text ``--set`` takes."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if math.isnan(f):
            return "nan"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return repr(f)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, os.PathLike):
        return json.dumps(os.fspath(v))
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple, np.ndarray)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    raise ValueError(f"cannot pass a {type(v).__name__} as a config value: {v!r}")


def _overrides(overrides: Mapping[str, Any] | None, kwargs: Mapping[str, Any]) -> list[str]:
    """``{"agent.mode": "paper"}`` and keyword arguments (``agent__mode="paper"``: ``__`` is a
    dot) as ``key=value`` strings."""
    out = [f"{k}={_toml(v)}" for k, v in (overrides or {}).items()]
    out += [f"{k.replace('__', '.')}={_toml(v)}" for k, v in kwargs.items()]
    return out


def _read_csv(path: str) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return {}
    cols = np.array([[float(x) for x in r] for r in rows[1:]], dtype=np.float64).reshape(len(rows) - 1, len(rows[0]))
    return {name: cols[:, i].copy() for i, name in enumerate(rows[0])}


@dataclass
class TrainResult:
    """A finished ``funcrl train`` run.

    ``evals``: the evaluation curve (``global_step``, ``charts/episodic_return``, ...) and
    ``losses`` the loss log, each a dict of column name → numpy array; ``summary``: final return,
    AUC (mean evaluation return over the run), steps to the reward threshold.
    """

    run_dir: str
    summary: dict
    evals: dict[str, np.ndarray] = field(repr=False)
    losses: dict[str, np.ndarray] = field(repr=False)

    @property
    def steps(self) -> np.ndarray:
        return self.evals["global_step"]

    @property
    def returns(self) -> np.ndarray:
        return self.evals["charts/episodic_return"]

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> "TrainResult":
        """Reads a finished run directory."""
        d = os.fspath(run_dir)
        with open(os.path.join(d, "summary.json")) as f:
            summary = json.load(f)
        return cls(d, summary, _read_csv(os.path.join(d, "evals.csv")), _read_csv(os.path.join(d, "losses.csv")))


def train(
    config: str | os.PathLike | None = None,
    seed: int | None = None,
    out: str | os.PathLike = "runs",
    overrides: Mapping[str, Any] | None = None,
    quiet: bool = False,
    resume: str | os.PathLike | None = None,
    **kwargs: Any,
) -> TrainResult:
    """Runs ``funcrl train`` in this process (the GIL released; progress on stderr unless
    ``quiet``) and returns the finished run.

    ``config``: a TOML file or a shipped config's name (``"cartpole_funcid"``); ``resume``: a run
    directory to continue instead. Overrides as ``overrides={"agent.mode": "paper"}`` or keyword
    arguments with ``__`` for the dot (``total_steps=5000, q__lr=1e-3``). Invalid configs raise
    ``ValueError`` with the CLI's message; Ctrl-C stops at a checkpoint and raises
    ``KeyboardInterrupt`` (``resume=`` continues it).
    """
    run_dir = _core.train(
        None if config is None else os.fspath(config),
        seed,
        os.fspath(out),
        _overrides(overrides, kwargs),
        quiet,
        None if resume is None else os.fspath(resume),
    )
    return TrainResult.load(run_dir)


@dataclass
class CompareResult:
    """A finished ``funcrl compare``: its output folder, the summary table as text and
    ``stats.json`` (IQM with bootstrap CIs, probabilities of improvement, per-seed values)."""

    out: str
    table: str
    stats: dict = field(repr=False)


def compare(
    configs: Iterable[str | os.PathLike],
    seeds: Iterable[int] = (0, 1, 2, 3, 4),
    out: str | os.PathLike = "compare",
    overrides: Mapping[str, Any] | None = None,
    grid: Mapping[str, Iterable[Any]] | None = None,
    final_seeds: Iterable[int] = (),
    jobs: int | None = None,
    smooth: int = 1,
    reps: int = 50_000,
    **kwargs: Any,
) -> CompareResult:
    """Runs ``funcrl compare``: every config over ``seeds`` (``jobs`` child processes at once),
    then the table, plots and statistics in ``out``. ``grid={"q.lr": [3e-4, 1e-3]}`` tunes each
    agent and re-runs its best point on ``final_seeds``. Rerunning resumes and reuses finished runs.
    """
    grid_args = [f"{k}=" + ",".join(_toml(v) for v in vs) for k, vs in (grid or {}).items()]
    table = _core.compare(
        [os.fspath(c) for c in configs],
        child_command(),
        [int(s) for s in seeds],
        os.fspath(out),
        _overrides(overrides, kwargs),
        grid_args,
        [int(s) for s in final_seeds],
        jobs,
        smooth,
        reps,
    )
    stats_path = os.path.join(os.fspath(out), "stats.json")
    stats = {}
    if os.path.exists(stats_path):
        with open(stats_path) as f:
            stats = json.load(f)
    return CompareResult(os.fspath(out), table, stats)
