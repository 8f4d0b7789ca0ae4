//! dSprites images: procedurally rendered hearts on the dSprites latent grid, or the official
//! archive `dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz` when a user supplies it; and the
//! `.npy` reader for the matrix A.
//!
//! How close the rendering is: the official hearts are bitmaps from the dSprites authors whose
//! exact outline, size per scale and margin per position are not published as formulas (and the
//! archive cannot be downloaded here). We draw the classic implicit heart (x²+y²−1)³ ≤ x²y³,
//! point down, 64×64 binary, half-width 10·scale px, rotated by the orientation latent about its
//! centre, centre at 14 + 36·pos px in x and y. So the latent grid, the binary values, the
//! per-latent geometry (size ∝ scale, rotation, translation) and the image count per latent are
//! those of dSprites; individual pixels are not. f, the noise, the instrument and the confounder
//! follow SPEC §2 exactly either way. Pass the archive for pixel-exact images.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::config::UsageError;
use crate::iv::data::Matrix;
use crate::iv::generate::{dsprites_orientation, dsprites_pos, dsprites_scale};

pub const SIDE: usize = 64;
pub const PIXELS: usize = SIDE * SIDE;

/// Where images come from.
pub enum ImageSource {
    Procedural,
    /// The official .npz (read lazily, streaming only the images asked for).
    Archive(PathBuf),
}

impl ImageSource {
    pub fn archive(path: &Path) -> Result<Self, UsageError> {
        if !path.is_file() {
            return Err(UsageError::new(format!(
                "dSprites archive {} does not exist (dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz)",
                path.display()
            )));
        }
        Ok(ImageSource::Archive(path.to_path_buf()))
    }

    /// Heart images (values 0/1, row-major 64×64) at latent ids (scale, orientation, posX, posY).
    pub fn images(&mut self, latents: &[[usize; 4]]) -> Result<Vec<Vec<f64>>, UsageError> {
        match self {
            ImageSource::Procedural => Ok(latents.iter().map(|l| render_heart(*l)).collect()),
            ImageSource::Archive(p) => read_archive(p, latents),
        }
    }
}

/// Index of an image in the official archive (latent sizes 1, 3, 6, 40, 32, 32; heart = shape 2).
pub fn archive_index(l: [usize; 4]) -> usize {
    2 * 245_760 + l[0] * 40_960 + l[1] * 1024 + l[2] * 32 + l[3]
}

/// The procedural heart at latent ids (scale, orientation, posX, posY).
pub fn render_heart(l: [usize; 4]) -> Vec<f64> {
    let (s, th) = (dsprites_scale(l[0]), dsprites_orientation(l[1]));
    let (cx, cy) = (
        14.0 + 36.0 * dsprites_pos(l[2]),
        14.0 + 36.0 * dsprites_pos(l[3]),
    );
    let r = 10.0 * s;
    let (c, sn) = (th.cos(), th.sin());
    let mut img = vec![0.0; PIXELS];
    for row in 0..SIDE {
        for col in 0..SIDE {
            // Pixel centre relative to the sprite centre, rotated back into the sprite frame.
            let (dx, dy) = ((col as f64 + 0.5 - cx) / r, (row as f64 + 0.5 - cy) / r);
            let x = c * dx + sn * dy;
            // Image rows grow downwards; the heart's lobes are up (+y), shifted so its box is centred.
            let y = -(-sn * dx + c * dy) + 0.12;
            let q = x * x + y * y - 1.0;
            if q * q * q - x * x * y * y * y <= 0.0 {
                img[row * SIDE + col] = 1.0;
            }
        }
    }
    img
}

/// Parsed `.npy` header: dtype descriptor, shape, byte offset of the data.
struct NpyHeader {
    descr: String,
    shape: Vec<usize>,
    fortran: bool,
}

fn parse_npy_header(r: &mut impl Read, what: &str) -> Result<NpyHeader, UsageError> {
    let bad = |m: &str| UsageError::new(format!("{what}: not a .npy file ({m})"));
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|_| bad("short"))?;
    if &magic[..6] != b"\x93NUMPY" {
        return Err(bad("magic"));
    }
    let len = if magic[6] == 1 {
        let mut b = [0u8; 2];
        r.read_exact(&mut b).map_err(|_| bad("short"))?;
        u16::from_le_bytes(b) as usize
    } else {
        let mut b = [0u8; 4];
        r.read_exact(&mut b).map_err(|_| bad("short"))?;
        u32::from_le_bytes(b) as usize
    };
    let mut h = vec![0u8; len];
    r.read_exact(&mut h).map_err(|_| bad("short header"))?;
    let h = String::from_utf8_lossy(&h).to_string();
    let field = |key: &str| -> Option<String> {
        let i = h.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = h[i..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest.to_string())
    };
    let descr = field("descr")
        .and_then(|s| s.split('\'').nth(1).map(str::to_string))
        .ok_or_else(|| bad("descr"))?;
    let fortran = field("fortran_order").is_some_and(|s| s.starts_with("True"));
    let shape_s = field("shape").ok_or_else(|| bad("shape"))?;
    let inner = &shape_s[1..shape_s.find(')').ok_or_else(|| bad("shape"))?];
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad("shape")))
        .collect::<Result<_, _>>()?;
    Ok(NpyHeader {
        descr,
        shape,
        fortran,
    })
}

