//! TensorBoard event files, so that `tensorboard --logdir runs` shows every run the way CleanRL
//! users are used to. The format is small and stable, so it is written here rather than through a
//! crate (the one writer on crates.io, tensorboard-rs 0.5.9, was last released in 2022 and pulls in
//! protobuf 2 and image 0.23): TFRecord framing — u64 length, masked CRC-32C of the length, the bytes, masked
//! CRC-32C of the bytes — around `Event` protobufs (wall_time = 1, step = 2, file_version = 3,
//! summary = 5) whose `Summary.Value`s carry a tag and a `simple_value` (scalars) or a string
//! tensor for the text plugin. The CRC is the `crc32c` crate's. `tests/fixtures/tb/` holds a file
//! written here and what the Python `tbparse` reads from it.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// TFRecord's CRC mask.
fn masked_crc(bytes: &[u8]) -> u32 {
    let c = crc32c::crc32c(bytes);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited protobuf field.
fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    varint(out, ((field as u64) << 3) | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    varint(out, (field as u64) << 3);
    varint(out, v);
}

fn double_field(out: &mut Vec<u8>, field: u32, v: f64) {
    varint(out, ((field as u64) << 3) | 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn float_field(out: &mut Vec<u8>, field: u32, v: f32) {
    varint(out, ((field as u64) << 3) | 5);
    out.extend_from_slice(&v.to_le_bytes());
}

/// An `Event` with the given payload field already encoded.
fn event(wall_time: f64, step: i64, payload: &[u8]) -> Vec<u8> {
    let mut e = Vec::with_capacity(payload.len() + 24);
    double_field(&mut e, 1, wall_time);
    varint_field(&mut e, 2, step as u64);
    e.extend_from_slice(payload);
    e
}

/// `Summary { value: [Value { tag, simple_value }] }` as the event's field 5.
fn scalars_payload(values: &[(&str, f64)]) -> Vec<u8> {
    let mut summary = Vec::new();
    for (tag, v) in values {
        let mut value = Vec::new();
        bytes_field(&mut value, 1, tag.as_bytes());
        float_field(&mut value, 2, *v as f32);
        bytes_field(&mut summary, 1, &value);
    }
    let mut p = Vec::new();
    bytes_field(&mut p, 5, &summary);
    p
}

/// A text summary (TensorBoard's text plugin): `Value { tag, metadata { plugin_data { plugin_name:
/// "text" } }, tensor { dtype: DT_STRING, tensor_shape { dim { size: 1 } }, string_val } }`.
fn text_payload(tag: &str, text: &str) -> Vec<u8> {
    let mut plugin = Vec::new();
    bytes_field(&mut plugin, 1, b"text");
    let mut metadata = Vec::new();
    bytes_field(&mut metadata, 1, &plugin);
    let mut dim = Vec::new();
    varint_field(&mut dim, 1, 1);
    let mut shape = Vec::new();
    bytes_field(&mut shape, 2, &dim);
    let mut tensor = Vec::new();
    varint_field(&mut tensor, 1, 7); // DT_STRING
    bytes_field(&mut tensor, 2, &shape);
    bytes_field(&mut tensor, 8, text.as_bytes());
    let mut value = Vec::new();
    bytes_field(&mut value, 1, tag.as_bytes());
    bytes_field(&mut value, 9, &metadata);
    bytes_field(&mut value, 8, &tensor);
    let mut summary = Vec::new();
    bytes_field(&mut summary, 1, &value);
    let mut p = Vec::new();
    bytes_field(&mut p, 5, &summary);
    p
}

/// Seconds since the epoch, as TensorBoard's wall_time.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One event file.
pub struct EventWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

impl EventWriter {
    /// Creates (truncates) `path` and writes the file-version event every event file starts with.
    pub fn create(path: &Path, wall_time: f64) -> io::Result<EventWriter> {
        let file = File::create(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let mut w = EventWriter {
            out: BufWriter::new(file),
            path: path.to_path_buf(),
        };
        let mut p = Vec::new();
        bytes_field(&mut p, 3, b"brain.Event:2");
        w.record(&event(wall_time, 0, &p))?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn record(&mut self, data: &[u8]) -> io::Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        self.out.write_all(&len)?;
        self.out.write_all(&masked_crc(&len).to_le_bytes())?;
        self.out.write_all(data)?;
        self.out.write_all(&masked_crc(data).to_le_bytes())
    }

    /// Scalars at `step` (one event), flushed so that TensorBoard sees them at once.
    pub fn scalars(&mut self, step: i64, wall_time: f64, values: &[(&str, f64)]) -> io::Result<()> {
        self.record(&event(wall_time, step, &scalars_payload(values)))?;
        self.out.flush()
    }

    /// A text summary at step 0 (the resolved config).
    pub fn text(&mut self, tag: &str, text: &str, wall_time: f64) -> io::Result<()> {
        self.record(&event(wall_time, 0, &text_payload(tag, text)))?;
        self.out.flush()
    }
}

/// The event file that mirrors the CSV log `csv_name` of a run directory: `tb/events.out.tfevents.funcrl.<stem>`
/// (TensorBoard reads every file whose name contains `tfevents`).
pub fn mirror_path(run_dir: &Path, csv_name: &str) -> PathBuf {
    let stem = csv_name.trim_end_matches(".csv");
    run_dir
        .join("tb")
        .join(format!("events.out.tfevents.funcrl.{stem}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample: fixed wall times, three steps of two scalars, one text summary.
    fn write_sample(path: &Path) {
        let mut w = EventWriter::create(path, 1.7e9).unwrap();
        w.text("config", "```toml\nseed = 3\n```", 1.7e9).unwrap();
        for (i, step) in [0i64, 500, 1000].iter().enumerate() {
            let x = i as f64;
            w.scalars(
                *step,
                1.7e9 + x,
                &[
                    ("charts/episodic_return", 9.5 + 100.0 * x),
                    ("losses/q_loss", 0.125 / (1.0 + x)),
                ],
            )
            .unwrap();
        }
    }

    /// The oracle: `tests/fixtures/tb/tbparse.json` is what the Python `tbparse` reads from the
    /// committed sample (`make_tbparse_fixture.py`); the writer must still produce that file byte
    /// for byte. Set FUNCRL_WRITE_TB_FIXTURE=1 to rewrite the sample, then rerun the script.
    #[test]
    fn the_sample_matches_what_tbparse_read() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tb");
        let sample = dir.join("events.out.tfevents.funcrl.sample");
        if std::env::var("FUNCRL_WRITE_TB_FIXTURE").is_ok() {
            write_sample(&sample);
        }
        let tmp = std::env::temp_dir().join(format!("funcrl-tb-{}", std::process::id()));
        write_sample(&tmp);
        assert_eq!(
            std::fs::read(&tmp).unwrap(),
            std::fs::read(&sample).unwrap()
        );
        let _ = std::fs::remove_file(&tmp);
        let read: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("tbparse.json")).unwrap())
                .unwrap();
        let scalars = read["scalars"].as_array().unwrap();
        assert_eq!(scalars.len(), 6);
        for (i, step) in [0, 500, 1000].iter().enumerate() {
            let x = i as f64;
            for (tag, want) in [
                ("charts/episodic_return", 9.5 + 100.0 * x),
                ("losses/q_loss", 0.125 / (1.0 + x)),
            ] {
                let row = scalars
                    .iter()
                    .find(|r| r["step"] == *step && r["tag"] == tag)
                    .unwrap_or_else(|| panic!("{tag} at {step} not read by tbparse"));
                // simple_value is a float32.
                assert_eq!(
                    row["value"].as_f64().unwrap(),
                    want as f32 as f64,
                    "{tag} {step}"
                );
            }
        }
        assert_eq!(read["text"][0]["tag"], "config");
        assert_eq!(read["text"][0]["value"], "```toml\nseed = 3\n```");
    }

    /// TFRecord's documented masked CRC of an empty string and varint encoding by hand.
    #[test]
    fn framing_by_hand() {
        // crc32c("") = 0, so the masked value is the mask's constant.
        assert_eq!(masked_crc(b""), 0xa282_ead8);
        // crc32c("123456789") = 0xe3069283 (the standard check value).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        let mut v = Vec::new();
        varint(&mut v, 300);
        assert_eq!(v, [0xac, 0x02]);
    }
}
