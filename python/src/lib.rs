//! `funcrl._core`: funcrl for Python. The Python package (`funcrl/__init__.py`) wraps the two
//! environment classes in `gymnasium.Env` and `gymnasium.vector.VectorEnv`; the trainer,
//! `compare`, the CLI and the IV estimators are in [`run`].
//!
//! The vector env writes observations, rewards and flags into numpy arrays the caller owns, so
//! one Python call steps every copy and creates no Python object per copy.

mod run;

use funcrl_envs::{
    Action, Env as _, EnvError, Info, MakeOptions, Space, VecAction, VectorEnv, make_vec, make_with,
};
use numpy::{PyArray1, PyReadonlyArray1, PyReadonlyArray2, PyReadwriteArray1, PyReadwriteArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

fn value_error(e: EnvError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn options(
    max_episode_steps: Option<u64>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<MakeOptions> {
    let mut o = MakeOptions {
        max_episode_steps,
        kwargs: vec![],
    };
    if let Some(kw) = kwargs {
        for (k, v) in kw.iter() {
            // Values go to the env's own parser as text (`true`, `0.5`), as `funcrl train --set`.
            let text = if v.is_instance_of::<pyo3::types::PyBool>() {
                if v.extract::<bool>()? {
                    "true"
                } else {
                    "false"
                }
                .to_string()
            } else {
                v.str()?.to_string()
            };
            o.kwargs.push((k.extract::<String>()?, text));
        }
    }
    Ok(o)
}

/// A space as plain Python values: `("discrete", n, start)` or `("box", low, high)`.
fn space<'py>(py: Python<'py>, s: &Space) -> PyResult<Bound<'py, PyTuple>> {
    match s {
        Space::Discrete { n, start } => PyTuple::new(
            py,
            [
                "discrete".into_pyobject(py)?.into_any(),
                n.into_pyobject(py)?.into_any(),
                start.into_pyobject(py)?.into_any(),
            ],
        ),
        Space::Box { low, high } => PyTuple::new(
            py,
            [
                "box".into_pyobject(py)?.into_any(),
                PyArray1::from_slice(py, low).into_any(),
                PyArray1::from_slice(py, high).into_any(),
            ],
        ),
    }
}

fn info<'py>(py: Python<'py>, info: &Info) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    if let Some(e) = info.episode {
        let ep = PyDict::new(py);
        ep.set_item("r", e.r)?;
        ep.set_item("l", e.l)?;
        ep.set_item("t", e.t)?;
        d.set_item("episode", ep)?;
    }
    Ok(d)
}

/// One environment (gymnasium's `make`: the registered time limit, no other wrapper).
#[pyclass(unsendable, module = "funcrl._core")]
struct Env {
    env: Box<dyn funcrl_envs::Env>,
    discrete: bool,
}

#[pymethods]
impl Env {
    #[new]
    #[pyo3(signature = (id, max_episode_steps=None, kwargs=None))]
    fn new(
        id: &str,
        max_episode_steps: Option<u64>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let env = make_with(id, &options(max_episode_steps, kwargs)?).map_err(value_error)?;
        let discrete = matches!(env.action_space(), Space::Discrete { .. });
        Ok(Self { env, discrete })
    }

    fn observation_space<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        space(py, &self.env.observation_space())
    }

    fn action_space<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        space(py, &self.env.action_space())
    }

    /// `(obs, info)`; `seed` reseeds the env's generator as gymnasium's `reset(seed=)`.
    #[pyo3(signature = (seed=None))]
    fn reset<'py>(
        &mut self,
        py: Python<'py>,
        seed: Option<u64>,
    ) -> PyResult<(Bound<'py, PyArray1<f32>>, Bound<'py, PyDict>)> {
        let (obs, i) = self.env.reset(seed);
        Ok((PyArray1::from_slice(py, &obs), info(py, &i)?))
    }

    /// `(obs, reward, terminated, truncated, info)`.
    #[allow(clippy::type_complexity)]
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        action: &Bound<'py, PyAny>,
    ) -> PyResult<(
        Bound<'py, PyArray1<f32>>,
        f64,
        bool,
        bool,
        Bound<'py, PyDict>,
    )> {
        let step = if self.discrete {
            let a: i64 = action.extract().map_err(|_| {
                PyValueError::new_err(format!(
                    "{}: invalid action {action}: expected an integer",
                    self.env.id()
                ))
            })?;
            self.env.step(Action::Discrete(a))
        } else {
            let a: Vec<f32> = match action.extract::<PyReadonlyArray1<f32>>() {
                Ok(arr) => arr.as_slice()?.to_vec(),
                Err(_) => action.extract().map_err(|_| {
                    PyValueError::new_err(format!(
                        "{}: invalid action {action}: expected a float32 array",
                        self.env.id()
                    ))
                })?,
            };
            self.env.step(Action::Continuous(&a))
        }
        .map_err(value_error)?;
        Ok((
            PyArray1::from_slice(py, &step.obs),
            step.reward,
            step.terminated,
            step.truncated,
            info(py, &step.info)?,
        ))
    }

    /// The internal state (f64), e.g. CartPole's (x, ẋ, θ, θ̇).
    fn state<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        PyArray1::from_slice(py, self.env.state())
    }

    /// Puts the env in `state`; the next `step` continues from it (the true dynamics as a model).
    fn set_state(&mut self, state: Vec<f64>) -> PyResult<()> {
        self.env.set_state(&state).map_err(value_error)
    }

    fn id(&self) -> String {
        self.env.id().to_string()
    }
}

