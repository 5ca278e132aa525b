/**
 * UDP sockets with GSO and GRO.
 * @module
 */
import { isIPv6 } from 'node:net'
import { abortedError, fromNative, invalidArgument, native, nativeAsync, SuperpacketAbortError } from './errors.js'
import { abortableWrite, NativeHandle, type WriteOptions } from './handle.js'
import { checkJsFramer, isNativeFramer, nativeFramerOf, type Framer, type JsFramer, type NativeFramer, type NativeFramerHandle } from './framer.js'
import { binding, fast } from './native.js'
import { checkNotHeld, hold, iterate, ReadQueue, ReadyWatch, reusedBuffer, SyncFirst } from './reader.js'
import { Superpacket } from './superpacket.js'

type NativeUdp = InstanceType<typeof binding.NativeUdp>
type NativeSegmentWriter = InstanceType<typeof binding.NativeSegmentWriter>
type NativePeer = InstanceType<typeof binding.NativePeer>
type NativeAbort = InstanceType<typeof binding.NativeAbort>

/** Where datagrams go or come from. */
export interface Peer {
  /** IPv4 or IPv6 address. */
  address: string
  /** UDP port. */
  port: number
}

/**
 * A destination checked and parsed once by {@link UdpSocket.peer}. Pass it wherever a {@link Peer} goes
 * (`send`, `sendBatch`, `sendSegments`, `segmentWriter`): those calls then parse no address.
 */
export class UdpPeer implements Peer {
  /** IPv4 or IPv6 address, as parsed. */
  readonly address: string
  /** UDP port. */
  readonly port: number
  /** @internal */
  readonly native: NativePeer
  /** @internal the socket that checked it */
  readonly owner: NativeUdp
  /** @internal the address as the send calls take it */
  readonly words: Uint32Array

  /** @internal */
  constructor(owner: NativeUdp, peer: NativePeer) {
    this.owner = owner
    this.native = peer
    this.address = peer.address
    this.port = peer.port
    this.words = peer.words
  }
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
  /** The source as a handle (see {@link ReceivedMessage.peer}). */
  peer: UdpPeer
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
   * flat memory under load. Either way the kernel writes the datagrams straight into JS memory (no copy
   * in between). Without it each batch owns its bytes, cut from 1 MiB blocks that later batches share:
   * a batch kept alive keeps its block alive, so copy (`Buffer.from`) the datagrams you keep for long. The price: a {@link DatagramBatch} is valid only until the next receive
   * starts, so with `for await` until the loop asks for the next batch. Copy what you keep. Misuse is
   * caught, never undefined behaviour: a receive while another runs, or while a write still needs the
   * previous batch's bytes after an `await`, fails with `ERR_SUPERPACKET_BUSY`; a buffer transferred away
   * (`postMessage`, `structuredClone`) is replaced by a new one.
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
  /** Times GSO was switched off because the socket cannot segment (0 or 1). */
  gsoFallbacks: number
  /** GSO trains sent again without GSO because their segments were above the path MTU (GSO kept on). */
  gsoTrainFallbacks: number
  /** Sends tried again because the kernel was out of buffers (ENOBUFS, ENOMEM). */
  txOutOfBuffers: number
}

/** One received message: with GRO, several datagrams of `segmentSize` bytes from one source. */
export interface ReceivedMessage extends Peer {
  /** How many datagrams of the batch came in this message. */
  count: number
  /** Size of each datagram but the last. */
  segmentSize: number
  /** Where the message's first datagram starts in the batch's `buffer`. */
  offset: number
  /** Bytes of the message (all its datagrams, back to back). */
  length: number
  /**
   * The source as a handle to send replies to: the same object for every message from that address
   * while the socket's table of recent sources (1,024) holds it.
   */
  peer: UdpPeer
}

/** Words per message of a receive's metadata (see `superpacket_io::udp::words`). */
const PER_MESSAGE = binding.RECV_META_PER_MESSAGE
const HEADER = binding.RECV_META_HEADER

/**
 * A batch of received datagrams in one buffer. Datagram `i` is `buffer[offsets[i], offsets[i] +
 * lengths[i])`: the datagrams of one message are back to back, and there may be unused bytes between
 * messages (a long message stays where the kernel put it, so nothing is copied).
 */
