//! Named numeric columns: bring-your-own data from CSV (with a header) or HDF5 (one dataset per
//! column), and the save/load format of generated datasets.
//!
//! Every failure a user can cause (missing file, missing column, NaN, ragged rows) is a
//! [`InputError`] so the CLI exits with code 2 and says what to change.

use std::path::Path;

use crate::InputError;

/// Columns by name, all of the same length. Multi-column blocks (e.g. 4,096 image pixels) are
/// stored as matrices under one name in [`Dataset`]; a `Table` is the flat, user-facing view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub names: Vec<String>,
    pub columns: Vec<Vec<f64>>,
}

impl Table {
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, Vec::len)
    }

    /// The column `name`, or an error listing the columns there are.
    pub fn column(&self, name: &str) -> Result<&[f64], InputError> {
        let i = self.names.iter().position(|n| n == name).ok_or_else(|| {
            InputError::new(format!(
                "column '{name}' is not in the data (columns: {})",
                self.names.join(", ")
            ))
        })?;
        Ok(&self.columns[i])
    }

    /// Row-major n×k matrix of the named columns, refusing NaN and infinities.
    pub fn matrix(&self, names: &[String]) -> Result<Matrix, InputError> {
        let n = self.rows();
        let cols: Vec<&[f64]> = names
            .iter()
            .map(|c| self.column(c))
            .collect::<Result<_, _>>()?;
        for (name, col) in names.iter().zip(&cols) {
            if let Some(r) = col.iter().position(|v| !v.is_finite()) {
                return Err(InputError::new(format!(
                    "column '{name}' has a missing or non-finite value at row {} (NaN/inf are not allowed; drop or impute those rows)",
                    r + 1
                )));
            }
        }
        let mut data = Vec::with_capacity(n * names.len());
        for r in 0..n {
            data.extend(cols.iter().map(|c| c[r]));
        }
        Ok(Matrix {
            rows: n,
            cols: names.len(),
            data,
        })
    }
}

/// A row-major dense matrix on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

impl Matrix {
    pub fn new(rows: usize, cols: usize, data: Vec<f64>) -> Self {
        assert_eq!(data.len(), rows * cols, "matrix {rows}x{cols}");
        Self { rows, cols, data }
    }
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self::new(rows, cols, vec![0.0; rows * cols])
    }
    pub fn row(&self, r: usize) -> &[f64] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
    pub fn at(&self, r: usize, c: usize) -> f64 {
        self.data[r * self.cols + c]
    }
    /// Rows `lo..hi`.
    pub fn slice_rows(&self, lo: usize, hi: usize) -> Matrix {
        Matrix::new(
            hi - lo,
            self.cols,
            self.data[lo * self.cols..hi * self.cols].to_vec(),
        )
    }
    /// (columns `..k`, columns `k..`): the inverse of [`hcat`](Self::hcat).
    pub fn split_cols(&self, k: usize) -> (Matrix, Matrix) {
        assert!(k <= self.cols);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for r in 0..self.rows {
            a.extend_from_slice(&self.row(r)[..k]);
            b.extend_from_slice(&self.row(r)[k..]);
        }
        (
            Matrix::new(self.rows, k, a),
            Matrix::new(self.rows, self.cols - k, b),
        )
    }
    /// [self, other] side by side.
    pub fn hcat(&self, other: &Matrix) -> Matrix {
        assert_eq!(self.rows, other.rows);
        let mut data = Vec::with_capacity(self.rows * (self.cols + other.cols));
        for r in 0..self.rows {
            data.extend_from_slice(self.row(r));
            data.extend_from_slice(other.row(r));
        }
        Matrix::new(self.rows, self.cols + other.cols, data)
    }
}

/// Reads a CSV file with a header row; every cell must parse as a number (empty, `NA` and `nan`
/// become NaN so that the column check reports them by row).
pub fn read_csv(path: &Path) -> Result<Table, InputError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| InputError::new(format!("cannot read {}: {e}", path.display())))?;
    let names: Vec<String> = rdr
        .headers()
        .map_err(|e| InputError::new(format!("{}: bad header: {e}", path.display())))?
        .iter()
        .map(str::to_string)
        .collect();
    // A repeated name would make `column(name)` pick one of them silently.
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err(InputError::new(format!(
                "{}: column '{n}' appears more than once in the header",
                path.display()
            )));
        }
    }
    let mut columns = vec![Vec::new(); names.len()];
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| InputError::new(format!("{}: {e}", path.display())))?;
        for (j, cell) in rec.iter().enumerate() {
            let v = match cell {
                "" | "NA" | "na" | "NaN" | "nan" => f64::NAN,
                s => s.parse::<f64>().map_err(|_| {
                    InputError::new(format!(
                        "{}: row {}, column '{}': '{s}' is not a number",
                        path.display(),
                        i + 2,
                        names[j]
                    ))
                })?,
            };
            columns[j].push(v);
        }
    }
    Ok(Table { names, columns })
}

