/**
 * superpacket: fast userspace packet I/O for Node.js.
 *
 * TUN devices with TSO/USO offloads, UDP sockets with GSO/GRO, byte-exact segmentation and coalescing,
 * a framing hook and a native two-way tunnel.
 * @module
 */
export { splitSuperpacket, coalescePackets } from './packet.js'
export type { CoalesceOptions } from './packet.js'
export { SuperpacketError, SuperpacketAbortError } from './errors.js'
export type { SuperpacketErrorCode } from './errors.js'
export { Superpacket, VNET_HDR_LEN } from './superpacket.js'
export type { GsoType } from './superpacket.js'
export { Tun, PacketWriter } from './tun.js'
export type { TunOptions, Offloads, TunStats, TunReadOptions, TunWriteOptions, PacketWriterOptions, PacketWriteResult } from './tun.js'
export type { WriteOptions } from './handle.js'
export { UdpSocket, SegmentWriter, DatagramBatch, UdpPeer } from './udp.js'
export type {
  Peer,
  BoundAddress,
  ReceivedDatagram,
  UdpSocketOptions,
  UdpCapabilities,
  UdpStats,
  ReceivedMessage,
  ReceiveOptions,
  SegmentWriterOptions,
} from './udp.js'
export { plainFramer, headerFramer } from './framer.js'
export type { Framer, NativeFramer, JsFramer, SealBatch } from './framer.js'
export { Tunnel } from './tunnel.js'
export { dtlsFramer } from './dtls.js'
export type { DtlsFramer, DtlsFramerConfig, DtlsKeys, DtlsCipher, DtlsStats } from './dtls.js'
export { wireguard, generatePrivateKey, publicKey, parseWireGuardConfig } from './wireguard.js'
export type { WireGuardConfig, WireGuardPeerConfig, WireGuardPeer, WireGuardFramer, WireGuardConfigFile } from './wireguard.js'
export type { TunnelOptions, TunnelStats, DropReasons } from './tunnel.js'
