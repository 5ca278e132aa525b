// Run as `node --expose-gc udp-gc.mjs`: a socket that received (so its receive waited on the event loop)
// and is then dropped without close() is collected, its descriptors closed and its port free again.
// Prints one JSON line with what it saw.
import { readdirSync } from 'node:fs'
import { createSocket } from 'node:dgram'
import { fileURLToPath } from 'node:url'
import { setImmediate as tick } from 'node:timers/promises'

const { UdpSocket } = await import(fileURLToPath(new URL('../../dist/index.js', import.meta.url)))
const fds = () => readdirSync('/proc/self/fd').length
const tx = createSocket('udp4')
await new Promise((resolve) => tx.bind(0, '127.0.0.1', resolve))
// A first socket, closed, so that whatever the library opens once (the runtime) is open before counting.
await (await UdpSocket.bind({ address: '127.0.0.1' })).close()
const before = fds()
let port = 0
let during = 0
await (async () => {
  const rx = await UdpSocket.bind({ address: '127.0.0.1' })
  port = rx.address.port
  const got = rx.receive({ signal: AbortSignal.timeout(10_000) })
  await tick()
  tx.send('x', port, '127.0.0.1')
  await got
  during = fds()
})()
let after = during
for (let i = 0; i < 50 && after !== before; i++) {
  globalThis.gc()
  await tick()
  await new Promise((r) => setTimeout(r, 10))
  after = fds()
}
let rebound = false
try {
  await (await UdpSocket.bind({ address: '127.0.0.1', port })).close()
  rebound = true
} catch {}
tx.close()
console.log(JSON.stringify({ before, during, after, rebound }))
