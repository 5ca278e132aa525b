// Runs inside a network namespace of __test__/soundness.test.ts (loopback up, IPv6 off, nothing else): misuses
// TUN buffers through the public API and prints one JSON line with what happened. Addresses: 198.18.0.0/24.
import dgram from 'node:dgram'
import { fileURLToPath } from 'node:url'

const dist = fileURLToPath(new URL('../../dist/index.js', import.meta.url))
const { Tun, UdpSocket } = await import(dist)

const TUN_ADDR = '198.18.0.1'
const PEER_ADDR = '198.18.0.2'
/** Every wait is bounded. */
const WAIT_MS = 10_000

function withTimeout(p, what) {
  let timer
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), WAIT_MS))),
  ])
}

function checksum(buf, start, end, seed = 0) {
  let sum = seed
  for (let i = start; i < end; i += 2) sum += (buf[i] << 8) | (i + 1 < end ? buf[i + 1] : 0)
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
  return sum
}

/** An IPv4/UDP packet from PEER_ADDR:40000 to TUN_ADDR:port with valid checksums. */
function udp4(port, payload, id) {
  const ip = Buffer.alloc(28 + payload.length)
  ip[0] = 0x45
  ip.writeUInt16BE(ip.length, 2)
  ip.writeUInt16BE(id & 0xffff, 4)
  ip[8] = 64
  ip[9] = 17
  Buffer.from(PEER_ADDR.split('.').map(Number)).copy(ip, 12)
  Buffer.from(TUN_ADDR.split('.').map(Number)).copy(ip, 16)
  ip.writeUInt16BE(~checksum(ip, 0, 20) & 0xffff, 10)
  ip.writeUInt16BE(40000, 20)
  ip.writeUInt16BE(port, 22)
  ip.writeUInt16BE(8 + payload.length, 24)
  payload.copy(ip, 28)
  const pseudo = Buffer.concat([ip.subarray(12, 20), Buffer.from([0, 17, (8 + payload.length) >> 8, (8 + payload.length) & 0xff])])
  const c = ~checksum(ip, 20, ip.length, checksum(pseudo, 0, pseudo.length)) & 0xffff
  ip.writeUInt16BE(c === 0 ? 0xffff : c, 26)
  return ip
}

/** The UDP payload of a TUN frame (virtio header + IPv4/UDP), or null for anything else. */
function payloadOf(frame) {
  const ip = frame.subarray(10)
  if (ip.length < 28 || ip[0] >> 4 !== 4 || ip[9] !== 17) return null
  return ip.subarray((ip[0] & 15) * 4 + 8).toString()
}

async function bindDgram(address) {
  const s = dgram.createSocket('udp4')
  await new Promise((resolve) => s.bind(0, address, resolve))
  return s
}

const send = (sock, text) => new Promise((resolve, reject) => sock.send(text, 9, PEER_ADDR, (e) => (e ? reject(e) : resolve())))

/** Reads until a frame with a payload starting with `prefix` arrives; returns that payload. */
async function readPayload(read, prefix) {
  for (let i = 0; i < 100; i++) {
    for (const sp of await withTimeout(read(), 'a TUN read')) {
      const p = payloadOf(sp.frame)
      if (p?.startsWith(prefix)) return p
    }
  }
  throw new Error(`no ${prefix} frame in 100 reads`)
}

const result = {}

