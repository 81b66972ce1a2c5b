//! The layers of the configuration, lowest first: the embedded defaults, a
//! config file, environment variables. (Command-line flags, the highest,
//! are applied by `cli.rs` to the [`Settings`] this produces.)
//!
//! The defaults define the keys: a key of a file, or an environment
//! variable, that is not a key of the defaults is refused. Each value is
//! checked on its own, placed over the defaults and read as [`Settings`],
//! so an error names its layer, its key and its value.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::settings::{DEFAULT_TOML, Settings};

/// The variable that names a config file when `--config` is not given.
pub(crate) const CONFIG_VAR: &str = "SHARDCAST_CONFIG";
/// The prefix of every variable this module reads as a key.
const PREFIX: &str = "SHARDCAST_";
/// The conventional log filter variable, read as `log.level`.
const RUST_LOG: &str = "RUST_LOG";
/// The variable of `log.level`, which wins over `RUST_LOG`.
const LOG_LEVEL_VAR: &str = "SHARDCAST_LOG_LEVEL";

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A config file.
    File(PathBuf),
    /// An environment variable.
    Variable(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(path) => write!(f, "config file {}", path.display()),
            Origin::Variable(name) => write!(f, "environment variable {name}"),
        }
    }
}

/// A configuration that could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The config file is not TOML.
    #[error("config file {} is not valid TOML", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Where and why the parser stopped.
        source: toml::de::Error,
    },
    /// A key the configuration does not have.
    #[error("{origin}: unknown key `{key}`; the keys here are: {known}")]
    UnknownKey {
        /// Where the key was found.
        origin: Origin,
        /// The key's full dotted name.
        key: String,
        /// The keys its table does have.
        known: String,
    },
    /// A `SHARDCAST_` variable that names no key.
    #[error(
        "unknown environment variable {0}: shardcast reads {CONFIG_VAR} and \
         SHARDCAST_<TABLE>_<KEY> for each key of its configuration \
         (`shardcast serve --print-config` shows them)"
    )]
    UnknownVariable(String),
    /// A variable whose value is not UTF-8.
    #[error("environment variable {0} is not valid UTF-8")]
    NotUnicode(String),
    /// A value of the wrong type or out of range.
    #[error("{origin}: `{key}` = {value}: {reason}")]
    BadValue {
        /// Where the value was found.
        origin: Origin,
        /// The key's full dotted name.
        key: String,
        /// The value as TOML writes it.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The layers together do not make a configuration, though each value
    /// was accepted on its own.
    #[error("the merged configuration is invalid: {0}")]
    Merged(toml::de::Error),
}

/// What the layers produced.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The merged settings.
    pub(crate) settings: Settings,
    /// The layers that set something, lowest first, for people to read.
    pub(crate) sources: Vec<String>,
}

/// Reads the layers under the command-line flags: the embedded defaults,
/// then the config file at `config` (or at `$SHARDCAST_CONFIG`), then the
/// variables of `env` (the process's environment, in production).
pub(crate) fn load<I>(config: Option<&Path>, env: I) -> Result<Loaded, ConfigError>
where
    I: IntoIterator<Item = (OsString, OsString)>,
{
    let env = our_variables(env)?;
    let defaults = Defaults::embedded();
    let mut merged = defaults.table.clone();
    let mut sources = vec!["embedded defaults".to_owned()];
    let path = config.map(Path::to_path_buf).or_else(|| {
        env.get(CONFIG_VAR)
            .filter(|path| !path.is_empty())
            .map(PathBuf::from)
    });
    if let Some(path) = path {
        let file = read_file(&path)?;
        defaults.overlay(&mut merged, file, &Origin::File(path.clone()))?;
        sources.push(format!("config file {}", path.display()));
    }
    let rust_log = env
        .get(RUST_LOG)
        .filter(|_| !env.contains_key(LOG_LEVEL_VAR));
    let variables = rust_log.map(|value| (RUST_LOG, value)).into_iter().chain(
        env.iter()
            .filter(|(name, _)| name.starts_with(PREFIX) && *name != CONFIG_VAR)
            .map(|(name, value)| (name.as_str(), value)),
    );
    for (name, text) in variables {
        let key = match name {
            RUST_LOG => vec!["log".to_owned(), "level".to_owned()],
            name => defaults
                .key_of_variable(name)
                .ok_or_else(|| ConfigError::UnknownVariable(name.to_owned()))?,
        };
        let value = defaults.value_from_variable(&key, text);
        defaults.set_checked(&mut merged, &key, value, &Origin::Variable(name.to_owned()))?;
        sources.push(format!("environment variable {name}"));
    }
    let settings = merged.try_into().map_err(ConfigError::Merged)?;
    Ok(Loaded { settings, sources })
}

