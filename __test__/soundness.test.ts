// Misuse of buffers through the public API never reaches native code as aliasing or a dangling pointer:
// each misuse gives a coded error or distinct, correct data, and the process lives on.
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { MessageChannel } from 'node:worker_threads'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { run } from '../tools/dist/lab/netns.js'
import { coalescePackets, SuperpacketAbortError, SuperpacketError, UdpSocket, type DatagramBatch, type JsFramer } from '../dist/index.js'
import { FLOW, pattern, udp4 } from './helpers/packets.js'
import { privileged } from './helpers/privileged.js'
import { bindClosedAfterEach } from './helpers/udp.js'

const bind = bindClosedAfterEach()

/** Detaches `ab` the way a transfer to another thread does; returns the ArrayBuffer that now owns its memory. */
type Detach = (ab: ArrayBuffer) => Promise<ArrayBuffer>
const DETACHES: [string, Detach][] = [
  ['structuredClone with transfer', async (ab) => structuredClone(ab, { transfer: [ab] })],
  [
    'MessageChannel transfer',
    (ab) =>
      new Promise((resolve) => {
        const { port1, port2 } = new MessageChannel()
        port2.once('message', (m: ArrayBuffer) => {
          port1.close()
          resolve(m)
        })
        port1.postMessage(ab, [ab])
      }),
  ],
]

function texts(b: DatagramBatch): string[] {
  return b.datagrams().map((d) => d.toString())
}

/** Rejects with what `p` rejected with, or fails if it resolved. */
async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p
  } catch (err) {
    return err
  }
  throw new Error('expected a rejection')
}

describe('buffer soundness: UDP sockets on loopback', () => {
  it.each(DETACHES)(
    'reuseBuffers: detaching the receive buffer (%s) during a pending receive leaves the moved bytes alone and the receive gets the right data',
    async (_, detach) => {
      const rx = await bind({ reuseBuffers: true })
      const tx = await bind()
      await tx.send(rx.address, Buffer.from('first'))
      const first = await rx.receive()
      expect(texts(first)).toEqual(['first'])
      const pending = rx.receive()
      // The memory the first batch lives in moves to another owner while the receive waits.
      const moved = await detach(first.buffer.buffer as ArrayBuffer)
      expect(first.buffer.byteLength).toBe(0)
      const movedView = Buffer.from(moved, first.buffer.byteOffset, 'first'.length)
      await tx.send(rx.address, Buffer.from('second'))
      const second = await pending
      expect(texts(second)).toEqual(['second'])
      // Nothing was written into the memory that moved away.
      expect(movedView.toString()).toBe('first')
      expect(second.buffer.buffer).not.toBe(moved)
      // Later receives go on in the new buffer.
      await tx.send(rx.address, Buffer.from('third'))
      expect(texts(await rx.receive())).toEqual(['third'])
    },
  )

  it('reuseBuffers: a second receive while one is pending fails with ERR_SUPERPACKET_BUSY and the first gets the datagram', async () => {
    const rx = await bind({ reuseBuffers: true })
    const tx = await bind()
    const first = rx.receive()
    const err = await rejection(rx.receive())
    expect(err).toBeInstanceOf(SuperpacketError)
    expect((err as SuperpacketError).code).toBe('ERR_SUPERPACKET_BUSY')
    await tx.send(rx.address, Buffer.from('only'))
    expect(texts(await first)).toEqual(['only'])
  })

  it('without reuseBuffers: concurrent receives and two iterators get distinct datagrams, each exactly once', async () => {
    const rx = await bind()
    const tx = await bind()
    const a = rx.receive()
    const b = rx.receive()
    await tx.send(rx.address, Buffer.from('a'))
    expect(texts(await a)).toEqual(['a'])
    // The second receive waited for its turn: it gets the next datagram, not the first one again.
    await tx.send(rx.address, Buffer.from('b'))
    expect(texts(await b)).toEqual(['b'])

    const total = 200
    const seen: string[] = []
    const ac = new AbortController()
    const consume = async (): Promise<void> => {
      for await (const batch of rx.batches({ signal: ac.signal })) {
        seen.push(...texts(batch))
        if (seen.length >= total) ac.abort()
      }
    }
    const iterators = [consume(), consume()].map((p) => p.catch((e: unknown) => (e instanceof SuperpacketAbortError ? undefined : Promise.reject(e))))
    const timer = setTimeout(() => ac.abort(), 10_000)
    for (let i = 0; i < total; i++) await tx.send(rx.address, Buffer.from(`d${i}`))
    await Promise.all(iterators)
    clearTimeout(timer)
    expect(seen).toHaveLength(total)
    expect(new Set(seen).size).toBe(total)
  })

  it('reuseBuffers: a write still sealing views of a received batch holds the buffer: the next receive fails with ERR_SUPERPACKET_BUSY, the sent bytes are the ones received', async () => {
    const rx = await bind({ reuseBuffers: true })
    const tx = await bind()
    const sink = await bind()
    let release!: () => void
    const sealing = new Promise<void>((r) => (release = r))
    const framer: JsFramer = { headroom: 0, tailroom: 0, seal: () => sealing, open: (ds) => ds }
    const w = rx.segmentWriter(sink.address, { framer })
    // Two frames (virtio header + IP packet) arrive as two datagrams in one batch of the reused buffer.
    const flow = { ...FLOW, dport: 7000 }
    const frames = [0, 1].map((k) => coalescePackets(Array.from({ length: 3 }, (_, i) => udp4(flow, pattern(500, 10 * k + i + 1), 100 + i)))[0]!)
    await tx.send(rx.address, frames[0]!)
    await tx.send(rx.address, frames[1]!)
    const views: Buffer[] = []
    while (views.length < 2) views.push(...(await rx.receive()).datagrams())
    const expected = views.map((v) => Buffer.from(v))
    const writing = w.write(views) // not awaited: the framer is still sealing the first superpacket
    const err = await rejection(rx.receive())
    expect((err as SuperpacketError).code).toBe('ERR_SUPERPACKET_BUSY')
    // Nothing overwrote the views the write reads after its await.
    expect(views.map((v) => Buffer.from(v))).toEqual(expected)
    release()
    await writing
    const out: Buffer[] = []
    while (out.length < 6) out.push(...(await sink.receive()).datagrams().map((d) => Buffer.from(d)))
    // The six datagrams are the six IP packets the two frames stand for, in order.
    const packets = [0, 1].flatMap((k) => Array.from({ length: 3 }, (_, i) => udp4(flow, pattern(500, 10 * k + i + 1), 100 + i)))
    expect(out.map((d) => d.subarray(28))).toEqual(packets.map((p) => p.subarray(28)))
    // The buffer is free again.
    await tx.send(rx.address, Buffer.from('after'))
    expect(texts(await rx.receive())).toEqual(['after'])
  })

  it("aborts reject with Node's AbortError and say what was sent: before a send (nothing), between superpackets (the first whole)", async () => {
    const tx = await bind()
    const sink = await bind()
    const reason = new Error('stop')
    const ac = new AbortController()
    ac.abort(reason)
    const early = await rejection(tx.sendSegments(sink.address, pattern(4000, 1), 1000, { signal: ac.signal }))
    expect(early).toBeInstanceOf(SuperpacketAbortError)
    expect(early).toMatchObject({ name: 'AbortError', code: 'ABORT_ERR', superpacketCode: 'ERR_SUPERPACKET_ABORTED', cause: reason, sent: 0 })

    const late = new AbortController()
    const framer: JsFramer = {
      headroom: 0,
      tailroom: 0,
      seal: () => {
        late.abort() // while the first superpacket is being sealed
      },
      open: (ds) => ds,
    }
    const flow = { ...FLOW, dport: 7001 }
    const frames = [0, 1, 2].map((k) => coalescePackets(Array.from({ length: 2 }, (_, i) => udp4(flow, pattern(300, 10 * k + i + 1), 200 + i)))[0]!)
    const w = tx.segmentWriter(sink.address, { framer })
    const err = await rejection(w.write(frames, { signal: late.signal }))
    expect(err).toMatchObject({ name: 'AbortError', code: 'ABORT_ERR', sent: 1 })
    // The first superpacket's two datagrams went out whole, then nothing: the marker comes next.
    await tx.send(sink.address, Buffer.from('marker'))
    const got: string[] = []
    while (!got.includes('marker')) got.push(...(await sink.receive()).datagrams().map((d) => (d.length === 6 ? d.toString() : `len${d.length}`)))
    expect(got).toEqual(['len328', 'len328', 'marker'])
  })
})