// 1. PacketWriter.write left un-awaited while the next receive overwrites the reused batch buffer: every
//    packet still reaches the TUN exactly once and intact (the write copied the batch at the call).
{
  const tun = await Tun.open({ name: 'spm0', mtu: 1500, ipv4: `${TUN_ADDR}/24` })
  const sink = await bindDgram(TUN_ADDR)
  sink.setRecvBufferSize(8 << 20)
  const sinkPort = sink.address().port
  const got = []
  sink.on('message', (m) => got.push(m.toString()))
  const rx = await UdpSocket.bind({ address: '127.0.0.1', reuseBuffers: true })
  const tx = await UdpSocket.bind({ address: '127.0.0.1' })
  const w = tun.packetWriter()
  const ROUNDS = 40
  const PER = 8
  const expected = []
  const pkt = (r, i) => {
    const text = `r${String(r).padStart(3, '0')}-${i}-`.padEnd(400, String.fromCharCode(97 + ((r + i) % 26)))
    expected.push(text)
    return udp4(sinkPort, Buffer.from(text), r * PER + i)
  }
  const sendRound = (r) => tx.sendSegments(rx.address, Buffer.concat(Array.from({ length: PER }, (_, i) => pkt(r, i))), 428)
  const receiveAll = async () => {
    const parts = []
    let n = 0
    while (n < PER) {
      const b = await withTimeout(rx.receive(), 'a UDP receive')
      n += b.count
      parts.push(b)
    }
    return parts
  }
  await sendRound(0)
  let batches = await receiveAll()
  const writes = []
  for (let r = 1; r <= ROUNDS; r++) {
    for (const b of batches) writes.push(w.write(b)) // not awaited before the next receive
    await sendRound(r)
    batches = await receiveAll()
    // Let the sink drain (its socket buffer is not endless).
    await new Promise((resolve) => setTimeout(resolve, 2))
  }
  for (const b of batches) writes.push(w.write(b))
  const reports = await Promise.all(writes)
  const deadline = Date.now() + WAIT_MS
  while (got.length < expected.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
  result.writeThenRead = {
    expected: expected.length,
    received: got.length,
    distinct: new Set(got).size,
    intact: got.every((g) => expected.includes(g)),
    written: reports.reduce((a, r) => a + r.packets, 0),
  }
  sink.close()
  await rx.close()
  await tx.close()
  await tun.close()
}

// 2. Two reads of one queue at once: without reuseBuffers distinct frames, with it ERR_SUPERPACKET_BUSY.
for (const reuse of [false, true]) {
  const tun = await Tun.open({ name: 'spm1', mtu: 1500, ipv4: `${TUN_ADDR}/24`, reuseBuffers: reuse })
  const out = await bindDgram(TUN_ADDR)
  const r = {}
  // The namespace has IPv6 off, so the TUN sees only what this process sends.
  const payloads = (sps) => sps.map((sp) => payloadOf(sp.frame))
  const a = withTimeout(tun.read(), 'the first read').then(payloads)
  const b = withTimeout(tun.read(), 'the second read').then(payloads, (e) => ({ error: e.code ?? String(e) }))
  await send(out, 'c-one')
  r.first = await a
  await send(out, 'c-two')
  r.second = await b
  if (reuse) {
    // The buffer is free again: a read after the refused one works.
    await send(out, 'c-three')
    r.after = payloads(await withTimeout(tun.read(), 'a read after the refused one'))
  }
  result[reuse ? 'concurrentReadsReuse' : 'concurrentReads'] = r
  out.close()
  await tun.close()
}

// 3. Two iterators on one queue (no reuse): each frame goes to exactly one of them.
{
  const tun = await Tun.open({ name: 'spm2', mtu: 1500, ipv4: `${TUN_ADDR}/24` })
  const out = await bindDgram(TUN_ADDR)
  const TOTAL = 100
  const seen = []
  const ac = new AbortController()
  const timer = setTimeout(() => ac.abort(), WAIT_MS)
  const consume = async () => {
    try {
      for await (const sp of tun.superpackets({ signal: ac.signal })) {
        const p = payloadOf(sp.frame)
        if (p?.startsWith('it-')) seen.push(p)
        if (seen.length >= TOTAL) ac.abort()
      }
    } catch (e) {
      if (e.name !== 'AbortError') throw e
    }
  }
  const both = Promise.all([consume(), consume()])
  for (let i = 0; i < TOTAL; i++) await send(out, `it-${i}`)
  await both
  clearTimeout(timer)
  result.twoIterators = { total: TOTAL, seen: seen.length, distinct: new Set(seen).size }
  out.close()
  await tun.close()
}

// 4. Detaching the reused read buffer during a pending read: the read gets the right frame in a new
//    buffer, and the memory that moved away keeps the previous frame's bytes.
for (const how of ['structuredClone', 'MessageChannel']) {
  const tun = await Tun.open({ name: 'spm3', mtu: 1500, ipv4: `${TUN_ADDR}/24`, reuseBuffers: true })
  const out = await bindDgram(TUN_ADDR)
  let first
  for (let i = 0; i < 100 && first === undefined; i++) {
    const sent = send(out, 'd-first')
    for (const sp of await withTimeout(tun.read(), 'a TUN read')) if (payloadOf(sp.frame) === 'd-first') first = sp
    await sent
  }
  const copy = Buffer.from(first.frame)
  const pending = readPayload(() => tun.read(), 'd-second')
  const ab = first.frame.buffer
  let moved
  if (how === 'structuredClone') moved = structuredClone(ab, { transfer: [ab] })
  else {
    const { MessageChannel } = await import('node:worker_threads')
    const { port1, port2 } = new MessageChannel()
    moved = await new Promise((resolve) => {
      port2.once('message', resolve)
      port1.postMessage(ab, [ab])
    })
    port1.close()
  }
  await send(out, 'd-second')
  const second = await pending
  const movedFrame = Buffer.from(moved, first.frame.byteOffset, copy.length)
  result[`detach-${how}`] = { detached: first.frame.byteLength === 0, second, movedIntact: movedFrame.equals(copy) }
  out.close()
  await tun.close()
}

// 5. Writes whose signal aborted before they start reject with Node's AbortError, `sent` 0, and write
//    nothing: the marker written afterwards is the only packet that arrives.
{
  const tun = await Tun.open({ name: 'spm4', mtu: 1500, ipv4: `${TUN_ADDR}/24` })
  const sink = await bindDgram(TUN_ADDR)
  const port = sink.address().port
  const got = []
  sink.on('message', (m) => got.push(m.toString()))
  const rx = await UdpSocket.bind({ address: '127.0.0.1' })
  const tx = await UdpSocket.bind({ address: '127.0.0.1' })
  const batchOf = async (text) => {
    await tx.send(rx.address, udp4(port, Buffer.from(text), 7))
    return withTimeout(rx.receive(), 'a UDP receive')
  }
  const w = tun.packetWriter()
  const ac = new AbortController()
  ac.abort(new Error('stop'))
  const shape = (e) => ({ name: e.name, code: e.code, superpacketCode: e.superpacketCode, sent: e.sent, cause: e.cause?.message })
  const writerError = await w.write(await batchOf('ab-skipped'), { signal: ac.signal }).then(() => null, shape)
  const frame = Buffer.concat([Buffer.alloc(10), udp4(port, Buffer.from('ab-frame'), 8)])
  const tunWriteError = await tun.write([frame], { signal: ac.signal }).then(() => null, shape)
  await w.write(await batchOf('ab-marker'))
  const deadline = Date.now() + WAIT_MS
  while (!got.includes('ab-marker') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
  result.abortedWrites = { writerError, tunWriteError, got }
  sink.close()
  await rx.close()
  await tx.close()
  await tun.close()
}

console.log(JSON.stringify(result))