/// Reads a float64 2-D `.npy` (C order), e.g. data/dsprite_mat.npy (4096×10).
pub fn load_matrix(path: &Path) -> Result<Matrix, UsageError> {
    let what = path.display().to_string();
    let mut f = std::fs::File::open(path)
        .map_err(|e| UsageError::new(format!("cannot open {what}: {e} (the dSprites matrix A)")))?;
    let h = parse_npy_header(&mut f, &what)?;
    if h.descr != "<f8" || h.fortran || h.shape.len() != 2 {
        return Err(UsageError::new(format!(
            "{what}: expected a C-order float64 matrix, found {} {:?}",
            h.descr, h.shape
        )));
    }
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)
        .map_err(|e| UsageError::new(format!("{what}: {e}")))?;
    let n = h.shape[0] * h.shape[1];
    if bytes.len() < 8 * n {
        return Err(UsageError::new(format!("{what}: truncated")));
    }
    let data = bytes[..8 * n]
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    Ok(Matrix::new(h.shape[0], h.shape[1], data))
}

/// Streams `imgs.npy` out of the official archive, keeping only the requested images.
fn read_archive(path: &Path, latents: &[[usize; 4]]) -> Result<Vec<Vec<f64>>, UsageError> {
    let what = path.display().to_string();
    let err = |e: &dyn std::fmt::Display| UsageError::new(format!("{what}: {e}"));
    let file = std::fs::File::open(path).map_err(|e| err(&e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| err(&e))?;
    let mut imgs = zip.by_name("imgs.npy").map_err(|e| err(&e))?;
    let h = parse_npy_header(&mut imgs, &what)?;
    if h.descr != "|u1" || h.shape != [737_280, 64, 64] {
        return Err(UsageError::new(format!(
            "{what}: imgs.npy is {} {:?}, expected uint8 (737280, 64, 64)",
            h.descr, h.shape
        )));
    }
    let mut want: Vec<(usize, usize)> = latents
        .iter()
        .enumerate()
        .map(|(i, l)| (archive_index(*l), i))
        .collect();
    want.sort_unstable();
    let mut out = vec![Vec::new(); latents.len()];
    let mut buf = vec![0u8; PIXELS];
    let mut at = 0usize;
    let mut k = 0;
    while k < want.len() {
        imgs.read_exact(&mut buf).map_err(|e| err(&e))?;
        while k < want.len() && want[k].0 == at {
            out[want[k].1] = buf.iter().map(|&b| b as f64).collect();
            k += 1;
        }
        at += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_a_is_the_shipped_one() {
        let a = load_matrix(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/data/dsprite_mat.npy"
        )))
        .unwrap();
        assert_eq!((a.rows, a.cols), (4096, 10));
        assert!(a.data.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn hearts_grow_with_scale_move_with_position_and_stay_in_frame() {
        let area = |l| render_heart(l).iter().sum::<f64>();
        let (small, big) = (area([0, 0, 16, 16]), area([5, 0, 16, 16]));
        // Area ∝ scale²: (1/0.5)² = 4, up to pixelisation.
        assert!((big / small - 4.0).abs() < 0.3, "{small} {big}");
        for l in [[5, 7, 0, 0], [5, 13, 31, 31], [5, 20, 0, 31]] {
            let img = render_heart(l);
            let border: f64 = (0..64)
                .map(|i| img[i] + img[63 * 64 + i] + img[i * 64] + img[i * 64 + 63])
                .sum();
            assert_eq!(border, 0.0, "{l:?} touches the frame");
            assert!(
                (img.iter().sum::<f64>() - area([5, 0, 16, 16])).abs() < 0.1 * area([5, 0, 16, 16])
            );
        }
        // posX moves columns, posY moves rows.
        let com = |img: &[f64]| {
            let m: f64 = img.iter().sum();
            let r: f64 = (0..PIXELS).map(|p| (p / 64) as f64 * img[p]).sum::<f64>() / m;
            let c: f64 = (0..PIXELS).map(|p| (p % 64) as f64 * img[p]).sum::<f64>() / m;
            (r, c)
        };
        let (r0, c0) = com(&render_heart([3, 0, 0, 0]));
        let (r1, c1) = com(&render_heart([3, 0, 31, 0]));
        assert!((c1 - c0 - 36.0).abs() < 1.0 && (r1 - r0).abs() < 1e-9);
        assert_eq!(archive_index([0, 0, 0, 0]), 491_520);
        assert_eq!(archive_index([5, 39, 31, 31]), 737_279);
    }
}
