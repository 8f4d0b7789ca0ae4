//! Run directories: every run writes its resolved config, seed, code version and logs into
//! `{root}/{task}__{experiment}__{seed}__{time}` (CleanRL's naming), and every file goes through
//! [`write_atomic`], so a killed run never leaves a half-written file behind.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

/// `funcrl <version> (<git describe>)`: the code a run was produced by.
pub fn code_version() -> String {
    format!(
        "funcrl {} ({})",
        env!("CARGO_PKG_VERSION"),
        env!("FUNCRL_GIT")
    )
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename.
/// Readers see the old file or the new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
}

/// Like [`write_atomic`] for writers that need a path (HDF5, PNG): `write` fills a temporary path,
/// which is then renamed over `path`.
pub fn write_atomic_with<E: From<io::Error>>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Keep the extension last: some writers pick the format from it.
    let tmp = dir.join(format!(".tmp{}.{name}", std::process::id()));
    match write(&tmp) {
        Ok(()) => {
            fs::rename(&tmp, path)?;
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// UTC time as `YYYYmmddTHHMMSS`, safe in file names on every platform.
pub fn timestamp(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string(); // 2026-11-25T16:30:00Z
    s.trim_end_matches('Z').replace(['-', ':'], "")
}

/// What `meta.json` records about a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunMeta {
    pub seed: u64,
    pub code_version: String,
    pub command_line: Vec<String>,
    pub started: String,
}

/// A run's directory, held exclusively: `run.lock` is locked for as long as the value lives, so two
/// processes never write one run (a second `--resume` of a live run is refused).
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
    _lock: std::sync::Arc<File>,
}

/// Locks `dir/run.lock` for this process, or says which run another process holds.
fn lock(dir: &Path) -> io::Result<std::sync::Arc<File>> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("run.lock"))
        .map_err(|e| {
            io::Error::new(e.kind(), format!("{}: {e}", dir.join("run.lock").display()))
        })?;
    match f.try_lock() {
        Ok(()) => Ok(std::sync::Arc::new(f)),
        Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("{} is in use by another funcrl process", dir.display()),
        )),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

impl RunDir {
    /// Creates `{root}/{parts joined by "__"}__{seed}__{time}` and writes `config.toml` (the resolved
    /// config, as the run will use it) and `meta.json` (seed, code version, command line, start).
    pub fn create<C: Serialize>(
        root: &Path,
        parts: &[&str],
        seed: u64,
        config: &C,
    ) -> io::Result<RunDir> {
        let now = SystemTime::now();
        let mut name = parts.join("__");
        name.push_str(&format!("__{seed}__{}", timestamp(now)));
        // `create_dir` fails on an existing name, so two runs started in the same second (even
        // in two processes) get distinct directories.
        fs::create_dir_all(root)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", root.display())))?;
        let mut k = 0;
        let path = loop {
            let p = if k == 0 {
                root.join(&name)
            } else {
                root.join(format!("{name}-{k}"))
            };
            match fs::create_dir(&p) {
                Ok(()) => break p,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => k += 1,
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", p.display()))),
            }
        };
        let run = RunDir {
            _lock: lock(&path)?,
            path,
        };
        run.write_config(config)?;
        let meta = RunMeta {
            seed,
            code_version: code_version(),
            command_line: std::env::args().collect(),
            started: humantime::format_rfc3339_seconds(now).to_string(),
        };
        run.write(
            "meta.json",
            serde_json::to_string_pretty(&meta)
                .expect("serializable")
                .as_bytes(),
        )?;
        Ok(run)
    }

