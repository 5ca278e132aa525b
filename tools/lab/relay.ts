/**
 * An impairment relay for the tests and the bench (this kernel has no netem): a UDP forwarder between two
 * tunnel endpoints that drops, duplicates, reorders and delays datagrams at configured rates, decided by a
 * seeded generator per direction. It uses node:dgram, not the library under test.
 *
 *   node tools/dist/lab/relay.js --left 198.18.1.1:51901 --left-peer 198.18.1.1:51820 \
 *     --right 198.18.1.1:51902 --right-peer 198.18.1.2:51820 \
 *     [--loss 0.01] [--reorder 0.05] [--duplicate 0.01] [--delay-ms 0] [--seed 1] [--queue 4096] [--seconds 600]
 *
 * The left endpoint sends to --left and the relay forwards to --right-peer from --right; the right endpoint
 * sends to --right and the relay forwards to --left-peer from --left. A reordered datagram is held back until
 * 1 to 3 later datagrams of its direction have passed (or REORDER_HOLD_MS). Datagrams wait in one bounded
 * queue per direction; what does not fit is dropped and counted as `overflow`.
 *
 * Prints `relaying` once bound, `relay {json}` (counters per direction) on SIGUSR2 and when it stops
 * (after --seconds, or on SIGTERM).
 * @internal
 * @module
 */
import { createSocket, type Socket } from 'node:dgram'
import { isIPv6 } from 'node:net'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { hostPort } from './args.js'
import { seededRandom } from './prng.js'
import type { RelayCounters } from './tunnel-pair.js'

const { values: o } = parseArgs({
  options: {
    left: { type: 'string' },
    'left-peer': { type: 'string' },
    right: { type: 'string' },
    'right-peer': { type: 'string' },
    loss: { type: 'string', default: '0' },
    reorder: { type: 'string', default: '0' },
    duplicate: { type: 'string', default: '0' },
    'delay-ms': { type: 'string', default: '0' },
    seed: { type: 'string', default: '1' },
    queue: { type: 'string', default: '4096' },
    seconds: { type: 'string', default: '600' },
  },
})

/** The most later datagrams a reordered one waits for. */
const REORDER_SPAN = 3
/** The longest a reordered datagram waits when no later one comes. */
const REORDER_HOLD_MS = 5
/** How often held and delayed datagrams are checked. */
const PUMP_MS = 1
/** Socket buffers asked for (the kernel caps them at net.core.[rw]mem_max). */
const SOCKET_BUFFER = 4 << 20

const loss = Number(o.loss)
const reorder = Number(o.reorder)
const duplicate = Number(o.duplicate)
const delayMs = Number(o['delay-ms'])
const queueLimit = Number(o.queue)
for (const [name, p] of [['loss', loss], ['reorder', reorder], ['duplicate', duplicate]] as const) {
  if (!(p >= 0 && p < 1)) throw new Error(`relay: --${name} must be in [0, 1)`)
}
if (!(delayMs >= 0 && queueLimit >= 1)) throw new Error('relay: --delay-ms must be >= 0 and --queue >= 1')


interface Held {
  data: Buffer
  /** Later datagrams still to pass before this one goes. */
  after: number
  deadline: number
}

/** One direction: datagrams that arrive at `inbound` from `from` go out of `outbound` to `to`. */
class Direction {
  readonly counters: RelayCounters = { received: 0, dropped: 0, duplicated: 0, reordered: 0, delayed: 0, forwarded: 0, overflow: 0, strangers: 0, sendErrors: 0 }
  readonly #random: () => number
  readonly #held: Held[] = []
  readonly #delayed: { data: Buffer; due: number }[] = []

  constructor(
    readonly outbound: Socket,
    readonly from: { address: string; port: number },
    readonly to: { address: string; port: number },
    seed: number,
  ) {
    this.#random = seededRandom(seed)
  }

  /** Datagrams waiting (held back or delayed). */
  get queued(): number {
    return this.#held.length + this.#delayed.length
  }

  admit(data: Buffer, address: string, port: number): void {
    const c = this.counters
    if (address !== this.from.address || port !== this.from.port) return void c.strangers++
    c.received++
    if (this.#random() < loss) return void c.dropped++
    const copies = this.#random() < duplicate ? 2 : 1
    c.duplicated += copies - 1
    for (let i = 0; i < copies; i++) {
      if (this.queued >= queueLimit) {
        c.overflow++
        continue
      }
      if (this.#random() < reorder) {
        c.reordered++
        this.#held.push({ data, after: 1 + Math.floor(this.#random() * REORDER_SPAN), deadline: performance.now() + REORDER_HOLD_MS })
      } else if (delayMs > 0) {
        c.delayed++
        this.#delayed.push({ data, due: performance.now() + delayMs })
      } else {
        this.#pass(data)
      }
    }
  }

  /** Sends what is due: delayed datagrams whose time came, held ones whose wait ran out. */
  pump(now: number): void {
    let n = 0
    while (n < this.#delayed.length && this.#delayed[n]!.due <= now) n++
    for (const d of this.#delayed.splice(0, n)) this.#pass(d.data)
    for (let i = 0; i < this.#held.length; ) {
      if (this.#held[i]!.deadline <= now) this.#send(this.#held.splice(i, 1)[0]!.data)
      else i++
    }
  }

  /** Sends a datagram in order; held datagrams it overtakes count it and go once enough have passed. */
  #pass(data: Buffer): void {
    this.#send(data)
    for (let i = 0; i < this.#held.length; ) {
      const h = this.#held[i]!
      if (--h.after <= 0) {
        this.#held.splice(i, 1)
        this.#send(h.data)
      } else i++
    }
  }

  #send(data: Buffer): void {
    this.counters.forwarded++
    this.outbound.send(data, this.to.port, this.to.address, (err) => {
      if (err) this.counters.sendErrors++
    })
  }
}

async function bound(spec: string): Promise<Socket> {
  const { address, port } = hostPort(spec)
  const s = createSocket({ type: isIPv6(address) ? 'udp6' : 'udp4', recvBufferSize: SOCKET_BUFFER, sendBufferSize: SOCKET_BUFFER })
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject)
    s.bind({ address, port, exclusive: true }, () => {
      s.off('error', reject)
      resolve()
    })
  })
  return s
}

const left = await bound(o.left!)
const right = await bound(o.right!)
const seed = Number(o.seed)
// left → right carries what the left endpoint sends; right → left what the right endpoint sends.
const toRight = new Direction(right, hostPort(o['left-peer']!), hostPort(o['right-peer']!), seed)
const toLeft = new Direction(left, hostPort(o['right-peer']!), hostPort(o['left-peer']!), seed + 1)
left.on('message', (d, r) => toRight.admit(d, r.address, r.port))
right.on('message', (d, r) => toLeft.admit(d, r.address, r.port))
for (const s of [left, right]) s.on('error', (e) => console.error(`relay: ${e.message}`))

const pump = setInterval(() => {
  const now = performance.now()
  toRight.pump(now)
  toLeft.pump(now)
}, PUMP_MS)

function report(): void {
  console.log(`relay ${JSON.stringify({ leftToRight: toRight.counters, rightToLeft: toLeft.counters, queued: toRight.queued + toLeft.queued })}`)
}
let stopped = false
function shutdown(): void {
  if (stopped) return
  stopped = true
  clearInterval(pump)
  clearTimeout(lifetime)
  report()
  left.close()
  right.close()
}
const lifetime = setTimeout(shutdown, Number(o.seconds) * 1000)
process.on('SIGUSR2', report)
process.on('SIGTERM', shutdown)
process.on('SIGINT', shutdown)
console.log('relaying')
