/**
 * A TCP transfer for the demo and the tests: `recv` listens and reports what arrived, `send` connects and
 * sends pseudo-random bytes. Both print one JSON line: bytes, sha256, seconds.
 *
 *   node tools/dist/demo/tcp.js recv --listen 198.18.100.2:5201
 *   node tools/dist/demo/tcp.js send --to 198.18.100.2:5201 --bytes 268435456
 * @internal
 * @module
 */
import { createHash, randomFillSync } from 'node:crypto'
import { createConnection, createServer } from 'node:net'
import { parseArgs } from 'node:util'
import { hostPort } from '../lab/args.js'

const { positionals, values: o } = parseArgs({
  allowPositionals: true,
  options: {
    listen: { type: 'string' },
    to: { type: 'string' },
    bytes: { type: 'string', default: String(64 << 20) },
    timeout: { type: 'string', default: '120' },
  },
})


const timeout = setTimeout(() => {
  console.error('tcp: timed out')
  process.exit(2)
}, Number(o.timeout) * 1000)

if (positionals[0] === 'recv') {
  const { address: host, port } = hostPort(o.listen!)
  const server = createServer((conn) => {
    const hash = createHash('sha256')
    let bytes = 0
    const t0 = process.hrtime.bigint()
    conn.on('data', (d: Buffer) => {
      hash.update(d)
      bytes += d.length
    })
    conn.on('end', () => {
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9
      console.log(JSON.stringify({ bytes, sha256: hash.digest('hex'), seconds }))
      clearTimeout(timeout)
      server.close()
      conn.end()
    })
  })
  server.listen(port, host, () => console.log('listening'))
} else if (positionals[0] === 'send') {
  const { address: host, port } = hostPort(o.to!)
  const total = Number(o.bytes)
  const hash = createHash('sha256')
  let sent = 0
  const t0 = process.hrtime.bigint()
  const conn = createConnection({ host, port }, () => {
    const pump = () => {
      while (sent < total) {
        const n = Math.min(1 << 20, total - sent)
        const piece = randomFillSync(Buffer.allocUnsafe(n))
        hash.update(piece)
        sent += n
        if (!conn.write(piece)) return void conn.once('drain', pump)
      }
      conn.end()
    }
    pump()
  })
  conn.on('close', () => {
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9
    console.log(JSON.stringify({ bytes: sent, sha256: hash.digest('hex'), seconds }))
    clearTimeout(timeout)
  })
  conn.on('error', (e) => {
    console.error(`tcp: ${e.message}`)
    process.exit(1)
  })
} else {
  console.error('usage: tcp.js recv --listen host:port | send --to host:port --bytes N')
  process.exit(64)
}
