//! dSprites images: procedurally rendered hearts on the dSprites latent grid, or the official
//! archive `dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz` (or its `.hdf5` release) when a user
//! supplies it; and the `.npy` reader for the matrix A.
//!
//! How close the rendering is: the official hearts are bitmaps from the dSprites authors whose
//! exact outline, size per scale and margin per position are not published as formulas (and the
//! archive cannot be downloaded here). We draw the classic implicit heart (x²+y²−1)³ ≤ x²y³,
//! point down, 64×64 binary, half-width 10·scale px, rotated by the orientation latent about its
//! centre, centre at 14 + 36·pos px in x and y. So the latent grid, the binary values, the
//! per-latent geometry (size ∝ scale, rotation, translation) and the image count per latent are
//! those of dSprites; individual pixels are not. f, the noise, the instrument and the confounder
//! follow the protocol (docs/protocols.md) exactly either way. Pass the archive for pixel-exact images.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::InputError;
use crate::data::{Matrix, linspace};

/// dSprites latent grid values (dSprites' `latents_values`): scale, orientation, posX, posY.
pub fn dsprites_scale(id: usize) -> f64 {
    linspace(0.5, 1.0, 6)[id]
}
pub fn dsprites_orientation(id: usize) -> f64 {
    linspace(0.0, 2.0 * std::f64::consts::PI, 40)[id]
}
pub fn dsprites_pos(id: usize) -> f64 {
    linspace(0.0, 1.0, 32)[id]
}

pub const SIDE: usize = 64;
pub const PIXELS: usize = SIDE * SIDE;

/// Where images come from.
pub enum ImageSource {
    Procedural,
    /// The official archive, `.npz` or `.hdf5` (told apart by their magic bytes), read lazily:
    /// only the images asked for are kept.
    Archive(PathBuf),
}

impl ImageSource {
    pub fn archive(path: &Path) -> Result<Self, InputError> {
        if !path.is_file() {
            return Err(InputError::new(format!(
                "dSprites archive {} does not exist (dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz or .hdf5)",
                path.display()
            )));
        }
        Ok(ImageSource::Archive(path.to_path_buf()))
    }

