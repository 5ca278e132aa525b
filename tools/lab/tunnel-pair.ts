/**
 * Two tunnel endpoints in two namespaces, and a TCP transfer through them.
 * @internal
 * @module
 */
import type { ChildProcess } from 'node:child_process'
import { Lab, stop, waitForLine, type Side } from './netns.js'

/** How the endpoints run. */
export interface PairOptions {
  offload?: 'auto' | 'on' | 'off'
  mode?: 'native' | 'js' | 'naive'
  framer?: 'plain' | 'header'
  /** Outer (veth) address family. */
  outer?: 4 | 6
  queues?: number
  /** JS mode: split and check every superpacket read. */
  verify?: boolean
  /** JS mode: read and receive into reused buffers (default true). */
  reuse?: boolean
}

/** What one endpoint printed. */
export interface EndpointInfo {
  ready: { tun: string; offloads: Record<string, boolean>; udp: { gso: boolean; gro: boolean }; mode: string }
}

/** A transfer's result. */
export interface Transfer {
  bytes: number
  sha256Sent: string
  sha256Received: string
  seconds: number
  gbps: number
}

/** Two endpoints joined by the lab's veth. */
export class TunnelPair {
  readonly lab: Lab
  readonly endpoints: ChildProcess[] = []
  readonly info: EndpointInfo[] = []

  private constructor(lab: Lab) {
    this.lab = lab
  }

  /** Makes the namespaces and starts an endpoint in each. */
  static async start(tag: string, options: PairOptions = {}): Promise<TunnelPair> {
    const pair = new TunnelPair(new Lab(tag))
    try {
      const { a, b } = pair.lab
      for (const [me, other] of [[a, b], [b, a]] as const) {
        const outer6 = options.outer === 6
        const args = [
          '--tun', 'sp0',
          '--inner4', `${me.inner4}/24`,
          '--inner6', `${me.inner6}/64`,
          '--listen', outer6 ? '[::]:51820' : '0.0.0.0:51820',
          '--peer', outer6 ? `[${other.outer6}]:51820` : `${other.outer4}:51820`,
          '--offload', options.offload ?? 'auto',
          '--mode', options.mode ?? 'native',
          '--framer', options.framer ?? 'plain',
          '--queues', String(options.queues ?? 1),
          ...(options.verify ? ['--verify'] : []),
          '--reuse', options.reuse === false ? 'off' : 'on',
        ]
        const child = pair.lab.node(me, 'demo/endpoint.js', args)
        pair.endpoints.push(child)
        const m = await waitForLine(child, /ready (\{.*\})\n/, 20_000)
        pair.info.push({ ready: JSON.parse(m[1]!) as EndpointInfo['ready'] })
      }
      return pair
    } catch (err) {
      await pair.close()
      throw err
    }
  }

  /** Sends `bytes` of random data over TCP from side a to side b through the tunnel. */
  async transfer(bytes: number, family: 4 | 6 = 4, timeoutSeconds = 240): Promise<Transfer> {
    const { a, b } = this.lab
    const dst = family === 6 ? `[${b.inner6}]:5201` : `${b.inner4}:5201`
    const recv = this.lab.node(b, 'demo/tcp.js', ['recv', '--listen', dst, '--timeout', String(timeoutSeconds)])
    try {
      await waitForLine(recv, /listening\n/, 10_000)
      const done = waitForLine(recv, /(\{.*\})\n/, timeoutSeconds * 1000)
      const send = this.lab.node(a, 'demo/tcp.js', ['send', '--to', dst, '--bytes', String(bytes), '--timeout', String(timeoutSeconds)])
      const sent = await waitForLine(send, /(\{.*\})\n/, timeoutSeconds * 1000)
      const got = await done
      const s = JSON.parse(sent[1]!) as { sha256: string }
      const r = JSON.parse(got[1]!) as { bytes: number; sha256: string; seconds: number }
      return { bytes: r.bytes, sha256Sent: s.sha256, sha256Received: r.sha256, seconds: r.seconds, gbps: (r.bytes * 8) / r.seconds / 1e9 }
    } finally {
      await stop(recv)
    }
  }

  /** Asks both endpoints for their counters. */
  async stats(): Promise<unknown[]> {
    return Promise.all(
      this.endpoints.map(async (e) => {
        const line = waitForLine(e, /stats (\{.*\})\n/, 5000)
        e.kill('SIGUSR2')
        return JSON.parse((await line)[1]!) as unknown
      }),
    )
  }

  /** The side whose endpoint is at `i`. */
  side(i: 0 | 1): Side {
    return i === 0 ? this.lab.a : this.lab.b
  }

  /** Stops the endpoints and removes the namespaces. */
  async close(): Promise<void> {
    await Promise.all(this.endpoints.map((e) => stop(e)))
    this.lab.destroy()
  }
}
