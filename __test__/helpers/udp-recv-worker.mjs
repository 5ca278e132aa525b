// Runs in a worker thread of __test__/udp.test.ts: receives one datagram on a socket of its own (the
// receive waits on the worker's event loop), reports it, then leaves a second receive waiting and says so.
// The test ends the worker in that state: its env must close what it watches, or Node aborts the process.
import { parentPort } from 'node:worker_threads'
import { fileURLToPath } from 'node:url'

const { UdpSocket } = await import(fileURLToPath(new URL('../../dist/index.js', import.meta.url)))
const rx = await UdpSocket.bind({ address: '127.0.0.1' })
parentPort.postMessage({ port: rx.address.port })
const first = await rx.receive({ signal: AbortSignal.timeout(10_000) })
parentPort.postMessage({ got: first.datagrams()[0].toString() })
void rx.receive().catch(() => {})
parentPort.postMessage({ waiting: true })
