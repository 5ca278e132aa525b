//! The WireGuard configuration, built from fields or parsed from a `wg setconf` / wg-quick file.
//!
//! Keys and section names are case-insensitive, as `wg` reads them; `#` starts a comment; blank lines
//! and whitespace around `=` and commas do not matter. wg-quick's `Address` and `MTU` are parsed (they
//! configure the TUN device, not the framer). wg-quick's commands and settings that belong to the host
//! (`DNS`, `Table`, `PreUp`, `PostUp`, `PreDown`, `PostDown`, `SaveConfig`) and `FwMark` are accepted and
//! listed in [`ConfigFile::ignored`], so a user's existing file loads and the caller can warn. Any other
//! key, a key outside a section, or a malformed value is a [`ConfigError`] naming the line and field.

use std::net::SocketAddr;

use crate::allowed_ips::Cidr;
use crate::keys::{parse_key, parse_secret, SecretKey, KEY_LEN};
use crate::ConfigError;

/// One peer of a [`WireGuardConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's static public key.
    pub public_key: [u8; KEY_LEN],
    /// An optional preshared key mixed into the handshake.
    pub preshared_key: Option<SecretKey>,
    /// Where to send until the peer's authenticated packets say otherwise.
    pub endpoint: Option<SocketAddr>,
    /// Inner addresses routed to this peer and accepted from it.
    pub allowed_ips: Vec<Cidr>,
    /// Seconds between keepalives when nothing else is sent; `None` is off.
    pub persistent_keepalive: Option<u16>,
}

impl PeerConfig {
    /// A peer with only its public key set.
    pub fn new(public_key: [u8; KEY_LEN]) -> Self {
        PeerConfig {
            public_key,
            preshared_key: None,
            endpoint: None,
            allowed_ips: Vec::new(),
            persistent_keepalive: None,
        }
    }
}

/// What a [`crate::WireGuard`] framer needs: our private key and the peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireGuardConfig {
    /// Our static private key.
    pub private_key: SecretKey,
    /// The UDP port to listen on (used by the transport, not the framer).
    pub listen_port: Option<u16>,
    /// The peers, in order; an AllowedIPs prefix listed by two peers belongs to the later one.
    pub peers: Vec<PeerConfig>,
    /// Start a new handshake once a session has sealed this many packets. `None` keeps WireGuard's own
    /// limit (REKEY_AFTER_MESSAGES, 2^60); a small value lets tests rekey in the middle of a transfer.
    pub rekey_after_packets: Option<u64>,
}

impl WireGuardConfig {
    /// A configuration with our private key and no peers.
    pub fn new(private_key: SecretKey) -> Self {
        WireGuardConfig { private_key, listen_port: None, peers: Vec::new(), rekey_after_packets: None }
    }
}

/// A key the parser accepted without using it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredKey {
    /// 1-based line number.
    pub line: usize,
    /// The key as written.
    pub key: String,
}

/// A parsed `wg setconf` / wg-quick file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// The WireGuard part.
    pub config: WireGuardConfig,
    /// wg-quick `Address` entries (for the TUN device).
    pub addresses: Vec<Cidr>,
    /// wg-quick `MTU` (for the TUN device).
    pub mtu: Option<u16>,
    /// Keys accepted but not applied (`FwMark`, `DNS`, `Table`, `PreUp` ...).
    pub ignored: Vec<IgnoredKey>,
}

/// Host-level keys that are accepted and reported in [`ConfigFile::ignored`].
const IGNORED_INTERFACE_KEYS: [&str; 8] =
    ["fwmark", "dns", "table", "preup", "postup", "predown", "postdown", "saveconfig"];

enum Section {
    None,
    Interface,
    Peer,
}

