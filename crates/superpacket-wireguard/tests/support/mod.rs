//! Helpers shared by the framer tests and the framer bench: packets, endpoints that talk only through
//! `seal`, `open` and `Control`, and a handshake between two of them.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use superpacket_core::framer::{Control, DropReason, Framer, Opened, Sealed, Slots};
use superpacket_wireguard::framer::{WG_HEADROOM, WG_TAILROOM};
use superpacket_wireguard::keys::{parse_key, parse_secret, public_key_bytes, SecretKey};
use superpacket_wireguard::{generate_private_key, PeerConfig, WireGuard, WireGuardConfig};

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn secret() -> SecretKey {
    parse_secret("k", &generate_private_key()).unwrap()
}

/// An IPv4 or IPv6 UDP packet of `len` bytes (at least the headers) from `src` to `dst`, filled with `fill`.
pub fn ip_packet(src: &str, dst: &str, len: usize, fill: u8) -> Vec<u8> {
    let (src, dst): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    let mut p = vec![fill; len];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p[..20].fill(0);
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            p[8] = 64;
            p[9] = 17;
            p[12..16].copy_from_slice(&s.octets());
            p[16..20].copy_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p[..40].fill(0);
            p[0] = 0x60;
            p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
            p[6] = 17;
            p[7] = 64;
            p[8..24].copy_from_slice(&s.octets());
            p[24..40].copy_from_slice(&d.octets());
        }
        _ => panic!("mixed families"),
    }
    p
}

/// What `open` returned, owned.
#[derive(Debug, PartialEq, Eq)]
pub enum Got {
    Data(Vec<u8>),
    Consumed,
    Dropped(DropReason),
}

/// One endpoint: a framer at a UDP address.
pub struct Node {
    pub framer: Arc<WireGuard>,
    pub at: SocketAddr,
}

impl Node {
    pub fn new(private: SecretKey, at: &str, peers: Vec<PeerConfig>) -> Node {
        Node::with_config(WireGuardConfig { peers, ..WireGuardConfig::new(private) }, at)
    }

    pub fn with_config(config: WireGuardConfig, at: &str) -> Node {
        Node { framer: Arc::new(WireGuard::new(config).unwrap()), at: addr(at) }
    }

    /// Seals `packets` (all as long as the first but the last, which may be shorter) as one superpacket.
    pub fn seal(&self, packets: &[Vec<u8>], control: &mut Control) -> (Sealed, Vec<Vec<u8>>) {
        seal_with(&self.framer, packets, control)
    }

    pub fn public_key(&self) -> [u8; 32] {
        parse_key("k", &self.framer.public_key()).unwrap()
    }

    pub fn open(&self, datagram: &[u8], from: SocketAddr, control: &mut Control) -> Got {
        let mut d = datagram.to_vec();
        let mut scratch = vec![0u8; d.len()];
        match self.framer.open(&mut d, &mut scratch, from, control) {
            Opened::Data { packet, authenticated } => {
                assert!(authenticated, "WireGuard data is always authenticated");
                Got::Data(packet.to_vec())
            }
            Opened::Consumed => Got::Consumed,
            Opened::Dropped(r) => Got::Dropped(r),
        }
    }
}

pub fn seal_with(framer: &WireGuard, packets: &[Vec<u8>], control: &mut Control) -> (Sealed, Vec<Vec<u8>>) {
    let seg = packets[0].len();
    let last = packets[packets.len() - 1].len();
    let stride = WG_HEADROOM + seg + WG_TAILROOM;
    let total = stride * (packets.len() - 1) + WG_HEADROOM + last + WG_TAILROOM;
    let mut buf = vec![0u8; total];
    for (i, p) in packets.iter().enumerate() {
        buf[i * stride + WG_HEADROOM..][..p.len()].copy_from_slice(p);
    }
    let mut slots = Slots::new(&mut buf, WG_HEADROOM, WG_TAILROOM, seg, last, packets.len()).unwrap();
    let sealed = framer.seal(&mut slots, control).unwrap();
    let datagrams = packets
        .iter()
        .enumerate()
        .map(|(i, p)| {
            assert_eq!(framer.sealed_len(p.len()), p.len() + 32);
            buf[i * stride..][..framer.sealed_len(p.len())].to_vec()
        })
        .collect();
    (sealed, datagrams)
}

