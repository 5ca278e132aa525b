/**
 * Two tunnel endpoints in two namespaces, and a TCP transfer through them; optionally with an impairment
 * relay between them ({@link RelayOptions}).
 * @internal
 * @module
 */
import type { ChildProcess } from 'node:child_process'
import { Lab, stop, waitForLine, type Side } from './netns.js'
import { tcpTransfer, type Transfer } from './transfer.js'

export type { Transfer } from './transfer.js'

/** The endpoints' UDP port. */
export const TUNNEL_PORT = 51820
/** The relay's ports (in namespace a): the one endpoint a sends to, and the one endpoint b sends to. */
export const RELAY_PORTS = { fromA: 51901, fromB: 51902 } as const

/** How the relay between the endpoints impairs the path (each a probability per datagram, 0 to < 1). */
export interface RelayOptions {
  loss?: number
  reorder?: number
  duplicate?: number
  /** Added one-way delay, ms. */
  delayMs?: number
  seed?: number
}

/** How the endpoints run. */
export interface PairOptions {
  offload?: 'auto' | 'on' | 'off'
  mode?: 'native' | 'js' | 'naive'
  framer?: 'plain' | 'header' | 'dtls' | 'dtls-js'
  /** For `framer: 'dtls'`: the JSON key file both endpoints read (a seals with `a`, b with `b`). */
  dtlsKeys?: string
  /** Outer (veth) address family. */
  outer?: 4 | 6
  queues?: number
  /** JS mode: split and check every superpacket read. */
  verify?: boolean
  /** JS mode: read and receive into reused buffers (default true). */
  reuse?: boolean
  /** Native mode: send to whoever last sent an accepted datagram (the Tunnel's `learnPeer`). */
  learnPeer?: boolean
  /** Put an impairment relay (in namespace a) between the endpoints: each sends to it, not to the other. */
  relay?: RelayOptions
}

/** What one endpoint printed. */
export interface EndpointInfo {
  ready: { tun: string; offloads: Record<string, boolean>; udp: { gso: boolean; gro: boolean }; mode: string }
}

/** Counters of one direction of the relay (tools/lab/relay.ts counts them). */
export interface RelayCounters {
  /** Datagrams that came in from this direction's sender. */
  received: number
  dropped: number
  duplicated: number
  reordered: number
  /** Datagrams that went through the delay line. */
  delayed: number
  /** Datagrams sent on (copies included). */
  forwarded: number
  /** Dropped because the direction's queue was full. */
  overflow: number
  /** Datagrams from an address other than the endpoint's, ignored. */
  strangers: number
  sendErrors: number
}

/** What the relay printed. */
export interface RelayStats {
  leftToRight: RelayCounters
  rightToLeft: RelayCounters
  queued: number
}

/** Two endpoints joined by the lab's veth. */
export class TunnelPair {
  readonly lab: Lab
  readonly endpoints: ChildProcess[] = []
  readonly info: EndpointInfo[] = []
  /** The impairment relay, when asked for. */
  relay: ChildProcess | undefined
  /** Each endpoint's command line, to restart it the same way. */
  readonly #args: string[][] = []

  private constructor(lab: Lab) {
    this.lab = lab
  }

