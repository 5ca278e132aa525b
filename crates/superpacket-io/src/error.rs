//! Errors of the I/O layer, each with a stable code that the TypeScript layer exposes as `err.code`.

use std::{fmt, io};

/// What went wrong, as a stable category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The process lacks CAP_NET_ADMIN or access to /dev/net/tun.
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
        }
    }
}

/// An I/O-layer error: a kind, a message, and where it came from a system call, that call and its errno.
#[derive(Debug)]
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

    /// Wraps a failed system call; EPERM/EACCES become [`ErrorKind::Permission`], ENOTSUP-like errors
    /// [`ErrorKind::Unsupported`], EBADF [`ErrorKind::Closed`].
    pub fn from_os(syscall: &'static str, err: &io::Error) -> Self {
        let errno = err.raw_os_error();
        let kind = match errno {
            Some(libc::EPERM) | Some(libc::EACCES) => ErrorKind::Permission,
            Some(libc::EOPNOTSUPP) | Some(libc::ENOPROTOOPT) | Some(libc::ENOSYS) => ErrorKind::Unsupported,
            Some(libc::EBADF) => ErrorKind::Closed,
            _ => ErrorKind::Os,
        };
        let message = match kind {
            ErrorKind::Permission => format!(
                "{syscall} failed: {err}. Creating a TUN device needs CAP_NET_ADMIN: run as root (sudo), grant the \
                 capability (setcap cap_net_admin+ep $(which node)), or in a container pass \
                 --cap-add NET_ADMIN --device /dev/net/tun"
            ),
            _ => format!("{syscall} failed: {err}"),
        };
        IoError { kind, message, syscall: Some(syscall), errno }
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
