//! A receive described in 32-bit words, for callers on the other side of an FFI (the Node binding): where
//! the messages of a [`UdpSocket::try_recv_into`](super::UdpSocket::try_recv_into) landed, and a table
//! that gives each source a small number, so the caller makes one handle per source rather than an
//! address string per datagram.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::{RecvMeta, RECV_BUFFER_SIZE};

/// Most messages one described receive holds.
pub const MESSAGES: usize = 32;
/// Words at the start of the description: messages, datagrams, bytes used, sources changed (0 or 1).
pub const HEADER: usize = 4;
/// Words per message: offset, length, segment size, source number, then the source address (family 4 or
/// 6, port, four address words, IPv6 flow info, IPv6 scope).
pub const PER_MESSAGE: usize = 12;
/// Words of a whole description.
pub const LENGTH: usize = HEADER + PER_MESSAGE * MESSAGES;
/// Words of an address (the address part of a message's metadata, and a peer as a caller holds it).
pub const ADDRESS_WORDS: usize = 8;
/// Messages shorter than this are moved down to follow the one before, so that small datagrams do not
/// each use a 64 KiB slot of the buffer; longer ones stay where the kernel put them (no copy).
const COMPACT_BELOW: usize = RECV_BUFFER_SIZE / 4;
/// Sources numbered before the table starts over.
const SOURCE_CAPACITY: usize = 1024;

/// Numbers for the sources seen lately. When full it starts over (JS is told, and forgets its handles
/// along with it), so a flood from many addresses costs a bounded table.
#[derive(Default)]
pub struct Sources {
    index: HashMap<SocketAddr, u32>,
    addrs: Vec<SocketAddr>,
    /// Sources below this number have been handed to JS.
    reported: usize,
    /// The table started over since JS last took the new sources.
    reset: bool,
    /// The last source looked up (most batches come from one peer).
    last: Option<(SocketAddr, u32)>,
}

/// Sources numbered since JS last asked.
pub struct NewSources {
    /// The table started over: numbers JS knew before are void.
    pub reset: bool,
    /// The number of the first address in `addrs`.
    pub first: u32,
    /// The new sources, numbered from `first` on.
    pub addrs: Vec<SocketAddr>,
}

impl Sources {
    /// The number of `addr`, numbering it if it is new.
    pub fn number(&mut self, addr: SocketAddr) -> u32 {
        if let Some((a, n)) = self.last {
            if a == addr {
                return n;
            }
        }
        let n = match self.index.get(&addr) {
            Some(&n) => n,
            None => {
                let n = self.addrs.len() as u32;
                self.index.insert(addr, n);
                self.addrs.push(addr);
                n
            }
        };
        self.last = Some((addr, n));
        n
    }

    /// Starts the table over unless `n` more sources fit. Done before a receive is numbered, never in
    /// the middle of one: every number in one receive's description is of the same numbering.
    fn make_room(&mut self, n: usize) {
        if self.addrs.len() + n > SOURCE_CAPACITY {
            self.index.clear();
            self.addrs.clear();
            self.reported = 0;
            self.reset = true;
            self.last = None;
        }
    }

    /// Whether JS has sources to take.
    pub fn changed(&self) -> bool {
        self.reset || self.reported < self.addrs.len()
    }

    /// The sources JS has not seen, and whether the table started over.
    pub fn take(&mut self) -> NewSources {
        let first = self.reported;
        self.reported = self.addrs.len();
        NewSources { reset: std::mem::take(&mut self.reset), first: first as u32, addrs: self.addrs[first..].to_vec() }
    }
}

/// `addr` as [`ADDRESS_WORDS`] words.
pub fn address_words(addr: SocketAddr) -> [u32; ADDRESS_WORDS] {
    let mut w = [0u32; ADDRESS_WORDS];
    encode_addr(addr, &mut w);
    w
}

/// Writes `addr` as [`ADDRESS_WORDS`] words.
fn encode_addr(addr: SocketAddr, out: &mut [u32]) {
    let mut w = [0u32; ADDRESS_WORDS];
    w[1] = u32::from(addr.port());
    match addr {
        SocketAddr::V4(a) => {
            w[0] = 4;
            w[2] = u32::from(*a.ip());
        }
        SocketAddr::V6(a) => {
            w[0] = 6;
            let o = a.ip().octets();
            for (i, chunk) in o.chunks_exact(4).enumerate() {
                w[2 + i] = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            }
            w[6] = a.flowinfo();
            w[7] = a.scope_id();
        }
    }
    out.copy_from_slice(&w);
}

