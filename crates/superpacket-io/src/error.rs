//! Errors of the I/O layer, each with a stable code that the TypeScript layer exposes as `err.code`.

use std::time::Duration;
use std::{fmt, io};

/// Times a send or TUN write that found the kernel out of buffers (ENOBUFS, ENOMEM: a full queueing
/// discipline, memory pressure) is tried again before it counts as failed. Such errors pass; dropping
/// the data at the first one would lose packets a moment's wait delivers.
pub(crate) const OUT_OF_BUFFERS_RETRIES: u32 = 64;
/// Pause before each of those retries (tokio's timer resolution).
pub(crate) const OUT_OF_BUFFERS_BACKOFF: Duration = Duration::from_millis(1);

/// Whether `err` says the kernel is out of buffers for now (ENOBUFS, ENOMEM).
pub(crate) fn is_out_of_buffers(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOBUFS) | Some(libc::ENOMEM))
}

/// What went wrong, as a stable category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The process lacks CAP_NET_ADMIN or access to /dev/net/tun. Only calls that need the capability
    /// (opening and configuring a TUN) report it; an EPERM elsewhere (a `sendmsg` a firewall rule refused)
    /// is [`ErrorKind::Os`] with `errno` EPERM.
    Permission,
    /// The platform or kernel lacks what was asked for.
    Unsupported,
    /// The device or socket was closed.
    Closed,
    /// A packet or frame was malformed.
    InvalidPacket,
    /// An option or argument was out of range.
    InvalidArgument,
    /// Any other failed system call.
    Os,
    /// A framer's key has used up its counter space (nonces): rekey before sealing more.
    Exhausted,
}

impl ErrorKind {
    /// The stable `code` string, such as `ERR_SUPERPACKET_PERMISSION`.
    pub const fn code(self) -> &'static str {
        match self {
            ErrorKind::Permission => "ERR_SUPERPACKET_PERMISSION",
            ErrorKind::Unsupported => "ERR_SUPERPACKET_UNSUPPORTED",
            ErrorKind::Closed => "ERR_SUPERPACKET_CLOSED",
            ErrorKind::InvalidPacket => "ERR_SUPERPACKET_INVALID_PACKET",
            ErrorKind::InvalidArgument => "ERR_SUPERPACKET_INVALID_ARGUMENT",
            ErrorKind::Os => "ERR_SUPERPACKET_OS",
            ErrorKind::Exhausted => "ERR_SUPERPACKET_KEY_EXHAUSTED",
        }
    }
}

/// An I/O-layer error: a kind, a message, and where it came from a system call, that call and its errno.
#[derive(Debug, Clone)]
pub struct IoError {
    /// The category.
    pub kind: ErrorKind,
    /// A sentence for people.
    pub message: String,
    /// The failing system call, if any (`"ioctl(TUNSETIFF)"`, `"sendmsg"` ...).
    pub syscall: Option<&'static str>,
    /// The OS error number, if any.
    pub errno: Option<i32>,
}

impl IoError {
    /// An error without a system call behind it.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        IoError { kind, message: message.into(), syscall: None, errno: None }
    }

    /// Wraps a failed system call: ENOTSUP-like errors become [`ErrorKind::Unsupported`], EBADF
    /// [`ErrorKind::Closed`], anything else (EPERM from a firewall rule included) [`ErrorKind::Os`].
    pub fn from_os(syscall: &'static str, err: &io::Error) -> Self {
        let errno = err.raw_os_error();
        let kind = match errno {
            Some(libc::EOPNOTSUPP) | Some(libc::ENOPROTOOPT) | Some(libc::ENOSYS) => ErrorKind::Unsupported,
            Some(libc::EBADF) => ErrorKind::Closed,
            _ => ErrorKind::Os,
        };
        IoError { kind, message: format!("{syscall} failed: {err}"), syscall: Some(syscall), errno }
    }

    /// Wraps a failed system call that needs CAP_NET_ADMIN (opening or configuring a TUN): EPERM and
    /// EACCES become [`ErrorKind::Permission`] with advice on granting the capability; anything else is
    /// as [`IoError::from_os`].
    pub fn from_admin_os(syscall: &'static str, err: &io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => IoError {
                kind: ErrorKind::Permission,
                message: format!(
                    "{syscall} failed: {err}. Creating a TUN device needs CAP_NET_ADMIN: run as root (sudo), grant \
                     the capability (setcap cap_net_admin+ep $(which node)), or in a container pass \
                     --cap-add NET_ADMIN --device /dev/net/tun"
                ),
                syscall: Some(syscall),
                errno: err.raw_os_error(),
            },
            _ => IoError::from_os(syscall, err),
        }
    }

    /// The device or socket is closed.
    pub fn closed() -> Self {
        IoError::new(ErrorKind::Closed, "the device or socket is closed")
    }

    /// The stable code string.
    pub const fn code(&self) -> &'static str {
        self.kind.code()
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for IoError {}

impl From<superpacket_core::PacketError> for IoError {
    fn from(e: superpacket_core::PacketError) -> Self {
        IoError::new(ErrorKind::InvalidPacket, format!("invalid packet: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eperm_is_a_permission_error_only_where_cap_net_admin_is_the_cause() {
        let eperm = io::Error::from_raw_os_error(libc::EPERM);
        let send = IoError::from_os("sendmsg", &eperm);
        assert_eq!((send.kind, send.errno), (ErrorKind::Os, Some(libc::EPERM)));
        assert!(!send.message.contains("CAP_NET_ADMIN"), "{}", send.message);
        let open = IoError::from_admin_os("ioctl(TUNSETIFF)", &eperm);
        assert_eq!((open.kind, open.errno), (ErrorKind::Permission, Some(libc::EPERM)));
        assert!(open.message.contains("CAP_NET_ADMIN"));
        let other = IoError::from_admin_os("ioctl(TUNSETIFF)", &io::Error::from_raw_os_error(libc::EBUSY));
        assert_eq!(other.kind, ErrorKind::Os);
        assert_eq!(IoError::from_os("write", &io::Error::from_raw_os_error(libc::EBADF)).kind, ErrorKind::Closed);
    }
}