/// Parses the text of a `wg setconf` / wg-quick file. Needs exactly one `[Interface]` with a `PrivateKey`
/// and a `PublicKey` in every `[Peer]`.
pub fn parse_config(text: &str) -> Result<ConfigFile, ConfigError> {
    let mut private_key: Option<SecretKey> = None;
    let mut interface_line: Option<usize> = None;
    let mut listen_port = None;
    let mut addresses = Vec::new();
    let mut mtu = None;
    let mut ignored = Vec::new();
    // Each peer with the line of its `[Peer]` header; its key is checked when the section ends.
    let mut peers: Vec<(usize, Option<[u8; KEY_LEN]>, PeerConfig)> = Vec::new();
    let mut section = Section::None;

    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = match line.to_ascii_lowercase().as_str() {
                "[interface]" => {
                    if interface_line.replace(line_no).is_some() {
                        return Err(ConfigError::new("[Interface]", "appears twice").at_line(line_no));
                    }
                    Section::Interface
                }
                "[peer]" => {
                    peers.push((line_no, None, PeerConfig::new([0; KEY_LEN])));
                    Section::Peer
                }
                _ => return Err(ConfigError::new(line, "is not a section ([Interface] or [Peer])").at_line(line_no)),
            };
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(ConfigError::new(line, "is not `Key = Value`").at_line(line_no));
        };
        let (key, value) = (key.trim(), value.trim());
        let at = |e: ConfigError| e.at_line(line_no);
        let lower = key.to_ascii_lowercase();
        match (&section, lower.as_str()) {
            (Section::None, _) => {
                return Err(ConfigError::new(key, "comes before any [Interface] or [Peer] section").at_line(line_no))
            }
            (Section::Interface, "privatekey") => private_key = Some(parse_secret(key, value).map_err(at)?),
            (Section::Interface, "listenport") => listen_port = Some(parse_number::<u16>(key, value).map_err(at)?),
            (Section::Interface, "address") => addresses.extend(parse_cidrs(key, value).map_err(at)?),
            (Section::Interface, "mtu") => mtu = Some(parse_number::<u16>(key, value).map_err(at)?),
            (Section::Interface, k) if IGNORED_INTERFACE_KEYS.contains(&k) => {
                ignored.push(IgnoredKey { line: line_no, key: key.to_string() })
            }
            (Section::Peer, k) => {
                let Some((_, public_key, peer)) = peers.last_mut() else {
                    return Err(ConfigError::new(key, "comes before any [Peer] section").at_line(line_no));
                };
                match k {
                    "publickey" => *public_key = Some(parse_key(key, value).map_err(at)?),
                    "presharedkey" => peer.preshared_key = Some(parse_secret(key, value).map_err(at)?),
                    "endpoint" => peer.endpoint = Some(parse_endpoint(key, value).map_err(at)?),
                    "allowedips" => peer.allowed_ips.extend(parse_cidrs(key, value).map_err(at)?),
                    "persistentkeepalive" => peer.persistent_keepalive = parse_keepalive(key, value).map_err(at)?,
                    _ => return Err(ConfigError::new(key, "is not a [Peer] key").at_line(line_no)),
                }
            }
            (Section::Interface, _) => return Err(ConfigError::new(key, "is not an [Interface] key").at_line(line_no)),
        }
    }

    let Some(interface_line) = interface_line else {
        return Err(ConfigError::new("[Interface]", "is missing"));
    };
    let private_key =
        private_key.ok_or_else(|| ConfigError::new("PrivateKey", "is missing").at_line(interface_line))?;
    let peers = peers
        .into_iter()
        .map(|(line, public_key, peer)| match public_key {
            Some(public_key) => Ok(PeerConfig { public_key, ..peer }),
            None => Err(ConfigError::new("PublicKey", "is missing from this [Peer]").at_line(line)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ConfigFile {
        config: WireGuardConfig { private_key, listen_port, peers, rekey_after_packets: None },
        addresses,
        mtu,
        ignored,
    })
}

fn parse_number<T: std::str::FromStr>(field: &str, value: &str) -> Result<T, ConfigError> {
    value.parse().map_err(|_| ConfigError::new(field, format!("`{value}` is not a number in range")))
}

/// A comma-separated list of CIDRs; an empty value is an empty list.
pub fn parse_cidrs(field: &str, value: &str) -> Result<Vec<Cidr>, ConfigError> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    value.split(',').map(|item| item.trim().parse::<Cidr>().map_err(|m| ConfigError::new(field, m))).collect()
}

/// `a.b.c.d:port` or `[v6]:port`. Hostnames are refused: the framer never resolves names.
pub fn parse_endpoint(field: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::new(
            field,
            format!("`{value}` must be an IP address and port (a.b.c.d:port or [v6]:port); hostnames are not resolved"),
        )
    })
}

