//! [`WireGuard`]: boringtun's Noise sessions behind the superpacket [`Framer`] contract, for several peers
//! routed by AllowedIPs.
//!
//! boringtun's `Tunn` is one peer's whole state machine (handshake, sessions, replay windows, timers, the
//! queue of packets waiting for a handshake) behind `&mut self`, so each peer's `Tunn` sits in a mutex
//! that `seal` takes once per superpacket and `open` once per datagram. Holding it across a superpacket is
//! also what makes the counters of its segments consecutive: boringtun numbers packets itself and does not
//! expose the session, so a block cannot be reserved any other way.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use parking_lot::Mutex;
use superpacket_core::framer::{Control, DropCounters, DropReason, Framer, Opened, SealError, Sealed, Slots};

use crate::allowed_ips::{AllowedIps, Cidr};
use crate::config::WireGuardConfig;
use crate::keys::{encode_key, parse_key, KEY_LEN};
use crate::ConfigError;

/// Bytes before each packet in a data message: type (4), receiver index (4), counter (8, little-endian).
pub const WG_HEADROOM: usize = 16;
/// Bytes after each packet: the Poly1305 tag. boringtun does not pad (wireguard-go and the kernel accept
/// unpadded packets), so a packet of `n` bytes seals to exactly `n + 32`.
pub const WG_TAILROOM: usize = 16;
/// A session starts a new handshake after sealing this many packets (the whitepaper's REKEY_AFTER_MESSAGES).
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// A session refuses to seal from this counter on (the whitepaper's REJECT_AFTER_MESSAGES, 2^64 − 2^13 − 1).
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);
/// Most peers: boringtun names a session by 24 bits of peer index and 8 bits of session.
pub const MAX_PEERS: usize = 1 << 24;

/// The message type of a data message (the first byte; the next three are zero).
const MESSAGE_DATA: u8 = 4;
const MESSAGE_HANDSHAKE_INIT: u8 = 1;
const MESSAGE_HANDSHAKE_RESPONSE: u8 = 2;
const MESSAGE_COOKIE_REPLY: u8 = 3;
const HANDSHAKE_INIT_LEN: usize = 148;
const HANDSHAKE_RESPONSE_LEN: usize = 92;
const COOKIE_REPLY_LEN: usize = 64;
const DATA_MIN_LEN: usize = WG_HEADROOM + WG_TAILROOM;
/// boringtun's bound on packets waiting for a handshake (its `MAX_QUEUE_DEPTH`, private there).
const HANDSHAKE_QUEUE_LEN: usize = 256;
/// Handshake messages per second the interface takes before it answers with cookies (boringtun's device
/// uses the same figure).
const HANDSHAKES_PER_SECOND: u64 = 100;

/// One peer's mutable state, all behind one lock.
struct PeerState {
    tunn: Tunn,
    endpoint: Option<SocketAddr>,
    /// The packet being sealed, copied out of its slot: boringtun's `encapsulate` reads and writes
    /// different buffers. One memcpy per segment, small beside the cipher. Grows to the largest packet.
    plain: Vec<u8>,
    /// Where control messages (and data from slots too small for a handshake message) are written.
    /// Always at least a handshake initiation and every packet boringtun may have queued, plus 32.
    wire: Vec<u8>,
    /// Packets this framer left in boringtun's handshake queue (boringtun does not say how many it holds).
    queued: usize,
    /// The session (by the receiver index its data messages carry) for which a rekey was started.
    rekey_started_for: Option<u32>,
}

impl PeerState {
    /// Grows the buffers so that a packet of `len` bytes can be copied and sealed.
    fn reserve(&mut self, len: usize) {
        if self.plain.len() < len {
            self.plain.resize(len, 0);
        }
        let wire_len = (len + DATA_MIN_LEN).max(HANDSHAKE_INIT_LEN);
        if self.wire.len() < wire_len {
            self.wire.resize(wire_len, 0);
        }
    }
}

