import dgram from 'node:dgram'
import { afterEach } from 'vitest'
import { UdpSocket } from 'superpacket'

/**
 * A `bind` for one test file: binds superpacket sockets on 127.0.0.1 (options merged in) and closes every
 * one after each test. Call it at the top level of the file.
 */
export function bindClosedAfterEach(): (opts?: Partial<Parameters<typeof UdpSocket.bind>[0]>) => Promise<UdpSocket> {
  const open: UdpSocket[] = []
  afterEach(async () => {
    for (const s of open.splice(0)) await s.close()
  })
  return async (opts = {}) => {
    const s = await UdpSocket.bind({ address: '127.0.0.1', port: 0, ...opts })
    open.push(s)
    return s
  }
}

/**
 * A node:dgram socket on loopback that collects `count` datagrams, then closes; `got` rejects after 10 s
 * with how many arrived.
 */
export function plainReceiver(count: number, type: 'udp4' | 'udp6' = 'udp4'): Promise<{ port: number; got: Promise<Buffer[]> }> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket(type)
    const msgs: Buffer[] = []
    const got = new Promise<Buffer[]>((done, fail) => {
      const t = setTimeout(() => {
        sock.close()
        fail(new Error(`only ${msgs.length} of ${count} datagrams arrived`))
      }, 10_000)
      sock.on('message', (m) => {
        msgs.push(m)
        if (msgs.length === count) {
          clearTimeout(t)
          sock.close()
          done(msgs)
        }
      })
    })
    sock.bind(0, type === 'udp4' ? '127.0.0.1' : '::1', () => {
      // The sender may run before this process reads: room for a few hundred datagrams (the kernel caps it
      // at net.core.rmem_max).
      sock.setRecvBufferSize(8 << 20)
      resolve({ port: sock.address().port, got })
    })
  })
}

/** Iterates `sock`, closing it after `ms` milliseconds; resolves with the number of batches seen before it ended. */
export async function batchesUntilClosed(sock: UdpSocket, ms: number): Promise<number> {
  setTimeout(() => void sock.close(), ms)
  let n = 0
  for await (const _ of sock) n++
  return n
}