fn h5err(path: &Path, e: hdf5::Error) -> InputError {
    InputError::new(format!("HDF5 {}: {e}", path.display()))
}

/// Reads every top-level dataset of an HDF5 file: 1-D datasets become one column, n×k datasets
/// become columns `name_0..name_{k-1}` (and `name` itself when k = 1).
pub fn read_hdf5(path: &Path) -> Result<Table, InputError> {
    let file = hdf5::File::open(path).map_err(|e| h5err(path, e))?;
    let mut t = Table::default();
    for name in file.member_names().map_err(|e| h5err(path, e))? {
        // The format version and checksum of a file funcrl wrote are not data.
        if name == "funcrl_format_version" || name == "funcrl_checksum" {
            continue;
        }
        let Ok(ds) = file.dataset(&name) else {
            continue; // groups are not columns
        };
        let shape = ds.shape();
        let values: Vec<f64> = ds.read_raw::<f64>().map_err(|e| h5err(path, e))?;
        match shape.as_slice() {
            [_] => {
                t.names.push(name);
                t.columns.push(values);
            }
            [n, 1] => {
                t.names.push(name);
                t.columns.push(values[..*n].to_vec());
            }
            [n, k] => {
                for j in 0..*k {
                    t.names.push(format!("{name}_{j}"));
                    t.columns.push((0..*n).map(|r| values[r * k + j]).collect());
                }
            }
            _ => continue,
        }
    }
    if let Some(n) = t.columns.first().map(Vec::len)
        && let Some(j) = t.columns.iter().position(|c| c.len() != n)
    {
        return Err(InputError::new(format!(
            "{}: dataset '{}' has {} rows, '{}' has {n}",
            path.display(),
            t.names[j],
            t.columns[j].len(),
            t.names[0]
        )));
    }
    Ok(t)
}

/// CSV or HDF5 by extension (.csv / .h5 / .hdf5).
pub fn read_table(path: &Path) -> Result<Table, InputError> {
    if !path.is_file() {
        return Err(InputError::new(format!(
            "data file {} does not exist",
            path.display()
        )));
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => read_csv(path),
        Some("h5" | "hdf5") => read_hdf5(path),
        _ => Err(InputError::new(format!(
            "{}: unknown data format (use .csv with a header row, or .h5/.hdf5 with one dataset per column)",
            path.display()
        ))),
    }
}

/// The format of the HDF5 files funcrl writes here (1: one f64 dataset per block, with
/// `funcrl_format_version` and `funcrl_checksum`, a CRC-32 of the blocks' names and values).
pub const DATA_FORMAT_VERSION: u64 = 1;

/// CRC-32 of named blocks, in the given order (name bytes, then values little-endian).
pub fn blocks_checksum(blocks: &[(&str, &Matrix)]) -> u64 {
    let mut h = crc32fast::Hasher::new();
    for (name, m) in blocks {
        h.update(name.as_bytes());
        for v in &m.data {
            h.update(&v.to_le_bytes());
        }
    }
    h.finalize() as u64
}

/// Writes named matrices to an HDF5 file, one dataset each, with the format version and a
/// checksum that [`verify_blocks`] checks on reading; atomically (temporary file, rename).
pub fn write_hdf5(path: &Path, blocks: &[(&str, &Matrix)]) -> hdf5::Result<()> {
    let tmp = path.with_extension("h5.tmp");
    {
        let file = hdf5::File::create(&tmp)?;
        for (name, m) in blocks {
            let ds = file
                .new_dataset::<f64>()
                .shape([m.rows, m.cols])
                .create(*name)?;
            ds.write_raw(&m.data[..])?;
        }
        for (name, v) in [
            ("funcrl_format_version", DATA_FORMAT_VERSION),
            ("funcrl_checksum", blocks_checksum(blocks)),
        ] {
            file.new_dataset::<u64>()
                .shape(1)
                .create(name)?
                .write_raw(&[v])?;
        }
    }
    std::fs::rename(&tmp, path).map_err(|e| hdf5::Error::from(e.to_string().as_str()))?;
    Ok(())
}

