//! Where tensors live (device, precision) and the few host <-> tensor conversions the solver needs.

use burn::tensor::{DType, Device, FloatDType, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// Floating-point precision of every tensor the solver creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    F32,
    #[default]
    F64,
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F64 => DType::F64,
        }
    }

    /// Machine epsilon, used to size finite-difference steps.
    pub fn epsilon(self) -> f64 {
        match self {
            Precision::F32 => f32::EPSILON as f64,
            Precision::F64 => f64::EPSILON,
        }
    }
}

impl From<Precision> for FloatDType {
    fn from(p: Precision) -> Self {
        match p {
            Precision::F32 => FloatDType::F32,
            Precision::F64 => FloatDType::F64,
        }
    }
}

/// A device with autodiff enabled plus the float precision. The backend is picked at run time by
/// the device (burn 0.22): `Device::flex()` by default, LibTorch or wgpu behind cargo features.
/// The dtype is passed at every creation rather than configured on the device, because device
/// settings are process-wide and tests run f32 and f64 side by side.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub device: Device,
    pub precision: Precision,
}

impl Ctx {
    pub fn new(device: Device, precision: Precision) -> Self {
        Self {
            device: device.autodiff(),
            precision,
        }
    }

    /// The default CPU backend (burn's `flex`).
    pub fn flex(precision: Precision) -> Self {
        Self::new(Device::flex(), precision)
    }

    /// A backend by name: `flex` (always), `ndarray` (feature `ndarray`), `tch` (LibTorch CPU,
    /// feature `tch`), `wgpu` (feature `wgpu`). An unknown name or one whose feature is not
    /// compiled in is an error that says which.
    pub fn named(backend: &str, precision: Precision) -> Result<Self, String> {
        let device = match backend {
            "flex" => Device::flex(),
            #[cfg(feature = "ndarray")]
            "ndarray" => Device::ndarray(),
            #[cfg(feature = "tch")]
            "tch" => Device::libtorch(),
            #[cfg(feature = "wgpu")]
            "wgpu" => Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(0)),
            "ndarray" | "tch" | "wgpu" => {
                return Err(format!(
                    "backend '{backend}' is not compiled in: rebuild with `--features {backend}` (see bilevel/README.md)"
                ));
            }
            other => {
                return Err(format!(
                    "unknown backend '{other}': allowed flex, ndarray, tch, wgpu"
                ));
            }
        };
        Ok(Self::new(device, precision))
    }

    /// The backend named by the `FUNCRL_BACKEND` environment variable (default `flex`). The test
    /// suite uses it, so `FUNCRL_BACKEND=tch cargo test -p funcrl-bilevel --features tch` runs every
    /// proof on LibTorch. Panics with the reason on an unusable value.
    pub fn from_env(precision: Precision) -> Self {
        let name = std::env::var("FUNCRL_BACKEND").unwrap_or_else(|_| "flex".to_string());
        Self::named(&name, precision).unwrap_or_else(|e| panic!("FUNCRL_BACKEND: {e}"))
    }

    /// A `[rows, cols]` tensor from row-major host values.
    pub fn tensor2(&self, values: Vec<f64>, rows: usize, cols: usize) -> Tensor<2> {
        assert_eq!(
            values.len(),
            rows * cols,
            "tensor2: {rows}x{cols} needs {} values",
            rows * cols
        );
        Tensor::from_data(
            TensorData::new(values, [rows, cols]),
            (&self.device, self.precision.dtype()),
        )
    }

    pub fn zeros2(&self, rows: usize, cols: usize) -> Tensor<2> {
        Tensor::zeros([rows, cols], (&self.device, self.precision.dtype()))
    }

    pub fn ones2(&self, rows: usize, cols: usize) -> Tensor<2> {
        Tensor::ones([rows, cols], (&self.device, self.precision.dtype()))
    }
}

/// Host copy of a tensor's values (row-major), whatever its float dtype.
pub fn to_vec<const D: usize>(t: &Tensor<D>) -> Vec<f64> {
    t.to_data()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .expect("float tensor converts to f64")
}

/// The single value of a one-element tensor.
pub fn scalar(t: Tensor<1>) -> f64 {
    to_vec(&t)[0]
}

/// Bytes of memory available to a new process (Linux `MemAvailable`), if known: for refusing a run
/// that would not fit before allocating it.
pub fn mem_available_bytes() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}