/// The variables this module reads: `SHARDCAST_*` and `RUST_LOG`, by name.
fn our_variables<I>(env: I) -> Result<BTreeMap<String, String>, ConfigError>
where
    I: IntoIterator<Item = (OsString, OsString)>,
{
    let mut ours = BTreeMap::new();
    for (name, value) in env {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(PREFIX) || name == RUST_LOG {
            let value = value
                .into_string()
                .map_err(|_| ConfigError::NotUnicode(name.to_owned()))?;
            ours.insert(name.to_owned(), value);
        }
    }
    Ok(ours)
}

fn read_file(path: &Path) -> Result<Table, ConfigError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.parse().map_err(|source| ConfigError::Syntax {
        path: path.to_path_buf(),
        source,
    })
}

/// The embedded defaults, which define the keys and their types.
struct Defaults {
    table: Table,
}

impl Defaults {
    fn embedded() -> Defaults {
        Defaults {
            table: DEFAULT_TOML
                .parse()
                .expect("default.toml is valid TOML (a unit test reads it)"),
        }
    }

    /// The value at a dotted key path, if the defaults have it.
    fn get(&self, key: &[String]) -> Option<&Value> {
        let (last, tables) = key.split_last()?;
        let mut table = &self.table;
        for name in tables {
            table = table.get(name)?.as_table()?;
        }
        table.get(last)
    }

    /// Places every value of `layer` into `merged`, checking each.
    fn overlay(
        &self,
        merged: &mut Table,
        layer: Table,
        origin: &Origin,
    ) -> Result<(), ConfigError> {
        let mut tables = vec![(Vec::new(), layer)];
        while let Some((parent, table)) = tables.pop() {
            for (name, value) in table {
                let mut key = parent.clone();
                key.push(name);
                match (self.get(&key), value) {
                    (None, _) => return Err(self.unknown_key(&key, origin)),
                    (Some(Value::Table(_)), Value::Table(inner)) => tables.push((key, inner)),
                    (Some(_), value) => self.set_checked(merged, &key, value, origin)?,
                }
            }
        }
        Ok(())
    }

    fn unknown_key(&self, key: &[String], origin: &Origin) -> ConfigError {
        let parent = &key[..key.len() - 1];
        let siblings = if parent.is_empty() {
            Some(&self.table)
        } else {
            self.get(parent).and_then(Value::as_table)
        };
        ConfigError::UnknownKey {
            origin: origin.clone(),
            key: key.join("."),
            known: siblings
                .map(|table| table.keys().cloned().collect::<Vec<_>>().join(", "))
                .unwrap_or_default(),
        }
    }

    /// Checks `value` on its own over the defaults, then places it.
    fn set_checked(
        &self,
        merged: &mut Table,
        key: &[String],
        value: Value,
        origin: &Origin,
    ) -> Result<(), ConfigError> {
        let mut probe = self.table.clone();
        set(&mut probe, key, value.clone());
        if let Err(error) = probe.try_into::<Settings>() {
            return Err(ConfigError::BadValue {
                origin: origin.clone(),
                key: key.join("."),
                value: value.to_string(),
                reason: error.message().to_owned(),
            });
        }
        set(merged, key, value);
        Ok(())
    }

