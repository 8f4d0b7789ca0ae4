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

/// CRC-32 of every dataset under the groups `groups` of `f`, walked in sorted name order (each
/// dataset's path, then its values as little-endian bytes): the checksum a checkpoint stores and
/// verifies, so that a damaged file is refused instead of resuming a different run.
pub fn digest(f: &Group, groups: &[&str]) -> H5Result<u32> {
    let mut h = crc32fast::Hasher::new();
    for g in groups {
        walk(&f.group(g)?, g, &mut h)?;
    }
    Ok(h.finalize())
}

fn walk(g: &Group, path: &str, h: &mut crc32fast::Hasher) -> H5Result<()> {
    use hdf5::types::{FloatSize, IntSize, TypeDescriptor as T};
    let mut names = g.member_names()?;
    names.sort();
    for n in names {
        let p = format!("{path}/{n}");
        if let Ok(sub) = g.group(&n) {
            walk(&sub, &p, h)?;
            continue;
        }
        h.update(p.as_bytes());
        let ds = g.dataset(&n)?;
        if ds.size() == 0 {
            continue;
        }
        match ds.dtype()?.to_descriptor()? {
            T::Float(FloatSize::U8) => {
                for v in ds.read_raw::<f64>()? {
                    h.update(&v.to_le_bytes());
                }
            }
            T::Float(FloatSize::U4) => {
                for v in ds.read_raw::<f32>()? {
                    h.update(&v.to_le_bytes());
                }
            }
            T::Unsigned(IntSize::U8) => {
                for v in ds.read_raw::<u64>()? {
                    h.update(&v.to_le_bytes());
                }
            }
            T::Unsigned(IntSize::U1) => h.update(&ds.read_raw::<u8>()?),
            other => return Err(format!("{p}: unexpected type {other:?}").into()),
        }
    }
    Ok(())
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