/// `num_envs` copies in funcrl's structure-of-arrays vector env (registered time limit,
/// next-step autoreset, `reset(seed)` seeds copy i with seed + i).
#[pyclass(unsendable, module = "funcrl._core")]
struct VecEnv {
    env: Box<dyn VectorEnv>,
    discrete: bool,
}

#[pymethods]
impl VecEnv {
    #[new]
    #[pyo3(signature = (id, num_envs, max_episode_steps=None, kwargs=None))]
    fn new(
        id: &str,
        num_envs: usize,
        max_episode_steps: Option<u64>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        if num_envs == 0 {
            return Err(PyValueError::new_err("num_envs must be at least 1"));
        }
        let env =
            make_vec(id, num_envs, &options(max_episode_steps, kwargs)?).map_err(value_error)?;
        let discrete = matches!(env.single_action_space(), Space::Discrete { .. });
        Ok(Self { env, discrete })
    }

    fn num_envs(&self) -> usize {
        self.env.num_envs()
    }

    fn single_observation_space<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        space(py, &self.env.single_observation_space())
    }

    fn single_action_space<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        space(py, &self.env.single_action_space())
    }

    /// Resets every copy into `obs` (`[num_envs, obs_dim]` float32).
    #[pyo3(signature = (obs, seed=None))]
    fn reset(&mut self, mut obs: PyReadwriteArray2<'_, f32>, seed: Option<u64>) -> PyResult<()> {
        let out = obs.as_slice_mut()?;
        let got = self.env.reset(seed);
        if out.len() != got.len() {
            return Err(PyValueError::new_err(format!(
                "obs buffer holds {} values, the env has {}",
                out.len(),
                got.len()
            )));
        }
        out.copy_from_slice(got);
        Ok(())
    }

    /// Steps every copy with `actions` (int64 `[num_envs]` for discrete spaces, float32
    /// `[num_envs, action_dim]` for boxes) and writes the results into the given arrays.
    /// Copies whose episode ended get their statistics in `ep_return`/`ep_length` with
    /// `ep_done` set.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        actions: &Bound<'_, PyAny>,
        mut obs: PyReadwriteArray2<'_, f32>,
        mut rewards: PyReadwriteArray1<'_, f64>,
        mut terminated: PyReadwriteArray1<'_, bool>,
        mut truncated: PyReadwriteArray1<'_, bool>,
        mut ep_done: PyReadwriteArray1<'_, bool>,
        mut ep_return: PyReadwriteArray1<'_, f64>,
        mut ep_length: PyReadwriteArray1<'_, i64>,
    ) -> PyResult<()> {
        let n = self.env.num_envs();
        let step = if self.discrete {
            let a: PyReadonlyArray1<'_, i64> = actions.extract().map_err(|_| {
                PyValueError::new_err(format!(
                    "{}: actions must be an int64 array of shape ({n},)",
                    self.env.id()
                ))
            })?;
            // The env reads the caller's array in place: no copy per step.
            self.env.step(VecAction::Discrete(a.as_slice()?))
        } else {
            let a: PyReadonlyArray2<'_, f32> = actions.extract().map_err(|_| {
                PyValueError::new_err(format!(
                    "{}: actions must be a float32 array of shape ({n}, action_dim)",
                    self.env.id()
                ))
            })?;
            self.env.step(VecAction::Continuous(a.as_slice()?))
        }
        .map_err(value_error)?;
        let obs = obs.as_slice_mut()?;
        if obs.len() != step.obs.len() {
            return Err(PyValueError::new_err("obs buffer has the wrong size"));
        }
        obs.copy_from_slice(step.obs);
        rewards.as_slice_mut()?.copy_from_slice(step.rewards);
        terminated.as_slice_mut()?.copy_from_slice(step.terminated);
        truncated.as_slice_mut()?.copy_from_slice(step.truncated);
        let (done, ret, len) = (
            ep_done.as_slice_mut()?,
            ep_return.as_slice_mut()?,
            ep_length.as_slice_mut()?,
        );
        for (i, e) in step.episode.iter().enumerate() {
            done[i] = e.is_some();
            if let Some(e) = e {
                ret[i] = e.r;
                len[i] = e.l as i64;
            }
        }
        Ok(())
    }

    fn state<'py>(&self, py: Python<'py>, i: usize) -> Bound<'py, PyArray1<f64>> {
        PyArray1::from_vec(py, self.env.state(i))
    }

    fn set_state(&mut self, i: usize, state: Vec<f64>) -> PyResult<()> {
        self.env.set_state(i, &state).map_err(value_error)
    }

    fn id(&self) -> String {
        self.env.id().to_string()
    }
}

/// The registered ids with their time limits and reward thresholds.
#[pyfunction]
fn specs() -> Vec<(String, u64, Option<f64>)> {
    funcrl_envs::SPECS
        .iter()
        .map(|s| (s.id.to_string(), s.max_episode_steps, s.reward_threshold))
        .collect()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Env>()?;
    m.add_class::<VecEnv>()?;
    m.add_function(wrap_pyfunction!(specs, m)?)?;
    m.add_function(wrap_pyfunction!(run::train, m)?)?;
    m.add_function(wrap_pyfunction!(run::compare, m)?)?;
    m.add_function(wrap_pyfunction!(run::cli, m)?)?;
    m.add_function(wrap_pyfunction!(run::iv_fit, m)?)?;
    m.add_function(wrap_pyfunction!(run::tsls, m)?)?;
    Ok(())
}