    /// The key an environment variable names: `SHARDCAST_LIMITS_MAX_CONNECTIONS`
    /// names `limits.max_connections`.
    fn key_of_variable(&self, name: &str) -> Option<Vec<String>> {
        let mut keys = Vec::new();
        leaves(&self.table, &mut Vec::new(), &mut keys);
        keys.into_iter().find(|key| variable_name(key) == name)
    }

    /// A variable's text as a value of the type its key's default has:
    /// integers and booleans parsed (left as strings if they do not parse,
    /// for the check to explain), lists split on commas, anything else a
    /// string.
    fn value_from_variable(&self, key: &[String], text: &str) -> Value {
        let string = || Value::String(text.to_owned());
        match self.get(key) {
            Some(Value::Integer(_)) => text
                .trim()
                .parse()
                .map_or_else(|_| string(), Value::Integer),
            Some(Value::Boolean(_)) => text
                .trim()
                .parse()
                .map_or_else(|_| string(), Value::Boolean),
            Some(Value::Array(_)) => Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| Value::String(item.to_owned()))
                    .collect(),
            ),
            _ => string(),
        }
    }
}

/// The environment variable of a key: `SHARDCAST_` and its parts joined by
/// `_`, in upper case.
fn variable_name(key: &[String]) -> String {
    format!("{PREFIX}{}", key.join("_").to_uppercase())
}

/// Every key of `table` that is not itself a table, as a path.
fn leaves(table: &Table, parent: &mut Vec<String>, keys: &mut Vec<Vec<String>>) {
    for (name, value) in table {
        parent.push(name.clone());
        match value {
            Value::Table(inner) => leaves(inner, parent, keys),
            _ => keys.push(parent.clone()),
        }
        parent.pop();
    }
}

