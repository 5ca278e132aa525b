//! The WireGuard framer end to end without I/O: framers talk only through `seal`, `open` and `Control`.

mod support;

use std::collections::HashSet;

use superpacket_core::framer::{Control, DropReason, Framer, Sealed};
use superpacket_wireguard::keys::{public_key_bytes, SecretKey};
use superpacket_wireguard::{WireGuard, WireGuardConfig};
use support::*;

fn handshake_and_exchange(psk: Option<SecretKey>) {
    let (a, b) = pair(psk);
    // B has no endpoint for A yet: nothing to send to.
    let mut control = Control::new();
    let back = ip_packet("198.18.77.2", "198.18.77.1", 60, 2);
    assert_eq!(b.seal(std::slice::from_ref(&back), &mut control).0, Sealed::Dropped(DropReason::NoRoute));
    handshake(&a, &b);
    assert_eq!(b.framer.peers()[0].endpoint, Some(a.at), "B learned A's endpoint from the authenticated handshake");
    assert!(a.framer.peers()[0].last_handshake.is_some());

    // Both ways, IPv4 and IPv6, several segments.
    // 40-byte packets seal into slots too short for a handshake initiation.
    let cases = [
        (&a, &b, "198.18.77.1", "198.18.77.2", 1400),
        (&b, &a, "2001:db8:77::2", "2001:db8:77::1", 1400),
        (&a, &b, "198.18.77.1", "198.18.77.2", 40),
    ];
    for (from, to, src, dst, len) in cases {
        let packets: Vec<_> = (0..5u8).map(|i| ip_packet(src, dst, if i == 4 { len - 20 } else { len }, i)).collect();
        let mut control = Control::new();
        let (sealed, datagrams) = from.seal(&packets, &mut control);
        assert_eq!(sealed, Sealed::To(to.at));
        assert!(control.is_empty());
        for (datagram, packet) in datagrams.iter().zip(&packets) {
            assert_ne!(&datagram[16..16 + packet.len()], &packet[..], "the payload is encrypted");
            assert_eq!(to.open(datagram, from.at, &mut Control::new()), Got::Data(packet.clone()));
        }
    }
    let stats = a.framer.peers();
    assert!(stats[0].tx_bytes >= 4 * 1432 + 1412 && stats[0].rx_bytes >= 4 * 1432 + 1412, "{stats:?}");
}

#[test]
fn handshake_through_seal_open_control_then_data_both_ways() {
    handshake_and_exchange(None);
}

#[test]
fn handshake_with_a_preshared_key() {
    handshake_and_exchange(Some(secret()));
}

#[test]
fn different_preshared_keys_never_complete_a_handshake() {
    let (a_key, b_key) = (secret(), secret());
    let mut to_b = peer(public_key_bytes(&b_key), Some(B_AT), &["198.18.77.2/32"]);
    to_b.preshared_key = Some(secret());
    let a = Node::new(a_key.clone(), A_AT, vec![to_b]);
    let mut to_a = peer(public_key_bytes(&a_key), None, &["198.18.77.1/32"]);
    to_a.preshared_key = Some(secret());
    let b = Node::new(b_key, B_AT, vec![to_a]);
    let mut control = Control::new();
    a.seal(&[ip_packet("198.18.77.1", "198.18.77.2", 80, 0)], &mut control);
    let (_, init) = control.drain().next().unwrap();
    let mut reply = Control::new();
    // B answers (the initiation does not depend on the psk) but A cannot verify the answer.
    assert_eq!(b.open(&init, a.at, &mut reply), Got::Consumed);
    let (_, response) = reply.drain().next().unwrap();
    assert_eq!(a.open(&response, b.at, &mut Control::new()), Got::Dropped(DropReason::BadHandshake));
    assert_eq!(a.framer.peers()[0].last_handshake, None);
}

/// Reads the counter (bytes 8..16, little-endian) of a data message.
fn counter(datagram: &[u8]) -> u64 {
    u64::from_le_bytes(datagram[8..16].try_into().unwrap())
}

