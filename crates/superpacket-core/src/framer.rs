//! The framing hook: what wraps each segment on the way to the UDP socket and unwraps it on the way back.
//!
//! A framer reserves `headroom` bytes before and at most `tailroom` bytes after every segment, so that
//! segments can be split straight into a send buffer at a fixed stride and sealed in place; the whole
//! buffer then leaves in one UDP_SEGMENT send. The shape fits the encrypted framers to come (a
//! WireGuard-style transport message): a per-segment counter that the caller hands in (the nonce),
//! sealing in place, and opening that may drop a datagram (bad tag, replay, wrong peer).

use core::ops::Range;

/// Why a framer refused to seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    /// The buffer is not headroom + payload + tailroom long.
    BadLayout,
}

/// Why a framer dropped a datagram on open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than the framing itself.
    TooShort,
    /// The framing does not match (wrong header, wrong peer, failed authentication).
    Mismatch,
}

/// Wraps segments before they are sent and unwraps datagrams after they are received.
///
/// Both calls work in place. Implementations must not panic on any input: `open` sees bytes from the
/// network.
pub trait Framer: Send + Sync {
    /// Bytes reserved before each segment.
    fn headroom(&self) -> usize;
    /// Most bytes a sealed segment may grow at its end.
    fn tailroom(&self) -> usize;
    /// Seals one segment. `buf` is `headroom + payload_len + tailroom` bytes with the payload at
    /// `buf[headroom..headroom + payload_len]`; `counter` is unique per segment for the life of the sender.
    /// Returns the sealed datagram length, which starts at `buf[0]`. Segments of equal payload length must
    /// seal to equal lengths (the UDP_SEGMENT send needs a fixed stride).
    fn seal(&self, buf: &mut [u8], payload_len: usize, counter: u64) -> Result<usize, SealError>;
    /// Opens one received datagram; returns where the inner packet lies in `datagram`, or why the
    /// datagram is dropped.
    fn open(&self, datagram: &mut [u8]) -> Result<Range<usize>, DropReason>;
}

/// No framing: segments go out as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainFramer;

impl Framer for PlainFramer {
    fn headroom(&self) -> usize {
        0
    }
    fn tailroom(&self) -> usize {
        0
    }
    fn seal(&self, buf: &mut [u8], payload_len: usize, _counter: u64) -> Result<usize, SealError> {
        if buf.len() != payload_len {
            return Err(SealError::BadLayout);
        }
        Ok(payload_len)
    }
    fn open(&self, datagram: &mut [u8]) -> Result<Range<usize>, DropReason> {
        if datagram.is_empty() {
            return Err(DropReason::TooShort);
        }
        Ok(0..datagram.len())
    }
}

/// A fixed header (such as a connection id) put before every segment, checked and removed on open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderFramer {
    header: Box<[u8]>,
}

impl HeaderFramer {
    /// A framer that prefixes `header` (at most 255 bytes, so that it stays a small fraction of a segment).
    pub fn new(header: &[u8]) -> Option<Self> {
        (header.len() <= 255).then(|| HeaderFramer { header: header.into() })
    }

    /// The header bytes.
    pub fn header(&self) -> &[u8] {
        &self.header
    }
}

impl Framer for HeaderFramer {
    fn headroom(&self) -> usize {
        self.header.len()
    }
    fn tailroom(&self) -> usize {
        0
    }
    fn seal(&self, buf: &mut [u8], payload_len: usize, _counter: u64) -> Result<usize, SealError> {
        let n = self.header.len();
        if buf.len() != n + payload_len {
            return Err(SealError::BadLayout);
        }
        buf[..n].copy_from_slice(&self.header);
        Ok(buf.len())
    }
    fn open(&self, datagram: &mut [u8]) -> Result<Range<usize>, DropReason> {
        let n = self.header.len();
        if datagram.len() <= n {
            return Err(DropReason::TooShort);
        }
        if datagram[..n] != *self.header {
            return Err(DropReason::Mismatch);
        }
        Ok(n..datagram.len())
    }
}

/// Reserves headroom and tailroom and seals nothing: the slots are handed to a framer that runs elsewhere
/// (a JavaScript framer that seals a whole batch at once), which must fill each slot completely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReserveFramer {
    /// Bytes before each segment.
    pub headroom: usize,
    /// Bytes after each segment.
    pub tailroom: usize,
}

impl Framer for ReserveFramer {
    fn headroom(&self) -> usize {
        self.headroom
    }
    fn tailroom(&self) -> usize {
        self.tailroom
    }
    fn seal(&self, buf: &mut [u8], payload_len: usize, _counter: u64) -> Result<usize, SealError> {
        if buf.len() != self.headroom + payload_len + self.tailroom {
            return Err(SealError::BadLayout);
        }
        Ok(buf.len())
    }
    fn open(&self, datagram: &mut [u8]) -> Result<Range<usize>, DropReason> {
        if datagram.len() <= self.headroom + self.tailroom {
            return Err(DropReason::TooShort);
        }
        Ok(self.headroom..datagram.len() - self.tailroom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_framer_seals_and_opens_in_place() {
        let f = HeaderFramer::new(b"cid7").unwrap();
        let mut buf = *b"....payload";
        let len = f.seal(&mut buf, 7, 0).unwrap();
        assert_eq!(&buf[..len], b"cid7payload");
        assert_eq!(f.open(&mut buf), Ok(4..11));
        let mut wrong = *b"cid8payload";
        assert_eq!(f.open(&mut wrong), Err(DropReason::Mismatch));
        assert_eq!(f.open(&mut [b'c', b'i']), Err(DropReason::TooShort));
        assert_eq!(f.seal(&mut buf, 9, 0), Err(SealError::BadLayout));
        assert!(HeaderFramer::new(&[0; 256]).is_none());
    }

    #[test]
    fn reserve_framer_keeps_whole_slots() {
        let f = ReserveFramer { headroom: 2, tailroom: 3 };
        let mut buf = [0u8; 10];
        assert_eq!(f.seal(&mut buf, 5, 0), Ok(10));
        assert_eq!(f.seal(&mut buf, 4, 0), Err(SealError::BadLayout));
        assert_eq!(f.open(&mut buf), Ok(2..7));
        assert_eq!(f.open(&mut buf[..5]), Err(DropReason::TooShort));
    }

    #[test]
    fn plain_framer_is_identity() {
        let mut buf = *b"abc";
        assert_eq!(PlainFramer.seal(&mut buf, 3, 9), Ok(3));
        assert_eq!(PlainFramer.open(&mut buf), Ok(0..3));
        assert_eq!(PlainFramer.open(&mut []), Err(DropReason::TooShort));
    }
}
