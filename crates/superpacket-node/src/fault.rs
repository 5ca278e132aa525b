//! Fault injection for the test suite (`superpacket_io::fault`), reached from `ts/fault.ts`. Not public
//! API: the package root does not export it.

use napi_derive::napi;
use superpacket_io::fault::{self, Syscall};

use crate::error::invalid_argument;

/// Makes the next `times` calls of `syscall` in this process (`tunRead`, `tunWrite`, `sendGso`,
/// `sendmmsg`, `recvmmsg`) fail with `errno` (`EIO`, `EINVAL`, `EMSGSIZE`, `EAGAIN`, `ENOBUFS`, `EPERM`),
/// after letting `after` calls of it run (none when absent).
/// @internal
#[napi]
pub fn inject_fault(syscall: String, errno: String, times: u32, after: Option<u32>) -> napi::Result<()> {
    let call = Syscall::parse(&syscall).ok_or_else(|| {
        let names: Vec<&str> = Syscall::ALL.iter().map(|s| s.name()).collect();
        invalid_argument(format!("unknown system call '{syscall}': one of {}", names.join(", ")))
    })?;
    let code = fault::errno_by_name(&errno).ok_or_else(|| invalid_argument(format!("unknown errno '{errno}'")))?;
    fault::inject_after(call, code, times, after.unwrap_or(0));
    Ok(())
}

/// Drops every pending fault.
/// @internal
#[napi]
pub fn clear_faults() {
    fault::clear();
}