/// Delivers control datagrams among `nodes` until none are left (bounded); returns the inner packets
/// that came out of them, with the node index that opened each.
pub fn deliver(nodes: &[&Node], from: usize, control: Control) -> Vec<(usize, Vec<u8>)> {
    deliver_all(nodes, vec![(from, control)])
}

/// Like [`deliver`] for several senders at once, in order (first in, first delivered), as a network
/// would: every datagram already sent arrives before any answer to it.
pub fn deliver_all(nodes: &[&Node], controls: Vec<(usize, Control)>) -> Vec<(usize, Vec<u8>)> {
    let mut pending: VecDeque<(usize, SocketAddr, Vec<u8>)> = controls
        .into_iter()
        .flat_map(|(from, mut c)| c.drain().map(move |(to, d)| (from, to, d)).collect::<Vec<_>>())
        .collect();
    let mut data = Vec::new();
    for _ in 0..1000 {
        let Some((sender, to, datagram)) = pending.pop_front() else { return data };
        let target = nodes.iter().position(|n| n.at == to).expect("a control datagram to a known node");
        let mut reply = Control::new();
        match nodes[target].open(&datagram, nodes[sender].at, &mut reply) {
            Got::Data(p) => data.push((target, p)),
            Got::Consumed => {}
            Got::Dropped(r) => panic!("control datagram dropped: {r:?}"),
        }
        pending.extend(reply.drain().map(|(to, d)| (target, to, d)));
    }
    panic!("control messages did not settle");
}

pub fn peer(public_key: [u8; 32], endpoint: Option<&str>, allowed: &[&str]) -> PeerConfig {
    PeerConfig {
        endpoint: endpoint.map(addr),
        allowed_ips: allowed.iter().map(|c| c.parse().unwrap()).collect(),
        ..PeerConfig::new(public_key)
    }
}

pub const A_AT: &str = "198.19.0.1:51820";
pub const B_AT: &str = "198.19.0.2:51820";

/// A knows B's endpoint; B learns A's from its handshake. Inner addresses 198.18.77.1/2 and 2001:db8:77::1/2.
pub fn pair(psk: Option<SecretKey>) -> (Node, Node) {
    let (a_key, b_key) = (secret(), secret());
    let mut to_b = peer(public_key_bytes(&b_key), Some(B_AT), &["198.18.77.2/32", "2001:db8:77::2/128"]);
    let mut to_a = peer(public_key_bytes(&a_key), None, &["198.18.77.1/32", "2001:db8:77::1/128"]);
    to_b.preshared_key = psk.clone();
    to_a.preshared_key = psk;
    (Node::new(a_key, A_AT, vec![to_b]), Node::new(b_key, B_AT, vec![to_a]))
}

/// A sends one packet to B, which completes the handshake; returns A's handshake initiation.
pub fn handshake(a: &Node, b: &Node) -> Vec<u8> {
    let first = ip_packet("198.18.77.1", "198.18.77.2", 100, 1);
    let mut control = Control::new();
    let (sealed, _) = a.seal(std::slice::from_ref(&first), &mut control);
    assert_eq!(sealed, Sealed::Held);
    assert_eq!(control.len(), 1, "one handshake initiation");
    let init = control.drain().next().unwrap();
    let mut control = Control::new();
    control.push(init.0, init.1.clone());
    let arrived = deliver(&[a, b], 0, control);
    assert_eq!(arrived, vec![(1, first)], "the queued packet arrives once the handshake completes");
    init.1
}