    /// Opens an existing run directory (for `--resume`).
    pub fn open(path: &Path) -> io::Result<RunDir> {
        if !path.join("config.toml").is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not a run directory (no config.toml)", path.display()),
            ));
        }
        let run = RunDir {
            _lock: lock(path)?,
            path: path.to_path_buf(),
        };
        // Temporary files of writes a kill interrupted (see `write_atomic`).
        for e in fs::read_dir(path)?.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(".tmp") || (n.starts_with('.') && n.contains(".tmp")) {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(run)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `config.toml` atomically.
    pub fn write_config<C: Serialize>(&self, config: &C) -> io::Result<()> {
        let text = toml::to_string_pretty(config)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        self.write("config.toml", text.as_bytes())
    }

    /// Writes the resolved config as a TensorBoard text summary (`tb/…config`), replacing the
    /// previous one (a resume may change it).
    pub fn tensorboard_config(&self) -> io::Result<()> {
        let text = fs::read_to_string(self.file("config.toml"))?;
        let path = crate::tb::mirror_path(&self.path, "config");
        fs::create_dir_all(path.parent().expect("tb/"))?;
        // TensorBoard's text plugin renders Markdown: a code block keeps the TOML as it is.
        crate::tb::EventWriter::create(&path, crate::tb::now())?.text(
            "config",
            &format!("```toml\n{text}```"),
            crate::tb::now(),
        )
    }

    /// Writes a file of the run directory atomically.
    pub fn write(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        write_atomic(&self.file(name), bytes)
    }

    /// Appends a line to `run.log` (and prints it on stderr).
    pub fn log(&self, line: &str) -> io::Result<()> {
        eprintln!("{line}");
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.file("run.log"))?;
        writeln!(f, "{line}")
    }
}

/// One CSV row as TensorBoard scalars: the columns after the first, at step = the first.
fn mirror_row(tb: &mut crate::tb::EventWriter, tags: &[String], row: &[f64]) -> io::Result<()> {
    let scalars: Vec<(&str, f64)> = tags
        .iter()
        .map(String::as_str)
        .zip(row[1..].iter().copied())
        .collect();
    tb.scalars(row[0] as i64, crate::tb::now(), &scalars)
}

/// A CSV log with fixed column names, one row per record, flushed on every row so that a killed
/// run keeps its history. `resume` keeps the rows whose first column is below `keep_below` (the
/// rows a checkpoint has already accounted for) and appends after them.
pub struct CsvLog {
    out: BufWriter<File>,
    columns: usize,
    /// The TensorBoard mirror: every row's columns after the first as scalars at step = the first.
    tb: Option<(crate::tb::EventWriter, Vec<String>)>,
}

impl CsvLog {
    pub fn create(path: &Path, header: &[&str]) -> io::Result<CsvLog> {
        let mut out = BufWriter::new(File::create(path)?);
        writeln!(out, "{}", header.join(","))?;
        out.flush()?;
        Ok(CsvLog {
            out,
            columns: header.len(),
            tb: None,
        })
    }

