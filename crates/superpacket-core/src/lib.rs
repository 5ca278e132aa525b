//! Sans-IO superpacket transforms.
//!
//! A *frame* is a 10-byte `virtio_net_hdr` followed by one IP packet, as a TUN device with
//! IFF_VNET_HDR reads and writes them. With TSO/USO the IP packet is a *superpacket* of up to 64 KiB that
//! stands for many wire-sized segments. This crate turns superpackets into segments ([`split`]) and
//! segments into superpackets ([`coalesce`]), byte-exact, without syscalls, `unsafe` or panics.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod checksum;
pub mod coalesce;
mod error;
pub mod framer;
pub mod packet;
pub mod split;
pub mod vnet;

pub use error::PacketError;
pub use vnet::{GsoKind, VirtioNetHdr, VNET_HDR_LEN};

/// Most segments one superpacket may carry in either direction (the kernel's UDP GSO limit).
pub const MAX_SEGMENTS: usize = 64;