struct Peer {
    public_key: [u8; KEY_LEN],
    allowed_ips: Vec<Cidr>,
    persistent_keepalive: Option<u16>,
    state: Mutex<PeerState>,
    rx_bytes: AtomicU64,
    tx_bytes: AtomicU64,
    drops: DropCounters,
}

impl Peer {
    fn drop_for(&self, reason: DropReason, n: u64) -> DropReason {
        self.drops.add(reason, n);
        reason
    }

    fn sent(&self, bytes: usize) {
        self.tx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// One peer as `wg show` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer's public key, base64.
    pub public_key: String,
    /// Where its datagrams go now (configured, or learned from its last authenticated datagram).
    pub endpoint: Option<SocketAddr>,
    /// Its AllowedIPs as configured.
    pub allowed_ips: Vec<Cidr>,
    /// Persistent keepalive interval in seconds.
    pub persistent_keepalive: Option<u16>,
    /// When the current session's handshake completed; `None` without a session.
    pub last_handshake: Option<SystemTime>,
    /// Bytes of datagrams received from the peer that authenticated.
    pub rx_bytes: u64,
    /// Bytes of datagrams sealed or sent to the peer (data, handshakes, keepalives).
    pub tx_bytes: u64,
    /// Packets dropped that belonged to this peer, by reason (drops that name no peer are counted by the
    /// caller of [`Framer::open`] only).
    pub drops: Vec<(DropReason, u64)>,
}

/// The kind of an incoming message, for mapping errors and deciding what an accepted one allows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    HandshakeInit,
    HandshakeResponse,
    CookieReply,
    Data,
}

/// What one `encapsulate` did, with the length of what it wrote at the start of its buffer.
enum Encapsulated {
    Data(usize),
    Handshake(usize),
    Queued,
}

fn classify(result: TunnResult<'_>) -> Encapsulated {
    match result {
        TunnResult::WriteToNetwork(out) if out.first() == Some(&MESSAGE_DATA) => Encapsulated::Data(out.len()),
        TunnResult::WriteToNetwork(out) => Encapsulated::Handshake(out.len()),
        // Done: a handshake is already under way; Err: it could not start one. Either way boringtun queued
        // the packet before looking at the handshake.
        _ => Encapsulated::Queued,
    }
}

/// The WireGuard framer: several peers, cryptokey routing, boringtun sessions. Share one between every
/// queue and writer of an interface (it is `Send + Sync`); counters then never repeat.
pub struct WireGuard {
    private_key: StaticSecret,
    public_key: PublicKey,
    peers: Vec<Peer>,
    peer_by_key: HashMap<[u8; KEY_LEN], usize>,
    allowed_ips: AllowedIps,
    /// One rate limiter for the interface, as boringtun's device has: it checks mac1 and answers with
    /// cookies under load before any peer's state (or a Diffie-Hellman) is touched.
    rate_limiter: RateLimiter,
    rekey_after_packets: u64,
}

