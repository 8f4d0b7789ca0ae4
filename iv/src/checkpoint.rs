//! A deep IV run's checkpoint: a solver [`State`] in an HDF5 file with the format version and
//! checksum of [`write_hdf5`] (so a damaged file is refused, not resumed), written atomically.
//!
//! Each tensor list `name` is two datasets, `t:name` (its values, 1 × len) and `s:name` (its
//! shapes, k × 2); each number is `n:name` (1 × 1).

use std::path::Path;

pub use funcrl_bilevel::State;
use funcrl_bilevel::state::Stored;

use crate::InputError;
use crate::data::{Matrix, read_matrix, verify_blocks, write_hdf5};

/// The checkpoint's file name in a run directory.
pub const FILE: &str = "checkpoint.h5";

fn blocks(state: &State) -> Vec<(String, Matrix)> {
    let mut out = Vec::new();
    for (name, s) in &state.tensors {
        out.push((
            format!("t:{name}"),
            Matrix::new(1, s.values.len(), s.values.clone()),
        ));
        let shapes = s
            .shapes
            .iter()
            .flat_map(|&[r, c]| [r as f64, c as f64])
            .collect();
        out.push((format!("s:{name}"), Matrix::new(s.shapes.len(), 2, shapes)));
    }
    for (name, v) in &state.numbers {
        out.push((format!("n:{name}"), Matrix::new(1, 1, vec![*v])));
    }
    // Sorted, so that the checksum is taken in the same order on reading.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Writes `state` to `path` (temporary file, then rename).
pub fn write(path: &Path, state: &State) -> hdf5::Result<()> {
    let b = blocks(state);
    let refs: Vec<(&str, &Matrix)> = b.iter().map(|(n, m)| (n.as_str(), m)).collect();
    write_hdf5(path, &refs)
}

/// Reads a checkpoint written by [`write`]; a file that fails its checksum is an error.
pub fn read(path: &Path) -> Result<State, InputError> {
    let err = |e: String| InputError::new(format!("{}: {e}", path.display()));
    let file = hdf5::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut names: Vec<String> = file
        .member_names()
        .map_err(|e| err(e.to_string()))?
        .into_iter()
        .filter(|n| !n.starts_with("funcrl_"))
        .collect();
    names.sort();
    let mut b = Vec::with_capacity(names.len());
    for n in &names {
        b.push((
            n.clone(),
            read_matrix(&file, n).map_err(|e| err(e.to_string()))?,
        ));
    }
    let refs: Vec<(&str, &Matrix)> = b.iter().map(|(n, m)| (n.as_str(), m)).collect();
    verify_blocks(&file, &refs).map_err(err)?;
    let mut state = State::default();
    for (n, m) in &b {
        if let Some(name) = n.strip_prefix("n:") {
            let v = *m.data.first().ok_or_else(|| err(format!("{n} is empty")))?;
            state.numbers.insert(name.to_string(), v);
        } else if let Some(name) = n.strip_prefix("t:") {
            let s = b
                .iter()
                .find(|(k, _)| k.strip_prefix("s:") == Some(name))
                .ok_or_else(|| err(format!("{name} has no shapes")))?;
            let shapes = (0..s.1.rows)
                .map(|r| [s.1.at(r, 0) as usize, s.1.at(r, 1) as usize])
                .collect();
            state.tensors.insert(
                name.to_string(),
                Stored {
                    shapes,
                    values: m.data.clone(),
                },
            );
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use funcrl_bilevel::{Ctx, Params, Precision};

    #[test]
    fn a_state_round_trips_and_a_flipped_byte_is_refused() {
        let ctx = Ctx::flex(Precision::F64);
        let mut s = State::default();
        s.put(
            "omega",
            &Params::new(vec![
                ctx.tensor2(vec![0.25, -1.5, 3.0, 1e-300], 2, 2),
                ctx.tensor2(vec![7.0], 1, 1),
            ]),
        );
        s.put_number("iteration", 12.0);
        s.put_number("run.test_mse", f64::NAN);
        let dir = std::env::temp_dir().join(format!("funcrl-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(FILE);
        write(&p, &s).unwrap();
        let back = read(&p).unwrap();
        assert_eq!(back.tensors, s.tensors);
        assert_eq!(back.numbers["iteration"], 12.0);
        assert!(back.numbers["run.test_mse"].is_nan());
        // Damage one stored value (-1.5 = 0xBFF8000000000000 little-endian: its last byte 0xBF).
        let mut bytes = std::fs::read(&p).unwrap();
        let pat = (-1.5f64).to_le_bytes();
        let at = bytes
            .windows(8)
            .position(|w| w == pat)
            .expect("the value is stored raw");
        bytes[at] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("checksum mismatch"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
