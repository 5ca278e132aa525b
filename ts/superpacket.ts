/**
 * A superpacket: one frame as a TUN with offloads reads or writes it.
 * @module
 */
import { endianness } from 'node:os'
import { splitSuperpacket } from './packet.js'

const LITTLE = endianness() === 'LE'

/** The segmentation a superpacket asks for. */
export type GsoType = 'none' | 'tcpv4' | 'tcpv6' | 'udp'

const GSO_NAMES: Record<number, GsoType> = { 0: 'none', 1: 'tcpv4', 4: 'tcpv6', 5: 'udp' }

/** Length of the virtio_net_hdr in front of every frame. */
export const VNET_HDR_LEN = 10

/**
 * One frame: a 10-byte virtio_net_hdr and an IP packet of up to 64 KiB that stands for `segmentCount`
 * wire-sized packets. The bytes are a view into a batch buffer, not a copy.
 */
export class Superpacket {
  /** virtio_net_hdr + IP packet, as the TUN gave it. */
  readonly frame: Buffer
  /** How many wire-sized packets this superpacket stands for. */
  readonly segmentCount: number

  /** @internal */
  constructor(frame: Buffer, segmentCount: number) {
    this.frame = frame
    this.segmentCount = segmentCount
  }

  /** The IP packet (without the virtio header). */
  get data(): Buffer {
    return this.frame.subarray(VNET_HDR_LEN)
  }

  /** The segmentation type; `'none'` for a single packet. */
  get gsoType(): GsoType {
    return GSO_NAMES[(this.frame[1] ?? 0) & 0x7f] ?? 'none'
  }

  /** Payload bytes per segment (0 for a single packet). */
  get gsoSize(): number {
    return LITTLE ? this.frame.readUInt16LE(4) : this.frame.readUInt16BE(4)
  }

  /** Whether the L4 checksum is left for the segmenter to complete. */
  get needsChecksum(): boolean {
    return ((this.frame[0] ?? 0) & 1) !== 0
  }

  /** Wire-sized IP packets with final headers and checksums (a copy). */
  split(): Buffer[] {
    return splitSuperpacket(this.frame)
  }
}