impl WireGuard {
    /// A framer for `config`. Fails on duplicate peers, our own key as a peer, more than [`MAX_PEERS`]
    /// peers or a zero rekey threshold.
    pub fn new(config: WireGuardConfig) -> Result<Self, ConfigError> {
        if config.peers.len() > MAX_PEERS {
            return Err(ConfigError::new("peers", format!("has {} peers; at most {MAX_PEERS}", config.peers.len())));
        }
        if config.rekey_after_packets == Some(0) {
            return Err(ConfigError::new("rekeyAfterPackets", "must be at least 1"));
        }
        let private_key = StaticSecret::from(config.private_key.0);
        let public_key = PublicKey::from(&private_key);
        let mut peer_by_key = HashMap::new();
        let mut allowed_ips = AllowedIps::new();
        let mut peers = Vec::with_capacity(config.peers.len());
        for (index, pc) in config.peers.into_iter().enumerate() {
            let field = format!("peers[{index}].publicKey");
            if pc.public_key == public_key.to_bytes() {
                return Err(ConfigError::new(field, "is our own public key"));
            }
            if let Some(first) = peer_by_key.insert(pc.public_key, index) {
                return Err(ConfigError::new(field, format!("is the same as peers[{first}].publicKey")));
            }
            for &cidr in &pc.allowed_ips {
                allowed_ips.insert(cidr, index);
            }
            // The interface-wide limiter above does the limiting; this one, which `decapsulate` consults
            // again, only re-checks mac1 and never reports load.
            let unlimited = Arc::new(RateLimiter::new(&public_key, u64::MAX));
            let tunn = Tunn::new(
                private_key.clone(),
                PublicKey::from(pc.public_key),
                pc.preshared_key.map(|k| k.0),
                pc.persistent_keepalive,
                index as u32,
                Some(unlimited),
            );
            peers.push(Peer {
                public_key: pc.public_key,
                allowed_ips: pc.allowed_ips,
                persistent_keepalive: pc.persistent_keepalive,
                state: Mutex::new(PeerState {
                    tunn,
                    endpoint: pc.endpoint,
                    plain: Vec::new(),
                    wire: vec![0; HANDSHAKE_INIT_LEN],
                    queued: 0,
                    rekey_started_for: None,
                }),
                rx_bytes: AtomicU64::new(0),
                tx_bytes: AtomicU64::new(0),
                drops: DropCounters::default(),
            });
        }
        Ok(WireGuard {
            rate_limiter: RateLimiter::new(&public_key, HANDSHAKES_PER_SECOND),
            private_key,
            public_key,
            peers,
            peer_by_key,
            allowed_ips,
            rekey_after_packets: config.rekey_after_packets.unwrap_or(REKEY_AFTER_MESSAGES),
        })
    }

    /// Our public key, base64.
    pub fn public_key(&self) -> String {
        encode_key(&self.public_key.to_bytes())
    }

    /// Every peer's state, in configuration order.
    pub fn peers(&self) -> Vec<PeerStats> {
        self.peers
            .iter()
            .map(|peer| {
                let state = peer.state.lock();
                PeerStats {
                    public_key: encode_key(&peer.public_key),
                    endpoint: state.endpoint,
                    allowed_ips: peer.allowed_ips.clone(),
                    persistent_keepalive: peer.persistent_keepalive,
                    last_handshake: state
                        .tunn
                        .time_since_last_handshake()
                        .and_then(|ago| SystemTime::now().checked_sub(ago)),
                    rx_bytes: peer.rx_bytes.load(Ordering::Relaxed),
                    tx_bytes: peer.tx_bytes.load(Ordering::Relaxed),
                    drops: peer.drops.snapshot(),
                }
            })
            .collect()
    }

    /// Sets where a peer's datagrams go (until its authenticated datagrams arrive from elsewhere).
    pub fn set_peer_endpoint(&self, public_key: &str, endpoint: SocketAddr) -> Result<(), ConfigError> {
        let key = parse_key("publicKey", public_key)?;
        let index =
            *self.peer_by_key.get(&key).ok_or_else(|| ConfigError::new("publicKey", "is not a configured peer"))?;
        let peer = self.peers.get(index).ok_or_else(|| ConfigError::new("publicKey", "is not a configured peer"))?;
        peer.state.lock().endpoint = Some(endpoint);
        Ok(())
    }

    /// Which peer a verified message is for, or why there is none.
    fn peer_of(&self, packet: &Packet<'_>) -> Result<(usize, Kind), DropReason> {
        let by_index = |receiver_idx: u32| (receiver_idx >> 8) as usize;
        match packet {
            Packet::HandshakeInit(init) => {
                // Only the initiation names its sender, inside the encrypted static key.
                let half = parse_handshake_anon(&self.private_key, &self.public_key, init)
                    .map_err(|_| DropReason::BadHandshake)?;
                let index = *self.peer_by_key.get(&half.peer_static_public).ok_or(DropReason::BadHandshake)?;
                Ok((index, Kind::HandshakeInit))
            }
            Packet::HandshakeResponse(p) => Ok((by_index(p.receiver_idx), Kind::HandshakeResponse)),
            Packet::PacketCookieReply(p) => Ok((by_index(p.receiver_idx), Kind::CookieReply)),
            Packet::PacketData(p) => Ok((by_index(p.receiver_idx), Kind::Data)),
        }
    }

