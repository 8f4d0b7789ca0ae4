//! IV data generators: the demand design (Hartford et al. 2017, as DFIV draws it), a
//! linear-Gaussian design with known coefficients, and dSprites IV (docs/protocols.md).
//!
//! A generated [`IvDataset`] holds training rows (treatment, instrument, outcome) and a noise-free
//! test set (treatment, structural f); it saves to and loads from HDF5 so a run can be repeated on
//! the same data.

use std::path::Path;

use rand::{RngExt, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::InputError;
use crate::data::{Matrix, linspace, read_matrix, write_hdf5};
use crate::dsprites::{self, ImageSource, dsprites_orientation, dsprites_pos, dsprites_scale};

/// Training rows and a noise-free test set.
#[derive(Debug, Clone, PartialEq)]
pub struct IvDataset {
    pub treatment: Matrix,
    pub instrument: Matrix,
    pub outcome: Matrix,
    /// Test treatments and the structural function there (empty when unknown).
    pub test_treatment: Matrix,
    pub test_structural: Matrix,
}

impl IvDataset {
    pub fn rows(&self) -> usize {
        self.outcome.rows
    }

    /// The named blocks of the saved file, in its order.
    fn blocks(&self) -> [(&'static str, &Matrix); 5] {
        [
            ("treatment", &self.treatment),
            ("instrument", &self.instrument),
            ("outcome", &self.outcome),
            ("test_treatment", &self.test_treatment),
            ("test_structural", &self.test_structural),
        ]
    }

    /// CRC-32 of every block (names and values), which a checkpoint stores so that a resume on
    /// other data is refused.
    pub fn checksum(&self) -> u64 {
        crate::data::blocks_checksum(&self.blocks())
    }

    pub fn save(&self, path: &Path) -> hdf5::Result<()> {
        write_hdf5(path, &self.blocks())
    }

    /// Loads a dataset written by [`save`](Self::save) (the test set is optional).
    pub fn load(path: &Path) -> Result<Self, InputError> {
        let err = |e: hdf5::Error| InputError::new(format!("{}: {e}", path.display()));
        let file = hdf5::File::open(path).map_err(err)?;
        let get = |n: &str| read_matrix(&file, n).map_err(err);
        let opt = |n: &str, cols: usize| {
            if file.link_exists(n) {
                read_matrix(&file, n).map_err(err)
            } else {
                Ok(Matrix::zeros(0, cols))
            }
        };
        let treatment = get("treatment")?;
        let d = IvDataset {
            instrument: get("instrument")?,
            outcome: get("outcome")?,
            test_structural: opt("test_structural", 1)?,
            test_treatment: opt("test_treatment", treatment.cols)?,
            treatment,
        };
        crate::data::verify_blocks(&file, &d.blocks())
            .map_err(|e| InputError::new(format!("{}: {e}", path.display())))?;
        d.check().map_err(InputError::new)?;
        Ok(d)
    }

    /// Shapes agree and every value is finite.
    pub fn check(&self) -> Result<(), String> {
        let n = self.outcome.rows;
        if self.treatment.rows != n || self.instrument.rows != n || self.outcome.cols != 1 {
            return Err(format!(
                "rows differ: treatment {}, instrument {}, outcome {}x{}",
                self.treatment.rows, self.instrument.rows, n, self.outcome.cols
            ));
        }
        if self.test_treatment.rows != self.test_structural.rows {
            return Err("test_treatment and test_structural differ in rows".into());
        }
        for (name, m) in [
            ("treatment", &self.treatment),
            ("instrument", &self.instrument),
            ("outcome", &self.outcome),
        ] {
            if let Some(i) = m.data.iter().position(|v| !v.is_finite()) {
                return Err(format!(
                    "{name} has a NaN/non-finite value at row {}",
                    i / m.cols + 1
                ));
            }
        }
        Ok(())
    }
}

fn std_normal() -> Normal<f64> {
    Normal::new(0.0, 1.0).expect("valid")
}

/// ψ(t) = 2((t−5)⁴/600 + exp(−4(t−5)²) + t/10 − 2).
pub fn demand_psi(t: f64) -> f64 {
    2.0 * ((t - 5.0).powi(4) / 600.0 + (-4.0 * (t - 5.0).powi(2)).exp() + t / 10.0 - 2.0)
}

/// f(p, t, s) = 100 + (10 + p)·s·ψ(t) − 2p.
pub fn demand_f(p: f64, t: f64, s: f64) -> f64 {
    100.0 + (10.0 + p) * s * demand_psi(t) - 2.0 * p
}

/// Demand design. Draws (whole vectors, in this order): s ~ U{1..7}, t ~ U(0,10), c ~ N(0,1),
/// v ~ N(0,1), e = ρv + N(0, 1−ρ²); p = 25 + (c+3)ψ(t) + v; y = f(p,t,s) + e.
/// Treatment inputs (p, t, s), instruments (c, t, s); test grid p × t × s (20·20·7 = 2,800).
pub fn demand(n: usize, rho: f64, seed: u64) -> Result<IvDataset, InputError> {
    if !(0.0..=1.0).contains(&rho) {
        return Err(InputError::new(format!(
            "demand: rho = {rho} must be in [0, 1]"
        )));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let nd = std_normal();
    let s: Vec<f64> = (0..n).map(|_| rng.random_range(1..=7) as f64).collect();
    let t: Vec<f64> = (0..n).map(|_| 10.0 * rng.random::<f64>()).collect();
    let c: Vec<f64> = (0..n).map(|_| nd.sample(&mut rng)).collect();
    let v: Vec<f64> = (0..n).map(|_| nd.sample(&mut rng)).collect();
    let sd = (1.0 - rho * rho).sqrt();
    let e: Vec<f64> = (0..n)
        .map(|i| rho * v[i] + sd * nd.sample(&mut rng))
        .collect();
    let mut tr = Vec::with_capacity(3 * n);
    let mut ins = Vec::with_capacity(3 * n);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let p = 25.0 + (c[i] + 3.0) * demand_psi(t[i]) + v[i];
        tr.extend([p, t[i], s[i]]);
        ins.extend([c[i], t[i], s[i]]);
        y.push(demand_f(p, t[i], s[i]) + e[i]);
    }
    let mut tt = Vec::new();
    let mut tf = Vec::new();
    for p in linspace(10.0, 25.0, 20) {
        for t in linspace(0.0, 10.0, 20) {
            for s in 1..=7 {
                tt.extend([p, t, s as f64]);
                tf.push(demand_f(p, t, s as f64));
            }
        }
    }
    let m = tf.len();
    Ok(IvDataset {
        treatment: Matrix::new(n, 3, tr),
        instrument: Matrix::new(n, 3, ins),
        outcome: Matrix::new(n, 1, y),
        test_treatment: Matrix::new(m, 3, tt),
        test_structural: Matrix::new(m, 1, tf),
    })
}

/// Linear-Gaussian design with known coefficients β_j = 1 − 0.5 j (j = 0..d_t−1):
/// z ~ N(0, I_{d_z}), u ~ N(0,1), t = zΠ + u + N(0, I), y = tβ + 2u + N(0,1).
/// Π = 1 on the diagonal block and 0.5 elsewhere, so every treatment is instrumented.
pub fn linear(n: usize, d_t: usize, d_z: usize, seed: u64) -> Result<IvDataset, InputError> {
    if d_z < d_t {
        return Err(InputError::new(format!(
            "linear design: d_z = {d_z} < d_t = {d_t} is under-identified"
        )));
    }
    let beta = linear_beta(d_t);
    let mut rng = StdRng::seed_from_u64(seed);
    let nd = std_normal();
    let pi = |i: usize, j: usize| if i % d_t == j { 1.0 } else { 0.5 / d_z as f64 };
    let mut draw = |rows: usize, confounded: bool| {
        let mut t = Vec::with_capacity(rows * d_t);
        let mut z = Vec::with_capacity(rows * d_z);
        let mut y = Vec::with_capacity(rows);
        let mut f = Vec::with_capacity(rows);
        for _ in 0..rows {
            let zr: Vec<f64> = (0..d_z).map(|_| nd.sample(&mut rng)).collect();
            let u = if confounded { nd.sample(&mut rng) } else { 0.0 };
            let tr: Vec<f64> = (0..d_t)
                .map(|j| (0..d_z).map(|i| zr[i] * pi(i, j)).sum::<f64>() + u + nd.sample(&mut rng))
                .collect();
            let fv: f64 = tr.iter().zip(&beta).map(|(a, b)| a * b).sum();
            y.push(fv + 2.0 * u + nd.sample(&mut rng));
            f.push(fv);
            t.extend(tr);
            z.extend(zr);
        }
        (t, z, y, f)
    };
    let (t, z, y, _) = draw(n, true);
    let (tt, _, _, tf) = draw(1000, false);
    Ok(IvDataset {
        treatment: Matrix::new(n, d_t, t),
        instrument: Matrix::new(n, d_z, z),
        outcome: Matrix::new(n, 1, y),
        test_treatment: Matrix::new(1000, d_t, tt),
        test_structural: Matrix::new(1000, 1, tf),
    })
}

/// The linear design's structural coefficients.
pub fn linear_beta(d_t: usize) -> Vec<f64> {
    (0..d_t).map(|j| 1.0 - 0.5 * j as f64).collect()
}

/// f(X) = (‖AᵀX‖²/10 − 5000)/1000 for a flattened 64×64 image X (docs/protocols.md).
pub fn dsprites_f(a: &Matrix, x: &[f64]) -> f64 {
    let mut norm2 = 0.0;
    for j in 0..a.cols {
        let mut s = 0.0;
        for (p, xv) in x.iter().enumerate() {
            s += a.data[p * a.cols + j] * xv;
        }
        norm2 += s * s;
    }
    (norm2 / 10.0 - 5000.0) / 1000.0
}

/// Latent ids (scale, orientation, posX, posY) of the 588-image test grid, in loop order.
pub fn dsprites_test_latents() -> Vec<[usize; 4]> {
    let mut out = Vec::new();
    for px in (0..32).step_by(5) {
        for py in (0..32).step_by(5) {
            for sc in [0, 3, 5] {
                for or in [0, 10, 20, 30] {
                    out.push([sc, or, px, py]);
                }
            }
        }
    }
    out
}

/// Training draw with its latent ids (for tests of the confounding).
pub struct DspritesDraw {
    pub data: IvDataset,
    pub latents: Vec<[usize; 4]>,
}

/// dSprites IV (docs/protocols.md). Draws, in order: posX ids, posY ids, scale ids, orientation ids
/// (uniform on their grids), pixel noise N(0, 0.1²) per pixel, outcome noise N(0, 0.5²).
/// T = image + noise, Z = (scale, orientation, posX) values, Y = f(T) + (posY_id − 16) + noise.
pub fn dsprites(
    n: usize,
    seed: u64,
    a: &Matrix,
    images: &mut ImageSource,
) -> Result<DspritesDraw, InputError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let px: Vec<usize> = (0..n).map(|_| rng.random_range(0..32)).collect();
    let py: Vec<usize> = (0..n).map(|_| rng.random_range(0..32)).collect();
    let sc: Vec<usize> = (0..n).map(|_| rng.random_range(0..6)).collect();
    let or: Vec<usize> = (0..n).map(|_| rng.random_range(0..40)).collect();
    let latents: Vec<[usize; 4]> = (0..n).map(|i| [sc[i], or[i], px[i], py[i]]).collect();
    let imgs = images.images(&latents)?;
    let pix = Normal::new(0.0, 0.1).expect("valid");
    let out_noise = Normal::new(0.0, 0.5).expect("valid");
    let mut t = Vec::with_capacity(n * dsprites::PIXELS);
    for img in &imgs {
        t.extend(img.iter().map(|&v| v + pix.sample(&mut rng)));
    }
    let mut y = Vec::with_capacity(n);
    let mut z = Vec::with_capacity(3 * n);
    for (i, l) in latents.iter().enumerate() {
        let f = dsprites_f(a, &t[i * dsprites::PIXELS..(i + 1) * dsprites::PIXELS]);
        y.push(f + (l[3] as f64 - 16.0) + out_noise.sample(&mut rng));
        z.extend([
            dsprites_scale(l[0]),
            dsprites_orientation(l[1]),
            dsprites_pos(l[2]),
        ]);
    }
    let test = dsprites_test_latents();
    let timgs = images.images(&test)?;
    let tf: Vec<f64> = timgs.iter().map(|x| dsprites_f(a, x)).collect();
    let m = test.len();
    Ok(DspritesDraw {
        data: IvDataset {
            treatment: Matrix::new(n, dsprites::PIXELS, t),
            instrument: Matrix::new(n, 3, z),
            outcome: Matrix::new(n, 1, y),
            test_treatment: Matrix::new(m, dsprites::PIXELS, timgs.concat()),
            test_structural: Matrix::new(m, 1, tf),
        },
        latents,
    })
}

/// Which generator, as the `[data]` table of an IV config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataConfig {
    /// dSprites IV; `archive` = path to the official dsprites_ndarray_…_64x64.npz or .hdf5 (else
    /// procedural hearts).
    Dsprites {
        n: usize,
        /// A `.npy` to use for the projection matrix A instead of the shipped one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        matrix: Option<String>,
        #[serde(default)]
        archive: Option<String>,
    },
    /// Demand design with confounding ρ.
    Demand { n: usize, rho: f64 },
    /// Linear-Gaussian design with known coefficients.
    Linear { n: usize, d_t: usize, d_z: usize },
    /// Your data: CSV/HDF5 columns, or an HDF5 dataset saved by an earlier run (`outcome` unset).
    File {
        path: String,
        #[serde(default)]
        outcome: Option<String>,
        #[serde(default)]
        treatment: Vec<String>,
        #[serde(default)]
        instrument: Vec<String>,
        #[serde(default)]
        exog: Vec<String>,
    },
}

