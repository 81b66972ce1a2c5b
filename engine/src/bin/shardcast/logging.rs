//! The log: its format and which events it keeps.

use std::fmt;

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// How each log event is written to stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Which events are logged: a `tracing` filter, as `RUST_LOG` takes it
/// (`info`, `warn,shardcast=debug`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct LogFilter(String);

/// A filter that `tracing` cannot read.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{text}` is not a log filter ({reason}): write a level such as \"info\", \
     or directives such as \"warn,shardcast=debug\""
)]
pub(crate) struct LogFilterError {
    text: String,
    reason: tracing_subscriber::filter::ParseError,
}

impl LogFilter {
    fn env_filter(&self) -> Result<EnvFilter, tracing_subscriber::filter::ParseError> {
        EnvFilter::builder().parse(&self.0)
    }
}

impl TryFrom<String> for LogFilter {
    type Error = LogFilterError;

    fn try_from(text: String) -> Result<LogFilter, LogFilterError> {
        let filter = LogFilter(text);
        match filter.env_filter() {
            Ok(_) => Ok(filter),
            Err(reason) => Err(LogFilterError {
                text: filter.0,
                reason,
            }),
        }
    }
}

impl From<LogFilter> for String {
    fn from(filter: LogFilter) -> String {
        filter.0
    }
}

impl fmt::Display for LogFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Installs the global logger: events that pass `filter`, written to
/// stdout in `format`.
pub(crate) fn init(format: LogFormat, filter: &LogFilter) {
    // A `LogFilter` was checked when it was made.
    let filter = filter
        .env_filter()
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked_when_read() {
        assert!(LogFilter::try_from("info".to_owned()).is_ok());
        assert!(LogFilter::try_from("warn,shardcast=debug".to_owned()).is_ok());
        let bad = LogFilter::try_from("shardcast=loud".to_owned()).unwrap_err();
        assert!(
            bad.to_string()
                .starts_with("`shardcast=loud` is not a log filter"),
            "{bad}"
        );
    }
}
