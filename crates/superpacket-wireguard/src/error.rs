//! The one error type for bad configuration: a key, a config file line, an AllowedIPs entry.

use std::fmt;

/// A configuration value that cannot be used, naming the field (and the line, for a config file).
/// The Node binding turns it into `ERR_SUPERPACKET_INVALID_ARGUMENT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line of a config file, when the value came from one.
    pub line: Option<usize>,
    /// The field as the user wrote or named it (`PrivateKey`, `AllowedIPs`, `peers[1].publicKey`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// An error in `field`, not tied to a file line.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { line: None, field: field.into(), message: message.into() }
    }

    /// The same error, located at `line` of a config file.
    pub fn at_line(mut self, line: usize) -> Self {
        self.line = Some(line);
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.field, self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}
