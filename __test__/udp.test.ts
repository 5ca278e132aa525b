import { execFileSync } from 'node:child_process'
import { createSocket } from 'node:dgram'
import { readdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { afterEach, describe, expect, it } from 'vitest'
import { Lab, stop, waitForLine } from '../tools/dist/lab/netns.js'
import { coalescePackets, SuperpacketError, UdpSocket, type DatagramBatch, type JsFramer, type UdpPeer } from 'superpacket'
import { useReadyWatches } from '../dist/fault.js'
import { FLOW, pattern, udp4 } from './helpers/packets.js'
import { privileged } from './helpers/privileged.js'
import { batchesUntilClosed, bindClosedAfterEach, plainReceiver } from './helpers/udp.js'

const bind = bindClosedAfterEach()

/** Receives until `want` datagrams arrived (5 s at most). */
async function receiveUntil(rx: UdpSocket, want: number): Promise<DatagramBatch[]> {
  const batches: DatagramBatch[] = []
  let n = 0
  const deadline = Date.now() + 5000
  while (n < want && Date.now() < deadline) {
    const b = await rx.receive({ signal: AbortSignal.timeout(Math.max(1, deadline - Date.now())) })
    batches.push(b)
    n += b.count
  }
  return batches
}

describe('UdpSocket on loopback', () => {
  it('sends 64 segments with GSO that arrive as 64 datagrams at a plain node:dgram socket', async () => {
    const s = await bind()
    expect(s.capabilities.gso).toBe(true)
    const { port, got } = await plainReceiver(64)
    const data = pattern(64 * 1000)
    await s.sendSegments({ address: '127.0.0.1', port }, data, 1000)
    const msgs = await got
    expect(msgs.map((m) => m.length)).toEqual(Array(64).fill(1000))
    expect(Buffer.concat(msgs).equals(data)).toBe(true)
    const st = s.stats()
    expect(st.txDatagrams).toBe(64)
    expect(st.txGsoSends).toBe(1)
    expect(st.txSyscalls).toBe(1)
  })

  it('receives a GSO burst as one GRO batch that reports the segment size', async () => {
    const rx = await bind()
    const tx = await bind()
    expect(rx.capabilities.gro).toBe(true)
    const data = pattern(20 * 1200 + 300)
    await tx.sendSegments(rx.address, data, 1200)
    const received: Buffer[] = []
    let maxSegment = 0
    const ac = new AbortController()
    const timer = setTimeout(() => ac.abort(), 5000)
    for await (const batch of rx.batches({ signal: ac.signal })) {
      for (const m of batch.messages) if (m.count > 1) maxSegment = Math.max(maxSegment, m.segmentSize)
      received.push(...batch.datagrams())
      if (received.length >= 21) break
    }
    clearTimeout(timer)
    expect(maxSegment).toBe(1200)
    expect(received.map((d) => d.length)).toEqual([...Array(20).fill(1200), 300])
    expect(Buffer.concat(received).equals(data)).toBe(true)
    expect(rx.stats().rxGroBatches).toBeGreaterThan(0)
  })

  it.each([true, false])('reuseBuffers %s: batches are views into one reused buffer only when asked, and hold the right bytes', async (reuse) => {
    const rx = await bind({ reuseBuffers: reuse })
    const tx = await bind()
    const buffers = new Set<ArrayBufferLike>()
    const ac = new AbortController()
    const timer = setTimeout(() => ac.abort(), 5000)
    const it = rx.batches({ signal: ac.signal })
    /** Without reuseBuffers: views kept uncopied across later receives, with the bytes they must hold. */
    const kept: [Buffer[], Buffer][] = []
    try {
      for (const fill of [0x11, 0x22, 0x33]) {
        const data = Buffer.alloc(10 * 1000, fill)
        await tx.sendSegments(rx.address, data, 1000)
        const got: Buffer[] = []
        while (got.length < 10) {
          const r = await it.next()
          if (r.done === true) throw new Error('iterator ended early')
          buffers.add(r.value.buffer.buffer)
          const views = r.value.datagrams()
          // With reuseBuffers copied before the next receive, as the option's contract asks.
          got.push(...views.map((d) => (reuse ? Buffer.from(d) : d)))
        }
        expect(Buffer.concat(got).equals(data)).toBe(true)
        if (!reuse) kept.push([got, data])
      }
    } finally {
      clearTimeout(timer)
      await it.return()
    }
    if (reuse) expect(buffers.size).toBe(1)
    // Each batch owns its bytes: later receives (into the same block) did not touch earlier ones.
    else for (const [views, data] of kept) expect(Buffer.concat(views).equals(data)).toBe(true)
  })

  it('sends a batch to several peers with one sendmmsg, each datagram with its source reported', async () => {
    const a = await bind()
    const b = await bind()
    const tx = await bind()
    await tx.sendBatch([
      { ...a.address, data: Buffer.from('to-a-1') },
      { ...b.address, data: Buffer.from('to-b') },
      { ...a.address, data: Buffer.from('to-a-2') },
    ])
    const fromA = [...(await a.receive())].map((d) => [d.data.toString(), d.port])
    if (fromA.length < 2) fromA.push(...[...(await a.receive())].map((d) => [d.data.toString(), d.port]))
    expect(fromA).toEqual([['to-a-1', tx.address.port], ['to-a-2', tx.address.port]])
    expect([...(await b.receive())].map((d) => d.data.toString())).toEqual(['to-b'])
    expect(tx.stats().txSyscalls).toBe(1)
  })

  it('seals segments in place with a JS framer called once per superpacket', async () => {
    const rx = await bind()
    const tx = await bind()
    let calls = 0
    const framer: JsFramer = {
      headroom: 8,
      tailroom: 1,
      seal({ slots, counter }) {
        calls++
        slots.forEach((slot, i) => {
          slot.writeBigUInt64BE(counter + BigInt(i), 0)
          slot[slot.length - 1] = 0xee
        })
      },
      open: (ds) => ds.map((d) => d.subarray(8, d.length - 1)),
    }
    const flow = { ...FLOW, dport: 7777 }
    const packets = Array.from({ length: 6 }, (_, i) => udp4(flow, pattern(1000, i + 1), 50 + i))
    const frames = coalescePackets(packets)
    expect(frames).toHaveLength(1)
    const w = tx.segmentWriter(rx.address, { framer })
    await w.write(frames[0]!)
    await w.write(frames[0]!)
    expect(calls).toBe(2)
    const got: Buffer[] = []
    while (got.length < 12) got.push(...(await rx.receive()).datagrams())
    got.forEach((d, i) => {
      expect(d.readBigUInt64BE(0)).toBe(BigInt(i))
      expect(d[d.length - 1]).toBe(0xee)
      expect(d.subarray(8, d.length - 1).equals(packets[i % 6]!)).toBe(true)
    })
  })

  it("an aborted receive rejects as Node's AbortError (ABORT_ERR, superpacketCode ERR_SUPERPACKET_ABORTED) and the datagram that arrives later is kept", async () => {
    const rx = await bind()
    const tx = await bind()
    const ac = new AbortController()
    const pending = rx.receive({ signal: ac.signal })
    const reason = new Error('stop')
    ac.abort(reason)
    await expect(pending).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR', superpacketCode: 'ERR_SUPERPACKET_ABORTED', cause: reason })
    await tx.send(rx.address, Buffer.from('later'))
    const batch = await rx.receive()
    expect(batch.datagrams()[0]!.toString()).toBe('later')
  })

  it('closing during a pending receive ends the iterator cleanly; later calls fail with ERR_SUPERPACKET_CLOSED', async () => {
    const rx = await UdpSocket.bind({ address: '127.0.0.1' })
    const t0 = Date.now()
    expect(await batchesUntilClosed(rx, 100)).toBe(0)
    expect(Date.now() - t0).toBeLessThan(3000)
    // Nothing holds the socket open any more: its port binds again at once.
    await (await UdpSocket.bind({ address: '127.0.0.1', port: rx.address.port })).close()
    let err: unknown
    try {
      await rx.send({ address: '127.0.0.1', port: 9 }, Buffer.from('x'))
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(SuperpacketError)
    expect((err as SuperpacketError).code).toBe('ERR_SUPERPACKET_CLOSED')
  })

  it('1,000 bind/close cycles leave the open descriptor count unchanged', async () => {
    await (await UdpSocket.bind({ address: '127.0.0.1' })).close()
    const before = readdirSync('/proc/self/fd').length
    for (let i = 0; i < 1000; i++) await (await UdpSocket.bind({ address: i % 2 ? '127.0.0.1' : '::1' })).close()
    expect(readdirSync('/proc/self/fd').length).toBe(before)
  })

  it('rejects bad arguments with ERR_SUPERPACKET_INVALID_ARGUMENT', async () => {
    const s = await bind()
    await expect(s.sendSegments({ address: 'nope', port: 1 }, Buffer.alloc(10), 5)).rejects.toMatchObject({ code: 'ERR_SUPERPACKET_INVALID_ARGUMENT' })
    await expect(s.sendSegments({ address: '127.0.0.1', port: 1 }, Buffer.alloc(10), 0)).rejects.toMatchObject({ code: 'ERR_SUPERPACKET_INVALID_ARGUMENT' })
    await expect(UdpSocket.bind({ address: '127.0.0.1', port: 70000 })).rejects.toMatchObject({ code: 'ERR_SUPERPACKET_INVALID_ARGUMENT' })
  })
})

if (privileged('UDP GSO fallback')) {
  describe('UdpSocket between namespaces', () => {
    let lab: Lab | undefined
    afterEach(() => lab?.destroy())

    it('when the kernel refuses a GSO send, resends it datagram by datagram and loses nothing', async () => {
      lab = new Lab('udpfb')
      const { a, b } = lab
      const trains = 20
      const segments = 40
      const recv = lab.node(b, 'lab/udpburst.js', ['recv', '--listen', `${b.outer4}:7000`, '--expect', String(trains * segments)])
      try {
        await waitForLine(recv, /listening\n/, 10_000)
        const result = waitForLine(recv, /(\{.*\})\n/, 30_000)
        // After 5 trains the sender switches UDP checksums off; the kernel then refuses GSO (EINVAL).
        const send = lab.node(a, 'lab/udpburst.js', ['send', '--to', `${b.outer4}:7000`, '--trains', String(trains), '--segments', String(segments), '--size', '1200', '--checksums-off-after', '5'])
        const sent = JSON.parse((await waitForLine(send, /(\{.*\})\n/, 30_000))[1]!) as { count: number; sha256: string; stats: { gsoFallbacks: number; txGsoSends: number }; capabilities: { gso: boolean } }
        const got = JSON.parse((await result)[1]!) as { count: number; sha256: string; inOrder: boolean; maxSegmentSize: number }
        expect(sent.stats.gsoFallbacks).toBe(1)
        expect(sent.stats.txGsoSends).toBe(5)
        expect(sent.capabilities.gso).toBe(false)
        expect(got.count).toBe(trains * segments)
        expect(got.inOrder).toBe(true)
        expect(got.sha256).toBe(sent.sha256)
        // The trains sent with GSO crossed the veth and arrived at the GRO socket still coalesced.
        expect(got.maxSegmentSize).toBe(1200)
      } finally {
        await stop(recv)
      }
    })
  })
}

describe('UdpSocket sends from the JS thread, peer handles and one-buffer batches', () => {
  /** Datagram i of a test: its index, then `len - 4` bytes derived from it. */
  function numbered(i: number, len: number): Buffer {
    const b = pattern(Math.max(len, 4), i + 1)
    b.writeUInt32BE(i, 0)
    return b
  }

  it('send() delivers every datagram intact and in order, to a peer handle and to a plain { address, port }', async () => {
    const s = await bind()
    const { port, got } = await plainReceiver(200)
    const handle = s.peer('127.0.0.1', port)
    expect(handle).toMatchObject({ address: '127.0.0.1', port })
    const plain = { address: '127.0.0.1', port }
    const sent = Array.from({ length: 200 }, (_, i) => numbered(i, 20 + (i % 100)))
    // Not awaited one by one: sends that find the socket full must still leave in order.
    await Promise.all(sent.map((d, i) => s.send(i % 2 ? handle : plain, d)))
    const msgs = await got
    expect(msgs.map((m) => m.readUInt32BE(0))).toEqual(sent.map((_, i) => i))
    expect(msgs.every((m, i) => m.equals(sent[i]!))).toBe(true)
    const st = s.stats()
    expect(st.txDatagrams).toBe(200)
    expect(st.txBytes).toBe(sent.reduce((n, d) => n + d.length, 0))
  })

  it('sendBatch(peer, buffer, lengths) sends one datagram per length, over several sendmmsg calls, in order', async () => {
    const s = await bind()
    const count = 150
    const { port, got } = await plainReceiver(count)
    const sent = Array.from({ length: count }, (_, i) => numbered(i, i % 5 === 0 ? 4 : 10 + ((i * 37) % 500)))
    const lengths = sent.map((d) => d.length)
    await s.sendBatch(s.peer('127.0.0.1', port), Buffer.concat(sent), lengths)
    const msgs = await got
    expect(msgs.map((m) => m.length)).toEqual(lengths)
    expect(Buffer.concat(msgs).equals(Buffer.concat(sent))).toBe(true)
    const st = s.stats()
    expect(st.txDatagrams).toBe(count)
    // Each 4-byte datagram (but the first) ends a GSO train with the longer one before it, as does any
    // shorter length after a longer one; sendmmsg carries at most 64 messages per call, so the 150
    // datagrams need 3 calls at most, and more than one (at most 75 trains).
    expect(st.txGsoSends).toBeGreaterThanOrEqual(count / 5 - 1)
    expect(st.txSyscalls).toBeLessThanOrEqual(Math.ceil(count / 64))
    expect(st.txSyscalls).toBeGreaterThan(1)
  })

  it('sendBatch(peer, buffer, lengths) sends runs of equal lengths, each with a shorter datagram after it, as GSO trains that arrive as the datagrams they were', async () => {
    const s = await bind()
    expect(s.capabilities.gso).toBe(true)
    const lengths = [...Array(40).fill(1000), 300, 300, 7, 1000]
    const { port, got } = await plainReceiver(lengths.length)
    const sent = lengths.map((len, i) => numbered(i, len))
    await s.sendBatch(s.peer('127.0.0.1', port), Buffer.concat(sent), new Uint32Array(lengths))
    const msgs = await got
    expect(msgs.map((m) => m.length)).toEqual(lengths)
    expect(Buffer.concat(msgs).equals(Buffer.concat(sent))).toBe(true)
    const st = s.stats()
    // Two trains (40 x 1000 with a 300 tail, 300 with a 7 tail) and the last 1000 alone, in one sendmmsg.
    expect(st.txGsoSends).toBe(2)
    expect(st.txSyscalls).toBe(1)
    expect(st.txDatagrams).toBe(lengths.length)
  })

  it('peer handles work for IPv6, for IPv4-mapped addresses and in sendSegments', async () => {
    const s6 = await bind({ address: '::1' })
    const r6 = await plainReceiver(3, 'udp6')
    const p6 = s6.peer('::1', r6.port)
    expect(p6).toMatchObject({ address: '::1', port: r6.port })
    await s6.send(p6, Buffer.from('six'))
    await s6.sendBatch(p6, Buffer.from('abcde'), new Uint32Array([2, 3]))
    expect((await r6.got).map(String)).toEqual(['six', 'ab', 'cde'])

    const s4 = await bind()
    const r4 = await plainReceiver(4)
    const mapped = s4.peer('::ffff:127.0.0.1', r4.port)
    await s4.send(mapped, Buffer.from('mapped'))
    await s4.sendSegments(mapped, Buffer.from('xxyyz'), 2)
    expect((await r4.got).map(String)).toEqual(['mapped', 'xx', 'yy', 'z'])
  })

  it('sendBatch(messages): runs to one peer go as trains, changing peers with sendmmsg, every datagram intact and in order', async () => {
    const [a, b, c] = [await bind(), await bind(), await bind()]
    const tx = await bind()
    const plan: [UdpSocket, number][] = [[a, 900], [a, 900], [a, 900], [b, 50], [a, 70], [c, 300], [c, 301], [a, 900], [b, 51]]
    const messages = plan.map(([to, len], i) => ({ address: '127.0.0.1', port: to.address.port, data: numbered(i, len) }))
    await tx.sendBatch(messages)
    for (const sock of [a, b, c]) {
      const want = messages.filter((m) => m.port === sock.address.port).map((m) => m.data)
      const got: Buffer[] = []
      for (const batch of await receiveUntil(sock, want.length)) for (const d of batch) got.push(Buffer.from(d.data))
      expect(got).toEqual(want)
    }
    const s = tx.stats()
    expect(s.txDatagrams).toBe(plan.length)
    // The first three (equal lengths to a) went as one GSO train.
    expect(s.txGsoSends).toBeGreaterThanOrEqual(1)
    expect(s.txSyscalls).toBeLessThan(plan.length)
  })

  it('rejects bad peers and lengths with ERR_SUPERPACKET_INVALID_ARGUMENT and sends nothing', async () => {
    const s = await bind()
    const invalid = { code: 'ERR_SUPERPACKET_INVALID_ARGUMENT' }
    for (const [address, port] of [['nope', 1], ['127.0.0.1', 0], ['127.0.0.1', 70_000], ['127.0.0.1', 1.5], ['::1', 9]] as const) {
      let err: unknown
      try {
        s.peer(address, port)
      } catch (e) {
        err = e
      }
      expect(err, `${address} ${port}`).toBeInstanceOf(SuperpacketError)
      expect(err, `${address} ${port}`).toMatchObject(invalid)
    }
    await expect(s.send({ address: '::1', port: 9 }, Buffer.from('x'))).rejects.toMatchObject(invalid)
    const peer = s.peer('127.0.0.1', 9)
    await expect(s.sendBatch(peer, Buffer.alloc(10), [4, 5])).rejects.toMatchObject(invalid)
    await expect(s.sendBatch(peer, Buffer.alloc(10), [4, 7])).rejects.toMatchObject(invalid)
    await expect(s.sendBatch(peer, Buffer.alloc(70_000), [70_000])).rejects.toMatchObject(invalid)
    await expect(s.sendBatch(peer, Buffer.alloc(4), 'no' as unknown as number[])).rejects.toMatchObject(invalid)
    // Data that is not bytes: the sends' plain N-API callbacks check the view's element type.
    for (const data of [new Uint16Array(4), 'text', new DataView(new ArrayBuffer(4)), undefined] as unknown as Uint8Array[]) {
      await expect(s.send(peer, data), String(data)).rejects.toMatchObject(invalid)
      await expect(s.sendSegments(peer, data, 2), String(data)).rejects.toMatchObject(invalid)
      await expect(s.sendBatch(peer, data, [4]), String(data)).rejects.toMatchObject(invalid)
    }
    expect(s.stats().txDatagrams).toBe(0)
    // The socket still sends.
    const { port, got } = await plainReceiver(1)
    await s.send(s.peer('127.0.0.1', port), new Uint8Array([1, 2, 3]))
    expect((await got).map((m) => [...m])).toEqual([[1, 2, 3]])
  })
})

describe('UdpSocket in worker threads', () => {
  it('sockets of a worker and of the main thread send side by side, each from its own socket', async () => {
    const count = 5
    // Each datagram with the port it came from.
    const sink = createSocket('udp4')
    const got: string[] = []
    sink.on('message', (m, from) => got.push(`${m} ${from.port}`))
    await new Promise<void>((resolve) => sink.bind(0, '127.0.0.1', resolve))
    const port = sink.address().port
    try {
      const worker = new Worker(new URL('./helpers/udp-worker.mjs', import.meta.url), { workerData: { port, count } })
      const reported = new Promise<{ a: number; b: number }>((resolve, reject) => {
        worker.once('message', resolve)
        worker.once('error', reject)
      })
      const s = await bind()
      for (let i = 0; i < count; i++) await s.send(s.peer('127.0.0.1', port), Buffer.from(`main-${i}`))
      const ports = await reported
      await worker.terminate()
      // The worker's sockets are gone; the main thread's still sends.
      for (let i = count; i < 2 * count; i++) await s.send(s.peer('127.0.0.1', port), Buffer.from(`main-${i}`))
      const want = [
        ...Array.from({ length: 2 * count }, (_, i) => `main-${i} ${s.address.port}`),
        ...Array.from({ length: count }, (_, i) => `worker-a-${i} ${ports.a}`),
        ...Array.from({ length: count }, (_, i) => `worker-b-${i} ${ports.b}`),
      ]
      for (let t = 0; t < 100 && got.length < want.length; t++) await new Promise((r) => setTimeout(r, 20))
      expect(got.sort()).toEqual(want.sort())
    } finally {
      sink.close()
    }
  })
})

describe('UdpSocket receives wait on the event loop of their thread', () => {
  it('a worker that ends while its receive waits ends cleanly, and the main thread receives on', async () => {
    const worker = new Worker(new URL('./helpers/udp-recv-worker.mjs', import.meta.url))
    const messages: Record<string, unknown>[] = []
    let next: (() => void) | undefined
    worker.on('message', (m: Record<string, unknown>) => {
      messages.push(m)
      next?.()
    })
    const failed = new Promise<never>((_, reject) => worker.once('error', reject))
    const until = async (key: string): Promise<Record<string, unknown>> => {
      for (let t = 0; t < 200; t++) {
        const m = messages.find((x) => key in x)
        if (m !== undefined) return m
        await Promise.race([new Promise<void>((r) => ((next = r), setTimeout(r, 50))), failed])
      }
      throw new Error(`the worker never reported ${key}`)
    }
    const { port } = (await until('port')) as { port: number }
    const tx = await bind()
    await tx.send(tx.peer('127.0.0.1', port), Buffer.from('to the worker'))
    expect((await until('got')).got).toBe('to the worker')
    await until('waiting')
    expect(await worker.terminate()).toBe(1)
    // This thread's sockets receive as before.
    const rx = await bind()
    const got = rx.receive({ signal: AbortSignal.timeout(5000) })
    await tx.send(rx.address, Buffer.from('to the main thread'))
    expect((await got).datagrams()[0]!.toString()).toBe('to the main thread')
  })

  it('without the watch (a runtime without libuv), receives wait natively: datagrams arrive, close ends the wait', async () => {
    useReadyWatches(false)
    try {
      const rx = await UdpSocket.bind({ address: '127.0.0.1' })
      const tx = await bind()
      const first = rx.receive({ signal: AbortSignal.timeout(5000) })
      setTimeout(() => void tx.send(rx.address, Buffer.from('native wait')), 50)
      expect((await first).datagrams()[0]!.toString()).toBe('native wait')
      expect(await batchesUntilClosed(rx, 50)).toBe(0)
    } finally {
      useReadyWatches(true)
    }
  })

  it('a socket that received and is dropped without close() is collected: descriptors closed, port free', () => {
    const out = execFileSync(process.execPath, ['--expose-gc', fileURLToPath(new URL('./helpers/udp-gc.mjs', import.meta.url))], {
      encoding: 'utf8',
      timeout: 30_000,
    })
    const r = JSON.parse(out.trim().split('\n').pop()!) as { before: number; during: number; after: number; rebound: boolean }
    expect(r.during).toBeGreaterThan(r.before)
    expect(r.after).toBe(r.before)
    expect(r.rebound).toBe(true)
  })
})

describe('UdpSocket receives straight into JS memory, with offsets, lengths and source handles', () => {
  it.each([false, true])('reuseBuffers %s: GRO trains and single datagrams from three sources, each datagram at its offset, one handle per source', async (reuse) => {
    const rx = await bind({ reuseBuffers: reuse })
    const [a, b, c] = [await bind(), await bind(), await bind()]
    const train = pattern(20 * 1200, 7)
    await a.sendSegments(rx.address, train, 1200)
    await b.send(rx.address, Buffer.from('small from b'))
    await c.send(rx.address, pattern(3000, 9))
    await a.send(rx.address, Buffer.from('again from a'))
    const batches = await receiveUntil(rx, 23)
    const got: { data: Buffer; port: number; peer: UdpPeer }[] = []
    for (const batch of batches) {
      const views = batch.datagrams()
      expect(views.length).toBe(batch.count)
      expect(batch.lengths.length).toBe(batch.count)
      for (let i = 0; i < batch.count; i++) {
        const at = batch.offsets[i]!
        expect(batch.buffer.subarray(at, at + batch.lengths[i]!).equals(views[i]!)).toBe(true)
      }
      // Copied before the next receive (the reuseBuffers contract).
      for (const d of batch) got.push({ data: Buffer.from(d.data), port: d.port, peer: d.peer })
    }
    expect(got.length).toBe(23)
    expect(Buffer.concat(got.slice(0, 20).map((d) => d.data)).equals(train)).toBe(true)
    expect(got.slice(20).map((d) => d.data.length)).toEqual([12, 3000, 12])
    expect(got[22]!.data.toString()).toBe('again from a')
    expect(got.map((d) => d.port)).toEqual([...Array(20).fill(a.address.port), b.address.port, c.address.port, a.address.port])
    // One handle per source, the same object across messages and batches.
    expect(new Set(got.map((d) => d.peer)).size).toBe(3)
    expect(got[22]!.peer).toBe(got[0]!.peer)
    expect(got[21]!.peer).toMatchObject({ address: '127.0.0.1', port: c.address.port })
    // The handle is a destination: a reply to it arrives at the source.
    await rx.send(got[21]!.peer, Buffer.from('reply'))
    const reply = await c.receive({ signal: AbortSignal.timeout(5000) })
    expect([...reply].map((d) => [d.data.toString(), d.port])).toEqual([['reply', rx.address.port]])
  })

  it('batches kept without reuseBuffers keep their bytes while later batches arrive', async () => {
    const rx = await bind()
    const tx = await bind()
    const kept: DatagramBatch[] = []
    for (let i = 0; i < 40; i++) {
      await tx.send(rx.address, pattern(100 + i, i))
      kept.push(...(await receiveUntil(rx, 1)))
    }
    const all = kept.flatMap((b) => b.datagrams())
    expect(all.length).toBe(40)
    all.forEach((d, i) => expect(d.equals(pattern(100 + i, i))).toBe(true))
  })

  it('more sources than the table holds (1,024): every datagram still names its own source', async () => {
    const rx = await bind()
    const n = 1100
    const senders = Array.from({ length: n }, () => createSocket('udp4'))
    try {
      await Promise.all(senders.map((s) => new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve))))
      const got = new Map<number, number>()
      const seen = new Set<UdpPeer>()
      for (let start = 0; start < n; start += 100) {
        // 100 at a time: well inside the receive buffer.
        const chunk = senders.slice(start, start + 100)
        for (const s of chunk) s.send(String(s.address().port), rx.address.port, '127.0.0.1')
        for (const batch of await receiveUntil(rx, chunk.length)) {
          for (const d of batch) {
            expect(Number(d.data.toString())).toBe(d.port)
            expect(d.peer.port).toBe(d.port)
            got.set(d.port, (got.get(d.port) ?? 0) + 1)
            seen.add(d.peer)
          }
        }
      }
      expect(got.size).toBe(n)
      expect([...got.values()].every((c) => c === 1)).toBe(true)
      expect(seen.size).toBe(n)
    } finally {
      for (const s of senders) s.close()
    }
  })
})
