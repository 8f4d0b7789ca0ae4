//! Helpers shared by the CLI end-to-end tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;
use std::process::Output;

pub const BIN: &str = env!("CARGO_BIN_EXE_funcrl");

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A shipped CartPole config by agent name (`mle`, `funcid_reference`, …), as a path string.
pub fn config(agent: &str) -> String {
    root()
        .join(format!("configs/rl/cartpole_{agent}.toml"))
        .display()
        .to_string()
}

/// A fresh, empty temporary folder for one test.
pub fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("funcrl-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The run directory a successful `funcrl train` printed.
pub fn run_dir(out: &Output) -> PathBuf {
    assert!(
        out.status.success(),
        "train failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout.clone()).unwrap().trim())
}

/// (step, tag, value) of every scalar in a TensorBoard event file, checking each record's framing
/// and masked CRC-32C (TFRecord) on the way.
pub fn read_event_scalars(path: &std::path::Path) -> Vec<(i64, String, f32)> {
    fn masked(b: &[u8]) -> u32 {
        crc32c::crc32c(b).rotate_right(15).wrapping_add(0xa282_ead8)
    }
    fn varint(b: &[u8], i: &mut usize) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let x = b[*i];
            *i += 1;
            v |= ((x & 0x7f) as u64) << shift;
            if x < 0x80 {
                return v;
            }
            shift += 7;
        }
    }
    /// (field, wire type, payload) of each field of a message.
    fn fields(b: &[u8]) -> Vec<(u64, u64, Vec<u8>)> {
        let mut i = 0;
        let mut out = vec![];
        while i < b.len() {
            let key = varint(b, &mut i);
            let (f, w) = (key >> 3, key & 7);
            let p = match w {
                0 => varint(b, &mut i).to_le_bytes().to_vec(),
                1 => {
                    i += 8;
                    b[i - 8..i].to_vec()
                }
                2 => {
                    let n = varint(b, &mut i) as usize;
                    i += n;
                    b[i - n..i].to_vec()
                }
                5 => {
                    i += 4;
                    b[i - 4..i].to_vec()
                }
                _ => panic!("wire type {w}"),
            };
            out.push((f, w, p));
        }
        out
    }
    let data = std::fs::read(path).unwrap();
    let (mut i, mut out) = (0, vec![]);
    while i < data.len() {
        let len_bytes = &data[i..i + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        assert_eq!(
            u32::from_le_bytes(data[i + 8..i + 12].try_into().unwrap()),
            masked(len_bytes)
        );
        let rec = &data[i + 12..i + 12 + len];
        assert_eq!(
            u32::from_le_bytes(data[i + 12 + len..i + 16 + len].try_into().unwrap()),
            masked(rec)
        );
        i += 16 + len;
        let ev = fields(rec);
        let step = ev
            .iter()
            .find(|f| f.0 == 2)
            .map_or(0, |f| i64::from_le_bytes(f.2[..8].try_into().unwrap()));
        for (_, _, summary) in ev.iter().filter(|f| f.0 == 5) {
            for (_, _, value) in fields(summary).into_iter().filter(|f| f.0 == 1) {
                let vf = fields(&value);
                let tag = vf
                    .iter()
                    .find(|f| f.0 == 1)
                    .map(|f| String::from_utf8(f.2.clone()).unwrap());
                let simple = vf.iter().find(|f| f.0 == 2 && f.1 == 5);
                if let (Some(tag), Some(s)) = (tag, simple) {
                    out.push((step, tag, f32::from_le_bytes(s.2[..4].try_into().unwrap())));
                }
            }
        }
    }
    out
}
