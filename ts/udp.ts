/**
 * UDP sockets with GSO and GRO.
 * @module
 */
import { isIPv6 } from 'node:net'
import { invalidArgument, native, nativeAsync } from './errors.js'
import { NativeHandle } from './handle.js'
import { checkJsFramer, isNativeFramer, type Framer, type JsFramer } from './framer.js'
import { binding } from './native.js'
import { iterate, ReadQueue, SyncFirst } from './reader.js'
import { Superpacket } from './superpacket.js'

type NativeUdp = InstanceType<typeof binding.NativeUdp>
type NativeSegmentWriter = InstanceType<typeof binding.NativeSegmentWriter>

/** Where datagrams go or come from. */
export interface Peer {
  /** IPv4 or IPv6 address. */
  address: string
  /** UDP port. */
  port: number
}

/** The address a socket is bound to. */
export interface BoundAddress extends Peer {
  /** Address family of `address`. */
  family: 'IPv4' | 'IPv6'
}

/** One received datagram and where it came from. */
export interface ReceivedDatagram extends Peer {
  /** The datagram's bytes (a view into the batch buffer). */
  data: Buffer
}

/** How a socket is bound. */
export interface UdpSocketOptions {
  /** Local address (default `'0.0.0.0'`; `'::'` is dual-stack unless `ipv6Only`). */
  address?: string
  /** Local port (default 0: the kernel picks). */
  port?: number
  /** With `'::'`: refuse IPv4 (default false). */
  ipv6Only?: boolean
  /** SO_RCVBUF in bytes (default 7 MiB). */
  receiveBufferSize?: number
  /** SO_SNDBUF in bytes (default 7 MiB). */
  sendBufferSize?: number
  /** Use UDP_SEGMENT when the kernel has it (default true). */
  gso?: boolean
  /** Use UDP_GRO when the kernel has it (default true). */
  gro?: boolean
  /**
   * Receive into one buffer that every receive reuses (default false): no allocation per receive and
   * flat memory under load. The price: a {@link DatagramBatch} is valid only until the next receive
   * starts, so with `for await` until the loop asks for the next batch. Copy what you keep.
   */
  reuseBuffers?: boolean
}

/** What the socket can do right now. */
export interface UdpCapabilities {
  /** UDP_SEGMENT sends are live (a rejected GSO send turns this off). */
  gso: boolean
  /** UDP_GRO receives are on. */
  gro: boolean
  /** Most datagrams one GSO send carries. */
  maxSegments: number
}

/** Counters of one socket. */
export interface UdpStats {
  /** Datagrams sent. */
  txDatagrams: number
  /** Payload bytes sent. */
  txBytes: number
  /** sendmsg/sendmmsg calls. */
  txSyscalls: number
  /** Sends that carried several datagrams with UDP_SEGMENT. */
  txGsoSends: number
  /** Datagrams received (GRO batches counted by their datagrams). */
  rxDatagrams: number
  /** Payload bytes received. */
  rxBytes: number
  /** recvmmsg calls that returned data. */
  rxSyscalls: number
  /** Received messages that held several datagrams. */
  rxGroBatches: number
  /** GSO sends the kernel rejected that were sent again datagram by datagram. */
  gsoFallbacks: number
}

/** One received message: with GRO, several datagrams of `segmentSize` bytes from one source. */
export interface ReceivedMessage extends Peer {
  /** How many datagrams of the batch came in this message. */
  count: number
  /** Size of each datagram but the last. */
  segmentSize: number
}

/** A batch of received datagrams, back to back in one buffer. */
export class DatagramBatch {
  /** Every datagram, back to back. */
  readonly buffer: Buffer
  /** Length of each datagram in `buffer`. */
  readonly lengths: Uint32Array
  /** The messages the datagrams came in, in order. */
  readonly messages: readonly ReceivedMessage[]

  /** @internal */
  constructor(buffer: Buffer, lengths: Uint32Array, messages: readonly ReceivedMessage[]) {
    this.buffer = buffer
    this.lengths = lengths
    this.messages = messages
  }

  /** Number of datagrams. */
  get count(): number {
    return this.lengths.length
  }

  /** Views of every datagram (no copies). */
  datagrams(): Buffer[] {
    const out: Buffer[] = new Array(this.lengths.length)
    let off = 0
    for (let i = 0; i < this.lengths.length; i++) {
      const len = this.lengths[i] ?? 0
      out[i] = this.buffer.subarray(off, off + len)
      off += len
    }
    return out
  }