    /// The rows of a log written by [`CsvLog`], parsed strictly: the header must be `header` and
    /// every row must hold that many numbers; anything else is an `InvalidData` error naming the
    /// file and line (a damaged log is refused, not half read).
    pub fn read_strict(path: &Path, header: &[&str]) -> io::Result<Vec<Vec<f64>>> {
        let text = fs::read_to_string(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let bad = |line: usize, why: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}, line {line}: {why}", path.display()),
            )
        };
        let mut lines = text.lines();
        let want = header.join(",");
        match lines.next() {
            Some(h) if h == want => {}
            other => return Err(bad(1, format!("header {other:?}, expected {want:?}"))),
        }
        lines
            .enumerate()
            .map(|(i, line)| {
                let cells: Vec<&str> = line.split(',').collect();
                if cells.len() != header.len() {
                    return Err(bad(
                        i + 2,
                        format!("{} values, expected {}", cells.len(), header.len()),
                    ));
                }
                cells
                    .iter()
                    .map(|c| {
                        c.parse::<f64>()
                            .map_err(|_| bad(i + 2, format!("{c:?} is not a number")))
                    })
                    .collect()
            })
            .collect()
    }

    pub fn resume(path: &Path, header: &[&str], keep_below: f64) -> io::Result<CsvLog> {
        let rows = Self::read_strict(path, header)?;
        let mut kept = vec![header.join(",")];
        for row in rows.iter().filter(|r| r[0] < keep_below) {
            let cells: Vec<String> = row.iter().map(|v| format!("{v}")).collect();
            kept.push(cells.join(","));
        }
        write_atomic(path, (kept.join("\n") + "\n").as_bytes())?;
        let out = BufWriter::new(OpenOptions::new().append(true).open(path)?);
        Ok(CsvLog {
            out,
            columns: header.len(),
            tb: None,
        })
    }

    /// Appends one row; panics if the row has the wrong number of values (a programming error).
    pub fn row(&mut self, values: &[f64]) -> io::Result<()> {
        assert_eq!(values.len(), self.columns, "CSV row width");
        let cells: Vec<String> = values.iter().map(|v| format!("{v}")).collect();
        writeln!(self.out, "{}", cells.join(","))?;
        self.out.flush()?;
        if let Some((tb, tags)) = self.tb.as_mut() {
            mirror_row(tb, tags, values)?;
        }
        Ok(())
    }

    /// Mirrors this log (`path`, written with `header`) into a TensorBoard event file under the
    /// run directory's `tb/`, with the column names as tags and the first column as the step. The
    /// rows already in the CSV (a resumed run's) are written first, into a fresh file, so that a
    /// resumed run's event stream holds each step once.
    pub fn with_tensorboard(mut self, path: &Path, header: &[&str]) -> io::Result<CsvLog> {
        self.out.flush()?;
        let rows = Self::read_strict(path, header)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let file =
            crate::tb::mirror_path(dir, &path.file_name().unwrap_or_default().to_string_lossy());
        fs::create_dir_all(file.parent().expect("tb/"))?;
        let mut tb = crate::tb::EventWriter::create(&file, crate::tb::now())?;
        let tags: Vec<String> = header[1..].iter().map(|s| s.to_string()).collect();
        for r in rows {
            mirror_row(&mut tb, &tags, &r)?;
        }
        self.tb = Some((tb, tags));
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("funcrl-test-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[derive(Serialize)]
    struct Cfg {
        env: String,
        lr: f64,
    }

    #[test]
    fn run_dir_holds_config_seed_version_and_log() {
        let root = tmpdir("rundir");
        let cfg = Cfg {
            env: "CartPole-v1".into(),
            lr: 1e-3,
        };
        let a = RunDir::create(&root, &["CartPole-v1", "funcid"], 7, &cfg).unwrap();
        let b = RunDir::create(&root, &["CartPole-v1", "funcid"], 7, &cfg).unwrap();
        assert_ne!(a.path(), b.path(), "same second, distinct directories");
        let name = a.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("CartPole-v1__funcid__7__"), "{name}");
        let config: toml::Table = fs::read_to_string(a.file("config.toml"))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(config["lr"].as_float(), Some(1e-3));
        let meta: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(a.file("meta.json")).unwrap()).unwrap();
        assert_eq!(meta["seed"], 7);
        assert!(
            meta["code_version"]
                .as_str()
                .unwrap()
                .starts_with("funcrl ")
        );
        a.log("step 1").unwrap();
        a.log("step 2").unwrap();
        assert_eq!(
            fs::read_to_string(a.file("run.log")).unwrap(),
            "step 1\nstep 2\n"
        );
        // Held while `a` lives (another process, or another handle, cannot open it), free after.
        let path = a.path().to_path_buf();
        let held = RunDir::open(&path).unwrap_err();
        assert_eq!(held.kind(), io::ErrorKind::WouldBlock, "{held}");
        drop(a);
        // flock belongs to the open file description: a child that another test forks at this
        // moment holds a copy of the descriptor until its exec closes it (CLOEXEC), so the lock
        // may stay taken for an instant after the drop. Free within 2 s, or the test fails.
        let free = (0..200).any(|_| {
            RunDir::open(&path).is_ok() || {
                std::thread::sleep(std::time::Duration::from_millis(10));
                false
            }
        });
        assert!(free, "the lock outlived its RunDir");
        assert!(RunDir::open(&root).is_err());
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_no_temporaries() {
        let root = tmpdir("atomic");
        let p = root.join("x.bin");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second");
        let r: Result<(), io::Error> = write_atomic_with(&root.join("y.png"), |tmp| {
            fs::write(tmp, b"partial")?;
            Err(io::Error::other("writer failed"))
        });
        assert!(r.is_err());
        assert!(!root.join("y.png").exists());
        let names: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "only x.bin remains: {names:?}");
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn csv_log_resume_drops_rows_past_the_checkpoint() {
        let root = tmpdir("csv");
        let p = root.join("log.csv");
        let mut log = CsvLog::create(&p, &["step", "loss"]).unwrap();
        for s in 0..5 {
            log.row(&[s as f64 * 100.0, 0.5]).unwrap();
        }
        drop(log);
        let mut log = CsvLog::resume(&p, &["step", "loss"], 250.0).unwrap();
        log.row(&[300.0, 0.25]).unwrap();
        drop(log);
        let text = fs::read_to_string(&p).unwrap();
        assert_eq!(text, "step,loss\n0,0.5\n100,0.5\n200,0.5\n300,0.25\n");
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn timestamps_are_filename_safe() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_764_088_200);
        assert_eq!(timestamp(t), "20251125T163000");
    }
}
