/**
 * TUN devices with segmentation offloads.
 * @module
 */
import { abortedError, invalidArgument, native, nativeAsync } from './errors.js'
import { abortableWrite, NativeHandle, type WriteOptions } from './handle.js'
import type { DatagramBatch, Peer, UdpSocket } from './udp.js'
import { checkJsFramer, isNativeFramer, nativeFramerOf, type Framer, type NativeFramer } from './framer.js'
import { binding } from './native.js'
import { checkNotHeld, hold, iterate, ReadQueue, ReadyWatch, reusedBuffer, SyncFirst } from './reader.js'
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
   * the next superpacket. Copy what you keep (`Buffer.from(sp.frame)`). Misuse is caught, never undefined
   * behaviour: a read while another read of the queue runs, or while a write still needs the previous
   * read's bytes after an `await`, fails with `ERR_SUPERPACKET_BUSY`; a buffer transferred away
   * (`postMessage`, `structuredClone`) is replaced by a new one.
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
  /** GSO frames the kernel refused (each was split and written again). */
  txGsoRefusals: number
  /** Times coalescing was switched off after refusals in a row. */
  txGsoDisabled: number
  /** Times a later probe found GSO writes accepted again and switched coalescing back on. */
  txGsoReenabled: number
  /** Packets that could not be written at all (`txDropsInvalid` + `txDropsRefused`). */
  txDrops: number
  /** Packets dropped before writing: not a well-formed IPv4/IPv6 packet. */
  txDropsInvalid: number
  /** Packets the kernel refused; the rest of their batch was written. */
  txDropsRefused: number
  /** Whether coalescing is on now (refusals switch it off for a while; a probe switches it back on). */
  coalescing: boolean
}

/** Options of a single read. */
export interface TunReadOptions {
  /** Which queue (default 0). */
  queue?: number
  /**
   * Ends the read with a {@link SuperpacketAbortError} (`name` `'AbortError'`, `code` `'ABORT_ERR'`); a
   * frame that arrives later is kept for the next read.
   */
  signal?: AbortSignal
}

/** Options of {@link Tun.write} and {@link Tun.writePackets}. */
export interface TunWriteOptions extends WriteOptions {
  /** Which queue (default 0). */
  queue?: number
}

/** Options of {@link Tun.packetWriter}. */
export interface PacketWriterOptions {
  /** Opens each datagram before its packet is coalesced and written (default: plain). */
  framer?: Framer
  /** Which queue to write to (default 0). */
  queue?: number
  /**
   * The socket the datagrams come in on: the framer's replies (WireGuard handshake responses, cookie
   * replies) are sent from it. Without it they are dropped.
   */
  socket?: UdpSocket
  /**
   * Accept datagrams only from this address (for framers that authenticate nothing, such as plain and
   * header framers); others are dropped and counted as `wrong-source`. Needs `socket`.
   */
  peer?: Peer
}

const MAX_FRAMES_PER_READ = 32
/** Room for four largest frames (virtio_net_hdr + 64 KiB) per read. */
const REUSED_READ_BYTES = 4 * (VNET_HDR_LEN + 65535)
/** Bytes of the blocks reads without `reuseBuffers` cut their batches from. */
const READ_BLOCK_BYTES = 1 << 20

