//! Native errors to JS errors with a stable `code`.

use superpacket_core::PacketError;
use superpacket_io::IoError;

/// A JS error: `code` is the `ERR_SUPERPACKET_*` string.
pub type JsResult<T> = napi::Result<T, String>;

fn details(reason: Option<&str>, errno: Option<i32>, syscall: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(r) = reason {
        parts.push(format!("\"reason\":\"{r}\""));
    }
    if let Some(e) = errno {
        parts.push(format!("\"errno\":{e}"));
    }
    if let Some(s) = syscall {
        parts.push(format!("\"syscall\":\"{}\"", s.replace('"', "'")));
    }
    format!(" [details:{{{}}}]", parts.join(","))
}

/// An invalid-packet error from the packet core.
pub fn packet_error(e: PacketError) -> napi::Error<String> {
    napi::Error::new(
        "ERR_SUPERPACKET_INVALID_PACKET".to_string(),
        format!("invalid frame: {e}{}", details(Some(e.reason()), None, None)),
    )
}

/// An error from the I/O layer, errno and syscall kept.
pub fn io_error(e: IoError) -> napi::Error<String> {
    let d = details(None, e.errno, e.syscall);
    napi::Error::new(e.code().to_string(), format!("{}{d}", e.message))
}

/// An argument out of range.
pub fn invalid_argument(message: impl std::fmt::Display) -> napi::Error<String> {
    napi::Error::new("ERR_SUPERPACKET_INVALID_ARGUMENT".to_string(), format!("{message}{}", details(None, None, None)))
}
