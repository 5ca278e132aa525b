//! The framing hook: what wraps each segment on the way to the UDP socket and unwraps it on the way back.
//!
//! The contract every framer shares (plain, header, WireGuard, DTLS records):
//! - **Exact sizes.** A segment of `n` payload bytes seals to exactly `headroom + n + tailroom` bytes, so
//!   segments are split straight into their slots of one send buffer at a fixed stride and sealed in
//!   place: no compaction, and the whole buffer leaves in one UDP_SEGMENT send.
//! - **One seal call per superpacket.** [`Framer::seal`] sees every slot of a superpacket at once, so a
//!   framer that numbers its records reserves one block of counters atomically for all of them; counters
//!   belong to the framer's session key, which every queue and writer sharing the framer shares, so none
//!   repeats. A framer refuses to seal ([`SealError::Exhausted`]) rather than wrap a counter.
//! - **Routing.** `seal` also says where the datagrams go: to the transport's own peer, or to an endpoint
//!   the framer picked (WireGuard routes by the inner destination), or nowhere yet (held until a handshake
//!   completes) or nowhere at all (dropped, with a reason).
//! - **Opening.** [`Framer::open`] sees one datagram, its source address and a scratch buffer at least as
//!   long as the datagram (for framers that cannot decrypt in place), and returns the inner packet, or
//!   that the datagram was a control message it consumed, or why it dropped it. Datagrams to send back
//!   now (handshake responses, cookies, keepalives, packets queued for a handshake) go into [`Control`].
//! - **Timers.** [`Framer::poll`] runs every [`POLL_INTERVAL_MS`] milliseconds from the data path, with
//!   no JS involved, and may add control datagrams.
//!
//! Implementations must not panic on any input: `open` sees bytes from the network.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

/// How often the data path calls [`Framer::poll`].
pub const POLL_INTERVAL_MS: u64 = 250;

/// Most headroom or tailroom a framer may reserve.
pub const MAX_FRAMER_ROOM: usize = 1024;

/// Why a framer refused to seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SealError {
    /// The slots are not laid out as the framer's sizes say.
    BadLayout,
    /// The key's counter space is used up: rekey before sealing more.
    Exhausted,
}

impl std::fmt::Display for SealError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SealError::BadLayout => "the slots do not match the framer's headroom and tailroom",
            SealError::Exhausted => "the key's counter space is used up; rekey first",
        })
    }
}

