//! WireGuard for superpacket, sans I/O: keys as `wg` prints them, the `wg setconf` / wg-quick file
//! format, cryptokey routing, and [`WireGuard`], a [`superpacket_core::framer::Framer`] that runs
//! boringtun's Noise sessions (handshakes, cookies, timers, ChaCha20-Poly1305) for several peers.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod allowed_ips;
pub mod config;
mod error;
pub mod framer;
pub mod keys;

pub use allowed_ips::{AllowedIps, Cidr};
pub use config::{parse_config, ConfigFile, PeerConfig, WireGuardConfig};
pub use error::ConfigError;
pub use framer::{PeerStats, WireGuard};
pub use keys::{generate_private_key, public_key};