/// Reads an address written by [`address_words`] (or into a message's metadata); None for anything else.
pub fn decode_addr(w: &[u32]) -> Option<SocketAddr> {
    let &[family, port, a0, a1, a2, a3, flow, scope] = w else { return None };
    let port = u16::try_from(port).ok()?;
    match family {
        4 => Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(a0), port))),
        6 => {
            let mut o = [0u8; 16];
            for (i, word) in [a0, a1, a2, a3].iter().enumerate() {
                o[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
            }
            Some(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(o), port, flow, scope)))
        }
        _ => None,
    }
}

/// After a receive into `buf` (message `i` at slot `i`): moves short messages down, fills `meta` and
/// returns the number of datagrams. `meta` must hold [`LENGTH`] words and
/// `metas` at most [`MESSAGES`] entries.
pub fn lay_out(buf: &mut [u8], metas: &[RecvMeta], sources: &mut Sources, meta: &mut [u32]) -> usize {
    sources.make_room(metas.len());
    let mut at = 0usize;
    let mut datagrams = 0usize;
    let words_of = meta.get_mut(HEADER..).unwrap_or_default().chunks_exact_mut(PER_MESSAGE);
    for (i, (m, words)) in metas.iter().zip(words_of).enumerate() {
        let slot = i * RECV_BUFFER_SIZE;
        let offset = if m.len < COMPACT_BELOW && at < slot {
            buf.copy_within(slot..slot + m.len, at);
            at
        } else {
            slot
        };
        at = offset + m.len;
        datagrams += m.datagram_count();
        words[0] = offset as u32;
        words[1] = m.len as u32;
        words[2] = m.stride as u32;
        words[3] = sources.number(m.addr);
        encode_addr(m.addr, &mut words[4..]);
    }
    let header = [metas.len() as u32, datagrams as u32, at as u32, u32::from(sources.changed())];
    if let Some(h) = meta.get_mut(..HEADER) {
        h.copy_from_slice(&header);
    }
    datagrams
}

/// One received message, as JS handed its metadata back (to a packet writer).
pub struct Message {
    /// The source.
    pub from: SocketAddr,
    /// Where the message starts in the buffer.
    pub offset: usize,
    /// Its bytes.
    pub len: usize,
    /// Bytes per datagram (the last may be shorter).
    pub stride: usize,
}

/// Reads the per-message part of a metadata array (without its header) against a buffer of `data_len`
/// bytes; None unless it describes messages inside the buffer, in order and not overlapping.
pub fn messages(meta: &[u32], data_len: usize) -> Option<Vec<Message>> {
    if meta.len() % PER_MESSAGE != 0 {
        return None;
    }
    let mut end = 0usize;
    meta.chunks_exact(PER_MESSAGE)
        .map(|w| {
            let (offset, len, stride) = (w[0] as usize, w[1] as usize, w[2] as usize);
            if offset < end || offset.checked_add(len)? > data_len {
                return None;
            }
            end = offset + len;
            Some(Message { from: decode_addr(&w[4..])?, offset, len, stride })
        })
        .collect()
}