export class DatagramBatch {
  /** Every datagram (see {@link DatagramBatch.offsets}). */
  readonly buffer: Buffer
  /** Number of datagrams. */
  readonly count: number
  /** @internal per message: offset, length, segment size, source number, source address (12 words) */
  readonly words: Uint32Array
  readonly #peers: readonly UdpPeer[]
  #lengths: Uint32Array | undefined
  #offsets: Uint32Array | undefined
  #messages: readonly ReceivedMessage[] | undefined

  /** @internal */
  constructor(buffer: Buffer, words: Uint32Array, peers: readonly UdpPeer[], count: number) {
    this.buffer = buffer
    this.words = words
    this.#peers = peers
    this.count = count
  }

  /** Length of each datagram. */
  get lengths(): Uint32Array {
    if (this.#lengths === undefined) this.#layOut()
    return this.#lengths!
  }

  /** Where each datagram starts in {@link DatagramBatch.buffer}. */
  get offsets(): Uint32Array {
    if (this.#offsets === undefined) this.#layOut()
    return this.#offsets!
  }

  /** The messages the datagrams came in, in order. */
  get messages(): readonly ReceivedMessage[] {
    if (this.#messages === undefined) {
      const w = this.words
      const out: ReceivedMessage[] = new Array(this.#peers.length)
      for (let i = 0; i < out.length; i++) {
        const at = i * PER_MESSAGE
        const length = w[at + 1]!
        const stride = w[at + 2]!
        const peer = this.#peers[i]!
        out[i] = { address: peer.address, port: peer.port, peer, offset: w[at]!, length, count: datagramCount(length, stride), segmentSize: stride }
      }
      this.#messages = out
    }
    return this.#messages
  }

  #layOut(): void {
    const lengths = new Uint32Array(this.count)
    const offsets = new Uint32Array(this.count)
    const w = this.words
    let d = 0
    for (let at = 0; at < w.length; at += PER_MESSAGE) {
      const offset = w[at]!
      const length = w[at + 1]!
      const stride = w[at + 2]!
      const n = datagramCount(length, stride)
      for (let k = 0; k < n; k++, d++) {
        offsets[d] = offset + k * stride
        lengths[d] = Math.min(stride, length - k * stride)
      }
    }
    this.#lengths = lengths
    this.#offsets = offsets
  }

  /** Views of every datagram (no copies). */
  datagrams(): Buffer[] {
    const { offsets, lengths } = this
    const out: Buffer[] = new Array(this.count)
    for (let d = 0; d < out.length; d++) out[d] = this.buffer.subarray(offsets[d]!, offsets[d]! + lengths[d]!)
    return out
  }

  /** Every datagram with its source. */
  *[Symbol.iterator](): IterableIterator<ReceivedDatagram> {
    const views = this.datagrams()
    let i = 0
    for (const m of this.messages) {
      for (let k = 0; k < m.count; k++) {
        const data = views[i++]
        if (data !== undefined) yield { data, address: m.address, port: m.port, peer: m.peer }
      }
    }
  }
}

/** Datagrams in a message of `length` bytes cut every `stride` bytes (an empty one is one datagram). */
function datagramCount(length: number, stride: number): number {
  return stride === 0 || length <= stride ? 1 : Math.ceil(length / stride)
}

/** Options of a single receive. */
export interface ReceiveOptions {
  /**
   * Ends the receive with a {@link SuperpacketAbortError} (`name` `'AbortError'`, `code` `'ABORT_ERR'`);
   * datagrams that arrive later are kept for the next receive.
   */
  signal?: AbortSignal
}

/** Options of {@link UdpSocket.segmentWriter}. */
export interface SegmentWriterOptions {
  /** Seals each segment before it is sent (default: plain). */
  framer?: Framer
}

/** Bytes of the blocks receives without `reuseBuffers` cut their batches from. */
const BLOCK_SIZE = 1 << 20
/** A block with less room left than this is replaced (4 messages of 64 KiB). */
const BLOCK_LEFT_MIN = 4 << 16


/** Words of a destination as the native sends take it (`NativePeer.words`). */
const PEER_WORDS = 8

/** What a send that went out at once returns. */
const DONE: Promise<void> = Promise.resolve()

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
  /** {@link Peer} objects already parsed with the address and port they had, so reusing one parses it once. */
  readonly #peers = new WeakMap<Peer, { address: string; port: number; parsed: UdpPeer }>()
  /** Destinations of `sendBatch(messages)` by address and port (1,024 of each at most, then started over). */
  readonly #byAddress = new Map<string, Map<number, UdpPeer>>()
  /** The last send that had to wait for room: later sends queue behind it, so datagrams keep their order. */
  #waiting: Promise<void> | undefined
  /** The bound address. */
  readonly address: Readonly<BoundAddress>
  /** The socket's number for the {@link fast} sends. */
  readonly #slot: number
  /** The socket watched for readability on this thread's event loop (Unix), opened by the first receive that waits. */
  readonly #watch: ReadyWatch

  private constructor(n: NativeUdp, reuseBuffers: boolean) {
    super(n, 'the UDP socket')
    this.#slot = n.slot()
    const slot = this.#slot
    this.#watch = new ReadyWatch((callback) => fast.watchOpen(slot, callback))
    const watch = this.#watch
    const info = n.info()
    this.address = Object.freeze({ address: info.address, port: info.port, family: isIPv6(info.address) ? 'IPv6' : 'IPv4' })
    const room = info.recvRoom
    const meta = new Uint32Array(binding.RECV_META_LENGTH)
    /** Handles of the sources the native table numbered, by number. */
    const sources: UdpPeer[] = []
    let into = reuseBuffers ? reusedBuffer(room) : undefined
    /** Without `reuseBuffers`: batches are cut from a block, each owning its part (no copy, no reuse). */
    let block: Buffer | undefined
    let used = 0
    /** Receives what is queued, straight into JS memory, on the JS thread; null when nothing is. */
    const receiveNow = (n: NativeUdp): DatagramBatch | null => {
      let buf: Buffer
      if (into !== undefined) {
        // Transferred away (detached): receives go on in a new buffer.
        if (into.byteLength === 0) into = reusedBuffer(room)
        checkNotHeld(into)
        buf = into
      } else {
        if (block === undefined || block.length - used < BLOCK_LEFT_MIN) {
          block = Buffer.allocUnsafeSlow(BLOCK_SIZE)
          used = 0
        }
        buf = block.subarray(used, used + room)
      }
      const m = n.tryRecvInto(buf, meta)
      if (m === 0) return null
      if (meta[3] !== 0) {
        const update = n.takeSources()
        if (update.reset) sources.length = 0
        for (let i = 0; i < update.peers.length; i++) sources[update.first + i] = new UdpPeer(n, update.peers[i]!)
      }
      const end = meta[2]!
      const words = meta.slice(HEADER, HEADER + m * PER_MESSAGE)
      const peers: UdpPeer[] = new Array(m)
      for (let i = 0; i < m; i++) peers[i] = sources[words[i * PER_MESSAGE + 3]!]!
      // The next batch starts on an 8-byte boundary after this one.
      if (into === undefined) used += (end + 7) & ~7
      return new DatagramBatch(buf.subarray(0, end), words, peers, meta[1]!)
    }
    this.#reader = new ReadQueue(async () => {
      const n = this.native
      return await this.#sync.run(
        () => receiveNow(n),
        async () => {
          // The wait holds nothing of JS; the datagrams go into JS memory here, on the JS thread. `null`
          // only if something else took what woke the wait.
          for (;;) {
            await watch.ready(() => n.waitReadable())
            const b = receiveNow(n)
            if (b !== null) return b
          }
        },
      )
    }, reuseBuffers)
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

  /** Closes the socket: a receive waiting for datagrams ends cleanly (iterators finish). */
  override async close(): Promise<void> {
    // The waiting receive looks again and, finding the watch closed, waits on the native socket, which
    // the close below ends.
    this.#watch.close()
    await super.close()
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

  /**
   * Checks and parses a destination once. The returned {@link UdpPeer} goes wherever a {@link Peer} does;
   * reuse it for every send to that destination. An IPv6 address on an IPv4 socket, a port outside
   * 1..65535 or a malformed address is `ERR_SUPERPACKET_INVALID_ARGUMENT`.
   */
  peer(address: string, port: number): UdpPeer {
    if (typeof address !== 'string' || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw invalidArgument('a peer is an address string and a port from 1 to 65535')
    }
    const n = this.native
    return new UdpPeer(n, native(() => n.peer(address, port)))
  }

  /** The parsed form of `peer` for this socket (parsed now unless it was before). */
  #resolve(peer: Peer): UdpPeer {
    if (peer instanceof UdpPeer && peer.owner === this.native) return peer
    const known = this.#peers.get(peer)
    if (known !== undefined && known.address === peer.address && known.port === peer.port) return known.parsed
    checkPeer(peer)
    const parsed = this.peer(peer.address, peer.port)
    this.#peers.set(peer, { address: peer.address, port: peer.port, parsed })
    return parsed
  }

  /**
   * The part of a send the socket did not take at once (all of it while an earlier send waits, so that
   * datagrams keep their order): it waits for room behind the earlier ones.
   */
  #wait(rest: (abort: NativeAbort | undefined) => Promise<void>, signal: AbortSignal | undefined, sentBefore: number): Promise<void> {
    const before = this.#waiting ?? DONE
    const go = (): Promise<void> => abortableWrite(signal, rest, sentBefore)
    const op = before.then(go, go)
    this.#waiting = op
    const settled = (): void => {
      if (this.#waiting === op) this.#waiting = undefined
    }
    op.then(settled, settled)
    return op
  }

  /**
   * Sends one datagram: straight from the JS thread while the socket has room. `data` is copied if the
   * send has to wait. An abort takes effect before the send starts (`sent` 0).
   */
  send(peer: Peer, data: Uint8Array, options: WriteOptions = {}): Promise<void> {
    try {
      const p = this.#resolve(peer)
      const n = this.native
      const signal = options.signal
      if (signal?.aborted) return Promise.reject(abortedError(signal, 0))
      if (this.#waiting === undefined && fast.trySendTo(this.#slot, p.words, data)) return DONE
      return this.#wait(() => n.sendTo(p.address, p.port, data), signal, 0)
    } catch (err) {
      return Promise.reject(fromNative(err))
    }
  }

  /**
   * Sends `data` as datagrams of `segmentSize` bytes (the last may be shorter) with one UDP_SEGMENT send per
   * 64 datagrams. Without GSO, or when the kernel rejects it, the datagrams go out one by one: nothing is lost.
   * What has to wait for room is copied first. An abort stops it before its next system call (`sent`: the
   * datagrams that went out).
   */
  sendSegments(peer: Peer, data: Uint8Array, segmentSize: number, options: WriteOptions = {}): Promise<void> {
    try {
      if (!Number.isInteger(segmentSize) || segmentSize < 1 || segmentSize > 65507) throw invalidArgument('segmentSize must be 1 to 65507')
      const p = this.#resolve(peer)
      const n = this.native
      const signal = options.signal
      if (signal?.aborted) return Promise.reject(abortedError(signal, 0))
      let sent = 0
      if (this.#waiting === undefined) {
        sent = fast.trySendSegments(this.#slot, p.words, data, segmentSize)
        if (sent === data.length) return DONE
      }
      return this.#wait((abort) => n.sendSegments(p.address, p.port, data.subarray(sent), segmentSize, abort), signal, sent / segmentSize)
    } catch (err) {
      return Promise.reject(fromNative(err))
    }
  }

  /**
   * Sends datagrams with sendmmsg (up to 64 per system call), straight from the JS thread while the socket
   * has room. Two forms:
   * - `sendBatch(peer, buffer, lengths)`: the datagrams lie back to back in `buffer`, `lengths[i]` bytes
   *   each (the lengths must add up to `buffer.length`), all to `peer`. No object per datagram: the fast form.
   *   Consecutive datagrams of equal length, with the shorter datagram after them if one follows, go out
   *   as one UDP_SEGMENT train (up to 64 datagrams; the receiver sees the same datagrams), so that the
   *   kernel's send path runs once per train; trains and single datagrams share each sendmmsg.
   * - `sendBatch(messages)`: one `{ address, port, data }` per datagram, to several peers.
   *
   * What has to wait for room is copied first. An abort takes effect before the waiting part starts
   * (`sent`: the datagrams that went out before).
   */
  sendBatch(peer: Peer, buffer: Uint8Array, lengths: Uint32Array | readonly number[], options?: WriteOptions): Promise<void>
  sendBatch(messages: readonly ({ data: Uint8Array } & Peer)[], options?: WriteOptions): Promise<void>
  sendBatch(
    target: Peer | readonly ({ data: Uint8Array } & Peer)[],
    bufferOrOptions?: Uint8Array | WriteOptions,
    lengths?: Uint32Array | readonly number[],
    options: WriteOptions = {},
  ): Promise<void> {
    try {
      if (Array.isArray(target)) {
        const opts = bufferOrOptions instanceof Uint8Array ? {} : (bufferOrOptions ?? {})
        return this.#sendMessages(target as readonly ({ data: Uint8Array } & Peer)[], opts.signal)
      }
      const buffer = bufferOrOptions
      if (!(buffer instanceof Uint8Array)) throw invalidArgument('sendBatch(peer, buffer, lengths) needs a Uint8Array buffer')
      if (!(lengths instanceof Uint32Array) && !Array.isArray(lengths)) {
        throw invalidArgument('sendBatch(peer, buffer, lengths) needs lengths as a Uint32Array or an array of numbers')
      }
      const lens = lengths instanceof Uint32Array ? lengths : Uint32Array.from(lengths)
      const p = this.#resolve(target as Peer)
      const n = this.native
      const signal = options.signal
      if (signal?.aborted) return Promise.reject(abortedError(signal, 0))
      let next = 0
      if (this.#waiting === undefined) {
        next = fast.trySendLengths(this.#slot, p.words, buffer, lens, 0)
        if (next === lens.length) return DONE
      }
      return this.#wait(() => n.sendLengths(p.address, p.port, buffer, lens, next), signal, next)
    } catch (err) {
      return Promise.reject(fromNative(err))
    }
  }

  /**
   * The messages form of `sendBatch`: consecutive messages to one destination go as one run through the
   * one-buffer form (equal lengths as GSO trains), a lone one with `send`; all from the JS thread while the
   * socket has room, in order.
   */
  #sendMessages(messages: readonly ({ data: Uint8Array } & Peer)[], signal: AbortSignal | undefined): Promise<void> {
    // Everything is checked before anything is sent: a bad message sends nothing.
    const peers: UdpPeer[] = new Array(messages.length)
    for (let i = 0; i < messages.length; i++) {
      const m = messages[i]!
      checkPeer(m)
      if (!(m.data instanceof Uint8Array)) throw invalidArgument('each message needs data as a Uint8Array')
      const prev = messages[i - 1]
      peers[i] = prev !== undefined && prev.port === m.port && prev.address === m.address ? peers[i - 1]! : this.#resolveAddress(m.address, m.port)
    }
    if (signal?.aborted) return Promise.reject(abortedError(signal, 0))
    const parts: Promise<void>[] = []
    const n = this.native
    for (let i = 0; i < messages.length; ) {
      const start = i
      let end = i + 1
      let part: Promise<void>
      if (peers[i + 1] === peers[i]) {
        // A run to one destination: one buffer and its lengths (equal lengths go as GSO trains).
        while (end < messages.length && peers[end] === peers[i]) end++
        const datas = messages.slice(i, end).map((m) => m.data)
        part = this.sendBatch(peers[i]!, Buffer.concat(datas), Uint32Array.from(datas, (d) => d.length), { signal })
      } else {
        // Datagrams to changing destinations: sendmmsg, up to 64 per system call.
        while (end < messages.length && peers[end + 1] !== peers[end]) end++
        // Each destination as its 8 address words, back to back: no object crosses to native per datagram.
        const words = new Uint32Array((end - i) * PEER_WORDS)
        const datas: Uint8Array[] = new Array(end - i)
        for (let k = i; k < end; k++) {
          words.set(peers[k]!.words, (k - i) * PEER_WORDS)
          datas[k - i] = messages[k]!.data
        }
        const next = this.#waiting === undefined ? fast.trySendMessages(this.#slot, words, datas, 0) : 0
        part =
          next === datas.length
            ? DONE
            : this.#wait(
                (abort) => {
                  const rest = peers.slice(start + next, end)
                  return n.sendBatch(rest.map((p) => p.address), rest.map((p) => p.port), datas.slice(next), abort)
                },
                signal,
                next,
              )
      }
      // An abort counts what earlier parts sent.
      parts.push(part === DONE ? part : part.catch((err: unknown) => Promise.reject(err instanceof SuperpacketAbortError && signal ? abortedError(signal, start + (err.sent ?? 0)) : err)))
      i = end
    }
    return parts.every((r) => r === DONE) ? DONE : Promise.all(parts).then(() => undefined)
  }

  /** A parsed destination for an address and port, remembered for the next messages to it. */
  #resolveAddress(address: string, port: number): UdpPeer {
    // By address, then port: no key string is built (and hashed) per message.
    let ports = this.#byAddress.get(address)
    let p = ports?.get(port)
    if (p === undefined) {
      if (ports === undefined) {
        if (this.#byAddress.size >= 1024) this.#byAddress.clear()
        ports = new Map()
        this.#byAddress.set(address, ports)
      }
      if (ports.size >= 1024) ports.clear()
      p = this.peer(address, port)
      ports.set(port, p)
    }
    return p
  }

  /**
   * A writer that splits superpackets straight into framed datagrams for `peer`, one GSO send per 64.
   * With a framer that routes (WireGuard), leave the peer out: `segmentWriter({ framer })` sends each
   * superpacket to the peer whose allowed IPs hold its inner destination.
   */
  segmentWriter(peer: Peer, options?: SegmentWriterOptions): SegmentWriter
  segmentWriter(options: SegmentWriterOptions & { framer: NativeFramer }): SegmentWriter
  segmentWriter(peerOrOptions: Peer | SegmentWriterOptions, options: SegmentWriterOptions = {}): SegmentWriter {
    if ('address' in peerOrOptions) return new SegmentWriter(this, this.#resolve(peerOrOptions), options.framer)
    const framer = peerOrOptions.framer
    if (framer === undefined || !isNativeFramer(framer) || !framer.routes) {
      throw invalidArgument('segmentWriter needs a peer unless its framer routes by itself (WireGuard)')
    }
    return new SegmentWriter(this, undefined, framer)
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
  readonly #framer: NativeFramerHandle

  /** @internal */
  constructor(socket: UdpSocket, peer: UdpPeer | undefined, framer: Framer | undefined) {
    if (framer !== undefined && !isNativeFramer(framer)) {
      checkJsFramer(framer)
      this.#js = framer
      if (peer === undefined) throw invalidArgument('a segment writer with a JS framer needs a peer')
    }
    const f = nativeFramerOf(framer)
    // Held so that the framer (and the timers it runs for this socket) lives as long as the writer.
    this.#framer = f
    this.#native = native(() => new binding.NativeSegmentWriter(socket.native, f, peer?.native))
  }

  /**
   * Segments, frames and sends one superpacket or several. Superpackets read with `reuseBuffers` stay
   * held while the write still needs them after an `await` (the socket was full, or a {@link JsFramer}
   * seals): a read of their queue meanwhile fails with `ERR_SUPERPACKET_BUSY` instead of changing them.
   * An abort (`options.signal`) takes effect between superpackets, never inside one (`sent`: the
   * superpackets that went out whole; a superpacket is never left half sent).
   */
  async write(superpackets: Superpacket | Uint8Array | readonly (Superpacket | Uint8Array)[], options: WriteOptions = {}): Promise<void> {
    const { signal } = options
    const list = Array.isArray(superpackets) ? superpackets : [superpackets as Superpacket | Uint8Array]
    const frames = list.map((f) => (f instanceof Superpacket ? f.frame : f))
    const js = this.#js
    let release: (() => void) | undefined
    try {
      if (js === undefined) {
        // Sealed and sent on the JS thread while the socket has room; only a full socket costs a wait.
        let i = 0
        while (i < frames.length) {
          if (signal?.aborted) throw abortedError(signal, i)
          const r = native(() => this.#native.tryWrite(i === 0 ? frames : frames.slice(i)))
          i += r.accepted
          if (r.pending) {
            // Frames not yet taken are read after the wait.
            if (i < frames.length) release ??= hold(frames)
            await nativeAsync(this.#native.flush())
          }
        }
        return
      }
      release = hold(frames)
      for (let k = 0; k < frames.length; k++) {
        if (signal?.aborted) throw abortedError(signal, k)
        await this.#sealAndSend(js, frames[k]!)
      }
    } finally {
      release?.()
    }
  }

  /** One superpacket through the JS framer: prepared (a copy), sealed in JS, sent. */
  async #sealAndSend(js: JsFramer, frame: Uint8Array): Promise<void> {
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
