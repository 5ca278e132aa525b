/**
 * A garbage flood for the hostile-network tests and the soak: datagrams of random length and random bytes
 * sent at a fixed rate to one address, from one or more local addresses in turn, bounded in count and time.
 * It uses node:dgram, not the library under test.
 *
 *   node tools/dist/lab/flood.js --to 198.18.1.2:51820 --from 198.18.1.1:0 --from 198.18.1.3:0 \
 *     --rate 50000 --count 1000000 --seconds 20 [--min 1] [--max 1472] [--seed 1]
 *
 * Prints `flooding` once its sockets are bound, and one JSON line (datagrams sent in all and per source,
 * send errors, seconds) when it stops: after --count datagrams, after --seconds, or on SIGTERM.
 * @internal
 * @module
 */
import { createSocket, type Socket } from 'node:dgram'
import { isIPv6 } from 'node:net'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { hostPort } from './args.js'
import { seededRandom } from './prng.js'

const { values: o } = parseArgs({
  options: {
    to: { type: 'string' },
    from: { type: 'string', multiple: true, default: ['0.0.0.0:0'] },
    rate: { type: 'string', default: '50000' },
    count: { type: 'string', default: '1000000' },
    seconds: { type: 'string', default: '30' },
    min: { type: 'string', default: '1' },
    max: { type: 'string', default: '1472' },
    seed: { type: 'string', default: '1' },
  },
})

/** Distinct datagrams prepared up front and sent in turn (random bytes per send would cost more than the send). */
const POOL = 4096
/** How often the sender catches up with the rate. */
const TICK_MS = 5
/** Sends handed to node:dgram and not yet completed; beyond this the flood waits (it never queues without bound). */
const MAX_IN_FLIGHT = 8192

const to = hostPort(o.to!)
const rate = Number(o.rate)
const count = Number(o.count)
const seconds = Number(o.seconds)
const minLen = Number(o.min)
const maxLen = Number(o.max)
if (!(rate > 0 && count > 0 && seconds > 0 && minLen >= 1 && maxLen >= minLen && maxLen <= 65507)) {
  throw new Error('flood: --rate, --count, --seconds must be positive and 1 <= --min <= --max <= 65507')
}

const random = seededRandom(Number(o.seed))
const pool: Buffer[] = []
for (let i = 0; i < POOL; i++) {
  const d = Buffer.allocUnsafe(minLen + Math.floor(random() * (maxLen - minLen + 1)))
  for (let k = 0; k < d.length; k++) d[k] = Math.floor(random() * 256)
  pool.push(d)
}

async function bound(spec: string): Promise<Socket> {
  const { address, port } = hostPort(spec)
  const s = createSocket({ type: isIPv6(address) ? 'udp6' : 'udp4' })
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject)
    s.bind({ address, port, exclusive: true }, () => {
      s.off('error', reject)
      resolve()
    })
  })
  // A send error (such as ICMP port unreachable reported later) must not end the flood.
  s.on('error', () => errors++)
  return s
}

let errors = 0
let sent = 0
let inFlight = 0
const sockets = await Promise.all(o.from!.map(bound))
const perSource = sockets.map(() => 0)
const t0 = performance.now()
console.log('flooding')

const timer = setInterval(() => {
  const elapsed = (performance.now() - t0) / 1000
  if (elapsed >= seconds || sent >= count) return finish()
  const due = Math.min(count, Math.floor(elapsed * rate)) - sent
  const n = Math.min(due, MAX_IN_FLIGHT - inFlight)
  for (let i = 0; i < n; i++) {
    const s = sent % sockets.length
    inFlight++
    sockets[s]!.send(pool[sent % POOL]!, to.port, to.address, (err) => {
      inFlight--
      if (err) errors++
    })
    perSource[s]!++
    sent++
  }
}, TICK_MS)

let finished = false
function finish(): void {
  if (finished) return
  finished = true
  clearInterval(timer)
  const secs = (performance.now() - t0) / 1000
  console.log(JSON.stringify({ sent, perSource, errors, seconds: secs, rate: sent / secs }))
  for (const s of sockets) s.close()
}
process.on('SIGTERM', finish)
process.on('SIGINT', finish)
