// Fallback and error paths driven through the public API with the internal fault injector: every
// datagram or packet that must get through is counted and compared, not just "no error".
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { coalescePackets, SuperpacketError, UdpSocket } from '../dist/index.js'
import { clearFaults, injectFault } from '../dist/fault.js'
import { pattern, udp4 } from './helpers/packets.js'
import { privileged } from './helpers/privileged.js'
import { plainReceiver } from './helpers/udp.js'

const open: { close(): Promise<void> | void }[] = []
afterEach(async () => {
  clearFaults()
  for (const s of open.splice(0)) await s.close()
})

async function bind(gso = true): Promise<UdpSocket> {
  const s = await UdpSocket.bind({ address: '127.0.0.1', port: 0, gso })
  open.push(s)
  return s
}


const SEGMENT = 1000
const SEGMENTS = 40

describe('UdpSocket sends under injected failures', () => {
  it.each(['EIO', 'EINVAL'] as const)('a GSO send failing with %s falls back and every datagram arrives', async (errno) => {
    const s = await bind()
    const { port, got } = await plainReceiver(2 * SEGMENTS)
    const data = pattern(2 * SEGMENTS * SEGMENT)
    injectFault('sendGso', errno, 1)
    await s.sendSegments({ address: '127.0.0.1', port }, data.subarray(0, SEGMENTS * SEGMENT), SEGMENT)
    await s.sendSegments({ address: '127.0.0.1', port }, data.subarray(SEGMENTS * SEGMENT), SEGMENT)
    const msgs = await got
    expect(msgs.map((m) => m.length)).toEqual(Array(2 * SEGMENTS).fill(SEGMENT))
    expect(Buffer.concat(msgs).equals(data)).toBe(true)
    const st = s.stats()
    // Loopback's MTU is far above the segments, so both errnos mean the socket cannot segment.
    expect(st.gsoFallbacks).toBe(1)
    expect(st.txDatagrams).toBe(2 * SEGMENTS)
  })

  it('sends that find the kernel out of buffers are retried, not dropped', async () => {
    const s = await bind(false)
    const { port, got } = await plainReceiver(SEGMENTS)
    const data = pattern(SEGMENTS * SEGMENT, 7)
    injectFault('sendmmsg', 'ENOBUFS', 3)
    await s.sendSegments({ address: '127.0.0.1', port }, data, SEGMENT)
    expect(Buffer.concat(await got).equals(data)).toBe(true)
  })

  it('a send refused with EPERM (a firewall rule) rejects with ERR_SUPERPACKET_OS and errno 1, not the CAP_NET_ADMIN advice', async () => {
    const s = await bind(false)
    const { port, got } = await plainReceiver(4)
    injectFault('sendmmsg', 'EPERM', 1)
    const err = await s.sendSegments({ address: '127.0.0.1', port }, pattern(4 * SEGMENT), SEGMENT).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(SuperpacketError)
    expect(err).toMatchObject({ code: 'ERR_SUPERPACKET_OS', errno: 1 })
    expect((err as Error).message).not.toMatch(/CAP_NET_ADMIN/)
    const data = pattern(4 * SEGMENT, 3)
    await s.sendSegments({ address: '127.0.0.1', port }, data, SEGMENT)
    expect(Buffer.concat(await got).equals(data)).toBe(true)
  })
})

/**
 * Runs `source` as an ES module with Node inside a network namespace of its own (made and removed here),
 * with the package's index.js and fault.js URLs and `args` as its arguments, and returns the JSON of the
 * last line it printed.
 */
function runInNamespace<T>(name: string, source: string, args: string[], timeout: number): T {
  const ns = `sp-${name}-${process.pid}-${randomBytes(2).toString('hex')}`
  const dir = mkdtempSync(join(tmpdir(), `sp-${name}-`))
  const script = join(dir, `${name}.mjs`)
  writeFileSync(script, source)
  const dist = new URL('../dist/', import.meta.url)
  execFileSync('ip', ['netns', 'add', ns])
  try {
    execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up'])
    const out = execFileSync(
      'ip',
      ['netns', 'exec', ns, process.execPath, script, new URL('index.js', dist).href, new URL('fault.js', dist).href, ...args],
      { encoding: 'utf8', timeout },
    )
    return JSON.parse(out.trim().split('\n').pop()!) as T
  } finally {
    execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' })
    rmSync(dir, { recursive: true, force: true })
  }
}

/** Runs inside the test's namespace: opens a TUN, writes what it is given with faults injected, and
 * prints the payloads a UDP socket on the TUN's address received and the TUN's counters. */
const TUN_SCRIPT = `
import dgram from 'node:dgram'
const [index, fault, input] = process.argv.slice(2)
const { Tun } = await import(index)
const { injectFault } = await import(fault)
const { frames, packets, want } = JSON.parse(input)
const tun = await Tun.open({ name: 'spfault0', ipv4: '198.18.71.1/24' })
const sink = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 << 20 })
await new Promise((r) => sink.bind(7000, '198.18.71.1', r))
const got = []
const all = new Promise((done) => {
  const t = setTimeout(done, 5000)
  sink.on('message', (m) => { got.push(m.toString('hex')); if (got.length === want) { clearTimeout(t); done() } })
})
injectFault('tunWrite', 'EINVAL', 1)
await tun.write(frames.map((f) => Buffer.from(f, 'base64')))
injectFault('tunWrite', 'EINVAL', 1)
await tun.writePackets(packets.map((p) => Buffer.from(p, 'base64')))
await all
const stats = tun.stats()
sink.close()
await tun.close()
console.log(JSON.stringify({ got, stats }))
`

