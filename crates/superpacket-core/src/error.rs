//! The one error type of the packet core.

use core::fmt;

/// Why a frame or packet was rejected. Every variant has a stable [`PacketError::reason`] string that the
/// TypeScript layer exposes next to `code: 'ERR_SUPERPACKET_INVALID_PACKET'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketError {
    /// The buffer ends before a header or length field says it should.
    Truncated,
    /// The frame or packet is larger than 64 KiB of IP.
    TooLarge,
    /// The virtio_net_hdr has an unknown gso_type or flag.
    BadVnetHeader,
    /// A GSO frame with gso_size 0.
    GsoSizeZero,
    /// csum_start/csum_offset point outside the packet or not at the L4 checksum field.
    ChecksumOutOfRange,
    /// The GSO type does not match the IP version or the L4 protocol.
    GsoTypeMismatch,
    /// An IP or UDP length field disagrees with the buffer.
    LengthMismatch,
    /// The packet is neither IPv4 nor IPv6.
    NotIp,
    /// A header field is invalid (IPv4 IHL < 5, TCP data offset < 5, a fragment where GSO needs a whole packet).
    BadHeader,
    /// A GSO frame whose L4 protocol is neither TCP nor UDP, or a checksum request for one.
    UnsupportedProtocol,
    /// The caller's output buffer cannot hold the result.
    BufferTooSmall,
}

impl PacketError {
    /// A short stable identifier, such as `"truncated"` or `"gso-size-zero"`.
    pub const fn reason(self) -> &'static str {
        match self {
            PacketError::Truncated => "truncated",
            PacketError::TooLarge => "too-large",
            PacketError::BadVnetHeader => "bad-vnet-header",
            PacketError::GsoSizeZero => "gso-size-zero",
            PacketError::ChecksumOutOfRange => "checksum-out-of-range",
            PacketError::GsoTypeMismatch => "gso-type-mismatch",
            PacketError::LengthMismatch => "length-mismatch",
            PacketError::NotIp => "not-ip",
            PacketError::BadHeader => "bad-header",
            PacketError::UnsupportedProtocol => "unsupported-protocol",
            PacketError::BufferTooSmall => "buffer-too-small",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            PacketError::Truncated => "the buffer ends before its headers or length fields say it should",
            PacketError::TooLarge => "the packet is larger than 65,535 bytes",
            PacketError::BadVnetHeader => "the virtio_net_hdr has an unknown gso_type or flag",
            PacketError::GsoSizeZero => "a GSO frame has gso_size 0",
            PacketError::ChecksumOutOfRange => "csum_start/csum_offset do not point at the L4 checksum field",
            PacketError::GsoTypeMismatch => "the GSO type does not match the IP version or L4 protocol",
            PacketError::LengthMismatch => "an IP or UDP length field disagrees with the buffer length",
            PacketError::NotIp => "the packet is neither IPv4 nor IPv6",
            PacketError::BadHeader => "a header field is invalid",
            PacketError::UnsupportedProtocol => "the L4 protocol is neither TCP nor UDP",
            PacketError::BufferTooSmall => "the output buffer is too small",
        }
    }
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.describe(), self.reason())
    }
}

impl std::error::Error for PacketError {}
