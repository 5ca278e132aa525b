/**
 * The two pure transforms at the heart of superpacket.
 * @module
 */
import { native } from './errors.js'
import { binding } from './native.js'

/**
 * Splits a frame read from a TUN with IFF_VNET_HDR (10-byte virtio_net_hdr + IP packet, possibly a TSO/USO
 * superpacket of up to 64 KiB) into complete, wire-sized IP packets with every header and checksum final.
 *
 * @param frame - virtio_net_hdr + IP packet
 * @returns one Buffer per segment, in order
 * @throws {@link SuperpacketError} with code `ERR_SUPERPACKET_INVALID_PACKET` and a `reason` on a malformed frame
 */
export function splitSuperpacket(frame: Uint8Array): Buffer[] {
  return native(() => binding.splitSuperpacket(frame))
}

/** Which protocols {@link coalescePackets} merges. */
export interface CoalesceOptions {
  /** Merge TCP segments into TSO superpackets (default `true`). */
  tcp?: boolean
  /** Merge UDP datagrams into USO superpackets (default `true`; TUN devices accept them from Linux 6.2). */
  udp?: boolean
}

/**
 * Coalesces IP packets into frames (virtio_net_hdr + IP packet) ready for a TUN write, by the kernel's GRO
 * rules: TCP segments of one flow with adjacent sequence numbers, UDP datagrams of one flow with equal sizes.
 * Packets that cannot merge come back unchanged behind a zeroed header. Every flow's order is kept.
 *
 * @param packets - complete IPv4/IPv6 packets
 * @returns frames for `Tun` writes
 */
export function coalescePackets(packets: Uint8Array[], options?: CoalesceOptions): Buffer[] {
  return native(() => binding.coalescePackets(packets, options))
}