    /// Heart images (values 0/1, row-major 64×64) at latent ids (scale, orientation, posX, posY).
    pub fn images(&mut self, latents: &[[usize; 4]]) -> Result<Vec<Vec<f64>>, InputError> {
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

fn parse_npy_header(r: &mut impl Read, what: &str) -> Result<NpyHeader, InputError> {
    let bad = |m: &str| InputError::new(format!("{what}: not a .npy file ({m})"));
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

/// The dSprites projection matrix A (4096×10 float64 `.npy`), compiled in: see `data/README.md`
/// of this crate for its origin and checksum.
pub const SHIPPED_MATRIX: &[u8] = include_bytes!("../data/dsprite_mat.npy");

/// The shipped matrix A (4096×10).
pub fn shipped_matrix() -> Matrix {
    parse_matrix(&mut &SHIPPED_MATRIX[..], "the shipped dSprites matrix")
        .expect("the shipped matrix is a valid .npy")
}

/// Reads a float64 2-D `.npy` (C order), e.g. a replacement for the dSprites matrix A.
pub fn load_matrix(path: &Path) -> Result<Matrix, InputError> {
    let what = path.display().to_string();
    let mut f = std::fs::File::open(path)
        .map_err(|e| InputError::new(format!("cannot open {what}: {e} (the dSprites matrix A)")))?;
    parse_matrix(&mut f, &what)
}

/// A float64 2-D C-order `.npy` from `r`; `what` names the source in errors.
fn parse_matrix(r: &mut impl Read, what: &str) -> Result<Matrix, InputError> {
    let h = parse_npy_header(r, what)?;
    if h.descr != "<f8" || h.fortran || h.shape.len() != 2 {
        return Err(InputError::new(format!(
            "{what}: expected a C-order float64 matrix, found {} {:?}",
            h.descr, h.shape
        )));
    }
    let mut bytes = Vec::new();
    r.read_to_end(&mut bytes)
        .map_err(|e| InputError::new(format!("{what}: {e}")))?;
    let n = h.shape[0] * h.shape[1];
    if bytes.len() < 8 * n {
        return Err(InputError::new(format!("{what}: truncated")));
    }
    let data = bytes[..8 * n]
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    Ok(Matrix::new(h.shape[0], h.shape[1], data))
}

/// Images from the official archive at the requested latents. Where the archive carries the latent
/// classes (`latents_classes` in the .npz, `latents/classes` in the .hdf5), each image's row is
/// checked against the dSprites order, so a reordered or foreign file is refused, not misread.
fn read_archive(path: &Path, latents: &[[usize; 4]]) -> Result<Vec<Vec<f64>>, InputError> {
    let what = path.display().to_string();
    let mut magic = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| InputError::new(format!("{what}: {e}")))?;
    // Sorted (archive index, request position): both formats are read front to back.
    let mut want: Vec<(usize, usize)> = latents
        .iter()
        .enumerate()
        .map(|(i, l)| (archive_index(*l), i))
        .collect();
    want.sort_unstable();
    if magic.starts_with(b"PK") {
        read_npz(path, &what, latents, &want)
    } else if &magic == b"\x89HDF\r\n\x1a\n" {
        read_hdf5_archive(path, &what, latents, &want)
    } else {
        Err(InputError::new(format!(
            "{what}: neither a .npz (zip) nor an HDF5 file; expected the official \
             dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz or .hdf5"
        )))
    }
}

const ARCHIVE_SHAPE: [usize; 3] = [737_280, 64, 64];

fn wrong_shape(what: &str, found: &dyn std::fmt::Debug) -> InputError {
    InputError::new(format!(
        "{what}: imgs is {found:?}, expected uint8 {ARCHIVE_SHAPE:?} (the official dSprites archive)"
    ))
}

/// Refuses an archive whose latent classes at `index` are not (color 0, heart 2, latents).
fn check_classes(what: &str, index: usize, row: &[i64], l: [usize; 4]) -> Result<(), InputError> {
    let want = [0, 2, l[0] as i64, l[1] as i64, l[2] as i64, l[3] as i64];
    if row != want {
        return Err(InputError::new(format!(
            "{what}: image {index} has latent classes {row:?}, expected {want:?} (color, shape, \
             scale, orientation, posX, posY; posY fastest): not the official dSprites order"
        )));
    }
    Ok(())
}

fn read_npz(
    path: &Path,
    what: &str,
    latents: &[[usize; 4]],
    want: &[(usize, usize)],
) -> Result<Vec<Vec<f64>>, InputError> {
    let err = |e: &dyn std::fmt::Display| InputError::new(format!("{what}: {e}"));
    let file = std::fs::File::open(path).map_err(|e| err(&e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| err(&e))?;
    let mut out = vec![Vec::new(); latents.len()];
    {
        let mut imgs = zip.by_name("imgs.npy").map_err(|e| err(&e))?;
        let h = parse_npy_header(&mut imgs, what)?;
        if h.descr != "|u1" || h.shape != ARCHIVE_SHAPE || h.fortran {
            return Err(wrong_shape(what, &(h.descr, h.shape)));
        }
        let mut buf = vec![0u8; PIXELS];
        let (mut at, mut k) = (0usize, 0);
        while k < want.len() {
            imgs.read_exact(&mut buf).map_err(|e| err(&e))?;
            while k < want.len() && want[k].0 == at {
                out[want[k].1] = buf.iter().map(|&b| b as f64).collect();
                k += 1;
            }
            at += 1;
        }
    }
    if let Ok(mut classes) = zip.by_name("latents_classes.npy") {
        let h = parse_npy_header(&mut classes, what)?;
        if h.descr != "<i8" || h.shape != [ARCHIVE_SHAPE[0], 6] || h.fortran {
            return Err(err(&format!(
                "latents_classes is {} {:?}, expected int64 [737280, 6]",
                h.descr, h.shape
            )));
        }
        let mut buf = [0u8; 48];
        let (mut at, mut k) = (0usize, 0);
        while k < want.len() {
            classes.read_exact(&mut buf).map_err(|e| err(&e))?;
            let row: Vec<i64> = buf
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect();
            while k < want.len() && want[k].0 == at {
                check_classes(what, at, &row, latents[want[k].1])?;
                k += 1;
            }
            at += 1;
        }
    }
    Ok(out)
}

fn read_hdf5_archive(
    path: &Path,
    what: &str,
    latents: &[[usize; 4]],
    want: &[(usize, usize)],
) -> Result<Vec<Vec<f64>>, InputError> {
    let err = |e: hdf5::Error| InputError::new(format!("{what}: {e}"));
    let file = hdf5::File::open(path).map_err(err)?;
    let imgs = file
        .dataset("imgs")
        .map_err(|e| InputError::new(format!("{what}: no dataset `imgs` ({e})")))?;
    if imgs.shape() != ARCHIVE_SHAPE {
        return Err(wrong_shape(what, &imgs.shape()));
    }
    let classes = file.dataset("latents/classes").ok();
    let mut out = vec![Vec::new(); latents.len()];
    // One image per read: the chunk cache serves neighbours, memory stays at one image.
    for (k, &(index, pos)) in want.iter().enumerate() {
        if k > 0 && want[k - 1].0 == index {
            out[pos] = out[want[k - 1].1].clone();
            continue;
        }
        let img = imgs.read_slice_2d::<u8, _>((index, .., ..)).map_err(err)?;
        out[pos] = img.iter().map(|&b| b as f64).collect();
        if let Some(c) = &classes {
            let row = c.read_slice_1d::<i64, _>((index, ..)).map_err(err)?;
            check_classes(what, index, &row.to_vec(), latents[pos])?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_a_is_the_shipped_one() {
        let a = shipped_matrix();
        assert_eq!((a.rows, a.cols), (4096, 10));
        assert!(a.data.iter().all(|v| (0.0..=1.0).contains(v)));
        // The compiled-in copy is the file's, read through the file loader.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/dsprite_mat.npy");
        assert_eq!(load_matrix(&path).unwrap(), a);
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

    fn mock(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/dsprites")
            .join(name)
    }

    /// The answer key that make_archive_mock.py stored beside its mock archive: latents, their
    /// index by numpy's ravel_multi_index over the documented order, and the images there.
    struct Key {
        latents: Vec<[usize; 4]>,
        index: Vec<usize>,
        images: Vec<Vec<f64>>,
    }

    fn answer_key() -> Key {
        let f = hdf5::File::open(mock("dsprites_mock.hdf5")).unwrap();
        let lat = f
            .dataset("fixture/latents")
            .unwrap()
            .read_raw::<i64>()
            .unwrap();
        let index = f
            .dataset("fixture/index")
            .unwrap()
            .read_raw::<i64>()
            .unwrap();
        let images = f
            .dataset("fixture/images")
            .unwrap()
            .read_raw::<u8>()
            .unwrap();
        Key {
            latents: lat
                .chunks_exact(4)
                .map(|c| [c[0], c[1], c[2], c[3]].map(|v| v as usize))
                .collect(),
            index: index.iter().map(|&i| i as usize).collect(),
            images: images
                .chunks_exact(PIXELS)
                .map(|c| c.iter().map(|&b| b as f64).collect())
                .collect(),
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("funcrl-dsprites-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d.join(name)
    }

    #[test]
    fn hdf5_archive_images_come_from_the_documented_index() {
        let key = answer_key();
        for (l, &i) in key.latents.iter().zip(&key.index) {
            assert_eq!(archive_index(*l), i, "{l:?}");
        }
        let mut src = ImageSource::archive(&mock("dsprites_mock.hdf5")).unwrap();
        let got = src.images(&key.latents).unwrap();
        assert_eq!(got.len(), key.images.len());
        for (k, (g, w)) in got.iter().zip(&key.images).enumerate() {
            assert!(g == w, "image {k} at latents {:?} differs", key.latents[k]);
        }
    }

    #[test]
    fn archive_with_wrong_latent_classes_or_shape_is_refused() {
        let key = answer_key();
        let mut bad = ImageSource::archive(&mock("dsprites_mock_bad_classes.hdf5")).unwrap();
        let e = bad.images(&key.latents).unwrap_err().to_string();
        assert!(e.contains("not the official dSprites order"), "{e}");
        assert!(e.contains(&key.index[2].to_string()), "{e}");

        let small = tmp("small.hdf5");
        {
            let f = hdf5::File::create(&small).unwrap();
            f.new_dataset::<u8>()
                .shape([10, 64, 64])
                .create("imgs")
                .unwrap();
        }
        let e = ImageSource::archive(&small)
            .unwrap()
            .images(&key.latents)
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected uint8 [737280, 64, 64]"), "{e}");

        let text = tmp("not_an_archive.npz");
        std::fs::write(&text, "posX,posY\n1,2\n").unwrap();
        let e = ImageSource::archive(&text)
            .unwrap()
            .images(&key.latents)
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither a .npz (zip) nor an HDF5 file"), "{e}");
        assert!(ImageSource::archive(&tmp("missing.npz")).is_err());
    }

    /// A full-shape `.npz` as numpy writes it (zip of `.npy` entries, deflated), holding the answer
    /// key's images at the indices numpy computed and zeros elsewhere; latents_classes by the
    /// documented mixed radix. The loader streams it and returns the same images.
    #[test]
    fn npz_archive_streams_the_images_at_the_documented_index() {
        use std::io::Write;
        let key = answer_key();
        let path = tmp("dsprites_mock.npz");
        {
            let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
            let opts = zip::write::FileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .compression_level(Some(1))
                .large_file(true);
            let npy = |descr: &str, shape: &str| {
                let dict =
                    format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
                let mut h = dict.into_bytes();
                while (10 + h.len() + 1) % 64 != 0 {
                    h.push(b' ');
                }
                h.push(b'\n');
                let mut out = b"\x93NUMPY\x01\x00".to_vec();
                out.extend((h.len() as u16).to_le_bytes());
                out.extend(h);
                out
            };
            zip.start_file("imgs.npy", opts).unwrap();
            zip.write_all(&npy("|u1", "(737280, 64, 64)")).unwrap();
            let mut at: Vec<(usize, usize)> =
                key.index.iter().enumerate().map(|(k, &i)| (i, k)).collect();
            at.sort_unstable();
            at.dedup_by_key(|p| p.0);
            let zeros = vec![0u8; 4096 * PIXELS];
            let mut next = 0usize;
            for (i, k) in at.iter().copied().chain([(737_280, usize::MAX)]) {
                while next < i {
                    let n = (i - next).min(4096);
                    zip.write_all(&zeros[..n * PIXELS]).unwrap();
                    next += n;
                }
                if k != usize::MAX {
                    let img: Vec<u8> = key.images[k].iter().map(|&v| v as u8).collect();
                    zip.write_all(&img).unwrap();
                    next += 1;
                }
            }
            zip.start_file("latents_classes.npy", opts).unwrap();
            zip.write_all(&npy("<i8", "(737280, 6)")).unwrap();
            let mut rows = Vec::with_capacity(737_280 * 48);
            for i in 0..737_280usize {
                let (mut r, mut row) = (i, [0i64; 6]);
                for (d, size) in [32, 32, 40, 6, 3, 1].into_iter().enumerate() {
                    row[5 - d] = (r % size) as i64;
                    r /= size;
                }
                for v in row {
                    rows.extend(v.to_le_bytes());
                }
            }
            zip.write_all(&rows).unwrap();
            zip.finish().unwrap();
        }
        let got = ImageSource::archive(&path)
            .unwrap()
            .images(&key.latents)
            .unwrap();
        std::fs::remove_file(&path).ok();
        for (k, (g, w)) in got.iter().zip(&key.images).enumerate() {
            assert!(g == w, "image {k} at latents {:?} differs", key.latents[k]);
        }
    }
}