/// `off`, or seconds from 0 to 65535 (0 is off).
pub fn parse_keepalive(field: &str, value: &str) -> Result<Option<u16>, ConfigError> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let seconds: u16 = value.parse().map_err(|_| {
        ConfigError::new(field, format!("`{value}` is not `off` or a number of seconds from 0 to 65535"))
    })?;
    Ok((seconds > 0).then_some(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::encode_key;

    // Keys made with `wg genkey`, `wg pubkey` and `wg genpsk` from wireguard-tools.
    const FILE: &str = "\
# a wg-quick file with three peers
[Interface]
PrivateKey = 8N4OlJEPOnRQZ63TrwTPzjZW4O5ZTwvUQvK804b2nFI=
ListenPort = 51820
Address = 198.18.77.1/24, 2001:db8:77::1/64
MTU = 1420
DNS = 198.18.0.53
PostUp = iptables -A FORWARD -i %i -j ACCEPT
fwmark = 0x1234

[Peer]   # site B
PublicKey = JCr8AJULa4uBDoP24jODbEuL8Z7WCd41XG2/k07YZ00=
PresharedKey = KYfYo9Fud4U7OLslpa/jGC6P3FIVrEOqecOLio9eeoI=
Endpoint = 198.19.0.2:51820
AllowedIPs = 198.18.77.2/32, 2001:db8:77::2/128
AllowedIPs = 198.18.80.0/20
PersistentKeepalive = 25

[peer]
publickey=SRFiw6eGe/U6AO+IV9BmblASS7rZYBeECj/+HGXETxI=
endpoint = [2001:db8::2]:51821
allowedips = 0.0.0.0/0,::/0
persistentkeepalive = off

[Peer]
PublicKey = L+V9o0fNYkMVKNqsX7spBzD/9oSvxM/C7ZCZX1jLO3Q=
";

    #[test]
    fn parses_a_wg_quick_file_with_several_peers() {
        let f = parse_config(FILE).unwrap();
        let c = &f.config;
        assert_eq!(encode_key(&c.private_key.0), "8N4OlJEPOnRQZ63TrwTPzjZW4O5ZTwvUQvK804b2nFI=");
        assert_eq!(c.listen_port, Some(51820));
        assert_eq!(f.mtu, Some(1420));
        assert_eq!(f.addresses, vec!["198.18.77.1/24".parse().unwrap(), "2001:db8:77::1/64".parse().unwrap()]);
        let ignored: Vec<_> = f.ignored.iter().map(|i| (i.line, i.key.as_str())).collect();
        assert_eq!(ignored, [(7, "DNS"), (8, "PostUp"), (9, "fwmark")]);
        assert_eq!(c.peers.len(), 3);
        let a = &c.peers[0];
        assert_eq!(encode_key(&a.public_key), "JCr8AJULa4uBDoP24jODbEuL8Z7WCd41XG2/k07YZ00=");
        assert_eq!(
            a.preshared_key.as_ref().map(|k| encode_key(&k.0)).as_deref(),
            Some("KYfYo9Fud4U7OLslpa/jGC6P3FIVrEOqecOLio9eeoI=")
        );
        assert_eq!(a.endpoint, Some("198.19.0.2:51820".parse().unwrap()));
        let allowed: Vec<String> = a.allowed_ips.iter().map(|c| c.to_string()).collect();
        assert_eq!(allowed, ["198.18.77.2/32", "2001:db8:77::2/128", "198.18.80.0/20"]);
        assert_eq!(a.persistent_keepalive, Some(25));
        let b = &c.peers[1];
        assert_eq!(b.endpoint, Some("[2001:db8::2]:51821".parse().unwrap()));
        assert_eq!(b.allowed_ips.len(), 2);
        assert_eq!((b.persistent_keepalive, b.preshared_key.is_none()), (None, true));
        let c3 = &c.peers[2];
        assert_eq!((c3.endpoint, c3.allowed_ips.len()), (None, 0));
    }

    #[test]
    fn keepalive_values() {
        assert_eq!(parse_keepalive("k", "off"), Ok(None));
        assert_eq!(parse_keepalive("k", "0"), Ok(None));
        assert_eq!(parse_keepalive("k", "65535"), Ok(Some(65535)));
        assert!(parse_keepalive("k", "65536").is_err());
        assert!(parse_keepalive("k", "-1").is_err());
    }

    /// Each malformed file fails at the expected line, naming the expected field.
    #[test]
    fn malformed_files_name_line_and_field() {
        let key = "PrivateKey = 8N4OlJEPOnRQZ63TrwTPzjZW4O5ZTwvUQvK804b2nFI=";
        let peer = "[Peer]\nPublicKey = JCr8AJULa4uBDoP24jODbEuL8Z7WCd41XG2/k07YZ00=";
        let cases: Vec<(&str, String, Option<usize>, &str, &str)> = vec![
            ("bad private key", "[Interface]\nPrivateKey = abc".into(), Some(2), "PrivateKey", "base64"),
            (
                "short public key",
                format!("[Interface]\n{key}\n[Peer]\nPublicKey = AAAA"),
                Some(4),
                "PublicKey",
                "3 bytes",
            ),
            (
                "hostname endpoint",
                format!("[Interface]\n{key}\n{peer}\nEndpoint = vpn.example.com:51820"),
                Some(5),
                "Endpoint",
                "hostnames",
            ),
            (
                "endpoint without port",
                format!("[Interface]\n{key}\n{peer}\nEndpoint = 198.19.0.2"),
                Some(5),
                "Endpoint",
                "port",
            ),
            (
                "v6 endpoint without brackets",
                format!("[Interface]\n{key}\n{peer}\nEndpoint = 2001:db8::2:51820"),
                Some(5),
                "Endpoint",
                "[v6]",
            ),
            (
                "bad allowed ip",
                format!("[Interface]\n{key}\n{peer}\nAllowedIPs = 198.18.0.0/24, 198.18.1.0/40"),
                Some(5),
                "AllowedIPs",
                "198.18.1.0/40",
            ),
            (
                "empty allowed ip item",
                format!("[Interface]\n{key}\n{peer}\nAllowedIPs = 198.18.0.0/24,,"),
                Some(5),
                "AllowedIPs",
                "not an IPv4",
            ),
            (
                "bad keepalive",
                format!("[Interface]\n{key}\n{peer}\nPersistentKeepalive = sometimes"),
                Some(5),
                "PersistentKeepalive",
                "off",
            ),
            ("port out of range", format!("[Interface]\n{key}\nListenPort = 70000"), Some(3), "ListenPort", "70000"),
            ("bad mtu", format!("[Interface]\n{key}\nMTU = big"), Some(3), "MTU", "big"),
            (
                "unknown interface key",
                format!("[Interface]\n{key}\nPostLunch = x"),
                Some(3),
                "PostLunch",
                "[Interface] key",
            ),
            (
                "unknown peer key",
                format!("[Interface]\n{key}\n{peer}\nListenPort = 1"),
                Some(5),
                "ListenPort",
                "[Peer] key",
            ),
            ("unknown section", "[Interfaces]\n".into(), Some(1), "[Interfaces]", "section"),
            ("key before section", "PrivateKey = x".into(), Some(1), "PrivateKey", "before"),
            (
                "no equals sign",
                format!("[Interface]\n{key}\nListenPort 51820"),
                Some(3),
                "ListenPort 51820",
                "Key = Value",
            ),
            ("second interface", format!("[Interface]\n{key}\n[Interface]"), Some(3), "[Interface]", "twice"),
            (
                "peer without public key",
                format!("[Interface]\n{key}\n\n[Peer]\nAllowedIPs = 198.18.0.0/24"),
                Some(4),
                "PublicKey",
                "missing",
            ),
            ("no private key", "# empty\n[Interface]\nListenPort = 1".into(), Some(2), "PrivateKey", "missing"),
            ("no interface", peer.into(), None, "[Interface]", "missing"),
        ];
        for (name, text, line, field, words) in cases {
            let err = parse_config(&text).expect_err(name);
            assert_eq!((err.line, err.field.as_str()), (line, field), "{name}: {err}");
            assert!(err.to_string().contains(words), "{name}: {err}");
        }
    }
}