  /** Every datagram with its source. */
  *[Symbol.iterator](): IterableIterator<ReceivedDatagram> {
    const views = this.datagrams()
    let i = 0
    for (const m of this.messages) {
      for (let k = 0; k < m.count; k++) {
        const data = views[i++]
        if (data !== undefined) yield { data, address: m.address, port: m.port }
      }
    }
  }
}

/** Options of a single receive. */
export interface ReceiveOptions {
  /** Ends the receive with `ERR_SUPERPACKET_ABORTED`; datagrams that arrive later are kept for the next one. */
  signal?: AbortSignal
}

/** Options of {@link UdpSocket.segmentWriter}. */
export interface SegmentWriterOptions {
  /** Seals each segment before it is sent (default: plain). */
  framer?: Framer
}

function checkPeer(peer: Peer): void {
  if (typeof peer?.address !== 'string' || !Number.isInteger(peer.port) || peer.port < 1 || peer.port > 65535) {
    throw invalidArgument('peer must be { address: string, port: 1..65535 }')
  }
}

/**
 * A UDP socket that sends up to 64 datagrams per system call (UDP_SEGMENT) and receives them coalesced
 * (UDP_GRO, recvmmsg). Iterating it yields {@link DatagramBatch}es.
 *
 * ```ts
 * await using sock = await UdpSocket.bind({ address: '0.0.0.0', port: 51820 })
 * for await (const batch of sock) console.log(batch.count)
 * ```
 */
export class UdpSocket extends NativeHandle<NativeUdp> implements AsyncIterable<DatagramBatch> {
  readonly #reader: ReadQueue<DatagramBatch>
  readonly #sync = new SyncFirst()
  /** The bound address. */
  readonly address: Readonly<BoundAddress>

  private constructor(n: NativeUdp, reuseBuffers: boolean) {
    super(n, 'the UDP socket')
    const info = n.info()
    this.address = Object.freeze({ address: info.address, port: info.port, family: isIPv6(info.address) ? 'IPv6' : 'IPv4' })
    const into = reuseBuffers ? Buffer.allocUnsafeSlow(info.recvRoom) : undefined
    this.#reader = new ReadQueue(async () => {
      const n = this.native
      if (into !== undefined) {
        const r = await this.#sync.run(() => n.tryRecvInto(into), () => n.recvInto(into))
        let total = 0
        for (const len of r.lengths) total += len
        return new DatagramBatch(into.subarray(0, total), r.lengths, r.messages)
      }
      const r = await this.#sync.run(() => n.tryRecv(), () => n.recv())
      return new DatagramBatch(r.data, r.lengths, r.messages)
    })
  }

  /** Binds a socket. */
  static override async bind(options: UdpSocketOptions = {}): Promise<UdpSocket> {
    const port = options.port ?? 0
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw invalidArgument('port must be an integer from 0 to 65535')
    const n = await nativeAsync(
      binding.NativeUdp.bind({
        address: options.address ?? '0.0.0.0',
        port,
        ipv6Only: options.ipv6Only,
        receiveBufferSize: options.receiveBufferSize,
        sendBufferSize: options.sendBufferSize,
        gso: options.gso,
        gro: options.gro,
      }),
    )
    return new UdpSocket(n, options.reuseBuffers ?? false)
  }

  /** What the socket can do right now. */
  get capabilities(): UdpCapabilities {
    const i = native(() => this.native.info())
    return { gso: i.gso, gro: i.gro, maxSegments: i.maxSegments }
  }

  /** Receives a batch (at least one datagram), waiting until one arrives. */
  receive(options: ReceiveOptions = {}): Promise<DatagramBatch> {
    return this.#reader.read(options.signal)
  }

  /** Iterates batches until the socket is closed (ends cleanly) or `signal` aborts (throws). */
  batches(options: ReceiveOptions = {}): AsyncGenerator<DatagramBatch, void, undefined> {
    return iterate((s) => this.#reader.read(s), (b) => [b], options.signal)
  }

  /** Iterates received batches; see {@link UdpSocket.batches}. */
  [Symbol.asyncIterator](): AsyncGenerator<DatagramBatch, void, undefined> {
    return this.batches()
  }

  /** Sends one datagram. */
  async send(peer: Peer, data: Uint8Array): Promise<void> {
    checkPeer(peer)
    await nativeAsync(this.native.sendBatch([peer.address], [peer.port], [data]))
  }

  /**
   * Sends `data` as datagrams of `segmentSize` bytes (the last may be shorter) with one UDP_SEGMENT send per
   * 64 datagrams. Without GSO, or when the kernel rejects it, the datagrams go out one by one: nothing is lost.
   */
  async sendSegments(peer: Peer, data: Uint8Array, segmentSize: number): Promise<void> {
    checkPeer(peer)
    if (!Number.isInteger(segmentSize) || segmentSize < 1 || segmentSize > 65507) throw invalidArgument('segmentSize must be 1 to 65507')
    const n = this.native
    // Straight from the JS thread while the socket has room; the rest waits on the reactor.
    const sent = native(() => n.trySendSegments(peer.address, peer.port, data, segmentSize))
    if (sent < data.length) await nativeAsync(n.sendSegments(peer.address, peer.port, data.subarray(sent), segmentSize))
  }

  /** Sends datagrams to several peers with sendmmsg. */
  async sendBatch(messages: readonly ({ data: Uint8Array } & Peer)[]): Promise<void> {
    messages.forEach(checkPeer)
    await nativeAsync(
      this.native.sendBatch(messages.map((m) => m.address), messages.map((m) => m.port), messages.map((m) => m.data)),
    )
  }

  /** A writer that splits superpackets straight into framed datagrams for `peer`, one GSO send per 64. */
  segmentWriter(peer: Peer, options: SegmentWriterOptions = {}): SegmentWriter {
    checkPeer(peer)
    return new SegmentWriter(this, peer, options.framer)
  }

  /**
   * Turns UDP checksums of sent IPv4 datagrams off (Linux, SO_NO_CHECK), as some tunnels do inside an
   * authenticated path, or back on. The kernel refuses GSO without checksums: the next GSO send is resent
   * datagram by datagram and GSO stays off for this socket (`capabilities.gso` turns false).
   */
  setUdpChecksums(on: boolean): void {
    native(() => this.native.setUdpChecksums(on))
  }

  /** Counters. */
  stats(): UdpStats {
    return native(() => this.native.stats())
  }
}

