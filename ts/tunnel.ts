/**
 * A two-way tunnel that runs entirely in native code.
 * @module
 */
import { abortedError, invalidArgument, native, nativeAsync } from './errors.js'
import { isNativeFramer, nativeFramerOf, type NativeFramer } from './framer.js'
import { binding } from './native.js'
import type { Tun, TunStats } from './tun.js'
import type { Peer, UdpSocket, UdpStats } from './udp.js'
import { isWireGuard, type WireGuardPeer } from './wireguard.js'

/** How a {@link Tunnel} runs. */
export interface TunnelOptions {
  /** The TUN whose packets are tunnelled (every queue is served). */
  tun: Tun
  /** The UDP socket the tunnel sends and receives on. */
  socket: UdpSocket
  /**
   * The other endpoint, for framers that do not route by themselves. With a framer that authenticates
   * nothing (plain, header), datagrams from any other address are dropped (`wrong-source`) unless
   * `learnPeer` is set. Leave it out with a framer that routes (WireGuard).
   */
  peer?: Peer
  /**
   * Send to whoever last sent a datagram the framer accepted (and start with no peer if none is given).
   * With a plaintext framer anyone who can reach the socket can then redirect the tunnel: use an
   * encrypting framer on networks you do not control. Default false.
   */
  learnPeer?: boolean
  /** A native framer (default plain). */
  framer?: NativeFramer
  /** Aborts the start (the tunnel is stopped if it had started). */
  signal?: AbortSignal
}

/** Drops by reason, such as `{ 'wrong-source': 3, 'bad-mac': 1 }`; reasons with no drop are left out. */
export type DropReasons = Record<string, number>

/** Counters of a running tunnel. */
export interface TunnelStats {
  /** The TUN's counters. */
  tun: TunStats
  /** The socket's counters. */
  udp: UdpStats
  /** TUN → UDP. */
  outbound: {
    /** Superpackets read from the TUN. */
    superpackets: number
    /** Datagrams they became. */
    segments: number
    /** Datagrams per UDP send system call. */
    segmentsPerSyscall: number
    /** Superpackets not sent: malformed, no peer or route, refused by the framer or the network. */
    drops: number
    /** Superpackets the framer held until a handshake completes. */
    held: number
    /** Why superpackets were not sent. */
    dropReasons: DropReasons
  }
  /** UDP → TUN. */
  inbound: {
    /** Datagrams received. */
    datagrams: number
    /** Datagrams per receive system call. */
    datagramsPerSyscall: number
    /** Packets written to the TUN. */
    packets: number
    /** Frames written (superpackets after coalescing). */
    frames: number
    /** Datagrams dropped: by the framer, the source check or the TUN. */
    drops: number
    /** Why datagrams were dropped (`wrong-source`, `mismatch`, `bad-mac`, `replay`, `invalid-packet` ...). */
    dropReasons: DropReasons
  }
  /** Control datagrams the framer sent (handshakes, cookie replies, keepalives). */
  controlSent: number
}

/**
 * Runs both directions between a TUN and a UDP socket with no JS per packet: TUN superpackets are split
 * straight into framed GSO sends, and GRO batches are opened, coalesced and written to the TUN.
 *
 * A running tunnel keeps the process alive until it stops (or {@link Tunnel.unref}). If a direction
 * fails, the whole tunnel stops, {@link Tunnel.closed} rejects with the error, and the process is no
 * longer held open by it.
 */
export class Tunnel implements AsyncDisposable {
  readonly #native: InstanceType<typeof binding.NativeTunnel>
  readonly #framer: NativeFramer | undefined
  /** Keeps the process alive while the tunnel runs, as a listening server does. */
  #keepAlive: NodeJS.Timeout | undefined = setInterval(() => {}, 2 ** 31 - 1)
  /**
   * Settles when the tunnel stops: resolves after {@link Tunnel.stop}, rejects with the error that
   * stopped it (a failed TUN read, a socket error). Handled by the tunnel itself, so an unobserved
   * failure is no unhandled rejection; await it to learn of one.
   */
  readonly closed: Promise<void>

  private constructor(n: InstanceType<typeof binding.NativeTunnel>, framer: NativeFramer | undefined) {
    this.#native = n
    this.#framer = framer
    this.closed = nativeAsync(n.closed()).finally(() => {
      clearInterval(this.#keepAlive)
      this.#keepAlive = undefined
    })
    this.closed.catch(() => {})
  }

  /** Starts the tunnel. */
  static async start(options: TunnelOptions): Promise<Tunnel> {
    const { framer, peer, signal } = options
    if (signal?.aborted) throw abortedError(signal)
    if (framer !== undefined && !isNativeFramer(framer)) {
      throw invalidArgument('Tunnel takes a native framer; drive a JS framer with segmentWriter() and packetWriter()')
    }
    const f = nativeFramerOf(framer)
    const n = native(
      () =>
        new binding.NativeTunnel(options.tun.native, options.socket.native, f, peer?.address, peer?.port, options.learnPeer ?? false),
    )
    const tunnel = new Tunnel(n, framer)
    if (signal?.aborted) {
      await tunnel.stop()
      throw abortedError(signal)
    }
    return tunnel
  }

  /** Whether the tunnel still runs. */
  get running(): boolean {
    return this.#native.running
  }

  /** The peer datagrams go to now (for framers that do not route), or `undefined` before one is known. */
  get peer(): Peer | undefined {
    const p = native(() => this.#native.peer())
    return p == null ? undefined : { address: p[0], port: p[1] }
  }

  /** The WireGuard peers with their endpoints, handshakes and byte counts (empty for other framers). */
  peers(): WireGuardPeer[] {
    return isWireGuard(this.#framer) ? this.#framer.peers() : []
  }

  /** Current counters. */
  stats(): TunnelStats {
    return native(() => this.#native.stats())
  }

  /** Stops both directions; the TUN and socket stay open. Rejects with the error that had stopped it, if any. */
  async stop(): Promise<void> {
    clearInterval(this.#keepAlive)
    this.#keepAlive = undefined
    await nativeAsync(this.#native.stop())
  }

  /** Lets the process exit while the tunnel runs (like `server.unref()`). */
  unref(): this {
    this.#keepAlive?.unref()
    return this
  }

  /** Same as {@link Tunnel.stop}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop()
  }
}