/// Sets the value at a key path whose tables exist.
fn set(table: &mut Table, key: &[String], value: Value) {
    match key {
        [] => {}
        [name] => {
            table.insert(name.clone(), value);
        }
        [name, rest @ ..] => {
            if let Some(Value::Table(inner)) = table.get_mut(name) {
                set(inner, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A config file in the temporary directory, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, text: &str) -> TempFile {
            let path = std::env::temp_dir().join(format!(
                "shardcast-layers-{}-{name}.toml",
                std::process::id()
            ));
            fs::write(&path, text).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = fs::remove_file(&self.0);
        }
    }

    fn env(vars: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        vars.iter()
            .map(|(name, value)| (name.into(), value.into()))
            .collect()
    }

    fn load_with(file: Option<&TempFile>, vars: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        load(file.map(|file| file.0.as_path()), env(vars))
    }

    #[test]
    fn with_no_file_and_no_variables_the_defaults_stand() {
        let loaded = load_with(None, &[("HOME", "/root"), ("SHARDCASTX", "1")]).unwrap();
        assert_eq!(loaded.settings, Settings::defaults());
        assert_eq!(loaded.sources, ["embedded defaults"]);
    }

    #[test]
    fn each_layer_overrides_the_one_below() {
        let file = TempFile::new(
            "layers",
            "[limits]\nmax_connections = 5000\nmax_frame_size = \"1MiB\"\n\
             [timeouts]\nidle = \"30s\"\n",
        );
        let loaded = load_with(
            Some(&file),
            &[
                ("SHARDCAST_TIMEOUTS_IDLE", "off"),
                ("SHARDCAST_LIMITS_MAX_FRAME_SIZE", "2MiB"),
            ],
        )
        .unwrap();
        let settings = loaded.settings;
        assert_eq!(settings.limits.max_connections, 5000, "file over defaults");
        assert_eq!(
            settings.limits.max_frame_size.bytes(),
            2 << 20,
            "env over file"
        );
        assert_eq!(settings.timeouts.idle.get(), None, "env over file");
        assert_eq!(
            settings.timeouts.close.get(),
            Duration::from_secs(5),
            "defaults"
        );
        assert_eq!(
            loaded.sources,
            [
                "embedded defaults".to_owned(),
                format!("config file {}", file.0.display()),
                "environment variable SHARDCAST_LIMITS_MAX_FRAME_SIZE".to_owned(),
                "environment variable SHARDCAST_TIMEOUTS_IDLE".to_owned(),
            ]
        );
    }

    #[test]
    fn the_config_file_comes_from_the_flag_or_else_the_variable() {
        let from_var = TempFile::new("from-var", "[server]\nbacklog = 10\n");
        let from_flag = TempFile::new("from-flag", "[server]\nbacklog = 20\n");
        let var = from_var.0.to_str().unwrap();
        let loaded = load_with(None, &[(CONFIG_VAR, var)]).unwrap();
        assert_eq!(loaded.settings.server.backlog, 10);
        let loaded = load_with(Some(&from_flag), &[(CONFIG_VAR, var)]).unwrap();
        assert_eq!(loaded.settings.server.backlog, 20);
        let loaded = load_with(None, &[(CONFIG_VAR, "")]).unwrap();
        assert_eq!(loaded.settings, Settings::defaults());
    }

    #[test]
    fn unknown_keys_in_a_file_are_refused_with_the_file_and_key() {
        let file = TempFile::new("unknown", "[limits]\nmax_conections = 5000\n");
        let error = load_with(Some(&file), &[]).unwrap_err();
        assert!(
            matches!(&error, ConfigError::UnknownKey { origin: Origin::File(path), key, .. }
                if *path == file.0 && key == "limits.max_conections"),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains(&file.0.display().to_string()), "{message}");
        assert!(
            message.contains("max_connections, max_connections_per_ip, max_decompressed_size"),
            "{message}"
        );

        let file = TempFile::new("unknown-table", "[limit]\nmax_connections = 5000\n");
        let message = load_with(Some(&file), &[]).unwrap_err().to_string();
        let known = "backpressure, compression, io, limits, log, rooms, server, sessions, timeouts";
        assert!(
            message.contains(&format!("unknown key `limit`; the keys here are: {known}")),
            "{message}"
        );
    }

    #[test]
    fn bad_values_in_a_file_name_the_key_and_the_value() {
        for (text, key, value, reason) in [
            (
                "[limits]\nmax_frame_size = \"64MB\"",
                "limits.max_frame_size",
                "\"64MB\"",
                "unknown unit `MB`",
            ),
            (
                "[limits]\nmax_connections = -1",
                "limits.max_connections",
                "-1",
                "expected usize",
            ),
            (
                "[timeouts]\nhandshake = 10",
                "timeouts.handshake",
                "10",
                "has no unit",
            ),
            (
                "[server]\nlisten = [\"localhost:80\"]",
                "server.listen",
                "[\"localhost:80\"]",
                "invalid socket address",
            ),
            (
                "[compression]\nlevel = 0",
                "compression.level",
                "0",
                "not a compression level",
            ),
            (
                "[log]\nformat = \"xml\"",
                "log.format",
                "\"xml\"",
                "unknown variant `xml`",
            ),
            ("limits = 5", "limits", "5", "expected struct LimitsTable"),
            (
                "[backpressure]\nclose_code = 1005",
                "backpressure.close_code",
                "1005",
                "1005 may not be sent",
            ),
            (
                "[backpressure]\npolicy = \"drop_oldest\"",
                "backpressure.policy",
                "\"drop_oldest\"",
                "unknown variant `drop_oldest`, expected `close` or `drop_newest`",
            ),
        ] {
            let file = TempFile::new("bad-value", text);
            let error = load_with(Some(&file), &[]).unwrap_err();
            let message = error.to_string();
            assert!(
                message.starts_with(&format!(
                    "config file {}: `{key}` = {value}: ",
                    file.0.display()
                )),
                "{message}"
            );
            assert!(message.contains(reason), "{message}");
        }
    }

    #[test]
    fn a_file_that_is_missing_or_not_toml_is_refused() {
        let missing = load(Some(Path::new("/nonexistent/shardcast.toml")), env(&[]));
        assert!(
            matches!(missing, Err(ConfigError::Read { .. })),
            "{missing:?}"
        );
        let file = TempFile::new("syntax", "[limits\n");
        let error = load_with(Some(&file), &[]).unwrap_err();
        let message = error.to_string();
        assert!(message.ends_with("is not valid TOML"), "{message}");
        let source = std::error::Error::source(&error).unwrap().to_string();
        assert!(source.contains("line 1"), "{source}");
    }

    #[test]
    fn variables_are_typed_by_their_key() {
        let loaded = load_with(
            None,
            &[
                ("SHARDCAST_SERVER_LISTEN", "127.0.0.1:9000, [::1]:9000"),
                ("SHARDCAST_SERVER_FORCE_EPOLL", "true"),
                ("SHARDCAST_SERVER_SHARDS", "2"),
                ("SHARDCAST_SERVER_CORES", "0-1"),
                ("SHARDCAST_SERVER_SUBPROTOCOLS", "chat.v2,chat.v1"),
                ("SHARDCAST_LIMITS_MAX_CONNECTIONS", "5000"),
                ("SHARDCAST_LIMITS_MAX_CONNECTIONS_PER_IP", "10"),
                ("SHARDCAST_TIMEOUTS_PING_INTERVAL", "off"),
                ("SHARDCAST_BACKPRESSURE_POLICY", "close"),
                ("SHARDCAST_BACKPRESSURE_CLOSE_CODE", "1013"),
                ("SHARDCAST_COMPRESSION_THRESHOLD", "1KiB"),
                ("SHARDCAST_LOG_FORMAT", "json"),
            ],
        )
        .unwrap();
        let settings = loaded.settings;
        let printed = toml::to_string(&settings).unwrap();
        for line in [
            "listen = [\"127.0.0.1:9000\", \"[::1]:9000\"]",
            "force_epoll = true",
            "shards = 2",
            "cores = \"0,1\"",
            "subprotocols = [\"chat.v2\", \"chat.v1\"]",
            "max_connections = 5000",
            "max_connections_per_ip = 10",
            "ping_interval = \"off\"",
            "policy = \"close\"",
            "close_code = 1013",
            "threshold = \"1KiB\"",
            "format = \"json\"",
        ] {
            assert!(printed.contains(line), "{line} not in\n{printed}");
        }
    }

    #[test]
    fn unknown_and_bad_variables_are_refused_by_name() {
        let typo = "SHARDCAST_LIMITS_MAX_CONECTIONS";
        let error = load_with(None, &[(typo, "5")]).unwrap_err();
        assert!(
            matches!(&error, ConfigError::UnknownVariable(name) if name == typo),
            "{error:?}"
        );
        let message = load_with(None, &[("SHARDCAST_LIMITS_MAX_CONNECTIONS", "lots")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "environment variable SHARDCAST_LIMITS_MAX_CONNECTIONS: \
             `limits.max_connections` = \"lots\": invalid type: string \"lots\", expected usize"
        );
        let message = load_with(None, &[("SHARDCAST_SERVER_FORCE_EPOLL", "yes")])
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("`server.force_epoll` = \"yes\""),
            "{message}"
        );
    }

    #[test]
    fn rust_log_stands_in_for_the_log_level_below_its_own_variable() {
        let level = |vars: &[(&str, &str)]| {
            load_with(None, vars)
                .unwrap()
                .settings
                .log
                .level
                .to_string()
        };
        assert_eq!(level(&[]), "info");
        assert_eq!(level(&[("RUST_LOG", "debug")]), "debug");
        assert_eq!(
            level(&[("RUST_LOG", "debug"), (LOG_LEVEL_VAR, "warn")]),
            "warn"
        );
        let message = load_with(None, &[("RUST_LOG", "shardcast=loud")])
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("environment variable RUST_LOG: `log.level`"),
            "{message}"
        );
    }

    #[test]
    fn every_key_has_a_variable() {
        let defaults = Defaults::embedded();
        let mut keys = Vec::new();
        leaves(&defaults.table, &mut Vec::new(), &mut keys);
        assert!(keys.len() > 20, "{keys:?}");
        for key in keys {
            let name = variable_name(&key);
            assert_eq!(defaults.key_of_variable(&name), Some(key), "{name}");
        }
    }
}
