//! funcrl-iv: instrumental-variable regression on the functional bilevel solver — datasets
//! (dSprites, demand design, linear-Gaussian, your CSV/HDF5 files), linear 2SLS in closed form,
//! the DFIV/FuncID networks, the IV bilevel problem and the outer training loop.
//!
//! The method and the benchmark protocols are described in the repository's `docs/method.md`
//! and `docs/protocols.md`. Run directories, plots and the CLI live in the `funcrl` crate.

pub mod checkpoint;
pub mod data;
pub mod dsprites;
pub mod generate;
pub mod memory;
pub mod nets;
pub mod problem;
pub mod run;
pub mod tsls;

/// Bad input (a config value, a data file, a column name): the caller's mistake, reported with
/// what is wrong and what is allowed. The CLI exits with code 2 on it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

impl InputError {
    pub fn new(msg: impl Into<String>) -> Self {
        InputError(msg.into())
    }
}
