//! WireGuard for superpacket, sans I/O: keys as `wg` prints them, the `wg setconf` / wg-quick file
//! format, cryptokey routing, and [`WireGuard`], a [`superpacket_core::framer::Framer`] that runs
//! boringtun's Noise sessions (handshakes, cookies, timers, ChaCha20-Poly1305) for several peers.
//!
//! The protocol is boringtun 0.7's `noise::Tunn` (BSD-3): it writes into the caller's buffer, so each
//! segment is sealed straight into its slot of the send buffer. What its API decided here:
//! - `Tunn` is one peer behind `&mut self`: one mutex per peer, held across a superpacket, which also
//!   keeps that superpacket's counters consecutive (sessions and their counters are not exposed, so the
//!   framer reads counters back from the headers it wrote, for the rekey threshold and exhaustion).
//! - `encapsulate` cannot seal in place: each packet is copied to a per-peer buffer first.
//! - `handle_verified_packet` is crate-private: `open` checks mac1 and load with the interface's rate
//!   limiter first (so a flood costs no Diffie-Hellman), then `decapsulate` checks mac1 again against a
//!   per-peer limiter that never limits.
//! - The handshake queue's length is private: the framer keeps its own count to report overflow.
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
