//! The one error type for a configuration or rekey value that cannot be used.

use std::fmt;

/// A configuration value that cannot be used, naming the field as the API spells it (`tx.key`, `rx.iv`,
/// `epoch`, `prefix`, `replayWindow`, `gracePeriod`). The Node binding turns it into
/// `ERR_SUPERPACKET_INVALID_ARGUMENT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// An error in `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { field: field.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}