/// Declares [`DropReason`] with its stable names from one list.
macro_rules! drop_reasons {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// Why a datagram (or an outbound superpacket) was dropped. Every drop is counted under one of these.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum DropReason {
            $($(#[$doc])* $variant,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];

            /// The stable kebab-case name shown in stats (`"bad-mac"`, `"replay"` ...).
            pub const fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than the framing itself.
    TooShort => "too-short",
    /// The framing does not match (wrong header or prefix, wrong record type or version).
    Mismatch => "mismatch",
    /// From an address other than the fixed peer, with a framer that authenticates nothing.
    WrongSource => "wrong-source",
    /// The authentication tag or MAC did not verify.
    BadMac => "bad-mac",
    /// A counter already seen, or too old for the replay window.
    Replay => "replay",
    /// A receiver index, epoch or session the framer does not know.
    UnknownSession => "unknown-session",
    /// The decrypted packet's inner source is not one the peer may use (WireGuard AllowedIPs).
    NotAllowedSource => "not-allowed-source",
    /// No session to seal with or open with yet (handshake pending or failed).
    NoSession => "no-session",
    /// No peer to send to (no route for the inner destination, or no peer learned yet).
    NoRoute => "no-route",
    /// The inner packet is not a well-formed IPv4 or IPv6 packet.
    InvalidPacket => "invalid-packet",
    /// A handshake message that did not verify or came too fast (rate limited, cookie required).
    BadHandshake => "bad-handshake",
    /// Packets waiting for a handshake beyond the bounded queue.
    QueueFull => "queue-full",
    /// The key's counter space is used up.
    Exhausted => "exhausted",
}

/// Counters by [`DropReason`], shared between threads.
#[derive(Debug)]
pub struct DropCounters([AtomicU64; DropReason::ALL.len()]);

impl Default for DropCounters {
    fn default() -> Self {
        DropCounters(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl DropCounters {
    /// Counts `n` drops for `reason`.
    pub fn add(&self, reason: DropReason, n: u64) {
        self.0[reason as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// The count of one reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize].load(Ordering::Relaxed)
    }

    /// Every reason with its count.
    pub fn snapshot(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL.iter().map(|&r| (r, self.get(r))).collect()
    }

    /// All drops together.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// Datagrams a framer wants sent now, each to its own address (handshakes, cookie replies, keepalives,
/// packets that waited for a handshake).
#[derive(Debug, Default)]
pub struct Control {
    datagrams: Vec<(SocketAddr, Vec<u8>)>,
}

impl Control {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `bytes` for `to`.
    pub fn push(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        self.datagrams.push((to, bytes));
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }

    /// How many datagrams are queued.
    pub fn len(&self) -> usize {
        self.datagrams.len()
    }

    /// Takes every queued datagram, leaving the queue empty.
    pub fn drain(&mut self) -> std::vec::Drain<'_, (SocketAddr, Vec<u8>)> {
        self.datagrams.drain(..)
    }
}

/// The slots of one superpacket in a send buffer: slot `i` starts at `i * stride` and holds `headroom`
/// bytes, the segment's IP packet, then `tailroom` bytes. Every slot is `stride` bytes long except the
/// last, whose packet may be shorter.
#[derive(Debug)]
pub struct Slots<'a> {
    buf: &'a mut [u8],
    headroom: usize,
    tailroom: usize,
    stride: usize,
    count: usize,
    last_len: usize,
}

impl<'a> Slots<'a> {
    /// Describes `count` slots in `buf`; `seg_len` is the packet length of every slot but the last,
    /// `last_len` the last one's. `None` if `buf` does not hold exactly those slots.
    pub fn new(
        buf: &'a mut [u8],
        headroom: usize,
        tailroom: usize,
        seg_len: usize,
        last_len: usize,
        count: usize,
    ) -> Option<Self> {
        let stride = headroom.checked_add(seg_len)?.checked_add(tailroom)?;
        let total = stride.checked_mul(count.checked_sub(1)?)?.checked_add(headroom + last_len + tailroom)?;
        (count > 0 && last_len <= seg_len && total == buf.len()).then_some(Slots {
            buf,
            headroom,
            tailroom,
            stride,
            count,
            last_len,
        })
    }

    /// How many slots.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Bytes before each slot's packet.
    pub fn headroom(&self) -> usize {
        self.headroom
    }

    /// Bytes after each slot's packet.
    pub fn tailroom(&self) -> usize {
        self.tailroom
    }

    /// Bytes from one slot's start to the next.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Packet length of slot `i`.
    pub fn packet_len(&self, i: usize) -> usize {
        if i + 1 == self.count {
            self.last_len
        } else {
            self.stride - self.headroom - self.tailroom
        }
    }

    /// Slot `i` whole (headroom, packet, tailroom), or `None` past the last.
    pub fn slot_mut(&mut self, i: usize) -> Option<&mut [u8]> {
        if i >= self.count {
            return None;
        }
        let start = i * self.stride;
        let len = self.headroom + self.packet_len(i) + self.tailroom;
        self.buf.get_mut(start..start + len)
    }

    /// The IP packet of slot `i`.
    pub fn packet(&self, i: usize) -> Option<&[u8]> {
        if i >= self.count {
            return None;
        }
        let start = i * self.stride + self.headroom;
        self.buf.get(start..start + self.packet_len(i))
    }

    /// The inner destination address of the superpacket (every segment shares it).
    pub fn inner_destination(&self) -> Option<IpAddr> {
        self.packet(0).and_then(crate::packet::ip_destination)
    }
}

/// Where a sealed superpacket goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealed {
    /// Every slot is sealed; send them to the transport's own peer (the framer does not route).
    ToPeer,
    /// Every slot is sealed; send them to this endpoint (the framer routes, as WireGuard does).
    To(SocketAddr),
    /// The framer took the packets to send once a handshake completes (they will come back through
    /// [`Control`]); send nothing now.
    Held,
    /// Nothing is sent: counted under this reason.
    Dropped(DropReason),
}

/// What [`Framer::open`] found in a datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened<'a> {
    /// An inner IP packet, in the datagram or in the scratch buffer. `authenticated` says whether the
    /// framer verified that the datagram came from its peer (only then may the transport move its peer).
    Data {
        /// The inner packet.
        packet: &'a [u8],
        /// Whether the framer authenticated the datagram.
        authenticated: bool,
    },
    /// A control message the framer consumed (a handshake, a keepalive, a cookie reply).
    Consumed,
    /// Dropped, counted under this reason.
    Dropped(DropReason),
}

/// Wraps segments before they are sent and unwraps datagrams after they are received. See the module
/// documentation for the contract.
pub trait Framer: Send + Sync {
    /// Bytes before each segment's packet.
    fn headroom(&self) -> usize;

    /// Bytes after each segment's packet.
    fn tailroom(&self) -> usize;

    /// The exact datagram length a packet of `packet_len` bytes seals to.
    fn sealed_len(&self, packet_len: usize) -> usize {
        self.headroom() + packet_len + self.tailroom()
    }

    /// Seals every slot of one superpacket in place and says where the datagrams go.
    fn seal(&self, slots: &mut Slots<'_>, control: &mut Control) -> Result<Sealed, SealError>;

    /// Opens one datagram from `from`. `scratch` is at least as long as the datagram.
    fn open<'a>(
        &self,
        datagram: &'a mut [u8],
        scratch: &'a mut [u8],
        from: SocketAddr,
        control: &mut Control,
    ) -> Opened<'a>;

    /// Runs the framer's timers (handshake retries, rekeying, keepalives); called every
    /// [`POLL_INTERVAL_MS`].
    fn poll(&self, _control: &mut Control) {}

    /// Whether the framer picks endpoints itself ([`Sealed::To`]); such a framer needs no transport peer.
    fn routes(&self) -> bool {
        false
    }
}

/// Checks that every slot of `slots` has this framer's layout.
fn check_layout(slots: &Slots<'_>, headroom: usize, tailroom: usize) -> Result<(), SealError> {
    if slots.headroom == headroom && slots.tailroom == tailroom {
        Ok(())
    } else {
        Err(SealError::BadLayout)
    }
}

/// No framing: segments go out as they are. Authenticates nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainFramer;

impl Framer for PlainFramer {
    fn headroom(&self) -> usize {
        0
    }
    fn tailroom(&self) -> usize {
        0
    }
    fn seal(&self, slots: &mut Slots<'_>, _control: &mut Control) -> Result<Sealed, SealError> {
        check_layout(slots, 0, 0)?;
        Ok(Sealed::ToPeer)
    }
    fn open<'a>(&self, datagram: &'a mut [u8], _: &'a mut [u8], _: SocketAddr, _: &mut Control) -> Opened<'a> {
        if datagram.is_empty() {
            return Opened::Dropped(DropReason::TooShort);
        }
        Opened::Data { packet: datagram, authenticated: false }
    }
}

/// A fixed header (such as a connection id) put before every segment, checked and removed on open.
/// Authenticates nothing: anyone who sees one datagram can forge the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderFramer {
    header: Box<[u8]>,
}

impl HeaderFramer {
    /// A framer that prefixes `header` (1 to 255 bytes, so that it stays a small fraction of a segment).
    pub fn new(header: &[u8]) -> Option<Self> {
        (1..=255).contains(&header.len()).then(|| HeaderFramer { header: header.into() })
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
    fn seal(&self, slots: &mut Slots<'_>, _control: &mut Control) -> Result<Sealed, SealError> {
        let n = self.header.len();
        check_layout(slots, n, 0)?;
        for i in 0..slots.count() {
            if let Some(slot) = slots.slot_mut(i) {
                slot[..n].copy_from_slice(&self.header);
            }
        }
        Ok(Sealed::ToPeer)
    }
    fn open<'a>(&self, datagram: &'a mut [u8], _: &'a mut [u8], _: SocketAddr, _: &mut Control) -> Opened<'a> {
        let n = self.header.len();
        if datagram.len() <= n {
            return Opened::Dropped(DropReason::TooShort);
        }
        if datagram[..n] != *self.header {
            return Opened::Dropped(DropReason::Mismatch);
        }
        Opened::Data { packet: &datagram[n..], authenticated: false }
    }
}

/// Reserves headroom and tailroom and seals nothing: the slots are handed to a framer that runs elsewhere
/// (a JavaScript framer that seals a whole batch at once), which must fill each slot completely. It hands
/// out the per-segment counters such a framer uses as nonces: one block per superpacket, from one counter
/// shared by every writer that uses this framer.
#[derive(Debug)]
pub struct ReserveFramer {
    headroom: usize,
    tailroom: usize,
    next: AtomicU64,
}

impl ReserveFramer {
    /// A framer reserving `headroom` and `tailroom` bytes (each at most [`MAX_FRAMER_ROOM`]).
    pub fn new(headroom: usize, tailroom: usize) -> Option<Self> {
        (headroom <= MAX_FRAMER_ROOM && tailroom <= MAX_FRAMER_ROOM).then(|| ReserveFramer {
            headroom,
            tailroom,
            next: AtomicU64::new(0),
        })
    }

    /// Reserves `n` consecutive counters and returns the first; `None` once the space is used up.
    pub fn reserve(&self, n: u64) -> Option<u64> {
        reserve_block(&self.next, n, u64::MAX)
    }
}

/// Takes `n` consecutive values below `limit` from `counter` atomically and returns the first, or `None`
/// (leaving the counter as it was) when fewer than `n` are left. The building block of every framer's
/// nonce reservation.
pub fn reserve_block(counter: &AtomicU64, n: u64, limit: u64) -> Option<u64> {
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| cur.checked_add(n).filter(|&end| end <= limit))
        .ok()
}

impl Framer for ReserveFramer {
    fn headroom(&self) -> usize {
        self.headroom
    }
    fn tailroom(&self) -> usize {
        self.tailroom
    }
    fn seal(&self, slots: &mut Slots<'_>, _control: &mut Control) -> Result<Sealed, SealError> {
        check_layout(slots, self.headroom, self.tailroom)?;
        Ok(Sealed::ToPeer)
    }
    fn open<'a>(&self, datagram: &'a mut [u8], _: &'a mut [u8], _: SocketAddr, _: &mut Control) -> Opened<'a> {
        if datagram.len() <= self.headroom + self.tailroom {
            return Opened::Dropped(DropReason::TooShort);
        }
        let end = datagram.len() - self.tailroom;
        Opened::Data { packet: &datagram[self.headroom..end], authenticated: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from() -> SocketAddr {
        "198.18.0.1:1".parse().unwrap()
    }

    #[test]
    fn header_framer_seals_every_slot_and_opens_in_place() {
        let f = HeaderFramer::new(b"cid7").unwrap();
        let mut buf = *b"....payload....pay";
        let mut slots = Slots::new(&mut buf, 4, 0, 7, 3, 2).unwrap();
        assert_eq!(f.seal(&mut slots, &mut Control::new()), Ok(Sealed::ToPeer));
        assert_eq!(&buf, b"cid7payloadcid7pay");
        let mut scratch = [0u8; 32];
        let mut d = *b"cid7payload";
        assert_eq!(
            f.open(&mut d, &mut scratch, from(), &mut Control::new()),
            Opened::Data { packet: b"payload", authenticated: false }
        );
        let mut wrong = *b"cid8payload";
        assert_eq!(
            f.open(&mut wrong, &mut scratch, from(), &mut Control::new()),
            Opened::Dropped(DropReason::Mismatch)
        );
        assert_eq!(
            f.open(&mut [b'c'], &mut scratch, from(), &mut Control::new()),
            Opened::Dropped(DropReason::TooShort)
        );
        assert!(HeaderFramer::new(&[0; 256]).is_none());
        assert!(HeaderFramer::new(&[]).is_none());
    }

    #[test]
    fn a_framer_refuses_slots_of_another_layout() {
        let f = HeaderFramer::new(b"ab").unwrap();
        let mut buf = [0u8; 10];
        let mut slots = Slots::new(&mut buf, 3, 0, 7, 7, 1).unwrap();
        assert_eq!(f.seal(&mut slots, &mut Control::new()), Err(SealError::BadLayout));
    }

    #[test]
    fn slots_must_cover_the_buffer_exactly() {
        let mut buf = [0u8; 25];
        assert!(Slots::new(&mut buf, 2, 3, 5, 5, 2).is_none());
        let s = Slots::new(&mut buf[..20], 2, 3, 5, 5, 2).unwrap();
        assert_eq!((s.count(), s.stride(), s.packet_len(1)), (2, 10, 5));
        assert!(Slots::new(&mut buf[..18], 2, 3, 5, 3, 2).is_some());
        assert!(Slots::new(&mut buf[..0], 2, 3, 5, 3, 0).is_none());
        // The last packet may not be longer than the others.
        assert!(Slots::new(&mut buf[..22], 2, 3, 5, 7, 2).is_none());
    }

    #[test]
    fn reserve_framer_keeps_whole_slots_and_hands_out_disjoint_blocks() {
        let f = ReserveFramer::new(2, 3).unwrap();
        let mut d = [7u8; 10];
        let mut scratch = [0u8; 10];
        assert_eq!(
            f.open(&mut d, &mut scratch, from(), &mut Control::new()),
            Opened::Data { packet: &[7u8; 5][..], authenticated: false }
        );
        assert_eq!(
            f.open(&mut d[..5], &mut scratch, from(), &mut Control::new()),
            Opened::Dropped(DropReason::TooShort)
        );
        assert_eq!(f.reserve(45), Some(0));
        assert_eq!(f.reserve(3), Some(45));
        assert_eq!(f.reserve(1), Some(48));
        assert!(ReserveFramer::new(MAX_FRAMER_ROOM + 1, 0).is_none());
    }

    #[test]
    fn reserve_block_refuses_to_wrap() {
        let c = AtomicU64::new(u64::MAX - 10);
        assert_eq!(reserve_block(&c, 10, u64::MAX), Some(u64::MAX - 10));
        assert_eq!(reserve_block(&c, 1, u64::MAX), None);
        assert_eq!(c.load(Ordering::Relaxed), u64::MAX);
        let c = AtomicU64::new(5);
        assert_eq!(reserve_block(&c, 6, 10), None);
        assert_eq!(reserve_block(&c, 5, 10), Some(5));
    }

    #[test]
    fn plain_framer_is_identity() {
        let mut buf = *b"abc";
        let mut slots = Slots::new(&mut buf, 0, 0, 3, 3, 1).unwrap();
        assert_eq!(PlainFramer.seal(&mut slots, &mut Control::new()), Ok(Sealed::ToPeer));
        let mut scratch = [0u8; 3];
        assert_eq!(
            PlainFramer.open(&mut buf, &mut scratch, from(), &mut Control::new()),
            Opened::Data { packet: b"abc", authenticated: false }
        );
        assert_eq!(
            PlainFramer.open(&mut [], &mut scratch, from(), &mut Control::new()),
            Opened::Dropped(DropReason::TooShort)
        );
    }

    #[test]
    fn drop_reason_names_are_unique() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
        let c = DropCounters::default();
        c.add(DropReason::Replay, 3);
        c.add(DropReason::BadMac, 1);
        assert_eq!((c.get(DropReason::Replay), c.total()), (3, 4));
    }
}