#[test]
fn segments_get_consecutive_counters_that_never_repeat_across_threads() {
    let (a, b) = pair(None);
    handshake(&a, &b);
    let packets: Vec<_> = (0..40u8).map(|i| ip_packet("198.18.77.1", "198.18.77.2", 1200, i)).collect();
    let (_, datagrams) = a.seal(&packets, &mut Control::new());
    let counters: Vec<u64> = datagrams.iter().map(|d| counter(d)).collect();
    assert!(counters.windows(2).all(|w| w[1] == w[0] + 1), "{counters:?}");

    let (threads, calls, segments) = (2, 50, 10);
    let sealed: Vec<Vec<Vec<u8>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let framer = &a.framer;
                s.spawn(move || {
                    let packets: Vec<_> = (0..segments)
                        .map(|i| ip_packet("198.18.77.1", "198.18.77.2", 500, (t * 100 + i) as u8))
                        .collect();
                    (0..calls).flat_map(|_| seal_with(framer, &packets, &mut Control::new()).1).collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut seen: HashSet<u64> = counters.iter().copied().collect();
    for datagrams in &sealed {
        // Within one thread's superpacket the counters are consecutive, whatever the other thread did.
        for superpacket in datagrams.chunks(segments) {
            let c: Vec<u64> = superpacket.iter().map(|d| counter(d)).collect();
            assert!(c.windows(2).all(|w| w[1] == w[0] + 1), "{c:?}");
        }
        for d in datagrams {
            assert!(seen.insert(counter(d)), "counter {} used twice", counter(d));
            assert!(matches!(b.open(d, a.at, &mut Control::new()), Got::Data(_)));
        }
    }
    assert_eq!(seen.len(), 40 + threads * calls * segments);
}

#[test]
fn three_peers_are_routed_by_allowed_ips() {
    let keys: Vec<SecretKey> = (0..4).map(|_| secret()).collect();
    let ats = ["198.19.0.1:51820", "198.19.0.2:51820", "198.19.0.3:51820", "[2001:db8::4]:51820"];
    let a = Node::new(
        keys[0].clone(),
        ats[0],
        vec![
            peer(public_key_bytes(&keys[1]), Some(ats[1]), &["198.18.0.0/16"]),
            peer(public_key_bytes(&keys[2]), Some(ats[2]), &["198.18.5.0/24", "2001:db8:5::/48"]),
            peer(public_key_bytes(&keys[3]), Some(ats[3]), &["198.18.5.7/32", "::/0"]),
        ],
    );
    let others: Vec<Node> = (1..4)
        .map(|i| {
            Node::new(
                keys[i].clone(),
                ats[i],
                vec![peer(public_key_bytes(&keys[0]), None, &["198.18.1.1/32", "2001:db8:1::1/128"])],
            )
        })
        .collect();
    let cases = [("198.18.9.9", 0), ("198.18.5.1", 1), ("198.18.5.7", 2), ("2001:db8:5::1", 1), ("2001:db8:6::1", 2)];
    for (i, (dst, want)) in cases.iter().enumerate() {
        let src = if dst.contains(':') { "2001:db8:1::1" } else { "198.18.1.1" };
        let packet = ip_packet(src, dst, 200, i as u8);
        let mut control = Control::new();
        let (sealed, datagrams) = a.seal(std::slice::from_ref(&packet), &mut control);
        let target = &others[*want];
        let arrived = if sealed == Sealed::Held {
            // First packet to this peer: the handshake carries it.
            deliver(&[&a, &others[0], &others[1], &others[2]], 0, control)
        } else {
            assert_eq!(sealed, Sealed::To(target.at), "{dst}");
            match target.open(&datagrams[0], a.at, &mut Control::new()) {
                Got::Data(p) => vec![(*want + 1, p)],
                other => panic!("{dst}: {other:?}"),
            }
        };
        assert_eq!(arrived, vec![(*want + 1, packet)], "{dst}");
    }
    let mut control = Control::new();
    let b_only =
        Node::new(keys[0].clone(), ats[0], vec![peer(public_key_bytes(&keys[1]), Some(ats[1]), &["198.18.0.0/16"])]);
    assert_eq!(
        b_only.seal(&[ip_packet("198.18.1.1", "203.0.113.1", 60, 0)], &mut control).0,
        Sealed::Dropped(DropReason::NoRoute)
    );
    assert_eq!(b_only.seal(&[vec![0u8; 60]], &mut control).0, Sealed::Dropped(DropReason::InvalidPacket));
}

#[test]
fn hostile_datagrams_are_dropped_by_reason_and_good_ones_still_open() {
    let (a, b) = pair(None);
    let init = handshake(&a, &b);
    let good = |i: u8| {
        let packet = ip_packet("198.18.77.1", "198.18.77.2", 300, i);
        (packet.clone(), a.seal(&[packet], &mut Control::new()).1.remove(0))
    };
    let (_, captured) = good(10);
    assert!(matches!(b.open(&captured, a.at, &mut Control::new()), Got::Data(_)));

    let mut flipped = good(11).1;
    *flipped.last_mut().unwrap() ^= 1;
    let mut stranger_control = Control::new();
    let stranger = Node::new(secret(), "198.19.0.9:51820", vec![peer(b.public_key(), Some(B_AT), &["0.0.0.0/0"])]);
    stranger.seal(&[ip_packet("198.18.9.9", "198.18.77.2", 80, 0)], &mut stranger_control);
    let (_, unknown_init) = stranger_control.drain().next().unwrap();
    // An initiation meant for someone else fails mac1.
    let mut other_control = Control::new();
    let elsewhere =
        Node::new(secret(), "198.19.0.10:51820", vec![peer(public_key_bytes(&secret()), Some(B_AT), &["0.0.0.0/0"])]);
    elsewhere.seal(&[ip_packet("198.18.9.9", "198.18.77.2", 80, 0)], &mut other_control);
    let (_, misaddressed_init) = other_control.drain().next().unwrap();
    let mut unknown_receiver = good(12).1;
    unknown_receiver[4..8].copy_from_slice(&0x00ab_cd01u32.to_le_bytes());

    let cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
        ("empty", vec![], DropReason::TooShort),
        ("three bytes", vec![4, 0, 0], DropReason::TooShort),
        ("garbage", vec![0xde; 200], DropReason::Mismatch),
        ("nonzero reserved bytes", [&[4u8, 1, 0, 0][..], &[0; 60]].concat(), DropReason::Mismatch),
        ("truncated data", captured[..20].to_vec(), DropReason::TooShort),
        ("truncated initiation", unknown_init[..100].to_vec(), DropReason::TooShort),
        ("initiation with a byte too many", [&unknown_init[..], &[0]].concat(), DropReason::Mismatch),
        ("flipped tag bit", flipped, DropReason::BadMac),
        ("replayed datagram", captured.clone(), DropReason::Replay),
        ("initiation from an unknown key", unknown_init, DropReason::BadHandshake),
        // WireGuard's timestamp check: a captured initiation cannot be replayed to reset the session.
        ("replayed initiation", init, DropReason::BadHandshake),
        ("initiation for another responder", misaddressed_init, DropReason::BadMac),
        ("unknown receiver index", unknown_receiver, DropReason::UnknownSession),
    ];
    for (name, datagram, reason) in cases {
        let mut control = Control::new();
        assert_eq!(b.open(&datagram, addr("198.19.0.66:4444"), &mut control), Got::Dropped(reason), "{name}");
        assert!(control.is_empty(), "{name}: nothing is sent back");
        let (packet, next) = good(20);
        assert_eq!(b.open(&next, a.at, &mut Control::new()), Got::Data(packet), "a good datagram after {name}");
    }
    let stats = &b.framer.peers()[0];
    let count = |r: DropReason| stats.drops.iter().find(|(reason, _)| *reason == r).unwrap().1;
    let counted = [DropReason::BadMac, DropReason::Replay, DropReason::BadHandshake].map(count);
    assert_eq!(counted, [1, 1, 1], "drops that name B's peer: {stats:?}");
    assert_eq!(stats.endpoint, Some(a.at), "no hostile datagram moved the peer");
}

#[test]
fn a_peer_may_only_send_from_its_allowed_ips() {
    let (a, b) = pair(None);
    handshake(&a, &b);
    // B routes by destination, so it seals a packet whose source A does not allow from B.
    for (src, dst) in [("198.18.99.1", "198.18.77.1"), ("2001:db8:99::1", "2001:db8:77::1")] {
        let (_, datagrams) = b.seal(&[ip_packet(src, dst, 120, 7)], &mut Control::new());
        assert_eq!(
            a.open(&datagrams[0], b.at, &mut Control::new()),
            Got::Dropped(DropReason::NotAllowedSource),
            "{src}"
        );
    }
    let allowed = ip_packet("198.18.77.2", "198.18.77.1", 120, 8);
    let (_, datagrams) = b.seal(std::slice::from_ref(&allowed), &mut Control::new());
    assert_eq!(a.open(&datagrams[0], b.at, &mut Control::new()), Got::Data(allowed));
    let drops = &a.framer.peers()[0].drops;
    assert_eq!(drops.iter().find(|(r, _)| *r == DropReason::NotAllowedSource).unwrap().1, 2);
}

#[test]
fn a_session_rekeys_mid_transfer_without_losing_packets() {
    let (a_key, b_key) = (secret(), secret());
    let config = WireGuardConfig {
        peers: vec![peer(public_key_bytes(&b_key), Some(B_AT), &["198.18.77.2/32"])],
        rekey_after_packets: Some(8),
        ..WireGuardConfig::new(a_key.clone())
    };
    let a = Node::with_config(config, A_AT);
    let b = Node::new(b_key, B_AT, vec![peer(public_key_bytes(&a_key), None, &["198.18.77.1/32"])]);
    handshake(&a, &b);
    let mut sessions: Vec<u32> = Vec::new();
    for round in 0..8u8 {
        let packets: Vec<_> = (0..4u8).map(|i| ip_packet("198.18.77.1", "198.18.77.2", 600, round * 4 + i)).collect();
        let mut control = Control::new();
        let (sealed, datagrams) = a.seal(&packets, &mut control);
        assert_eq!(sealed, Sealed::To(b.at));
        // The rekey handshake completes before this superpacket arrives: the old session still opens it.
        assert_eq!(deliver(&[&a, &b], 0, control), vec![]);
        for (d, p) in datagrams.iter().zip(&packets) {
            let receiver = u32::from_le_bytes(d[4..8].try_into().unwrap());
            if sessions.last() != Some(&receiver) {
                // Counter 0 of each session is the initiator's keepalive that confirms it (and 1 of the
                // first session carried the packet that waited for the handshake).
                let first = if sessions.is_empty() { 2 } else { 1 };
                assert_eq!(counter(d), first, "the first data message of session {}", sessions.len());
                sessions.push(receiver);
            }
            assert_eq!(b.open(d, a.at, &mut Control::new()), Got::Data(p.clone()), "round {round}");
        }
    }
    assert!(sessions.len() >= 3, "sessions used: {sessions:?}");
    // B switched to the newest session too and can answer.
    let back = ip_packet("198.18.77.2", "198.18.77.1", 200, 9);
    let (_, datagrams) = b.seal(std::slice::from_ref(&back), &mut Control::new());
    assert_eq!(a.open(&datagrams[0], b.at, &mut Control::new()), Got::Data(back));
}

#[test]
fn packets_wait_for_the_handshake_in_a_bounded_queue() {
    let (a, b) = pair(None);
    let mut control = Control::new();
    let mut expected = Vec::new();
    for round in 0..5u16 {
        let packets: Vec<_> =
            (0..64u16).map(|i| ip_packet("198.18.77.1", "198.18.77.2", 100, (round * 64 + i) as u8)).collect();
        let (sealed, _) = a.seal(&packets, &mut control);
        // 256 packets fit; the fifth superpacket finds the queue full.
        if round < 4 {
            assert_eq!(sealed, Sealed::Held, "round {round}");
            expected.extend(packets);
        } else {
            assert_eq!(sealed, Sealed::Dropped(DropReason::QueueFull));
        }
    }
    assert_eq!(control.len(), 1, "one initiation for all of them");
    let drops = &a.framer.peers()[0].drops;
    assert_eq!(drops.iter().find(|(r, _)| *r == DropReason::QueueFull).unwrap().1, 64);
    let arrived: Vec<Vec<u8>> = deliver(&[&a, &b], 0, control).into_iter().map(|(_, p)| p).collect();
    assert_eq!(arrived.len(), 256);
    let (mut arrived, mut expected) = (arrived, expected);
    arrived.sort();
    expected.sort();
    assert_eq!(arrived, expected);
    // With the session up, packets go straight out.
    assert_eq!(a.seal(&[ip_packet("198.18.77.1", "198.18.77.2", 100, 0)], &mut Control::new()).0, Sealed::To(b.at));
}

#[test]
fn the_endpoint_roams_only_after_an_authenticated_datagram() {
    let (a, b) = pair(None);
    handshake(&a, &b);
    let moved = addr("198.19.0.77:40000");
    let packet = ip_packet("198.18.77.1", "198.18.77.2", 200, 3);
    let (_, datagrams) = a.seal(&[packet.clone(), packet.clone()], &mut Control::new());
    let mut forged = datagrams[0].clone();
    forged[40] ^= 0x80;
    assert_eq!(b.open(&forged, moved, &mut Control::new()), Got::Dropped(DropReason::BadMac));
    assert_eq!(b.framer.peers()[0].endpoint, Some(a.at));
    assert_eq!(b.open(&datagrams[1], moved, &mut Control::new()), Got::Data(packet));
    assert_eq!(b.framer.peers()[0].endpoint, Some(moved));
    let (sealed, _) = b.seal(&[ip_packet("198.18.77.2", "198.18.77.1", 60, 0)], &mut Control::new());
    assert_eq!(sealed, Sealed::To(moved));
    // The application may move it too.
    b.framer.set_peer_endpoint(&a.framer.public_key(), a.at).unwrap();
    assert_eq!(b.framer.peers()[0].endpoint, Some(a.at));
    assert_eq!(b.framer.set_peer_endpoint(&b.framer.public_key(), a.at).unwrap_err().field, "publicKey");
}

#[test]
fn persistent_keepalive_comes_from_poll() {
    let (a_key, b_key) = (secret(), secret());
    let mut to_b = peer(public_key_bytes(&b_key), Some(B_AT), &["198.18.77.2/32"]);
    to_b.persistent_keepalive = Some(1);
    let a = Node::new(a_key.clone(), A_AT, vec![to_b]);
    let b = Node::new(b_key, B_AT, vec![peer(public_key_bytes(&a_key), None, &["198.18.77.1/32"])]);
    handshake(&a, &b);
    let mut control = Control::new();
    a.framer.poll(&mut control);
    // boringtun's timers count from the poll that last saw the time, so wait past one interval.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let mut keepalives = Vec::new();
    for _ in 0..3 {
        a.framer.poll(&mut control);
        keepalives.extend(control.drain());
        if !keepalives.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let (to, keepalive) = keepalives.first().expect("a keepalive within three seconds");
    assert_eq!((*to, keepalive.len()), (b.at, 32), "an empty data message to B");
    assert_eq!(b.open(keepalive, a.at, &mut Control::new()), Got::Consumed);
    // B's own poll sends nothing: it has no persistent keepalive and nothing to acknowledge yet.
    let mut b_control = Control::new();
    b.framer.poll(&mut b_control);
    assert!(b_control.is_empty());
}

#[test]
fn configuration_errors_name_the_field() {
    let (a_key, b_key) = (secret(), secret());
    let b_peer = peer(public_key_bytes(&b_key), None, &[]);
    let cases = [
        ("duplicate peer", vec![b_peer.clone(), b_peer.clone()], None, "peers[1].publicKey"),
        ("own key", vec![peer(public_key_bytes(&a_key), None, &[])], None, "peers[0].publicKey"),
        ("zero rekey", vec![b_peer], Some(0), "rekeyAfterPackets"),
    ];
    for (name, peers, rekey_after_packets, field) in cases {
        let config = WireGuardConfig { peers, rekey_after_packets, ..WireGuardConfig::new(a_key.clone()) };
        assert_eq!(WireGuard::new(config).err().map(|e| e.field), Some(field.to_string()), "{name}");
    }
}

#[test]
fn a_framer_from_a_wg_quick_file() {
    let text = "\
[Interface]
PrivateKey = 8N4OlJEPOnRQZ63TrwTPzjZW4O5ZTwvUQvK804b2nFI=
[Peer]
PublicKey = JCr8AJULa4uBDoP24jODbEuL8Z7WCd41XG2/k07YZ00=
Endpoint = [2001:db8::2]:51820
AllowedIPs = 198.18.77.0/24
PersistentKeepalive = 25
";
    let file = superpacket_wireguard::parse_config(text).unwrap();
    let framer = WireGuard::new(file.config).unwrap();
    // The public key `wg pubkey` printed for this private key.
    assert_eq!(framer.public_key(), "SRFiw6eGe/U6AO+IV9BmblASS7rZYBeECj/+HGXETxI=");
    let stats = framer.peers();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].public_key, "JCr8AJULa4uBDoP24jODbEuL8Z7WCd41XG2/k07YZ00=");
    assert_eq!((stats[0].endpoint, stats[0].persistent_keepalive), (Some(addr("[2001:db8::2]:51820")), Some(25)));
    let mut control = Control::new();
    let (sealed, _) = seal_with(&framer, &[ip_packet("198.18.0.1", "198.18.77.5", 80, 0)], &mut control);
    assert_eq!(sealed, Sealed::Held);
    let (to, init) = control.drain().next().unwrap();
    assert_eq!((to, init.len(), init[0]), (addr("[2001:db8::2]:51820"), 148, 1));
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Random bytes, and valid datagrams with random bytes changed or cut, never panic `open`; nothing
        /// that fails to authenticate yields data.
        #[test]
        fn open_survives_any_bytes(
            random in proptest::collection::vec(any::<u8>(), 0..300),
            kind in 1u8..=4,
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            let (a, b) = pair(None);
            let mut control = Control::new();
            let packet = ip_packet("198.18.77.1", "198.18.77.2", 100, 0);
            a.seal(std::slice::from_ref(&packet), &mut control);
            let (_, init) = control.drain().next().unwrap();
            let mut typed = random.clone();
            if typed.len() >= 4 {
                typed[..4].copy_from_slice(&[kind, 0, 0, 0]);
            }
            let mut edited = init.clone();
            for (at, value) in &edits {
                let i = at % edited.len();
                edited[i] ^= value | 1;
            }
            let short = &init[..cut % init.len()];
            for datagram in [&random[..], &typed[..], &edited[..], short] {
                let got = b.open(datagram, a.at, &mut Control::new());
                prop_assert!(!matches!(got, Got::Data(_)));
            }
        }
    }
}

