//! Flat HDF5 datasets by name: the checkpoint and the replay buffer store vectors and scalars only.

use hdf5::{Group, H5Type};

pub type H5Result<T> = hdf5::Result<T>;

/// Writes `values` as a 1-D dataset `name` in `g`.
pub fn put<T: H5Type>(g: &Group, name: &str, values: &[T]) -> H5Result<()> {
    let ds = g.new_dataset::<T>().shape(values.len()).create(name)?;
    if !values.is_empty() {
        ds.write_raw(values)?;
    }
    Ok(())
}

/// Reads the 1-D dataset `name`.
pub fn get<T: H5Type>(g: &Group, name: &str) -> H5Result<Vec<T>> {
    let ds = g.dataset(name)?;
    if ds.size() == 0 {
        return Ok(Vec::new());
    }
    ds.read_raw::<T>()
}

pub fn put_u64(g: &Group, name: &str, v: u64) -> H5Result<()> {
    put(g, name, &[v])
}

pub fn get_u64(g: &Group, name: &str) -> H5Result<u64> {
    get::<u64>(g, name)?
        .first()
        .copied()
        .ok_or_else(|| hdf5::Error::from(format!("dataset {name} is empty")))
}

/// Writes named series into a new HDF5 file at `path` (the run's `log.h5`).
pub fn write_series(path: &std::path::Path, series: &[(&str, &[f64])]) -> H5Result<()> {
    let f = hdf5::File::create(path)?;
    for (name, values) in series {
        // Metric names contain '/', which HDF5 reads as groups: keep them flat.
        put(&f, &name.replace('/', "."), values)?;
    }
    Ok(())
}
