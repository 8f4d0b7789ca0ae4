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

/// Writes named matrices (and scalar attributes) to an HDF5 file, one dataset each.
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
    }
    std::fs::rename(&tmp, path).map_err(|e| hdf5::Error::from(e.to_string().as_str()))?;
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
