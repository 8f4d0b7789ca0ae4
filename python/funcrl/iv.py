"""Instrumental-variable regression from Python: linear 2SLS on numpy arrays and the deep IV
methods (DFIV, FuncID, FuncID-linear, AID, ITD, penalty) from a config.

>>> import numpy as np, funcrl.iv
>>> fit = funcrl.iv.tsls(y, treatment=t, instrument=z)
>>> fit.coef["treatment"], fit.se["treatment"], fit.se_robust["treatment"]
>>> run = funcrl.iv.fit("iv/dsprites_funcid", seed=0, iterations=20)
>>> run.test_mse, run.predictions.shape
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from . import _core
from ._run import _overrides

__all__ = ["TslsResult", "IvFit", "tsls", "fit"]


@dataclass
class TslsResult:
    """Coefficients, homoskedastic (``se``) and HC0-robust (``se_robust``) standard errors keyed
    by regressor name (``const`` for the intercept), as ``linearmodels.IV2SLS`` reports them with
    ``debiased=False``."""

    coef: dict[str, float]
    se: dict[str, float]
    se_robust: dict[str, float]
    nobs: int


def _columns(x: Any, role: str) -> list[tuple[str, np.ndarray]]:
    """A 1-D or 2-D array (or a pandas Series/DataFrame) as named float64 columns."""
    if x is None:
        return []
    names = None
    if hasattr(x, "columns"):  # pandas DataFrame
        names = [str(c) for c in x.columns]
    elif getattr(x, "name", None) is not None and not isinstance(x, np.ndarray):  # pandas Series
        names = [str(x.name)]
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{role} must be 1-D or 2-D, got shape {a.shape}")
    if names is None:
        names = [role] if a.shape[1] == 1 else [f"{role}_{j}" for j in range(a.shape[1])]
    return [(n, np.ascontiguousarray(a[:, j])) for j, n in enumerate(names)]


def tsls(y: Any, treatment: Any, instrument: Any, exog: Any = None, intercept: bool = True) -> TslsResult:
    """Linear two-stage least squares (the same numbers as ``funcrl iv --method 2sls``).

    ``y``: n outcomes; ``treatment``, ``instrument``, ``exog``: n values or n×k arrays (columns are
    named ``treatment``, or ``treatment_0``, ``treatment_1``, ...; a pandas DataFrame keeps its
    column names). Mismatched lengths, NaN, infinities and collinear designs raise ``ValueError``.
    """
    ycols = _columns(y, "y")
    if len(ycols) != 1:
        raise ValueError(f"y must be one column, got {len(ycols)}")
    t, z, x = _columns(treatment, "treatment"), _columns(instrument, "instrument"), _columns(exog, "exog")
    cols = [("y", ycols[0][1])] + t + z + x
    names = [n for n, _ in cols]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"column names must differ: {dup}")
    out = json.loads(
        _core.tsls(cols, "y", [n for n, _ in t], [n for n, _ in z], [n for n, _ in x], bool(intercept))
    )
    return TslsResult(out["coef"], out["se"], out["se_robust"], out["nobs"])


@dataclass
class IvFit:
    """A finished deep IV run: ``result`` (method, seed, n, test MSE, seconds per iteration,
    run directory), the per-iteration ``curves`` (column → array: outer/inner loss, test MSE, ...)
    and ``predictions``, an m×2 array of ``[structural f, prediction]`` on the test points."""

    result: dict
    curves: dict[str, np.ndarray] = field(repr=False)
    predictions: np.ndarray = field(repr=False)

    @property
    def test_mse(self) -> float | None:
        return self.result.get("test_mse")

    @property
    def run_dir(self) -> str:
        return self.result["run_dir"]


def fit(
    config: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    seed: int | None = None,
    out: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    quiet: bool = False,
    resume: str | os.PathLike | None = None,
    **kwargs: Any,
) -> IvFit:
    """Runs a deep IV config (``funcrl iv --config``) in this process and returns its fit.

    ``config``: a TOML file or a shipped config's name (``"iv/dsprites_funcid"``); ``data``: a
    CSV/HDF5 file in place of the config's generator; overrides as in :func:`funcrl.train`
    (``iterations=20``, ``method__init="linear"``). The run directory is written as by the CLI.
    ``resume``: a run directory stopped at its checkpoint (Ctrl-C, a kill) to continue instead of
    ``config``, to the numbers of an uninterrupted run; only ``iterations``, ``eval_every`` and
    ``checkpoint_every`` may then be overridden.
    """
    res, names, curves, pred = _core.iv_fit(
        None if config is None else os.fspath(config),
        seed,
        None if out is None else os.fspath(out),
        _overrides(overrides, kwargs),
        None if data is None else os.fspath(data),
        quiet,
        None if resume is None else os.fspath(resume),
    )
    return IvFit(json.loads(res), {n: curves[:, i].copy() for i, n in enumerate(names)}, pred)
