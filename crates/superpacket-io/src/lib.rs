//! Devices for superpacket: a TUN with segmentation offloads and a UDP socket with GSO/GRO, usable from
//! Rust without Node. Platform code lives in files named by platform; elsewhere the same API works without
//! offloads.
#![warn(missing_docs)]

pub mod datapath;
pub mod error;
pub mod fault;
#[cfg(unix)]
mod readiness;
pub mod tun;
pub mod tunnel;
pub mod udp;

pub use error::IoError;