/**
 * Superpacket → framed segments → one UDP_SEGMENT send (per 64 segments). With a native framer the whole
 * path runs in Rust; with a {@link JsFramer}, the framer's `seal` is called once per superpacket with views
 * of the slots in the send buffer.
 */
export class SegmentWriter {
  readonly #native: NativeSegmentWriter
  readonly #js: JsFramer | undefined

  /** @internal */
  constructor(socket: UdpSocket, peer: Peer, framer: Framer | undefined) {
    if (framer !== undefined && !isNativeFramer(framer)) {
      checkJsFramer(framer)
      this.#js = framer
    }
    const spec =
      framer === undefined
        ? { type: 'plain' as const }
        : isNativeFramer(framer)
          ? framer.spec
          : { type: 'reserve' as const, headroom: framer.headroom, tailroom: framer.tailroom }
    this.#native = native(() => new binding.NativeSegmentWriter(socket.native, peer.address, peer.port, spec))
  }

  /** Segments, frames and sends one superpacket or several. */
  async write(superpackets: Superpacket | Uint8Array | readonly (Superpacket | Uint8Array)[]): Promise<void> {
    const list = Array.isArray(superpackets) ? superpackets : [superpackets as Superpacket | Uint8Array]
    const frames = list.map((f) => (f instanceof Superpacket ? f.frame : f))
    const js = this.#js
    if (js === undefined) {
      // Sealed and sent on the JS thread while the socket has room; only a full socket costs a wait.
      let i = 0
      while (i < frames.length) {
        const r = native(() => this.#native.tryWrite(i === 0 ? frames : frames.slice(i)))
        i += r.accepted
        if (r.pending) await nativeAsync(this.#native.flush())
      }
      return
    }
    for (const frame of frames) {
      const p = native(() => this.#native.prepare(frame))
      const slots: Buffer[] = new Array(p.count)
      for (let i = 0; i < p.count; i++) {
        const start = i * p.segmentSize
        slots[i] = p.buffer.subarray(start, Math.min(start + p.segmentSize, p.buffer.length))
      }
      await js.seal({ buffer: p.buffer, slots, counter: p.counter })
      await nativeAsync(this.#native.sendPrepared(p.buffer, p.segmentSize))
    }
  }
}
