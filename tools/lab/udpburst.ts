/**
 * UDP trains for the tests: `send` sends GSO trains of numbered datagrams with superpacket's UdpSocket,
 * `recv` receives them (GRO) and reports what arrived. Each prints one JSON line.
 *
 *   node tools/dist/lab/udpburst.js recv --listen 198.18.100.2:7000 --expect 1000 [--timeout 20]
 *   node tools/dist/lab/udpburst.js send --to 198.18.100.2:7000 --trains 50 --segments 20 --size 1200
 * @internal
 * @module
 */
import { createHash } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { hostPort } from './args.js'
import { UdpSocket } from 'superpacket'

const { positionals, values: o } = parseArgs({
  allowPositionals: true,
  options: {
    listen: { type: 'string' },
    to: { type: 'string' },
    expect: { type: 'string', default: '0' },
    trains: { type: 'string', default: '50' },
    segments: { type: 'string', default: '20' },
    size: { type: 'string', default: '1200' },
    timeout: { type: 'string', default: '20' },
    'checksums-off-after': { type: 'string', default: '-1' },
  },
})


/** Datagram i: its index, then bytes derived from it. */
function datagram(i: number, size: number): Buffer {
  const b = Buffer.alloc(size)
  b.writeUInt32BE(i, 0)
  for (let k = 4; k < size; k++) b[k] = (i * 31 + k) & 0xff
  return b
}

if (positionals[0] === 'recv') {
  const l = hostPort(o.listen!)
  const sock = await UdpSocket.bind({ address: l.address, port: l.port })
  const expect = Number(o.expect)
  const hash = createHash('sha256')
  let count = 0
  let inOrder = true
  let maxSegmentSize = 0
  const timer = setTimeout(() => void sock.close(), Number(o.timeout) * 1000)
  console.log('listening')
  outer: for await (const batch of sock) {
    for (const m of batch.messages) maxSegmentSize = Math.max(maxSegmentSize, m.count > 1 ? m.segmentSize : 0)
    for (const d of batch.datagrams()) {
      if (d.readUInt32BE(0) !== count) inOrder = false
      hash.update(d)
      if (++count >= expect) break outer
    }
  }
  clearTimeout(timer)
  const stats = sock.stats()
  await sock.close()
  console.log(JSON.stringify({ count, inOrder, sha256: hash.digest('hex'), maxSegmentSize, stats }))
} else if (positionals[0] === 'send') {
  const to = hostPort(o.to!)
  const sock = await UdpSocket.bind({ address: to.address.includes(':') ? '::' : '0.0.0.0', port: 0 })
  const size = Number(o.size)
  const segments = Number(o.segments)
  const hash = createHash('sha256')
  let i = 0
  for (let t = 0; t < Number(o.trains); t++) {
    if (t === Number(o['checksums-off-after'])) sock.setUdpChecksums(false)
    const train = Buffer.concat(Array.from({ length: segments }, () => datagram(i++, size)))
    hash.update(train)
    await sock.sendSegments(to, train, size)
    await sleep(2)
  }
  const stats = sock.stats()
  const capabilities = sock.capabilities
  await sock.close()
  console.log(JSON.stringify({ count: i, sha256: hash.digest('hex'), stats, capabilities }))
} else {
  console.error('usage: udpburst.js recv|send ...')
  process.exit(64)
}