/// Builds (or loads) the dataset a config asks for.
pub fn build(cfg: &DataConfig, seed: u64) -> Result<IvDataset, InputError> {
    match cfg {
        DataConfig::Dsprites { n, matrix, archive } => {
            let a = match matrix {
                Some(p) => dsprites::load_matrix(Path::new(p))?,
                None => dsprites::shipped_matrix(),
            };
            let mut src = match archive {
                Some(p) => ImageSource::archive(Path::new(p))?,
                None => ImageSource::Procedural,
            };
            Ok(dsprites(*n, seed, &a, &mut src)?.data)
        }
        DataConfig::Demand { n, rho } => demand(*n, *rho, seed),
        DataConfig::Linear { n, d_t, d_z } => linear(*n, *d_t, *d_z, seed),
        DataConfig::File {
            path,
            outcome,
            treatment,
            instrument,
            exog,
        } => {
            let p = Path::new(path);
            let Some(outcome) = outcome else {
                return IvDataset::load(p);
            };
            if treatment.is_empty() || instrument.is_empty() {
                return Err(InputError::new(
                    "data.kind = \"file\" with an outcome column also needs data.treatment and data.instrument column lists",
                ));
            }
            if instrument.len() + exog.len() < treatment.len() {
                return Err(InputError::new(format!(
                    "under-identified: {} instrument(s) for {} treatment(s)",
                    instrument.len(),
                    treatment.len()
                )));
            }
            let table = crate::data::read_table(p)?;
            let x = table.matrix(exog)?;
            // Exogenous covariates enter both networks (DFIV's convention for the demand design).
            let d = IvDataset {
                treatment: table.matrix(treatment)?.hcat(&x),
                instrument: table.matrix(instrument)?.hcat(&x),
                outcome: table.matrix(std::slice::from_ref(outcome))?,
                test_treatment: Matrix::zeros(0, treatment.len() + exog.len()),
                test_structural: Matrix::zeros(0, 1),
            };
            Ok(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latent_grids_match_dsprites() {
        assert_eq!(dsprites_scale(0), 0.5);
        assert!((dsprites_scale(1) - 0.6).abs() < 1e-15);
        assert_eq!(dsprites_scale(5), 1.0);
        assert_eq!(dsprites_orientation(0), 0.0);
        assert!((dsprites_orientation(39) - 2.0 * std::f64::consts::PI).abs() < 1e-15);
        assert!((dsprites_orientation(1) - 2.0 * std::f64::consts::PI / 39.0).abs() < 1e-15);
        assert_eq!(dsprites_pos(31), 1.0);
        assert!((dsprites_pos(1) - 1.0 / 31.0).abs() < 1e-15);
        let test = dsprites_test_latents();
        assert_eq!(test.len(), 588);
        assert!(
            test.iter()
                .all(|l| l[2] % 5 == 0 && l[3] % 5 == 0 && l[2] <= 30)
        );
    }

    #[test]
    fn demand_design_values_and_grid() {
        // ψ(5) = 2(0 + 1 + 0.5 − 2) = −1.
        assert!((demand_psi(5.0) + 1.0).abs() < 1e-15);
        assert!((demand_f(10.0, 5.0, 2.0) - (100.0 - 40.0 - 20.0)).abs() < 1e-12);
        let d = demand(1000, 0.5, 0).unwrap();
        assert_eq!(d.test_structural.rows, 2800);
        assert_eq!(d.rows(), 1000);
        let s: Vec<f64> = (0..1000).map(|r| d.treatment.at(r, 2)).collect();
        assert!(
            s.iter()
                .all(|&v| (1.0..=7.0).contains(&v) && v.fract() == 0.0)
        );
        // Price is confounded: corr(p − E[p|c,t], y − f) ≈ ρ·sd… > 0.
        let resid: Vec<f64> = (0..1000)
            .map(|r| {
                let (p, t, s) = (
                    d.treatment.at(r, 0),
                    d.treatment.at(r, 1),
                    d.treatment.at(r, 2),
                );
                d.outcome.data[r] - demand_f(p, t, s)
            })
            .collect();
        let v: Vec<f64> = (0..1000)
            .map(|r| {
                let t = d.treatment.at(r, 1);
                d.treatment.at(r, 0) - 25.0 - (d.instrument.at(r, 0) + 3.0) * demand_psi(t)
            })
            .collect();
        let c = corr(&resid, &v);
        assert!((c - 0.5).abs() < 0.08, "corr(e, v) = {c}");
        assert!(demand(10, 1.5, 0).is_err());
    }

    pub(crate) fn corr(a: &[f64], b: &[f64]) -> f64 {
        let n = a.len() as f64;
        let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
        let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
        let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
        let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
        cov / (va * vb).sqrt()
    }

    fn matrix_a() -> Matrix {
        crate::dsprites::shipped_matrix()
    }

    /// f on known images: the blank image gives −5; a one-pixel image e_p gives
    /// (Σ_j A_pj²/10 − 5000)/1000; an all-ones image gives (Σ_j (Σ_p A_pj)²/10 − 5000)/1000.
    #[test]
    fn dsprites_f_on_known_images() {
        let a = matrix_a();
        assert_eq!(dsprites_f(&a, &vec![0.0; 4096]), -5.0);
        let p = 1234;
        let mut e = vec![0.0; 4096];
        e[p] = 1.0;
        let want = ((0..10).map(|j| a.at(p, j).powi(2)).sum::<f64>() / 10.0 - 5000.0) / 1000.0;
        assert!((dsprites_f(&a, &e) - want).abs() < 1e-12);
        let col: Vec<f64> = (0..10)
            .map(|j| (0..4096).map(|r| a.at(r, j)).sum())
            .collect();
        let want = (col.iter().map(|c| c * c).sum::<f64>() / 10.0 - 5000.0) / 1000.0;
        assert!((dsprites_f(&a, &vec![1.0; 4096]) - want).abs() < 1e-9 * want.abs());
    }

    /// The confounder posY enters Y (Y − f(T) − (posY − 16) is the N(0, 0.5²) noise) but not Z
    /// (Z is exactly the scale, orientation and posX latent values); test grid of 588 noise-free images.
    #[test]
    fn dsprites_draw_confounds_through_pos_y_only() {
        let a = matrix_a();
        let n = 600;
        let d = dsprites(n, 5, &a, &mut ImageSource::Procedural).unwrap();
        assert_eq!(d.data.test_structural.rows, 588);
        assert_eq!(d.data.test_treatment.cols, 4096);
        // Test images are binary (noise-free) and their f is recomputed exactly.
        assert!(
            d.data
                .test_treatment
                .data
                .iter()
                .all(|&v| v == 0.0 || v == 1.0)
        );
        let pos_y: Vec<f64> = d.latents.iter().map(|l| l[3] as f64).collect();
        let mut resid = Vec::new();
        for (r, l) in d.latents.iter().enumerate() {
            let f = dsprites_f(&a, d.data.treatment.row(r));
            resid.push(d.data.outcome.data[r] - f - (l[3] as f64 - 16.0));
            assert_eq!(
                d.data.instrument.row(r),
                &[
                    dsprites_scale(l[0]),
                    dsprites_orientation(l[1]),
                    dsprites_pos(l[2])
                ]
            );
        }
        let sd = (resid.iter().map(|x| x * x).sum::<f64>() / n as f64).sqrt();
        assert!((sd - 0.5).abs() < 0.05, "outcome noise sd {sd}");
        let y_minus_f: Vec<f64> = (0..n)
            .map(|r| d.data.outcome.data[r] - dsprites_f(&a, d.data.treatment.row(r)))
            .collect();
        assert!(corr(&y_minus_f, &pos_y) > 0.99);
        for j in 0..3 {
            let z: Vec<f64> = (0..n).map(|r| d.data.instrument.at(r, j)).collect();
            assert!(
                corr(&z, &pos_y).abs() < 0.12,
                "instrument {j} correlates with posY"
            );
        }
        // Pixel noise is N(0, 0.1²): T minus the clean image.
        let clean = crate::dsprites::render_heart(d.latents[0]);
        let noise: Vec<f64> = d
            .data
            .treatment
            .row(0)
            .iter()
            .zip(&clean)
            .map(|(t, c)| t - c)
            .collect();
        let sd = (noise.iter().map(|x| x * x).sum::<f64>() / 4096.0).sqrt();
        assert!((sd - 0.1).abs() < 0.005, "pixel noise sd {sd}");
    }

    #[test]
    fn dataset_hdf5_round_trip() {
        let d = linear(50, 2, 3, 7).unwrap();
        let p = std::env::temp_dir().join(format!("funcrl-ivds-{}.h5", std::process::id()));
        d.save(&p).unwrap();
        assert_eq!(IvDataset::load(&p).unwrap(), d);
    }
}
