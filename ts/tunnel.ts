/**
 * A two-way tunnel that runs entirely in native code.
 * @module
 */
import { invalidArgument, native, nativeAsync } from './errors.js'
import { isNativeFramer, type NativeFramer } from './framer.js'
import { binding } from './native.js'
import type { Tun, TunStats } from './tun.js'
import type { Peer, UdpSocket, UdpStats } from './udp.js'

/** How a {@link Tunnel} runs. */
export interface TunnelOptions {
  /** The TUN whose packets are tunnelled (every queue is served). */
  tun: Tun
  /** The UDP socket the tunnel sends and receives on. */
  socket: UdpSocket
  /** The other endpoint. Left out, the tunnel answers whoever last sent a datagram the framer accepted. */
  peer?: Peer
  /** A native framer (default plain). */
  framer?: NativeFramer
}

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
    /** Frames that could not be segmented, or found no peer. */
    drops: number
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
    /** Datagrams the framer dropped. */
    drops: number
  }
}

/**
 * Runs both directions between a TUN and a UDP socket with no JS per packet: TUN superpackets are split
 * straight into framed GSO sends, and GRO batches are opened, coalesced and written to the TUN.
 */
export class Tunnel implements AsyncDisposable {
  readonly #native: InstanceType<typeof binding.NativeTunnel>
  /** Keeps the process alive while the tunnel runs, as a listening server does. */
  #keepAlive: NodeJS.Timeout | undefined = setInterval(() => {}, 2 ** 31 - 1)

  private constructor(n: InstanceType<typeof binding.NativeTunnel>) {
    this.#native = n
  }

  /** Starts the tunnel. */
  static async start(options: TunnelOptions): Promise<Tunnel> {
    const framer = options.framer
    if (framer !== undefined && !isNativeFramer(framer)) {
      throw invalidArgument('Tunnel takes a native framer; drive a JS framer with segmentWriter() and packetWriter()')
    }
    const n = native(
      () =>
        new binding.NativeTunnel(
          options.tun.native,
          options.socket.native,
          options.peer?.address,
          options.peer?.port,
          framer?.spec ?? { type: 'plain' },
        ),
    )
    return new Tunnel(n)
  }

  /** Current counters. */
  stats(): TunnelStats {
    return native(() => this.#native.stats())
  }

  /** Stops both directions; the TUN and socket stay open. */
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
