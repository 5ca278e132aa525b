/**
 * Garbage floods at a tunnel endpoint, for the hostile-network tests and the soak: {@link flood} processes
 * in the peer's namespace (from another port, from a second address) and in a {@link Spoofer} that claims
 * the peer's own address and port.
 * @internal
 * @module
 */
import type { ChildProcess } from 'node:child_process'
import { setTimeout as sleep } from 'node:timers/promises'
import { stop, waitForLine, type Lab, type Side } from './netns.js'
import { Spoofer } from './spoofer.js'

/** Where garbage comes from: the peer's namespace (another port, another address), or the peer's own address and port. */
export type GarbageSource = 'other-port' | 'second-address' | 'peer-address-and-port'

/** An address in the peer's subnet that is not the peer's, added to its veth for the flood. */
export const SECOND_ADDRESS = '198.18.1.3'

export interface GarbageOptions {
  /** The endpoint's side, and its UDP port. */
  victim: Side
  port: number
  /** The side whose endpoint is the victim's peer. */
  peer: Side
  sources: GarbageSource[]
  /** Datagrams per second, all sources together (split evenly). */
  rate: number
  /** Upper bound of the flood's life; {@link Garbage.stop} ends it sooner. */
  seconds: number
  /** Called with each process started (the bench tracks them). */
  started?: (child: ChildProcess) => void
}

/** A running flood. */
export class Garbage {
  /** Each flood process, the sources it sends from, and its final report (it prints one when it stops). */
  readonly #procs: { child: ChildProcess; sources: GarbageSource[]; report: Promise<RegExpExecArray> }[] = []
  #spoofer: Spoofer | undefined

  private constructor() {}

  /** Starts the floods and returns once every one is at full rate. */
  static async start(lab: Lab, o: GarbageOptions): Promise<Garbage> {
    const g = new Garbage()
    try {
      const to = `${o.victim.outer4}:${o.port}`
      const perSource = Math.round(o.rate / o.sources.length)
      const launch = (side: Side, sources: GarbageSource[], from: string[], seed: number) => {
        const rate = perSource * sources.length
        const args = ['--to', to, ...from.flatMap((f) => ['--from', f]), '--rate', String(rate), '--seconds', String(o.seconds), '--count', String(rate * o.seconds), '--seed', String(seed)]
        const child = lab.node(side, 'lab/flood.js', args)
        o.started?.(child)
        const report = waitForLine(child, /(\{.*\})\n/, (o.seconds + 30) * 1000)
        report.catch(() => {})
        g.#procs.push({ child, sources, report })
      }
      const local = o.sources.filter((s) => s !== 'peer-address-and-port')
      if (local.length > 0) {
        if (local.includes('second-address')) lab.exec(o.peer, 'ip', ['addr', 'replace', `${SECOND_ADDRESS}/24`, 'dev', o.peer.veth])
        launch(o.peer, local, local.map((s) => (s === 'other-port' ? `${o.peer.outer4}:0` : `${SECOND_ADDRESS}:0`)), 7)
      }
      if (o.sources.includes('peer-address-and-port')) {
        g.#spoofer = new Spoofer(lab, o.victim, o.peer)
        launch(g.#spoofer.side, ['peer-address-and-port'], [`${o.peer.outer4}:${o.port}`], 11)
      }
      await Promise.all(g.#procs.map(({ child }) => waitForLine(child, /flooding\n/, 10_000)))
      await sleep(300) // past the first tick: at full rate
      return g
    } catch (err) {
      await g.stop().catch(() => {})
      throw err
    }
  }

  /** Stops the floods (and removes the spoofer's namespace); resolves with the datagrams sent per source. */
  async stop(): Promise<Record<GarbageSource, number>> {
    const sent = {} as Record<GarbageSource, number>
    try {
      await Promise.all(
        this.#procs.map(async ({ child, sources, report }) => {
          child.kill('SIGTERM')
          const r = JSON.parse((await report)[1]!) as { perSource: number[] }
          sources.forEach((s, i) => (sent[s] = r.perSource[i]!))
          await stop(child)
        }),
      )
    } finally {
      this.#procs.length = 0
      this.#spoofer?.destroy()
      this.#spoofer = undefined
    }
    return sent
  }
}