/// The datagrams of `msgs` in `data` with their sources: each message cut into `stride`-byte datagrams
/// (the last maybe shorter; an empty message is one empty datagram). `msgs` as [`messages`] returns them.
pub fn datagrams<'a>(data: &'a mut [u8], msgs: &[Message]) -> Vec<(SocketAddr, &'a mut [u8])> {
    let mut out = Vec::new();
    let mut rest: &'a mut [u8] = data;
    let mut base = 0usize;
    for m in msgs {
        let Some((_, tail)) = std::mem::take(&mut rest).split_at_mut_checked(m.offset.saturating_sub(base)) else {
            break;
        };
        let Some((msg, tail)) = tail.split_at_mut_checked(m.len) else { break };
        rest = tail;
        base = m.offset + m.len;
        let stride = if m.stride == 0 { msg.len().max(1) } else { m.stride };
        if msg.is_empty() {
            out.push((m.from, msg));
        } else {
            out.extend(msg.chunks_mut(stride).map(|d| (m.from, d)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn meta_of(addr: SocketAddr, len: usize, stride: usize) -> RecvMeta {
        RecvMeta { addr, len, stride }
    }

    #[test]
    fn addresses_survive_the_round_trip_through_the_words() {
        for a in ["198.18.0.1:51820", "[2001:db8::1]:443", "[2001:db8::2%7]:9", "0.0.0.0:0"] {
            let mut addr: SocketAddr = a.parse().expect("address");
            if let SocketAddr::V6(v6) = &mut addr {
                v6.set_flowinfo(0x12345);
            }
            let mut w = [0u32; ADDRESS_WORDS];
            encode_addr(addr, &mut w);
            assert_eq!(decode_addr(&w), Some(addr), "{a}");
        }
        assert_eq!(decode_addr(&[5, 1, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(decode_addr(&[4, 70_000, 0, 0, 0, 0, 0, 0]), None);
    }

    #[test]
    fn short_messages_move_down_and_long_ones_stay_in_their_slot() {
        let a: SocketAddr = "198.18.0.1:1000".parse().expect("address");
        let b: SocketAddr = "198.18.0.2:2000".parse().expect("address");
        let mut buf = vec![0u8; 4 * RECV_BUFFER_SIZE];
        buf[..100].fill(1);
        buf[RECV_BUFFER_SIZE..RECV_BUFFER_SIZE + 200].fill(2);
        buf[2 * RECV_BUFFER_SIZE..2 * RECV_BUFFER_SIZE + 60_000].fill(3);
        buf[3 * RECV_BUFFER_SIZE..3 * RECV_BUFFER_SIZE + 10].fill(4);
        let metas = [meta_of(a, 100, 100), meta_of(b, 200, 200), meta_of(a, 60_000, 1_500), meta_of(b, 10, 10)];
        let mut sources = Sources::default();
        let mut meta = vec![0u32; LENGTH];
        let n = lay_out(&mut buf, &metas, &mut sources, &mut meta);
        assert_eq!(n, 1 + 1 + 40 + 1);
        let last = 2 * RECV_BUFFER_SIZE + 60_000;
        assert_eq!(&meta[..4], &[4, 43, (last + 10) as u32, 1]);
        let msgs = messages(&meta[HEADER..HEADER + 4 * PER_MESSAGE], buf.len()).expect("messages");
        let offsets: Vec<usize> = msgs.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, [0, 100, 2 * RECV_BUFFER_SIZE, last]);
        assert!(buf[..100].iter().all(|&x| x == 1));
        assert!(buf[100..300].iter().all(|&x| x == 2));
        assert_eq!(msgs.iter().map(|m| m.from).collect::<Vec<_>>(), [a, b, a, b]);
        let numbers: Vec<u32> = meta[HEADER..].chunks_exact(PER_MESSAGE).take(4).map(|w| w[3]).collect();
        assert_eq!(numbers, [0, 1, 0, 1]);
        let new = sources.take();
        assert_eq!((new.reset, new.first, new.addrs), (false, 0, vec![a, b]));
        assert!(!sources.changed());
        let all = datagrams(&mut buf, &msgs);
        assert_eq!(all.len(), 43);
        assert!(all[2..42].iter().all(|(from, d)| *from == a && d.len() == 1_500 && d.iter().all(|&x| x == 3)));
        assert_eq!((all[42].0, &*all[42].1), (b, &[4u8; 10][..]));
    }

    #[test]
    fn an_empty_message_is_one_empty_datagram_and_bad_metadata_is_refused() {
        let from: SocketAddr = "198.18.0.1:1".parse().expect("address");
        let mut words = [0u32; 2 * PER_MESSAGE];
        for (w, (offset, len, stride)) in words.chunks_exact_mut(PER_MESSAGE).zip([(0, 10, 4), (10, 0, 0)]) {
            w[..3].copy_from_slice(&[offset, len, stride]);
            encode_addr(from, &mut w[4..]);
        }
        let mut data = vec![0u8; 10];
        let msgs = messages(&words, 10).expect("valid");
        let sizes: Vec<usize> = datagrams(&mut data, &msgs).iter().map(|(_, d)| d.len()).collect();
        assert_eq!(sizes, [4, 4, 2, 0]);
        assert!(messages(&words, 9).is_none(), "past the end of the buffer");
        assert!(messages(&words[..PER_MESSAGE - 1], 100).is_none(), "not whole messages");
        words[PER_MESSAGE] = 5;
        words[PER_MESSAGE + 1] = 1;
        assert!(messages(&words, 10).is_none(), "overlapping the message before");
    }

    #[test]
    fn the_source_table_starts_over_when_full_and_says_so() {
        let mut s = Sources::default();
        let addr = |i: usize| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, (i >> 8) as u8, i as u8)), 1);
        for i in 0..SOURCE_CAPACITY - 1 {
            s.make_room(1);
            assert_eq!(s.number(addr(i)), i as u32);
        }
        assert_eq!(s.take().addrs.len(), SOURCE_CAPACITY - 1);
        // A receive of two messages does not fit: the table starts over before it, not half-way.
        let mut buf = vec![0u8; 2 * RECV_BUFFER_SIZE];
        let metas = [RecvMeta { addr: addr(5), len: 1, stride: 1 }, RecvMeta { addr: addr(2000), len: 1, stride: 1 }];
        let mut meta = vec![0u32; LENGTH];
        lay_out(&mut buf, &metas, &mut s, &mut meta);
        let numbers: Vec<u32> = meta[HEADER..].chunks_exact(PER_MESSAGE).take(2).map(|w| w[3]).collect();
        assert_eq!(numbers, [0, 1]);
        assert_eq!(meta[3], 1, "sources changed");
        let new = s.take();
        assert!(new.reset);
        assert_eq!((new.first, new.addrs), (0, vec![addr(5), addr(2000)]));
    }
}