    /// After an authenticated message from `from`: roam there (unless it was a cookie reply, which proves
    /// less), count it, and send what waited for a session.
    fn accepted(
        &self,
        peer: &Peer,
        state: &mut PeerState,
        kind: Kind,
        from: SocketAddr,
        len: usize,
        control: &mut Control,
    ) {
        peer.rx_bytes.fetch_add(len as u64, Ordering::Relaxed);
        if kind == Kind::CookieReply {
            return;
        }
        state.endpoint = Some(from);
        // A responder has no current session until the initiator's first data message, so flushing after
        // an initiation would only rotate the queue.
        if kind != Kind::HandshakeInit {
            flush_queue(peer, state, from, control);
        }
    }
}

/// Sends what boringtun queued for the handshake: `decapsulate` with an empty datagram hands out one
/// queued packet per call. Bounded by the queue's size. Called after an authenticated handshake response
/// or data message, when the peer has a current session: a call that sends nothing means the queue is
/// empty.
fn flush_queue(peer: &Peer, state: &mut PeerState, to: SocketAddr, control: &mut Control) {
    if state.queued == 0 {
        return;
    }
    for _ in 0..HANDSHAKE_QUEUE_LEN + 1 {
        match state.tunn.decapsulate(None, &[], &mut state.wire) {
            TunnResult::WriteToNetwork(out) => {
                if out.first() == Some(&MESSAGE_DATA) {
                    state.queued = state.queued.saturating_sub(1);
                }
                peer.sent(out.len());
                control.push(to, out.to_vec());
            }
            _ => {
                state.queued = 0;
                return;
            }
        }
    }
}

/// Why a datagram that is not a well-formed WireGuard message was refused.
fn malformed_reason(datagram: &[u8]) -> DropReason {
    let Some(header) = datagram.get(..4) else {
        return DropReason::TooShort;
    };
    let min_len = match header {
        [MESSAGE_HANDSHAKE_INIT, 0, 0, 0] => HANDSHAKE_INIT_LEN,
        [MESSAGE_HANDSHAKE_RESPONSE, 0, 0, 0] => HANDSHAKE_RESPONSE_LEN,
        [MESSAGE_COOKIE_REPLY, 0, 0, 0] => COOKIE_REPLY_LEN,
        [MESSAGE_DATA, 0, 0, 0] => DATA_MIN_LEN,
        _ => return DropReason::Mismatch,
    };
    if datagram.len() < min_len {
        DropReason::TooShort
    } else {
        DropReason::Mismatch
    }
}

/// The drop reason for a boringtun error on a message of `kind`.
fn error_reason(kind: Kind, error: &WireGuardError) -> DropReason {
    if kind != Kind::Data {
        return DropReason::BadHandshake;
    }
    match error {
        WireGuardError::InvalidAeadTag | WireGuardError::InvalidMac => DropReason::BadMac,
        WireGuardError::DuplicateCounter | WireGuardError::InvalidCounter => DropReason::Replay,
        WireGuardError::NoCurrentSession | WireGuardError::ConnectionExpired => DropReason::NoSession,
        WireGuardError::WrongIndex => DropReason::UnknownSession,
        WireGuardError::InvalidPacket => DropReason::InvalidPacket,
        WireGuardError::IncorrectPacketLength | WireGuardError::DestinationBufferTooSmall => DropReason::TooShort,
        WireGuardError::UnexpectedPacket | WireGuardError::WrongPacketType => DropReason::Mismatch,
        WireGuardError::WrongKey
        | WireGuardError::InvalidTai64nTimestamp
        | WireGuardError::WrongTai64nTimestamp
        | WireGuardError::LockFailed
        | WireGuardError::UnderLoad => DropReason::BadHandshake,
    }
}