  /** Makes the namespaces and starts an endpoint in each (and the relay first, if asked for). */
  static async start(tag: string, options: PairOptions = {}): Promise<TunnelPair> {
    const pair = new TunnelPair(new Lab(tag))
    try {
      const { a, b } = pair.lab
      const outer6 = options.outer === 6
      const addr = (s: Side, port: number) => (outer6 ? `[${s.outer6}]:${port}` : `${s.outer4}:${port}`)
      const peers = [addr(b, TUNNEL_PORT), addr(a, TUNNEL_PORT)]
      if (options.relay !== undefined) {
        const r = options.relay
        pair.relay = pair.lab.node(a, 'lab/relay.js', [
          '--left', addr(a, RELAY_PORTS.fromA), '--left-peer', addr(a, TUNNEL_PORT),
          '--right', addr(a, RELAY_PORTS.fromB), '--right-peer', addr(b, TUNNEL_PORT),
          '--loss', String(r.loss ?? 0), '--reorder', String(r.reorder ?? 0), '--duplicate', String(r.duplicate ?? 0),
          '--delay-ms', String(r.delayMs ?? 0), '--seed', String(r.seed ?? 1),
        ])
        await waitForLine(pair.relay, /relaying\n/, 10_000)
        peers[0] = addr(a, RELAY_PORTS.fromA)
        peers[1] = addr(a, RELAY_PORTS.fromB)
      }
      for (const [i, me] of [a, b].entries()) {
        pair.#args.push([
          '--tun', 'sp0',
          '--inner4', `${me.inner4}/24`,
          '--inner6', `${me.inner6}/64`,
          '--listen', outer6 ? `[::]:${TUNNEL_PORT}` : `0.0.0.0:${TUNNEL_PORT}`,
          '--peer', peers[i]!,
          '--offload', options.offload ?? 'auto',
          '--mode', options.mode ?? 'native',
          '--framer', options.framer ?? 'plain',
          '--queues', String(options.queues ?? 1),
          ...(options.verify ? ['--verify'] : []),
          ...(options.learnPeer ? ['--learn-peer'] : []),
          ...(options.dtlsKeys === undefined ? [] : ['--dtls-keys', options.dtlsKeys, '--dtls-side', i === 0 ? 'a' : 'b']),
          '--reuse', options.reuse === false ? 'off' : 'on',
        ])
        await pair.#launch(i as 0 | 1)
      }
      return pair
    } catch (err) {
      await pair.close()
      throw err
    }
  }

  async #launch(i: 0 | 1): Promise<void> {
    const child = this.lab.node(this.side(i), 'demo/endpoint.js', this.#args[i]!)
    this.endpoints[i] = child
    const m = await waitForLine(child, /ready (\{.*\})\n/, 20_000)
    this.info[i] = { ready: JSON.parse(m[1]!) as EndpointInfo['ready'] }
  }

  /** Kills endpoint `i` with SIGKILL (no clean-up of its own) and waits until it is gone. */
  async kill(i: 0 | 1): Promise<void> {
    const e = this.endpoints[i]!
    if (e.exitCode !== null || e.signalCode !== null) return
    const gone = new Promise((resolve) => e.once('exit', resolve))
    e.kill('SIGKILL')
    await gone
  }

  /** Starts endpoint `i` again with the command line it had (after {@link TunnelPair.kill}). */
  restart(i: 0 | 1): Promise<void> {
    return this.#launch(i)
  }

  /**
   * Sends `bytes` of random data over TCP from side a to side b through the tunnel. `signal` stops both
   * TCP processes and rejects.
   */
  transfer(bytes: number, family: 4 | 6 = 4, timeoutSeconds = 240, signal?: AbortSignal): Promise<Transfer> {
    return tcpTransfer(this.lab, this.lab.a, this.lab.b, bytes, family, timeoutSeconds, signal)
  }

  /** Asks both endpoints for their counters. */
  async stats(): Promise<unknown[]> {
    return Promise.all([0, 1].map((i) => this.statsOf(i as 0 | 1)))
  }

  /** Asks endpoint `i` for its counters. */
  async statsOf(i: 0 | 1): Promise<unknown> {
    const e = this.endpoints[i]!
    const line = waitForLine(e, /stats (\{.*\})\n/, 5000)
    e.kill('SIGUSR2')
    return JSON.parse((await line)[1]!) as unknown
  }

  /** Asks the relay for its counters. */
  async relayStats(): Promise<RelayStats> {
    const r = this.relay
    if (r === undefined) throw new Error('this pair has no relay')
    const line = waitForLine(r, /relay (\{.*\})\n/, 5000)
    r.kill('SIGUSR2')
    return JSON.parse((await line)[1]!) as RelayStats
  }

  /** The side whose endpoint is at `i`. */
  side(i: 0 | 1): Side {
    return i === 0 ? this.lab.a : this.lab.b
  }

  /** Stops the endpoints and the relay and removes the namespaces. */
  async close(): Promise<void> {
    await Promise.all([...this.endpoints, ...(this.relay ? [this.relay] : [])].map((e) => stop(e)))
    this.lab.destroy()
  }
}