/** Without `reuseBuffers`: a queue's current block and how much of it batches took. */
interface ReadBlock {
  buf: Buffer
  used: number
}

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
  /** Without `reuseBuffers`: each queue's block; every batch owns its part (no copy, no reuse). */
  readonly #blocks: (ReadBlock | undefined)[]
  /** Each queue watched for readability on this thread's event loop (Linux), opened by its first read that waits. */
  readonly #watches: ReadyWatch[]
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
    if (reuseBuffers) this.#reused = Array.from({ length: info.queues }, () => reusedBuffer(REUSED_READ_BYTES))
    this.name = info.name
    this.mtu = info.mtu
    this.queues = info.queues
    this.offloads = Object.freeze({ ...info.offloads })
    this.#blocks = new Array<ReadBlock | undefined>(info.queues)
    this.#watches = Array.from({ length: info.queues }, (_, q) => new ReadyWatch((callback) => n.watch(q, callback)))
    this.#readers = Array.from({ length: info.queues }, (_, q) => new ReadQueue(() => this.#readBatch(q), reuseBuffers))
  }

  /** Closes the device: reads waiting for frames end cleanly (iterators finish). */
  override async close(): Promise<void> {
    // Waiting reads look again and, finding their watch closed, wait on the native queue, which the close
    // below ends.
    for (const w of this.#watches) w.close()
    await super.close()
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
    const watch = this.#watches[queue]!
    const batch = await this.#sync.run(
      () => this.#tryReadInto(n, queue),
      async () => {
        // Frames go into JS memory here, on the JS thread. `null` only if another read took what woke the
        // wait. Without a watch the wait happens in native memory (a frame staged there is taken first).
        for (;;) {
          await watch.ready(() => n.readStaged(queue))
          const r = this.#tryReadInto(n, queue)
          if (r !== null) return r
        }
      },
    )
    const out: Superpacket[] = new Array(batch.lengths.length)
    let off = 0
    for (let i = 0; i < batch.lengths.length; i++) {
      const len = batch.lengths[i] ?? 0
      out[i] = new Superpacket(batch.data.subarray(off, off + len), batch.segments[i] ?? 1)
      off += len
    }
    return out
  }

  /**
   * Reads what is ready straight into JS memory, on the JS thread: the queue's buffer with `reuseBuffers`,
   * else the next part of the queue's block.
   */
  #tryReadInto(n: NativeTun, queue: number): { data: Buffer; lengths: number[]; segments: number[] } | null {
    const reused = this.#reused
    let into: Buffer
    let block: ReadBlock | undefined
    if (reused !== undefined) {
      into = reused[queue]!
      // Transferred away (detached): reads go on in a new buffer.
      if (into.byteLength === 0) into = reused[queue] = reusedBuffer(REUSED_READ_BYTES)
      checkNotHeld(into)
    } else {
      block = this.#blocks[queue]
      if (block === undefined || block.buf.length - block.used < REUSED_READ_BYTES) {
        block = this.#blocks[queue] = { buf: Buffer.allocUnsafeSlow(READ_BLOCK_BYTES), used: 0 }
      }
      into = block.buf.subarray(block.used, block.used + REUSED_READ_BYTES)
    }
    const r = n.tryReadInto(queue, into, MAX_FRAMES_PER_READ)
    if (r === null) return null
    if (block !== undefined) {
      let used = 0
      for (const len of r.lengths) used += len
      // The next batch starts on an 8-byte boundary after this one.
      block.used += (used + 7) & ~7
    }
    return { data: into, lengths: r.lengths, segments: r.segments }
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
   * packet by packet, and coalescing is switched off: nothing is lost. The frames are copied when the call
   * is made, so their buffers are free again at once. `options` is the queue number or
   * {@link TunWriteOptions}; an abort stops the write before its next frame (`sent`: frames written).
   */
  async write(
    frames: Superpacket | Uint8Array | readonly (Superpacket | Uint8Array)[],
    options: number | TunWriteOptions = {},
  ): Promise<void> {
    const { queue = 0, signal } = typeof options === 'number' ? { queue: options } : options
    const list = Array.isArray(frames) ? frames : [frames as Superpacket | Uint8Array]
    const bufs = list.map((f) => (f instanceof Superpacket ? f.frame : f))
    const n = this.native
    await abortableWrite(signal, (abort) => n.writeFrames(queue, bufs, abort))
  }

  /**
   * Coalesces IP packets (by the kernel's GRO rules, as far as the offloads allow) and writes them. The
   * packets are copied when the call is made. `options` is the queue number or {@link TunWriteOptions};
   * an abort takes effect only before the write starts (`sent` 0), as TUN writes do not wait.
   */
  async writePackets(packets: readonly Uint8Array[], options: number | TunWriteOptions = {}): Promise<void> {
    const { queue = 0, signal } = typeof options === 'number' ? { queue: options } : options
    const n = this.native
    await abortableWrite(signal, (abort) => n.writePackets(queue, packets as Uint8Array[], abort))
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

/** What one {@link PacketWriter.write} did. */
export interface PacketWriteResult {
  /** Packets written to the TUN. */
  packets: number
  /** Datagrams dropped: by the framer, the source check or the TUN (see {@link PacketWriter.dropReasons}). */
  dropped: number
  /** Control messages the framer consumed (handshakes, keepalives). */
  consumed: number
  /** Replies the framer sent from the writer's socket (handshake responses, cookie replies). */
  controlSent: number
}

/**
 * Datagrams → opened by a framer → coalesced into superpackets → TUN writes. Get one from
 * {@link Tun.packetWriter}.
 */
export class PacketWriter {
  readonly #tun: Tun
  readonly #framer: Framer | undefined
  readonly #queue: number
  readonly #options: PacketWriterOptions
  #native: InstanceType<typeof binding.NativePacketWriter> | undefined

  /** @internal */
  constructor(tun: Tun, options: PacketWriterOptions) {
    this.#tun = tun
    this.#framer = options.framer
    this.#queue = options.queue ?? 0
    this.#options = options
    if (this.#framer !== undefined && !isNativeFramer(this.#framer)) checkJsFramer(this.#framer)
  }

  /**
   * Opens, coalesces and writes every datagram of the batch. Datagrams that are dropped (the framer
   * refused them, they came from another address than `peer`, or the TUN refused their packet) are
   * counted and cost no other datagram its delivery; the write does not fail because of them.
   *
   * With a native framer the batch is copied when the call is made (and opened in that copy), so its
   * buffer is free again at once, even with `reuseBuffers`. A {@link JsFramer} gets views of the batch; a
   * reused receive buffer stays held (the next receive fails with `ERR_SUPERPACKET_BUSY`) until its
   * `open` has returned. An abort (`options.signal`) takes effect only before the packets are written,
   * with `sent` 0: nothing of the batch was written.
   */
  async write(batch: DatagramBatch, options: WriteOptions = {}): Promise<PacketWriteResult> {
    const { signal } = options
    const f = this.#framer
    if (f === undefined || isNativeFramer(f)) {
      const n = (this.#native ??= this.#makeNative(f))
      return await abortableWrite(signal, (abort) => n.write(batch.buffer, batch.words, abort))
    }
    if (signal?.aborted) throw abortedError(signal, 0)
    const datagrams = batch.datagrams()
    const release = hold(datagrams)
    let packets: Uint8Array[]
    let opened: readonly (Uint8Array | null)[]
    try {
      opened = await f.open(datagrams)
      packets = opened.filter((p): p is Uint8Array => p !== null && p.length > 0)
      // The write copies the packets at the call, so the batch is free once it is made.
      const written = packets.length > 0 ? this.#tun.writePackets(packets, { queue: this.#queue, signal }) : undefined
      release()
      await written
    } finally {
      release()
    }
    return { packets: packets.length, dropped: opened.length - packets.length, consumed: 0, controlSent: 0 }
  }

  /** Drops by reason since the writer was made (native framers only; reasons with no drop left out). */
  dropReasons(): Record<string, number> {
    return this.#native === undefined ? {} : native(() => this.#native!.dropReasons())
  }

  #makeNative(f: NativeFramer | undefined): InstanceType<typeof binding.NativePacketWriter> {
    const { socket, peer } = this.#options
    const p = peer === undefined || socket === undefined ? undefined : socket.peer(peer.address, peer.port)
    if (peer !== undefined && socket === undefined) throw invalidArgument('packetWriter: a peer needs the socket it is reached through')
    return native(() => new binding.NativePacketWriter(this.#tun.native, this.#queue, nativeFramerOf(f), socket?.native, p?.native))
  }
}
