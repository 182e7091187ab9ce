//! [`ConfigError`]: why the configuration could not be built, each message naming the setting
//! and the fix.

use std::fmt;
use std::path::PathBuf;

/// Why the configuration could not be built; each message names the setting and the fix.
#[derive(Debug)]
pub enum ConfigError {
    /// The file named by `--config` or `RINGCAST_CONFIG` could not be read.
    ReadFile {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML or holds a key or value ringcast does not accept.
    ParseFile {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A `RINGCAST_*` environment variable holds a value that does not parse.
    Env {
        /// The variable.
        var: String,
        /// Why its value was refused.
        reason: String,
    },
    /// A value parsed but is out of range or contradicts another setting.
    Invalid {
        /// The file key (`ws.max_frame_size`); the flag and variable follow from it.
        key: &'static str,
        /// What is wrong and what to set instead.
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReadFile { path, source } => write!(
                f,
                "cannot read the config file {}: {source}; fix the path given to --config or \
                 RINGCAST_CONFIG, or leave both out to run on defaults",
                path.display()
            ),
            Self::ParseFile { path, message } => write!(
                f,
                "the config file {} is not valid: {}; the keys are listed in docs/deployment.md",
                path.display(),
                message.trim_end()
            ),
            Self::Env { var, reason } => {
                write!(
                    f,
                    "environment variable {var} is not valid: {reason}; fix or unset it"
                )
            }
            Self::Invalid { key, reason } => {
                // The flag is the key without its table, except in `[log]`, whose flags keep
                // the table as a prefix (`log.level` is `--log-level`).
                let flag = match key.split_once('.') {
                    Some(("log", name)) => format!("log-{name}"),
                    Some((_, name)) => name.replace('_', "-"),
                    None => key.replace('_', "-"),
                };
                write!(f, "{key} (--{flag}): {reason}")
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::ReadFile { source, .. } => Some(source),
            _ => None,
        }
    }
}
