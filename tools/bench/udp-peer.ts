/**
 * One side of a UDP packet-rate measurement, run inside a namespace by the bench. Every loop ends after
 * `--seconds`. Prints one JSON line (`recv` prints `listening` first).
 *
 *   node tools/dist/bench/udp-peer.js send --mode dgram|sp-single|sp-mmsg|sp-batch|sp-batch-mixed|sp-gso --to 198.18.1.2:7000 --size 1400 --seconds 5
 *   node tools/dist/bench/udp-peer.js recv --mode dgram|sp-gro|sp-gro-reuse --listen 198.18.1.2:7000 --seconds 8
 * @internal
 * @module
 */
import { createSocket } from 'node:dgram'
import { parseArgs } from 'node:util'
import { UdpSocket, type Peer } from 'superpacket'

const { positionals, values: o } = parseArgs({
  allowPositionals: true,
  options: {
    mode: { type: 'string' },
    to: { type: 'string' },
    listen: { type: 'string' },
    size: { type: 'string', default: '1400' },
    seconds: { type: 'string', default: '5' },
  },
})

function hostPort(s: string): Peer {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(s)
  if (!m) throw new Error(`'${s}' is not address:port`)
  return { address: m[1]!, port: Number(m[2]) }
}

interface Result {
  datagrams: number
  bytes: number
  seconds: number
  syscalls?: number
}

const seconds = Number(o.seconds)
const size = Number(o.size)
const now = () => Number(process.hrtime.bigint()) / 1e9

/** node:dgram: a send loop with callbacks, at most `window` sends outstanding (libuv queues the rest). */
async function sendDgram(to: Peer): Promise<Result> {
  const sock = createSocket('udp4')
  const payload = Buffer.alloc(size, 0x5a)
  const window = 64
  let outstanding = 0
  let datagrams = 0
  const t0 = now()
  const end = t0 + seconds
  await new Promise<void>((resolve) => {
    let wake: (() => void) | undefined
    const sent = () => {
      outstanding--
      datagrams++
      if (outstanding < window / 2 && wake) {
        const w = wake
        wake = undefined
        w()
      }
    }
    const pump = () => {
      if (now() >= end) return resolve()
      for (let i = 0; i < window && outstanding < window; i++) {
        outstanding++
        sock.send(payload, to.port, to.address, sent)
      }
      wake = () => setImmediate(pump)
    }
    pump()
  })
  const t = now() - t0
  sock.close()
  return { datagrams, bytes: datagrams * size, seconds: t }
}

async function sendSuperpacket(to: Peer, mode: string): Promise<Result> {
  const sock = await UdpSocket.bind({ address: '0.0.0.0', port: 0 })
  const peer = sock.peer(to.address, to.port)
  const payload = Buffer.alloc(size, 0x5a)
  const batch = Array.from({ length: 64 }, () => ({ address: to.address, port: to.port, data: payload }))
  // One buffer and 64 lengths: equal (runs leave as GSO trains) or alternating (no runs: sendmmsg only).
  const equal = new Uint32Array(64).fill(size)
  const mixed = Uint32Array.from({ length: 64 }, (_, i) => (i % 2 === 0 ? size : size - 100))
  const equalBuf = Buffer.alloc(64 * size, 0x5a)
  const mixedBuf = Buffer.alloc(mixed.reduce((a, b) => a + b, 0), 0x5a)
  // One GSO send: as many datagrams as fit in one UDP payload (64 at most).
  const perTrain = Math.min(64, Math.floor(65_507 / size))
  const train = Buffer.alloc(perTrain * size, 0x5a)
  const t0 = now()
  const end = t0 + seconds
  let t = t0
  while (t < end) {
    // 16 calls between clock reads.
    for (let i = 0; i < 16; i++) {
      if (mode === 'sp-single') await sock.send(peer, payload)
      else if (mode === 'sp-mmsg') await sock.sendBatch(batch)
      else if (mode === 'sp-batch') await sock.sendBatch(peer, equalBuf, equal)
      else if (mode === 'sp-batch-mixed') await sock.sendBatch(peer, mixedBuf, mixed)
      else await sock.sendSegments(peer, train, size)
    }
    t = now()
  }
  const s = sock.stats()
  await sock.close()
  return { datagrams: s.txDatagrams, bytes: s.txBytes, seconds: t - t0, syscalls: s.txSyscalls }
}

async function recvDgram(listen: Peer): Promise<Result> {
  const sock = createSocket('udp4')
  await new Promise<void>((resolve) => sock.bind(listen.port, listen.address, () => resolve()))
  sock.setRecvBufferSize(7 << 20)
  let datagrams = 0
  let bytes = 0
  let first = 0
  let last = 0
  sock.on('message', (m) => {
    datagrams++
    bytes += m.length
    last = now()
    if (first === 0) first = last
  })
  console.log('listening')
  await idleOrDeadline(() => last)
  sock.close()
  return { datagrams, bytes, seconds: last - first }
}

async function recvSuperpacket(listen: Peer, reuseBuffers: boolean): Promise<Result> {
  const sock = await UdpSocket.bind({ address: listen.address, port: listen.port, reuseBuffers })
  let first = 0
  let last = 0
  const loop = (async () => {
    for await (const _ of sock) {
      last = now()
      if (first === 0) first = last
    }
  })()
  console.log('listening')
  await idleOrDeadline(() => last)
  const s = sock.stats()
  await sock.close()
  await loop
  return { datagrams: s.rxDatagrams, bytes: s.rxBytes, seconds: last - first, syscalls: s.rxSyscalls }
}

/** Resolves after `seconds`, or 1 s after traffic stopped. */
async function idleOrDeadline(lastArrival: () => number): Promise<void> {
  const end = now() + seconds
  for (;;) {
    await new Promise((r) => setTimeout(r, 200))
    const t = now()
    if (t >= end) return
    const l = lastArrival()
    if (l > 0 && t - l > 1) return
  }
}

let result: Result
if (positionals[0] === 'send') {
  const to = hostPort(o.to!)
  result = o.mode === 'dgram' ? await sendDgram(to) : await sendSuperpacket(to, o.mode!)
} else if (positionals[0] === 'recv') {
  const listen = hostPort(o.listen!)
  result = o.mode === 'dgram' ? await recvDgram(listen) : await recvSuperpacket(listen, o.mode === 'sp-gro-reuse')
} else {
  console.error('usage: udp-peer.js send|recv --mode ...')
  process.exit(64)
}
console.log(JSON.stringify(result))
process.exit(0)
