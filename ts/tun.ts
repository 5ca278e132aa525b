/**
 * TUN devices with segmentation offloads.
 * @module
 */
import { invalidArgument, native, nativeAsync } from './errors.js'
import { NativeHandle } from './handle.js'
import type { DatagramBatch } from './udp.js'
import { checkJsFramer, isNativeFramer, type Framer } from './framer.js'
import { binding } from './native.js'
import { iterate, ReadQueue, SyncFirst } from './reader.js'
import { Superpacket, VNET_HDR_LEN } from './superpacket.js'

type NativeTun = InstanceType<typeof binding.NativeTun>

/** How a TUN is opened. */
export interface TunOptions {
  /** Interface name such as `'sp0'`; the kernel picks one when left out. */
  name?: string
  /** MTU of the interface (default: the kernel's, usually 1500). */
  mtu?: number
  /** An IPv4 address with prefix length, such as `'198.18.0.1/24'`. */
  ipv4?: string
  /** An IPv6 address with prefix length, such as `'2001:db8::1/64'`. */
  ipv6?: string
  /**
   * Segmentation offloads: `'auto'` (default) takes what the kernel grants (CSUM, TSO4/6, USO4/6 on
   * Linux 6.2+); `true` fails with `ERR_SUPERPACKET_UNSUPPORTED` if TSO is refused; `false` turns them off,
   * also on a persistent device that kept them.
   */
  offload?: 'auto' | boolean
  /**
   * Read into one buffer per queue that every read reuses (default false). Saves a copy and an
   * allocation per read and keeps memory flat under load (otherwise each read's buffer lives until V8's
   * next garbage collection, tens of MiB at gigabits per second). The price: a {@link Superpacket} read
   * is valid only until the next read of its queue starts, so with `for await` until the loop asks for
   * the next superpacket. Copy what you keep (`Buffer.from(sp.frame)`).
   */
  reuseBuffers?: boolean
  /** Number of queues (IFF_MULTI_QUEUE when above 1). Default 1. */
  queues?: number
}

/** What the kernel granted. */
export interface Offloads {
  /** Frames carry a virtio_net_hdr (IFF_VNET_HDR). */
  vnetHdr: boolean
  /** Checksum offload. */
  csum: boolean
  /** TCP segmentation offload for IPv4. */
  tso4: boolean
  /** TCP segmentation offload for IPv6. */
  tso6: boolean
  /** UDP segmentation offload for IPv4 (Linux 6.2+). */
  uso4: boolean
  /** UDP segmentation offload for IPv6 (Linux 6.2+). */
  uso6: boolean
}

/** Counters of one TUN, all queues together. */
export interface TunStats {
  /** Frames read (superpackets or single packets). */
  rxFrames: number
  /** Bytes read, virtio headers excluded. */
  rxBytes: number
  /** Wire-sized packets the frames read stand for. */
  rxSegments: number
  /** read() system calls that returned a frame. */
  rxSyscalls: number
  /** Frames written. */
  txFrames: number
  /** Wire-sized packets written (before coalescing). */
  txPackets: number
  /** Bytes written, virtio headers excluded. */
  txBytes: number
  /** write() system calls. */
  txSyscalls: number
  /** Frames the kernel rejected that were split and written again one packet at a time. */
  txFallbacks: number
  /** Packets that could not be written at all. */
  txDrops: number
  /** Whether coalescing is still on (a rejected GSO write turns it off). */
  coalescing: boolean
}

/** Options of a single read. */
export interface TunReadOptions {
  /** Which queue (default 0). */
  queue?: number
  /** Ends the read with `ERR_SUPERPACKET_ABORTED`; a frame that arrives later is kept for the next read. */
  signal?: AbortSignal
}

/** Options of {@link Tun.packetWriter}. */
export interface PacketWriterOptions {
  /** Opens each datagram before its packet is coalesced and written (default: plain). */
  framer?: Framer
  /** Which queue to write to (default 0). */
  queue?: number
}

const MAX_FRAMES_PER_READ = 32
/** Room for four largest frames (virtio_net_hdr + 64 KiB) per read with `reuseBuffers`. */
const REUSED_READ_BYTES = 4 * (VNET_HDR_LEN + 65535)

/**
 * A TUN device. Reading yields {@link Superpacket}s: with offloads, one read returns up to 64 KiB of TCP or
 * UDP that the kernel did not segment. Writing takes frames, or plain packets that are coalesced first.
 *
 * ```ts
 * await using tun = await Tun.open({ name: 'sp0', mtu: 1420, ipv4: '198.18.0.1/24' })
 * for await (const sp of tun) console.log(sp.gsoType, sp.segmentCount)
 * ```
 */
export class Tun extends NativeHandle<NativeTun> implements AsyncIterable<Superpacket> {
  readonly #readers: ReadQueue<Superpacket[]>[]
  readonly #sync = new SyncFirst()
  /** With `reuseBuffers`: each queue's read buffer. */
  readonly #reused: Buffer[] | undefined
  /** The interface name. */
  readonly name: string
  /** The interface MTU. */
  readonly mtu: number
  /** How many queues are open. */
  readonly queues: number
  /** What the kernel granted. */
  readonly offloads: Readonly<Offloads>

  private constructor(n: NativeTun, reuseBuffers: boolean) {
    super(n, 'the TUN')
    const info = n.info()
    if (reuseBuffers) this.#reused = Array.from({ length: info.queues }, () => Buffer.allocUnsafeSlow(REUSED_READ_BYTES))
    this.name = info.name
    this.mtu = info.mtu
    this.queues = info.queues
    this.offloads = Object.freeze({ ...info.offloads })
    this.#readers = Array.from({ length: info.queues }, (_, q) => new ReadQueue(() => this.#readBatch(q)))
  }

