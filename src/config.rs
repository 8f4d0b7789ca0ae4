//! TOML configs: read a file, apply `--set key=value` overrides, deserialize into a typed struct
//! with `deny_unknown_fields`. Every failure is a [`UsageError`] that names the file, the field
//! and what is allowed, so the CLI can print it and exit with code 2.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// The repository's `configs/<kind>/<name>.toml`, compiled in (see build.rs): (`kind/name`, text).
pub const SHIPPED: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/shipped_configs.rs"));

/// The shipped config `name` names: `cartpole_funcid`, `rl/cartpole_funcid`, or either with
/// `.toml` or a leading `configs/`.
pub fn shipped(name: &str) -> Option<(&'static str, &'static str)> {
    let n = name.strip_suffix(".toml").unwrap_or(name);
    let n = n.strip_prefix("configs/").unwrap_or(n);
    SHIPPED
        .iter()
        .find(|(full, _)| *full == n || full.rsplit('/').next() == Some(n))
        .copied()
}

/// A config's text and where it came from.
pub struct Source {
    pub text: String,
    /// For messages: the file's path, or `shipped config rl/cartpole_funcid`.
    pub label: String,
    /// The folder relative paths inside the config are read from (None for a shipped config).
    pub dir: Option<PathBuf>,
}

/// Reads the config at `path`; where no such file exists, the shipped config of that name.
pub fn read_source(path: &Path) -> Result<Source, UsageError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Source {
            text,
            label: path.display().to_string(),
            dir: Some(
                path.parent()
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            ),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match shipped(&path.to_string_lossy()) {
                Some((name, text)) => Ok(Source {
                    text: text.to_string(),
                    label: format!("shipped config {name}"),
                    dir: None,
                }),
                None => Err(UsageError::new(format!(
                    "cannot read config {}: {e}; shipped configs (usable by name, `funcrl configs` prints them): {}",
                    path.display(),
                    SHIPPED
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            }
        }
        Err(e) => Err(UsageError::new(format!(
            "cannot read config {}: {e}",
            path.display()
        ))),
    }
}

/// Parses a config's text as a TOML table.
pub fn parse(source: &Source) -> Result<toml::Table, UsageError> {
    source.text.parse().map_err(|e: toml::de::Error| {
        UsageError::new(format!("invalid TOML in {}: {e}", source.label))
    })
}

/// Makes the relative file paths at `keys` (dotted) in `table` relative to the config's folder,
/// so a config names its data files as seen from where it lives, whatever the working directory.
pub fn resolve_paths(table: &mut toml::Table, keys: &[&str], source: &Source) {
    let Some(dir) = &source.dir else { return };
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
    for key in keys {
        if let Some(toml::Value::String(s)) = lookup(table, key)
            && Path::new(s.as_str()).is_relative()
        {
            *s = dir.join(&*s).display().to_string();
        }
    }
}

/// The value at a dotted key, if every table on the way exists.
fn lookup<'a>(table: &'a mut toml::Table, key: &str) -> Option<&'a mut toml::Value> {
    match key.split_once('.') {
        None => table.get_mut(key),
        Some((head, rest)) => lookup(table.get_mut(head)?.as_table_mut()?, rest),
    }
}

/// A mistake in what the user asked for (config, flag, id, value): printed without a backtrace,
/// exit code 2, like clap's own argument errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl UsageError {
    pub fn new(msg: impl Into<String>) -> Self {
        UsageError(msg.into())
    }
}

/// The IV library's bad-input errors are usage errors of the CLI.
impl From<funcrl_iv::InputError> for UsageError {
    fn from(e: funcrl_iv::InputError) -> Self {
        UsageError(e.0)
    }
}

/// Parses `key=value` (dotted keys address nested tables) into the TOML table. The value is read
/// as a TOML value (`3`, `true`, `[1, 2]`, `"x"`); anything that is not valid TOML is taken as a
/// bare string, so `--set env=CartPole-v1` works without quotes.
pub fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<(), UsageError> {
    let (key, raw) = assignment
        .split_once('=')
        .ok_or_else(|| UsageError::new(format!("--set '{assignment}': expected key=value")))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(UsageError::new(format!("--set '{assignment}': empty key")));
    }
    let value = parse_value(raw.trim());
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("non-empty key");
    let mut cur = table;
    for p in parts {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry.as_table_mut().ok_or_else(|| {
            UsageError::new(format!("--set '{assignment}': '{p}' is not a table"))
        })?;
    }
    cur.insert(last.to_string(), value);
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// Deserializes a TOML table into `T`, turning serde's message into one that names the source.
pub fn from_table<T: DeserializeOwned>(table: toml::Table, source: &str) -> Result<T, UsageError> {
    serde_path_to_error::deserialize(table).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!("{path}: ")
        };
        UsageError::new(format!(
            "invalid config {source}: {at}{}",
            e.into_inner().message()
        ))
    })
}

/// Reads `path` (or the shipped config of that name), applies the overrides in order, and
/// deserializes.
pub fn load<T: DeserializeOwned>(path: &Path, overrides: &[String]) -> Result<T, UsageError> {
    let source = read_source(path)?;
    let mut table = parse(&source)?;
    for o in overrides {
        apply_override(&mut table, o)?;
    }
    from_table(table, &source.label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        lr: f64,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "snake_case")]
    enum Mode {
        Fast,
        Slow,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        name: String,
        steps: u64,
        mode: Mode,
        opt: Inner,
    }

    fn table(s: &str) -> toml::Table {
        s.parse().unwrap()
    }

    #[test]
    fn overrides_set_nested_typed_values() {
        let mut t = table("name = 'a'\nsteps = 1\nmode = 'fast'\n[opt]\nlr = 0.1\n");
        apply_override(&mut t, "steps=20").unwrap();
        apply_override(&mut t, "opt.lr=1e-3").unwrap();
        apply_override(&mut t, "name=CartPole-v1").unwrap();
        apply_override(&mut t, "mode = slow").unwrap();
        let c: Cfg = from_table(t, "test").unwrap();
        assert_eq!(
            c,
            Cfg {
                name: "CartPole-v1".into(),
                steps: 20,
                mode: Mode::Slow,
                opt: Inner { lr: 1e-3 }
            }
        );
    }

    #[test]
    fn errors_name_the_field_and_the_allowed_values() {
        let t = table("name = 'a'\nsteps = 1\nmode = 'fast'\nstep = 3\n[opt]\nlr = 0.1\n");
        let e = from_table::<Cfg>(t, "x.toml").unwrap_err().to_string();
        assert!(
            e.contains("x.toml") && e.contains("unknown field `step`") && e.contains("`steps`"),
            "{e}"
        );
        let t = table("name = 'a'\nsteps = 1\nmode = 'quick'\n[opt]\nlr = 0.1\n");
        let e = from_table::<Cfg>(t, "x.toml").unwrap_err().to_string();
        assert!(
            e.contains("unknown variant `quick`") && e.contains("`fast`") && e.contains("`slow`"),
            "{e}"
        );
        let t = table("name = 'a'\nsteps = -1\nmode = 'fast'\n[opt]\nlr = 0.1\n");
        assert!(from_table::<Cfg>(t, "x.toml").is_err());
        let mut t = table("name = 'a'");
        assert!(apply_override(&mut t, "novalue").is_err());
        assert!(apply_override(&mut t, "name.sub=1").is_err());
    }
}