/// The receiver index and counter of a sealed data message.
fn data_header(datagram: &[u8]) -> Option<(u32, u64)> {
    let receiver = u32::from_le_bytes(datagram.get(4..8)?.try_into().ok()?);
    let counter = u64::from_le_bytes(datagram.get(8..16)?.try_into().ok()?);
    Some((receiver, counter))
}

impl Framer for WireGuard {
    fn headroom(&self) -> usize {
        WG_HEADROOM
    }

    fn tailroom(&self) -> usize {
        WG_TAILROOM
    }

    fn routes(&self) -> bool {
        true
    }

    fn seal(&self, slots: &mut Slots<'_>, control: &mut Control) -> Result<Sealed, SealError> {
        if slots.headroom() != WG_HEADROOM || slots.tailroom() != WG_TAILROOM {
            return Err(SealError::BadLayout);
        }
        let Some(destination) = slots.inner_destination() else {
            return Ok(Sealed::Dropped(DropReason::InvalidPacket));
        };
        let Some(peer) = self.allowed_ips.lookup(destination).and_then(|i| self.peers.get(i)) else {
            return Ok(Sealed::Dropped(DropReason::NoRoute));
        };
        let count = slots.count();
        let mut guard = peer.state.lock();
        let state = &mut *guard;
        let Some(endpoint) = state.endpoint else {
            return Ok(Sealed::Dropped(peer.drop_for(DropReason::NoRoute, count as u64)));
        };
        // Every packet but the last has the full length, so this covers them all.
        state.reserve(slots.packet_len(0));

        let (mut sealed, mut queued) = (0usize, 0usize);
        for i in 0..count {
            let len = slots.packet_len(i);
            let packet = slots.packet(i).ok_or(SealError::BadLayout)?;
            state.plain[..len].copy_from_slice(packet);
            let slot = slots.slot_mut(i).ok_or(SealError::BadLayout)?;
            // boringtun writes a handshake initiation (148 bytes) into the same buffer when there is no
            // session, and panics on a buffer shorter than the packet plus 32: a slot too short for the
            // initiation is sealed into `wire` and copied.
            let small = slot.len() < HANDSHAKE_INIT_LEN;
            let out: &mut [u8] = if small { &mut state.wire[..] } else { &mut *slot };
            match classify(state.tunn.encapsulate(&state.plain[..len], out)) {
                Encapsulated::Data(n) if n == slot.len() => {
                    if small {
                        slot.copy_from_slice(&state.wire[..n]);
                    }
                    sealed += 1;
                }
                Encapsulated::Data(_) => return Err(SealError::BadLayout),
                Encapsulated::Handshake(n) => {
                    let init = if small { &state.wire[..n] } else { &slot[..n] };
                    peer.sent(n);
                    control.push(endpoint, init.to_vec());
                    queued += 1;
                }
                Encapsulated::Queued => queued += 1,
            }
        }

        if queued == 0 {
            let first = slots.slot_mut(0).and_then(|s| data_header(s));
            let last = slots.slot_mut(count - 1).and_then(|s| data_header(s));
            let (Some((_, first_counter)), Some((receiver, last_counter))) = (first, last) else {
                return Err(SealError::BadLayout);
            };
            if last_counter < first_counter || last_counter >= REJECT_AFTER_MESSAGES {
                return Err(SealError::Exhausted);
            }
            if last_counter.saturating_add(1) >= self.rekey_after_packets && state.rekey_started_for != Some(receiver) {
                state.rekey_started_for = Some(receiver);
                if let Encapsulated::Handshake(n) =
                    classify(state.tunn.format_handshake_initiation(&mut state.wire, true))
                {
                    peer.sent(n);
                    control.push(endpoint, state.wire[..n].to_vec());
                }
            }
            peer.sent(slots.stride() * (count - 1) + slots.packet_len(count - 1) + WG_HEADROOM + WG_TAILROOM);
            return Ok(Sealed::To(endpoint));
        }

        // No session: boringtun kept the packets for the handshake. The peer's session cannot appear or
        // vanish while the lock is held, so `sealed` is 0 here; were it not, those slots are not sent.
        peer.drops.add(DropReason::NoSession, sealed as u64);
        let room = HANDSHAKE_QUEUE_LEN.saturating_sub(state.queued);
        let overflow = queued.saturating_sub(room);
        state.queued += queued - overflow;
        if overflow > 0 {
            peer.drops.add(DropReason::QueueFull, overflow as u64);
        }
        Ok(if overflow == count { Sealed::Dropped(DropReason::QueueFull) } else { Sealed::Held })
    }