  /**
   * Opens (creating if needed) a TUN device, sets its addresses and MTU and brings it up.
   * @throws {@link SuperpacketError} `ERR_SUPERPACKET_PERMISSION` without CAP_NET_ADMIN,
   *   `ERR_SUPERPACKET_UNSUPPORTED` where the platform has no TUN or refuses a required offload.
   */
  static async open(options: TunOptions = {}): Promise<Tun> {
    const queues = options.queues ?? 1
    if (!Number.isInteger(queues) || queues < 1 || queues > 64) throw invalidArgument('queues must be an integer from 1 to 64')
    if (options.mtu !== undefined && (!Number.isInteger(options.mtu) || options.mtu < 576 || options.mtu > 65535)) {
      throw invalidArgument('mtu must be an integer from 576 to 65535')
    }
    const offload = options.offload ?? 'auto'
    const n = await nativeAsync(
      binding.NativeTun.open({
        name: options.name,
        mtu: options.mtu,
        ipv4: options.ipv4,
        ipv6: options.ipv6,
        offload: offload === 'auto' ? 'auto' : offload ? 'on' : 'off',
        queues,
      }),
    )
    return new Tun(n, options.reuseBuffers ?? false)
  }

  async #readBatch(queue: number): Promise<Superpacket[]> {
    const n = this.native
    const into = this.#reused?.[queue]
    const batch =
      into === undefined
        ? await this.#sync.run(
            () => n.tryRead(queue, MAX_FRAMES_PER_READ),
            () => n.read(queue, MAX_FRAMES_PER_READ),
          )
        : {
            data: into,
            ...(await this.#sync.run(
              () => n.tryReadInto(queue, into, MAX_FRAMES_PER_READ),
              () => n.readInto(queue, into, MAX_FRAMES_PER_READ),
            )),
          }
    const out: Superpacket[] = new Array(batch.lengths.length)
    let off = 0
    for (let i = 0; i < batch.lengths.length; i++) {
      const len = batch.lengths[i] ?? 0
      out[i] = new Superpacket(batch.data.subarray(off, off + len), batch.segments[i] ?? 1)
      off += len
    }
    return out
  }

  /** Reads a batch of frames (at least one), waiting until one arrives. */
  read(options: TunReadOptions = {}): Promise<Superpacket[]> {
    return this.#reader(options.queue).read(options.signal)
  }

  /** Iterates superpackets of one queue until the TUN is closed (ends cleanly) or `signal` aborts (throws). */
  superpackets(options: TunReadOptions = {}): AsyncGenerator<Superpacket, void, undefined> {
    const reader = this.#reader(options.queue)
    return iterate((s) => reader.read(s), (b) => b, options.signal)
  }

  /** Iterates superpackets of queue 0; see {@link Tun.superpackets}. */
  [Symbol.asyncIterator](): AsyncGenerator<Superpacket, void, undefined> {
    return this.superpackets()
  }

  #reader(queue = 0): ReadQueue<Superpacket[]> {
    const r = this.#readers[queue]
    if (r === undefined) throw invalidArgument(`queue ${queue} does not exist (the TUN has ${this.queues})`)
    return r
  }

  /**
   * Writes frames (virtio_net_hdr + IP packet). A GSO frame the kernel rejects is split and written again
   * packet by packet, and coalescing is switched off: nothing is lost.
   */
  async write(frames: Superpacket | Uint8Array | readonly (Superpacket | Uint8Array)[], queue = 0): Promise<void> {
    const list = Array.isArray(frames) ? frames : [frames as Superpacket | Uint8Array]
    const bufs = list.map((f) => (f instanceof Superpacket ? f.frame : f))
    await nativeAsync(this.native.writeFrames(queue, bufs))
  }

  /** Coalesces IP packets (by the kernel's GRO rules, as far as the offloads allow) and writes them. */
  async writePackets(packets: readonly Uint8Array[], queue = 0): Promise<void> {
    await nativeAsync(this.native.writePackets(queue, packets as Uint8Array[]))
  }

  /** A writer that opens received datagrams with a framer, coalesces their packets and writes them here. */
  packetWriter(options: PacketWriterOptions = {}): PacketWriter {
    return new PacketWriter(this, options)
  }

  /** Counters, all queues together. */
  stats(): TunStats {
    return native(() => this.native.stats())
  }
}

/**
 * Datagrams → opened by a framer → coalesced into superpackets → TUN writes. Get one from
 * {@link Tun.packetWriter}.
 */
export class PacketWriter {
  readonly #tun: Tun
  readonly #framer: Framer | undefined
  readonly #queue: number
  #native: InstanceType<typeof binding.NativePacketWriter> | undefined

  /** @internal */
  constructor(tun: Tun, options: PacketWriterOptions) {
    this.#tun = tun
    this.#framer = options.framer
    this.#queue = options.queue ?? 0
    if (this.#framer !== undefined && !isNativeFramer(this.#framer)) checkJsFramer(this.#framer)
  }

  /** Opens, coalesces and writes every datagram of the batch. Datagrams the framer drops are counted, not written. */
  async write(batch: DatagramBatch): Promise<void> {
    const f = this.#framer
    if (f === undefined || isNativeFramer(f)) {
      this.#native ??= native(() => new binding.NativePacketWriter(this.#tun.native, this.#queue, f?.spec ?? { type: 'plain' }))
      await nativeAsync(this.#native.write(batch.buffer, batch.lengths))
      return
    }
    const opened = await f.open(batch.datagrams())
    const packets = opened.filter((p): p is Uint8Array => p !== null && p.length > 0)
    if (packets.length > 0) await this.#tun.writePackets(packets, this.#queue)
  }
}
