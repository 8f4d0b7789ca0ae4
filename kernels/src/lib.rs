//! funcrl-kernels: hand-written forward, backward (to parameters and inputs) and forward-mode JVP
//! of the small dense networks the agents and the IV problem train, on flat `f64` host buffers
//! (the IV kernel [`normed`] also in `f32`, for FuncID's optional single-precision adjoint steps),
//! with one GEMM entry point ([`gemm::gemm`]) and Adam over a flat buffer.
//!
//! # Why this exists beside burn
//! burn's eager autodiff pays dispatch, allocation and graph bookkeeping per tensor op. On the
//! sizes here that overhead, not arithmetic, was most of the time (measured on the 2-core
//! development machine, idle):
//! - one agent update is a few hundred ops on `[256, 32]` tensors: a FuncID update took 3.83 s
//!   per 1,000 through burn autodiff and 0.90–0.92 s through [`mlp`]; one forward + backward of
//!   the double-Q loss 765–770 µs against 226–262 µs;
//! - one inner step of the IV instrument net (3→256→128→128→32, 2,500 rows) took ≈ 60 ms through
//!   burn autodiff, of which ≈ 40 % was GEMM; [`normed`] does each layer's elementwise work
//!   (spectral norm, LayerNorm, activation) in one pass, which made a FuncID outer iteration on
//!   dSprites 1.47× faster and DFIV's 1.24×.
//!
//! # When to use burn instead
//! Everything that is not one of these fixed architectures, and everything where the maths is
//! still changing: burn's autodiff is the reference. Each kernel is checked against it (the
//! tests of [`mlp`] here, the IV crate's `nets` tests for [`normed`], and the agents'
//! `native_vs_autodiff` test for whole updates); a new kernel needs the same oracle before use.
//! Second-order products, other activations and GPU backends stay on burn.

pub mod adam;
pub mod gemm;
pub mod mlp;
pub mod normed;

pub use adam::Adam;
pub use gemm::{Real, Threads, gemm};
pub use mlp::{Dense, Tape};