    fn open<'a>(
        &self,
        datagram: &'a mut [u8],
        scratch: &'a mut [u8],
        from: SocketAddr,
        control: &mut Control,
    ) -> Opened<'a> {
        let datagram: &'a [u8] = datagram;
        // boringtun decrypts into `scratch` and panics if it is shorter than the ciphertext.
        if scratch.len() < datagram.len() {
            return Opened::Dropped(DropReason::TooShort);
        }
        let mut cookie = [0u8; COOKIE_REPLY_LEN];
        let packet = match self.rate_limiter.verify_packet(Some(from.ip()), datagram, &mut cookie) {
            Ok(packet) => packet,
            Err(TunnResult::WriteToNetwork(reply)) => {
                control.push(from, reply.to_vec());
                return Opened::Dropped(DropReason::BadHandshake);
            }
            Err(TunnResult::Err(WireGuardError::InvalidMac)) => return Opened::Dropped(DropReason::BadMac),
            Err(TunnResult::Err(WireGuardError::InvalidPacket)) => return Opened::Dropped(malformed_reason(datagram)),
            Err(_) => return Opened::Dropped(DropReason::BadHandshake),
        };
        let (index, kind) = match self.peer_of(&packet) {
            Ok(found) => found,
            Err(reason) => return Opened::Dropped(reason),
        };
        let Some(peer) = self.peers.get(index) else {
            return Opened::Dropped(DropReason::UnknownSession);
        };
        let mut guard = peer.state.lock();
        let state = &mut *guard;
        let reason = match state.tunn.decapsulate(Some(from.ip()), datagram, scratch) {
            TunnResult::WriteToTunnelV4(packet, _) | TunnResult::WriteToTunnelV6(packet, _) => {
                match superpacket_core::packet::ip_source(packet).map(|src: IpAddr| self.allowed_ips.lookup(src)) {
                    Some(Some(owner)) if owner == index => {
                        self.accepted(peer, state, kind, from, datagram.len(), control);
                        return Opened::Data { packet, authenticated: true };
                    }
                    _ => DropReason::NotAllowedSource,
                }
            }
            TunnResult::WriteToNetwork(reply) => {
                peer.sent(reply.len());
                control.push(from, reply.to_vec());
                self.accepted(peer, state, kind, from, datagram.len(), control);
                return Opened::Consumed;
            }
            TunnResult::Done => {
                self.accepted(peer, state, kind, from, datagram.len(), control);
                return Opened::Consumed;
            }
            TunnResult::Err(error) => error_reason(kind, &error),
        };
        Opened::Dropped(peer.drop_for(reason, 1))
    }

    fn poll(&self, control: &mut Control) {
        self.rate_limiter.reset_count();
        for peer in &self.peers {
            let mut guard = peer.state.lock();
            let state = &mut *guard;
            match state.tunn.update_timers(&mut state.wire) {
                TunnResult::WriteToNetwork(out) => {
                    if let Some(endpoint) = state.endpoint {
                        peer.sent(out.len());
                        control.push(endpoint, out.to_vec());
                    }
                }
                // An expired connection dropped its queue.
                TunnResult::Err(WireGuardError::ConnectionExpired) => state.queued = 0,
                _ => {}
            }
        }
    }
}
