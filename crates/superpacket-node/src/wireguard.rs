//! The WireGuard framer, keys and config files for JS.

use std::collections::HashMap;
use std::sync::Arc;

use napi_derive::napi;
use superpacket_wireguard::config::parse_endpoint;
use superpacket_wireguard::keys::{parse_key, parse_secret};
use superpacket_wireguard::{parse_config, ConfigError, PeerConfig, WireGuard, WireGuardConfig};

use napi::Result;

use crate::error::invalid_argument;
use crate::framer::NativeFramer;
use crate::tunnel::drop_reasons;

/// A bad key, field or config line as `ERR_SUPERPACKET_INVALID_ARGUMENT` (the message names the field
/// and, for a file, the line).
fn config_error(e: ConfigError) -> napi::Error {
    invalid_argument(format!("wireguard: {e}"))
}

/// One peer as JS gives it.
#[napi(object)]
pub struct WgPeerOptions {
    pub public_key: String,
    pub preshared_key: Option<String>,
    pub endpoint: Option<String>,
    pub allowed_ips: Option<Vec<String>>,
    pub persistent_keepalive: Option<u32>,
}

/// The framer's configuration as JS gives it.
#[napi(object)]
pub struct WgOptions {
    pub private_key: String,
    pub peers: Vec<WgPeerOptions>,
    pub rekey_after_packets: Option<f64>,
}

/// One peer as `wg show` would show it.
#[napi(object)]
pub struct WgPeerInfo {
    pub public_key: String,
    /// `address:port` (IPv6 in brackets), or null before one is known.
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    pub persistent_keepalive: Option<u32>,
    /// Milliseconds since the UNIX epoch of the last completed handshake, or null.
    pub last_handshake: Option<f64>,
    pub rx_bytes: f64,
    pub tx_bytes: f64,
    pub drop_reasons: HashMap<String, f64>,
}

/// A parsed config file, in the shape `wireguard()` and `Tun.open` take.
#[napi(object)]
pub struct WgConfigFile {
    pub private_key: String,
    pub listen_port: Option<u32>,
    pub addresses: Vec<String>,
    pub mtu: Option<u32>,
    pub peers: Vec<WgPeerOptions>,
    /// Keys accepted but not applied, as `line: key`.
    pub ignored: Vec<String>,
}

fn peer_config(index: usize, p: &WgPeerOptions) -> std::result::Result<PeerConfig, ConfigError> {
    let field = |name: &str| format!("peers[{index}].{name}");
    let mut pc = PeerConfig::new(parse_key(&field("publicKey"), &p.public_key)?);
    pc.preshared_key = p.preshared_key.as_deref().map(|k| parse_secret(&field("presharedKey"), k)).transpose()?;
    pc.endpoint = p.endpoint.as_deref().map(|e| parse_endpoint(&field("endpoint"), e)).transpose()?;
    for (i, cidr) in p.allowed_ips.iter().flatten().enumerate() {
        let parsed = cidr.parse().map_err(|e: String| ConfigError::new(format!("{}[{i}]", field("allowedIPs")), e))?;
        pc.allowed_ips.push(parsed);
    }
    pc.persistent_keepalive = match p.persistent_keepalive {
        None | Some(0) => None,
        Some(s) => Some(
            u16::try_from(s)
                .map_err(|_| ConfigError::new(field("persistentKeepalive"), "must be 0 to 65535 seconds"))?,
        ),
    };
    Ok(pc)
}

fn build_config(o: &WgOptions) -> std::result::Result<WireGuardConfig, ConfigError> {
    let mut config = WireGuardConfig::new(parse_secret("privateKey", &o.private_key)?);
    for (i, p) in o.peers.iter().enumerate() {
        config.peers.push(peer_config(i, p)?);
    }
    config.rekey_after_packets = match o.rekey_after_packets {
        None => None,
        Some(n) if n >= 1.0 && n.fract() == 0.0 && n <= 2f64.powi(53) => Some(n as u64),
        Some(_) => return Err(ConfigError::new("rekeyAfterPackets", "must be a whole number of at least 1")),
    };
    Ok(config)
}

/// Makes the WireGuard framer.
#[napi]
pub fn wireguard_framer(options: WgOptions) -> Result<NativeFramer> {
    let wg = WireGuard::new(build_config(&options).map_err(config_error)?).map_err(config_error)?;
    Ok(NativeFramer::from_wireguard(Arc::new(wg)))
}

/// A new private key, base64 as `wg genkey` prints it.
#[napi]
pub fn wireguard_generate_private_key() -> String {
    superpacket_wireguard::generate_private_key()
}

/// The public key of a base64 private key, as `wg pubkey` prints it.
#[napi]
pub fn wireguard_public_key(private_key: String) -> Result<String> {
    superpacket_wireguard::public_key(&private_key).map_err(config_error)
}

/// Parses a `wg setconf` / wg-quick file.
#[napi]
pub fn wireguard_parse_config(text: String) -> Result<WgConfigFile> {
    let f = parse_config(&text).map_err(config_error)?;
    let key = superpacket_wireguard::keys::encode_key;
    Ok(WgConfigFile {
        private_key: key(&f.config.private_key.0),
        listen_port: f.config.listen_port.map(u32::from),
        addresses: f.addresses.iter().map(|c| c.to_string()).collect(),
        mtu: f.mtu.map(u32::from),
        peers: f
            .config
            .peers
            .iter()
            .map(|p| WgPeerOptions {
                public_key: key(&p.public_key),
                preshared_key: p.preshared_key.as_ref().map(|k| key(&k.0)),
                endpoint: p.endpoint.map(|e| e.to_string()),
                allowed_ips: Some(p.allowed_ips.iter().map(|c| c.to_string()).collect()),
                persistent_keepalive: p.persistent_keepalive.map(u32::from),
            })
            .collect(),
        ignored: f.ignored.iter().map(|k| format!("{}: {}", k.line, k.key)).collect(),
    })
}

/// The peers of a WireGuard framer.
pub fn peer_infos(wg: &WireGuard) -> Vec<WgPeerInfo> {
    wg.peers()
        .into_iter()
        .map(|p| WgPeerInfo {
            public_key: p.public_key,
            endpoint: p.endpoint.map(|e| e.to_string()),
            allowed_ips: p.allowed_ips.iter().map(|c| c.to_string()).collect(),
            persistent_keepalive: p.persistent_keepalive.map(u32::from),
            last_handshake: p
                .last_handshake
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as f64),
            rx_bytes: p.rx_bytes as f64,
            tx_bytes: p.tx_bytes as f64,
            drop_reasons: drop_reasons(&p.drops),
        })
        .collect()
}

/// Sets a peer's endpoint.
pub fn set_endpoint(wg: &WireGuard, public_key: &str, endpoint: &str) -> Result<()> {
    let addr = parse_endpoint("endpoint", endpoint).map_err(config_error)?;
    wg.set_peer_endpoint(public_key, addr).map_err(config_error)
}
