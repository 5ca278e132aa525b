/**
 * WireGuard on the superpacket data path: a native framer that speaks the WireGuard protocol (Noise
 * IKpsk2 handshakes, cookies, timers and ChaCha20-Poly1305 sessions from boringtun), routes each
 * superpacket to a peer by its inner destination (AllowedIPs) and seals every segment straight into the
 * GSO send buffer.
 *
 * ```ts
 * const framer = wireguard({ privateKey, peers: [{ publicKey, endpoint: '198.18.0.2:51820', allowedIPs: ['198.18.77.2/32'] }] })
 * const tunnel = await Tunnel.start({ tun, socket, framer })   // no peer: WireGuard routes by AllowedIPs
 * tunnel.peers()
 * ```
 * @module
 */
import { native } from './errors.js'
import { wrapNativeFramer, type NativeFramer } from './framer.js'
import { binding } from './native.js'

/** One WireGuard peer. */
export interface WireGuardPeerConfig {
  /** The peer's public key, base64 as `wg pubkey` prints it. */
  publicKey: string
  /** An optional preshared key (base64, `wg genpsk`), mixed into every handshake. */
  presharedKey?: string
  /**
   * Where to send until the peer's authenticated datagrams arrive from elsewhere: `'198.18.0.2:51820'`
   * or `'[2001:db8::2]:51820'`. Without one, the peer must initiate.
   */
  endpoint?: string
  /** Inner addresses routed to this peer and accepted from it (`'198.18.77.0/24'`, `'2001:db8:77::/64'`). */
  allowedIPs?: string[]
  /** Seconds between keepalives when nothing else is sent (0 or absent: off). */
  persistentKeepalive?: number
}

/** What {@link wireguard} takes. */
export interface WireGuardConfig {
  /** Our private key, base64 as `wg genkey` prints it. */
  privateKey: string
  /** The peers. A prefix in two peers' `allowedIPs` belongs to the later one. */
  peers: WireGuardPeerConfig[]
  /**
   * Start a new handshake once a session has sealed this many packets (default: WireGuard's own
   * limit). Small values make a session rekey in the middle of a transfer, for tests.
   */
  rekeyAfterPackets?: number
}

/** One peer's state, as `wg show` reports it. */
export interface WireGuardPeer {
  /** The peer's public key, base64. */
  publicKey: string
  /** Where its datagrams go now (configured, or learned from its last authenticated datagram). */
  endpoint: string | null
  /** Its AllowedIPs. */
  allowedIPs: string[]
  /** Persistent keepalive in seconds, or null when off. */
  persistentKeepalive: number | null
  /** When the current session's handshake completed (ms since the UNIX epoch), or null. */
  lastHandshake: number | null
  /** Bytes received from the peer that authenticated. */
  rxBytes: number
  /** Bytes sent to the peer (data, handshakes, keepalives). */
  txBytes: number
  /** Drops that belonged to this peer, by reason (`'bad-mac'`, `'replay'`, `'not-allowed-source'` ...). */
  dropReasons: Record<string, number>
}

/** A WireGuard framer: give one object to the tunnel or writers that make up one WireGuard interface. */
export interface WireGuardFramer extends NativeFramer {
  /** Our public key, base64. */
  readonly publicKey: string
  /** Every peer's state, in configuration order. */
  peers(): WireGuardPeer[]
  /** Sets where a peer's datagrams go (until its authenticated datagrams arrive from elsewhere). */
  setPeerEndpoint(publicKey: string, endpoint: string): void
}

/** A parsed `wg setconf` / wg-quick file. */
export interface WireGuardConfigFile {
  /** `[Interface] PrivateKey`. */
  privateKey: string
  /** `[Interface] ListenPort`: the port to bind the UDP socket to. */
  listenPort: number | null
  /** wg-quick `Address` entries, for {@link Tun.open}'s `ipv4`/`ipv6`. */
  addresses: string[]
  /** wg-quick `MTU`, for {@link Tun.open}. */
  mtu: number | null
  /** The `[Peer]` sections. */
  peers: WireGuardPeerConfig[]
  /** Keys accepted but not applied (`FwMark`, `DNS`, `Table`, `PostUp` ...), as `'line: key'`. */
  ignored: string[]
}

/**
 * Makes a WireGuard framer: wire-compatible with wireguard-go and the Linux kernel. Keys, endpoints and
 * AllowedIPs are checked here: a bad one throws `ERR_SUPERPACKET_INVALID_ARGUMENT` naming the field.
 */
export function wireguard(config: WireGuardConfig): WireGuardFramer {
  const peers = config.peers.map((p) => ({
    publicKey: p.publicKey,
    presharedKey: p.presharedKey,
    endpoint: p.endpoint,
    allowedIps: p.allowedIPs,
    persistentKeepalive: p.persistentKeepalive,
  }))
  const n = native(() => binding.wireguardFramer({ privateKey: config.privateKey, peers, rekeyAfterPackets: config.rekeyAfterPackets }))
  const base = wrapNativeFramer(n)
  return {
    ...base,
    publicKey: native(() => n.wgPublicKey()),
    peers: () =>
      native(() => n.wgPeers()).map((p) => ({
        publicKey: p.publicKey,
        endpoint: p.endpoint ?? null,
        allowedIPs: p.allowedIps,
        persistentKeepalive: p.persistentKeepalive ?? null,
        lastHandshake: p.lastHandshake ?? null,
        rxBytes: p.rxBytes,
        txBytes: p.txBytes,
        dropReasons: p.dropReasons,
      })),
    setPeerEndpoint: (publicKey: string, endpoint: string) => native(() => n.wgSetEndpoint(publicKey, endpoint)),
  }
}

/** A new WireGuard private key, base64 (as `wg genkey`). */
export function generatePrivateKey(): string {
  return native(() => binding.wireguardGeneratePrivateKey())
}

/** The public key of a base64 private key (as `wg pubkey`). */
export function publicKey(privateKey: string): string {
  return native(() => binding.wireguardPublicKey(privateKey))
}

/**
 * Parses the text of a `wg setconf` / wg-quick configuration file. A malformed line throws
 * `ERR_SUPERPACKET_INVALID_ARGUMENT` whose message names the line and the field.
 */
export function parseWireGuardConfig(text: string): WireGuardConfigFile {
  const f = native(() => binding.wireguardParseConfig(text))
  return {
    privateKey: f.privateKey,
    listenPort: f.listenPort ?? null,
    addresses: f.addresses,
    mtu: f.mtu ?? null,
    peers: f.peers.map((p) => ({
      publicKey: p.publicKey,
      ...(p.presharedKey == null ? {} : { presharedKey: p.presharedKey }),
      ...(p.endpoint == null ? {} : { endpoint: p.endpoint }),
      allowedIPs: p.allowedIps ?? [],
      ...(p.persistentKeepalive == null ? {} : { persistentKeepalive: p.persistentKeepalive }),
    })),
    ignored: f.ignored,
  }
}

/** @internal whether a framer is a WireGuard framer */
export function isWireGuard(f: unknown): f is WireGuardFramer {
  return typeof (f as WireGuardFramer | undefined)?.peers === 'function' && (f as NativeFramer).kind === 'native'
}
