// Sender packet rate of small UDP sends on loopback: node:dgram against UdpSocket.send() and sendBatch of
// 64 (both forms; the one-buffer form with equal lengths, which go as GSO trains, and with alternating
// lengths, which go through sendmmsg), each to a sink socket on 127.0.0.1 that never reads (so every mode
// pays the same kernel path). Modes alternate over the rounds; each runs for a bounded time and count.
//
//   npm run build && node bench/udp-send-rate.mjs [--seconds 2] [--rounds 3] [--size 1400]
import dgram from 'node:dgram'
import { parseArgs } from 'node:util'
import { UdpSocket } from '../dist/index.js'

const { values: o } = parseArgs({
  options: {
    seconds: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '3' },
    size: { type: 'string', default: '1400' },
  },
})
const SECONDS = Number(o.seconds)
const ROUNDS = Number(o.rounds)
const SIZE = Number(o.size)
/** Upper bound of datagrams per run, whatever the clock says. */
const MAX_DATAGRAMS = 20_000_000
const BATCH = 64
const now = () => Number(process.hrtime.bigint()) / 1e9

/** node:dgram with at most 64 sends outstanding (libuv queues the rest), as the bench's send loop. */
async function dgramLoop(to) {
  const sock = dgram.createSocket('udp4')
  const payload = Buffer.alloc(SIZE, 0x5a)
  let outstanding = 0
  let sent = 0
  const t0 = now()
  await new Promise((resolve) => {
    let wake
    const done = () => {
      outstanding--
      sent++
      if (outstanding < BATCH / 2 && wake) {
        const w = wake
        wake = undefined
        w()
      }
    }
    const pump = () => {
      if (now() - t0 >= SECONDS || sent >= MAX_DATAGRAMS) {
        if (outstanding === 0) resolve()
        else wake = pump
        return
      }
      for (let i = 0; i < BATCH && outstanding < BATCH; i++) {
        outstanding++
        sock.send(payload, to.port, to.address, done)
      }
      wake = () => setImmediate(pump)
    }
    pump()
  })
  const t = now() - t0
  sock.close()
  return sent / t
}

/** Calls `send` (which sends `per` datagrams) in a loop, reading the clock every 16 calls. */
async function superpacketLoop(per, send) {
  const t0 = now()
  let sent = 0
  while (now() - t0 < SECONDS && sent < MAX_DATAGRAMS) {
    for (let i = 0; i < 16; i++) await send()
    sent += 16 * per
  }
  return sent / (now() - t0)
}

const sink = await UdpSocket.bind({ address: '127.0.0.1', port: 0 })
const to = { address: '127.0.0.1', port: sink.address.port }
const tx = await UdpSocket.bind({ address: '127.0.0.1', port: 0 })
const payload = Buffer.alloc(SIZE, 0x5a)
const messages = Array.from({ length: BATCH }, () => ({ ...to, data: payload }))
const modes = {
  'node:dgram send': () => dgramLoop(to),
  'send() with { address, port }': () => superpacketLoop(1, () => tx.send(to, payload)),
  'sendBatch(messages) of 64': () => superpacketLoop(BATCH, () => tx.sendBatch(messages)),
}
if (typeof tx.peer === 'function') {
  const peer = tx.peer(to.address, to.port)
  const buffer = Buffer.alloc(SIZE * BATCH, 0x5a)
  const lengths = new Uint32Array(BATCH).fill(SIZE)
  modes['send() with a peer handle'] = () => superpacketLoop(1, () => tx.send(peer, payload))
  modes['sendBatch(peer, buffer, lengths) of 64'] = () => superpacketLoop(BATCH, () => tx.sendBatch(peer, buffer, lengths))
  // Alternating lengths leave no run of equal ones: every datagram goes through sendmmsg.
  const mixed = Uint32Array.from({ length: BATCH }, (_, i) => SIZE - (i % 2))
  const mixedBuffer = Buffer.alloc(mixed.reduce((n, l) => n + l, 0), 0x5a)
  modes['sendBatch(peer, buffer, lengths) of 64, alternating lengths'] = () =>
    superpacketLoop(BATCH, () => tx.sendBatch(peer, mixedBuffer, mixed))
}

const rates = Object.fromEntries(Object.keys(modes).map((m) => [m, []]))
for (let r = 0; r < ROUNDS; r++) {
  for (const [name, run] of Object.entries(modes)) rates[name].push(await run())
}
await tx.close()
await sink.close()

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const base = median(rates['node:dgram send'])
console.log(`${SIZE}-byte datagrams to 127.0.0.1, ${ROUNDS} rounds of ${SECONDS} s, median`)
console.log('| mode | Mpps | × node:dgram | rounds (Mpps) |')
console.log('|---|--:|--:|---|')
for (const [name, xs] of Object.entries(rates)) {
  const m = median(xs)
  console.log(`| ${name} | ${(m / 1e6).toFixed(3)} | ${(m / base).toFixed(2)} | ${xs.map((x) => (x / 1e6).toFixed(3)).join(', ')} |`)
}
