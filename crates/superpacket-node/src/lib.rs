//! Node-API bindings: argument conversion and threads <-> promises only; no packet logic.
//!
//! Errors cross as JS `Error`s whose `code` is the stable `ERR_SUPERPACKET_*` string and whose message
//! ends with ` [details:{json}]` (reason, errno, syscall); the TypeScript layer turns that into
//! properties of a `SuperpacketError` (see ts/errors.ts).
#![allow(missing_docs)]
// The exported functions are only called from JS, never from the crate's own (empty) test build.
#![cfg_attr(test, allow(dead_code))]

mod abort;
mod dtls;
mod error;
mod fast;
mod fault;
mod framer;
mod owned;
mod packet;
mod tun;
mod tunnel;
mod udp;
#[cfg(unix)]
mod watch;
mod wireguard;