const MISUSE = fileURLToPath(new URL('./helpers/tun-misuse.mjs', import.meta.url))
/** A namespace of this test file, removed afterwards. */
const ns = `sp-sound-${process.pid}-${randomBytes(2).toString('hex')}`

if (privileged('TUN')) {
  describe('buffer soundness: TUN (inside a namespace of the test)', () => {
    let r: Record<string, Record<string, unknown>>
    beforeAll(() => {
      run('ip', ['netns', 'add', ns])
      run('ip', ['-n', ns, 'link', 'set', 'lo', 'up'])
      // No IPv6: the TUN then sees only what the script sends (no router solicitations in between).
      run('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1'])
      const out = execFileSync('ip', ['netns', 'exec', ns, process.execPath, MISUSE], { encoding: 'utf8', timeout: 120_000 })
      r = JSON.parse(out.trim().split('\n').pop()!) as typeof r
    }, 130_000)
    afterAll(() => {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' })
    })

    it('PacketWriter.write left un-awaited while the next receive reuses the batch buffer: every packet reaches the TUN once and intact', () => {
      const w = r.writeThenRead!
      expect(w.written).toBe(w.expected)
      expect(w.received).toBe(w.expected)
      expect(w.distinct).toBe(w.expected)
      expect(w.intact).toBe(true)
    })

    it('two reads of one queue at once: distinct frames without reuseBuffers, ERR_SUPERPACKET_BUSY with it (and no frame lost)', () => {
      expect(r.concurrentReads).toEqual({ first: ['c-one'], second: ['c-two'] })
      expect(r.concurrentReadsReuse).toEqual({ first: ['c-one'], second: { error: 'ERR_SUPERPACKET_BUSY' }, after: ['c-two', 'c-three'] })
    })

    it('two iterators on one queue: each frame goes to exactly one of them', () => {
      expect(r.twoIterators).toEqual({ total: 100, seen: 100, distinct: 100 })
    })

    it("PacketWriter.write and Tun.write with an aborted signal reject with Node's AbortError, sent 0, and write nothing", () => {
      const abort = { name: 'AbortError', code: 'ABORT_ERR', superpacketCode: 'ERR_SUPERPACKET_ABORTED', sent: 0, cause: 'stop' }
      expect(r.abortedWrites).toEqual({ writerError: abort, tunWriteError: abort, got: ['ab-marker'] })
    })

    it.each(['structuredClone', 'MessageChannel'])('reuseBuffers: detaching the read buffer (%s) during a pending read: the right frame arrives and the moved memory is untouched', (how) => {
      expect(r[`detach-${how}`]).toEqual({ detached: true, second: 'd-second', movedIntact: true })
    })
  })
}