/// Checks a file written by [`write_hdf5`] against the blocks read from it: its format version
/// and checksum. A file without them (bring-your-own data) passes.
pub fn verify_blocks(file: &hdf5::File, blocks: &[(&str, &Matrix)]) -> Result<(), String> {
    let scalar = |n: &str| -> Result<Option<u64>, String> {
        if !file.link_exists(n) {
            return Ok(None);
        }
        let v = file
            .dataset(n)
            .and_then(|d| d.read_raw::<u64>())
            .map_err(|e| format!("{n}: {e}"))?;
        Ok(v.first().copied())
    };
    if let Some(v) = scalar("funcrl_format_version")?
        && v != DATA_FORMAT_VERSION
    {
        return Err(format!(
            "format version {v}; this funcrl reads version {DATA_FORMAT_VERSION}"
        ));
    }
    if let Some(stored) = scalar("funcrl_checksum")? {
        let sum = blocks_checksum(blocks);
        if sum != stored {
            return Err(format!(
                "checksum mismatch (stored {stored:#010x}, contents {sum:#010x}): the file is damaged"
            ));
        }
    }
    Ok(())
}

/// Reads one n×k dataset as a matrix (1-D datasets are n×1).
pub fn read_matrix(file: &hdf5::File, name: &str) -> hdf5::Result<Matrix> {
    let ds = file.dataset(name)?;
    let shape = ds.shape();
    let data = ds.read_raw::<f64>()?;
    let (rows, cols) = match shape.as_slice() {
        [n] => (*n, 1),
        [n, k] => (*n, *k),
        _ => {
            return Err(format!("dataset {name}: expected 1-D or 2-D")
                .as_str()
                .into());
        }
    };
    Ok(Matrix::new(rows, cols, data))
}

/// `linspace(a, b, k)` as numpy writes it.
pub fn linspace(a: f64, b: f64, k: usize) -> Vec<f64> {
    if k == 1 {
        return vec![a];
    }
    let step = (b - a) / (k - 1) as f64;
    (0..k)
        .map(|i| if i == k - 1 { b } else { a + step * i as f64 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A written file verifies; one value changed on disk (at the dataset's offset) does not.
    #[test]
    fn written_files_carry_a_checksum_that_catches_damage() {
        use std::io::{Seek, SeekFrom, Write};
        let p = std::env::temp_dir().join(format!("funcrl-sum-{}.h5", std::process::id()));
        let a = Matrix::new(3, 2, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b = Matrix::new(3, 1, vec![0.5, -1.0, 2.0]);
        write_hdf5(&p, &[("a", &a), ("b", &b)]).unwrap();
        let read = |p: &Path| {
            let f = hdf5::File::open(p).unwrap();
            let (a, b) = (read_matrix(&f, "a").unwrap(), read_matrix(&f, "b").unwrap());
            verify_blocks(&f, &[("a", &a), ("b", &b)])
        };
        assert_eq!(read(&p), Ok(()));
        let offset = hdf5::File::open(&p)
            .unwrap()
            .dataset("b")
            .unwrap()
            .offset()
            .unwrap();
        let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.seek(SeekFrom::Start(offset + 9)).unwrap();
        f.write_all(&[0x42]).unwrap();
        drop(f);
        let e = read(&p).unwrap_err();
        assert!(e.contains("checksum mismatch"), "{e}");
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn a_repeated_column_name_is_refused() {
        let p = std::env::temp_dir().join(format!("funcrl-dup-{}.csv", std::process::id()));
        std::fs::write(&p, "y,z,y\n1,2,3\n").unwrap();
        let e = read_csv(&p).unwrap_err().to_string();
        assert!(e.contains("column 'y' appears more than once"), "{e}");
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn csv_columns_nan_and_missing() {
        let dir = std::env::temp_dir().join(format!("funcrl-iv-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("d.csv");
        std::fs::write(&p, "y,t,z\n1,2,3\n4,,6\n").unwrap();
        let t = read_table(&p).unwrap();
        assert_eq!(t.column("z").unwrap(), &[3.0, 6.0]);
        let e = t.matrix(&["t".into()]).unwrap_err().to_string();
        assert!(e.contains("row 2"), "{e}");
        let e = t.matrix(&["w".into()]).unwrap_err().to_string();
        assert!(e.contains("'w'") && e.contains("y, t, z"), "{e}");
    }

    #[test]
    fn hdf5_round_trip() {
        let dir = std::env::temp_dir().join(format!("funcrl-iv-h5-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("d.h5");
        let a = Matrix::new(3, 2, vec![1., 2., 3., 4., 5., 6.]);
        let y = Matrix::new(3, 1, vec![7., 8., 9.]);
        write_hdf5(&p, &[("x", &a), ("y", &y)]).unwrap();
        let t = read_table(&p).unwrap();
        assert_eq!(t.column("x_1").unwrap(), &[2., 4., 6.]);
        assert_eq!(t.column("y").unwrap(), &[7., 8., 9.]);
        let f = hdf5::File::open(&p).unwrap();
        assert_eq!(read_matrix(&f, "x").unwrap(), a);
    }
}
