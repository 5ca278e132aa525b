/**
 * The benchmark's baseline: a tunnel written the way Node users write one today, on a TUN that hands JS
 * one packet at a time and node:dgram. One TUN read per packet, one `dgram.send` per packet, one
 * `'message'` callback and one TUN write per datagram. Run by `demo/endpoint.js --mode naive`.
 * @internal
 * @module
 */
import { createSocket, type Socket } from 'node:dgram'
import type { Peer, Tun } from 'superpacket'

/**
 * The TUN's native handle, which the library keeps internal (`@internal`, not in its `.d.ts`): the baseline
 * reads one frame per system call, which the public `Tun.read` (batches of up to 32) does not offer.
 */
interface OneFrameReader {
  read(queue: number, maxFrames: number): Promise<{ data: Buffer; lengths: number[] }>
}

/** Packets waiting for their TUN write beyond which arriving datagrams are dropped, as a device queue would. */
const MAX_PENDING_WRITES = 4096

/** Counters of a {@link NaiveTunnel}. */
export interface NaiveStats {
  tunReads: number
  udpSends: number
  udpMessages: number
  tunWrites: number
  drops: number
}

/** One packet per system call and per callback in both directions. */
export class NaiveTunnel {
  readonly #udp: Socket
  readonly #reading: Promise<void>
  readonly counts: NaiveStats = { tunReads: 0, udpSends: 0, udpMessages: 0, tunWrites: 0, drops: 0 }

  private constructor(udp: Socket, tun: Tun, peer: Peer) {
    this.#udp = udp
    let writes: Promise<void> = Promise.resolve()
    let pending = 0
    udp.on('message', (msg) => {
      this.counts.udpMessages++
      if (pending >= MAX_PENDING_WRITES) return void this.counts.drops++
      pending++
      // Chained so that packets reach the TUN in the order they came, one write each.
      writes = writes
        .then(() => tun.writePackets([msg]))
        .then(
          () => void this.counts.tunWrites++,
          () => void this.counts.drops++,
        )
        .finally(() => void pending--)
    })
    const nativeTun = (tun as unknown as { native: OneFrameReader }).native
    this.#reading = (async () => {
      for (;;) {
        // One frame per read: what a per-packet TUN module does. The frame starts with a virtio_net_hdr.
        const b = await nativeTun.read(0, 1).catch(() => undefined)
        if (b === undefined) return
        this.counts.tunReads++
        udp.send(b.data.subarray(10, b.lengths[0] ?? 10), peer.port, peer.address)
        this.counts.udpSends++
      }
    })()
  }

  /** Binds node:dgram to `listen` and starts both directions between `tun` (offloads off) and `peer`. */
  static async start(tun: Tun, listen: Peer, peer: Peer): Promise<NaiveTunnel> {
    const udp = createSocket({ type: listen.address.includes(':') ? 'udp6' : 'udp4' })
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject)
      udp.bind(listen.port, listen.address, () => resolve())
    })
    return new NaiveTunnel(udp, tun, peer)
  }

  /** Closes the socket; the TUN read loop ends when the caller closes the TUN. */
  async close(): Promise<void> {
    this.#udp.close()
    await this.#reading
  }
}
