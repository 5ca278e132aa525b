//! Native errors to JS errors with a stable `code`.
//!
//! napi-rs sets a JS error's `code` from a fixed status enum, so the `ERR_SUPERPACKET_*` code travels in
//! the message's trailing ` [details:{json}]` together with reason, errno and syscall; `ts/errors.ts`
//! moves them onto the error object.

use napi::Status;
use superpacket_core::PacketError;
use superpacket_io::IoError;

fn coded(code: &str, message: &str, reason: Option<&str>, errno: Option<i32>, syscall: Option<&str>) -> napi::Error {
    let mut details = format!("\"code\":\"{code}\"");
    if let Some(r) = reason {
        details.push_str(&format!(",\"reason\":\"{r}\""));
    }
    if let Some(e) = errno {
        details.push_str(&format!(",\"errno\":{e}"));
    }
    if let Some(s) = syscall {
        details.push_str(&format!(",\"syscall\":\"{}\"", s.replace(['"', '\\'], "'")));
    }
    napi::Error::new(Status::GenericFailure, format!("{message} [details:{{{details}}}]"))
}

/// An invalid-packet error from the packet core.
pub fn packet_error(e: PacketError) -> napi::Error {
    coded("ERR_SUPERPACKET_INVALID_PACKET", &format!("invalid frame: {e}"), Some(e.reason()), None, None)
}

/// An error from the I/O layer, errno and syscall kept.
pub fn io_error(e: IoError) -> napi::Error {
    coded(e.code(), &e.message, None, e.errno, e.syscall)
}

/// A write stopped by its `AbortSignal` before it was done; `sent` counts the items of the write (frames,
/// datagrams, packets) that went out before it stopped.
pub fn aborted(sent: usize) -> napi::Error {
    napi::Error::new(
        Status::GenericFailure,
        format!("the write was aborted [details:{{\"code\":\"ERR_SUPERPACKET_ABORTED\",\"sent\":{sent}}}]"),
    )
}

/// Fails unless a caller's buffer `what` (for a read straight into it) holds at least `room` bytes.
pub fn check_room(buf: &[u8], room: usize, what: &str) -> napi::Result<()> {
    if buf.len() < room {
        return Err(invalid_argument(format!("{what} needs at least {room} bytes, not {}", buf.len())));
    }
    Ok(())
}

/// An argument out of range.
pub fn invalid_argument(message: impl std::fmt::Display) -> napi::Error {
    coded("ERR_SUPERPACKET_INVALID_ARGUMENT", &message.to_string(), None, None, None)
}
