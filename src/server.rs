//! Placeholder for the shards and drivers, so the `serve` command compiles before they land.
//! Replaced whole by the real `server` module.

use std::fmt;

use crate::config::Config;

/// Why the server stopped with an error.
#[derive(Debug)]
pub enum ServeError {
    /// The shards and drivers are not part of this build.
    NotBuilt,
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the server is not built yet")
    }
}

impl std::error::Error for ServeError {}

/// Runs the server on `config` until it is drained.
pub fn run(config: Config) -> Result<(), ServeError> {
    drop(config);
    Err(ServeError::NotBuilt)
}
