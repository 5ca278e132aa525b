// Runs in a worker thread of __test__/udp.test.ts: binds two UDP sockets of its own (numbered in the
// worker's table of sockets, apart from the main thread's) and sends `count` datagrams to 127.0.0.1:`port`
// through two send forms, then reports the sockets' ports.
import { parentPort, workerData } from 'node:worker_threads'
import { fileURLToPath } from 'node:url'

const { UdpSocket } = await import(fileURLToPath(new URL('../../dist/index.js', import.meta.url)))
const { port, count } = workerData
const a = await UdpSocket.bind({ address: '127.0.0.1' })
const b = await UdpSocket.bind({ address: '127.0.0.1' })
for (let i = 0; i < count; i++) {
  await a.send(a.peer('127.0.0.1', port), Buffer.from(`worker-a-${i}`))
  await b.sendSegments(b.peer('127.0.0.1', port), Buffer.from(`worker-b-${i}`), 64)
}
const ports = { a: a.address.port, b: b.address.port }
await a.close()
await b.close()
parentPort.postMessage(ports)