#[test]
fn under_load_initiations_get_cookie_replies() {
    let (a, b) = pair(None);
    // Strangers fill the interface's handshake budget (100 a second; nothing resets it without a poll).
    for i in 0..100u8 {
        let stranger = Node::new(secret(), "198.19.1.1:1", vec![peer(b.public_key(), Some(B_AT), &["0.0.0.0/0"])]);
        let mut control = Control::new();
        stranger.seal(&[ip_packet("198.18.9.9", "198.18.77.2", 80, i)], &mut control);
        let (_, init) = control.drain().next().unwrap();
        assert_eq!(b.open(&init, stranger.at, &mut Control::new()), Got::Dropped(DropReason::BadHandshake));
    }
    let mut control = Control::new();
    a.seal(&[ip_packet("198.18.77.1", "198.18.77.2", 80, 0)], &mut control);
    let (_, init) = control.drain().next().unwrap();
    let mut reply = Control::new();
    assert_eq!(b.open(&init, a.at, &mut reply), Got::Dropped(DropReason::BadHandshake));
    let (to, cookie) = reply.drain().next().expect("a cookie reply");
    assert_eq!((to, cookie.len(), cookie[0]), (a.at, 64, 3));
    // A takes the cookie for its next initiation.
    assert_eq!(a.open(&cookie, b.at, &mut Control::new()), Got::Consumed);
    assert_eq!(b.framer.peers()[0].endpoint, None, "nothing unauthenticated moved B's peer");
}

#[test]
fn simultaneous_initiations_still_deliver_both_queues() {
    let (a_key, b_key) = (secret(), secret());
    let a = Node::new(a_key.clone(), A_AT, vec![peer(public_key_bytes(&b_key), Some(B_AT), &["198.18.77.2/32"])]);
    let b = Node::new(b_key, B_AT, vec![peer(public_key_bytes(&a_key), Some(A_AT), &["198.18.77.1/32"])]);
    let to_b = ip_packet("198.18.77.1", "198.18.77.2", 100, 1);
    let to_a = ip_packet("198.18.77.2", "198.18.77.1", 100, 2);
    let (mut a_control, mut b_control) = (Control::new(), Control::new());
    assert_eq!(a.seal(std::slice::from_ref(&to_b), &mut a_control).0, Sealed::Held);
    assert_eq!(b.seal(std::slice::from_ref(&to_a), &mut b_control).0, Sealed::Held);
    // Both initiations are on the wire before either side hears from the other.
    let mut arrived = deliver_all(&[&a, &b], vec![(0, a_control), (1, b_control)]);
    arrived.sort();
    assert_eq!(arrived, vec![(0, to_a), (1, to_b)]);
}