if (privileged('faults on a TUN')) {
  describe('Tun writes under injected failures (inside a namespace of the test)', () => {
    it('a refused GSO frame is split and all its packets arrive; a refused packet costs no other its delivery', () => {
      const flow = { src: [198, 18, 71, 2], dst: [198, 18, 71, 1], sport: 40000, dport: 7000 }
      const payloads = Array.from({ length: 20 }, (_, i) => pattern(1000, i + 1))
      // One flow: coalesced into one GSO frame, which the first injected EINVAL refuses.
      const frames = coalescePackets(payloads.map((p, i) => udp4(flow, p, i + 1)), { udp: true })
      // Distinct source ports: a frame each; the second EINVAL refuses the first, the rest must arrive.
      const singles = Array.from({ length: 10 }, (_, i) => pattern(300, 100 + i))
      const packets = singles.map((p, i) => udp4({ ...flow, sport: 41000 + i }, p, 100 + i))
      const input = JSON.stringify({
        frames: frames.map((f) => f.toString('base64')),
        packets: packets.map((p) => p.toString('base64')),
        want: payloads.length + singles.length - 1,
      })
      const r = runInNamespace<{ got: string[]; stats: Record<string, number | boolean> }>('faults', TUN_SCRIPT, [input], 60_000)
      const want = [...payloads, ...singles.slice(1)].map((p) => p.toString('hex'))
      expect(r.got).toEqual(want)
      expect(r.stats).toMatchObject({ txFallbacks: 1, txDrops: 1, coalescing: true })
    })
  })
}

/** Runs inside the test's namespace: a Tunnel whose TUN read fails with an injected EIO. Prints how
 * `closed` settled; never calls stop() or close(), so the process ends only if nothing holds it open. */
const TUNNEL_FAIL_SCRIPT = `
import dgram from 'node:dgram'
const [index, fault] = process.argv.slice(2)
const { Tun, UdpSocket, Tunnel } = await import(index)
const { injectFault } = await import(fault)
const tun = await Tun.open({ name: 'spfail0', ipv4: '198.18.72.1/24' })
const socket = await UdpSocket.bind({ address: '127.0.0.1', port: 0 })
const tunnel = await Tunnel.start({ tun, socket, peer: { address: '127.0.0.1', port: 9 } })
injectFault('tunRead', 'EIO', 1)
// Something for the TUN to read: a datagram routed through it.
const d = dgram.createSocket('udp4')
await new Promise((r) => d.send('x', 9, '198.18.72.2', r))
d.close()
const err = await tunnel.closed.then(() => undefined, (e) => e)
console.log(JSON.stringify({ code: err?.code, errno: err?.errno, running: tunnel.running }))
`

if (privileged('a failing Tunnel')) {
  describe('a Tunnel whose direction fails', () => {
    it('rejects closed with the error, stops, and no longer holds the process open', () => {
      // The script neither stops the tunnel nor closes anything: if the tunnel still held the process
      // open, this would time out.
      const r = runInNamespace<{ code?: string; errno?: number; running: boolean }>('tfail', TUNNEL_FAIL_SCRIPT, [], 30_000)
      expect(r).toEqual({ code: 'ERR_SUPERPACKET_OS', errno: 5, running: false })
    })
  })
}

/** Runs inside the test's namespace: three datagrams routed into a TUN, then reads with the second read
 * system call failing (in the middle of the first batch). Prints whether the first read resolved, the
 * marker of every frame read, in order, and the error if a read threw. */
const TUN_READ_SCRIPT = `
import dgram from 'node:dgram'
const [index, fault] = process.argv.slice(2)
const { Tun } = await import(index)
const { injectFault } = await import(fault)
const tun = await Tun.open({ name: 'spread0', ipv4: '198.18.73.1/24' })
const d = dgram.createSocket('udp4')
await new Promise((r) => d.bind(0, '198.18.73.1', r))
for (const i of [0, 1, 2]) await new Promise((r) => d.send('marker ' + i, 9, '198.18.73.2', r))
d.close()
injectFault('tunRead', 'EIO', 1, 1)
const seen = []
let firstBatch = null
let error = null
const deadline = Date.now() + 5000
try {
  while (seen.length < 3 && Date.now() < deadline) {
    const batch = await tun.read({ signal: AbortSignal.timeout(2000) })
    const markers = batch.map((sp) => sp.frame.toString('latin1').match(/marker (\\d)$/)?.[1]).filter((m) => m !== undefined).map(Number)
    if (firstBatch === null) firstBatch = { frames: batch.length, markers }
    seen.push(...markers)
  }
} catch (e) {
  error = { code: e.code, errno: e.errno }
}
await tun.close()
console.log(JSON.stringify({ firstBatch, seen, error }))
`

if (privileged('a failed TUN read in the middle of a batch')) {
  describe('Tun reads under injected failures (inside a namespace of the test)', () => {
    it('a read failing after the first frame of a batch ends the batch: the frames before it arrive, and no frame is lost', () => {
      const r = runInNamespace<{ firstBatch: { frames: number; markers: number[] } | null; seen: number[]; error: unknown }>(
        'rfault',
        TUN_READ_SCRIPT,
        [],
        30_000,
      )
      expect(r.error).toBeNull()
      // The first read system call took one frame, the second failed: the batch is that one frame.
      expect(r.firstBatch?.frames).toBe(1)
      expect(r.seen).toEqual([0, 1, 2])
    })
  })
}
