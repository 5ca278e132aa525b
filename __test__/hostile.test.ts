import { readdirSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterEach, describe, expect, it } from 'vitest'
import { memory, realPid } from '../tools/dist/bench/proc.js'
import { Garbage, type GarbageSource } from '../tools/dist/lab/garbage.js'
import { waitForLine, type Side } from '../tools/dist/lab/netns.js'
import { TUNNEL_PORT, TunnelPair, type PairOptions } from '../tools/dist/lab/tunnel-pair.js'
import { privileged } from './helpers/privileged.js'

const MiB = 1 << 20
/** The garbage rate of the target, split over the flood's sources. */
const FLOOD_RATE = 50_000
/** Upper bound of a flood's life (it is stopped as soon as the transfer ends). */
const FLOOD_SECONDS = 60
/** The largest TCP payload per packet with the endpoints' inner MTU of 1420 over IPv4. */
const MAX_TCP_PAYLOAD = 1420 - 40

type Reasons = Record<string, number>
interface NativeStats {
  tun: { txDrops: number; txPackets: number }
  udp: { txDatagrams: number }
  outbound: { segments: number }
  inbound: { datagrams: number; packets: number; drops: number; dropReasons: Reasons }
  running: boolean
  closed: string
  peer?: { address: string; port: number }
}
interface JsStats {
  tun: { txDrops: number; txPackets: number }
  udp: { txDatagrams: number; rxDatagrams: number }
  inbound: { writes: number; packets: number; dropped: number; dropReasons: Reasons }
  inboundLoop: string
}

let pair: TunnelPair | undefined
let garbage: Garbage | undefined
afterEach(async () => {
  await garbage?.stop().catch(() => {})
  garbage = undefined
  await pair?.close()
  pair = undefined
})

async function start(tag: string, options: PairOptions): Promise<TunnelPair> {
  pair = await TunnelPair.start(tag, options)
  return pair
}

/** The kernel's UDP counters of a namespace (/proc/net/snmp): datagrams lost before any socket read them. */
function udpSnmp(p: TunnelPair, side: Side): Record<string, number> {
  const lines = p.lab.exec(side, 'cat', ['/proc/net/snmp']).split('\n').filter((l) => l.startsWith('Udp:'))
  const names = lines[0]!.split(/\s+/).slice(1)
  const values = lines[1]!.split(/\s+/).slice(1).map(Number)
  return Object.fromEntries(names.map((n, i) => [n, values[i]!]))
}

function diff(after: Reasons, before: Reasons): Reasons {
  const out: Reasons = {}
  for (const [k, v] of Object.entries(after)) if (v - (before[k] ?? 0) > 0) out[k] = v - (before[k] ?? 0)
  return out
}

const sum = (r: Reasons) => Object.values(r).reduce((a, b) => a + b, 0)

/** Floods side b's tunnel port with garbage from `sources` until `stop()`, which reports what each sent. */
async function flood(p: TunnelPair, sources: GarbageSource[]): Promise<Garbage> {
  garbage = await Garbage.start(p.lab, { victim: p.lab.b, port: TUNNEL_PORT, peer: p.lab.a, sources, rate: FLOOD_RATE, seconds: FLOOD_SECONDS })
  return garbage
}

if (privileged('hostile network')) {
  describe('a garbage flood at the receiving endpoint (~50k datagrams/s) costs no legitimate packet', () => {
    it.each([
      ['header framer, garbage from the peer\'s namespace (other port, second address) and from the peer\'s own address and port', 'header', ['other-port', 'second-address', 'peer-address-and-port']],
      ['plain framer, garbage from the peer\'s own address and port (passes the framer, must not reach the TUN)', 'plain', ['peer-address-and-port']],
    ] as const)('native Tunnel, %s', async (_name, framer, sources) => {
      const bytes = 256 * MiB
      const p = await start('flood', { offload: 'auto', framer })
      const quiet = await p.transfer(bytes, 4)
      expect(quiet.sha256Received).toBe(quiet.sha256Sent)

      const [a0, b0] = (await p.stats()) as NativeStats[]
      const k0 = udpSnmp(p, p.lab.b)
      const f = await flood(p, [...sources])
      const t = await p.transfer(bytes, 4)
      const sent = await f.stop()
      garbage = undefined
      const [a1, b1] = (await p.stats()) as NativeStats[]
      const k1 = udpSnmp(p, p.lab.b)
      console.log(`native ${framer}: ${quiet.gbps.toFixed(2)} Gbit/s without the flood, ${t.gbps.toFixed(2)} with it (${(t.gbps / quiet.gbps).toFixed(2)}x)`)

      expect(t.bytes).toBe(bytes)
      expect(t.sha256Received).toBe(t.sha256Sent)
      const reasons = diff(b1!.inbound.dropReasons, b0!.inbound.dropReasons)
      const legit = a1!.outbound.segments - a0!.outbound.segments
      const written = b1!.inbound.packets - b0!.inbound.packets
      const lostInKernel = (k1.RcvbufErrors ?? 0) - (k0.RcvbufErrors ?? 0)
      console.log(`native ${framer}: garbage sent ${JSON.stringify(sent)}; drops at b ${JSON.stringify(reasons)}; legitimate datagrams ${legit}, written ${written}, lost to b's receive buffer ${lostInKernel}`)

      // Every drop has a reason, and the reasons are the garbage's.
      expect(b1!.inbound.drops - b0!.inbound.drops).toBe(sum(reasons))
      const fromElsewhere = (sent['other-port'] ?? 0) + (sent['second-address'] ?? 0)
      const spoofed = sent['peer-address-and-port'] ?? 0
      if (fromElsewhere > 0) {
        expect(reasons['wrong-source']).toBeGreaterThan(0)
        expect(reasons['wrong-source']).toBeLessThanOrEqual(fromElsewhere)
      } else {
        expect(reasons['wrong-source']).toBeUndefined()
      }
      if (framer === 'header') {
        // Spoofed garbage is caught by the header check; none of it reaches the TUN.
        expect(Object.keys(reasons).filter((r) => !['mismatch', 'too-short', 'wrong-source'].includes(r))).toEqual([])
        expect(reasons.mismatch).toBeGreaterThan(0)
        expect((reasons.mismatch ?? 0) + (reasons['too-short'] ?? 0)).toBeLessThanOrEqual(spoofed)
        expect(b1!.tun.txDrops - b0!.tun.txDrops).toBe(0)
      } else {
        // The plain framer passes spoofed garbage: it is dropped as invalid IP before or at the TUN write;
        // whatever the TUN refused is counted among it (and the count below shows no legitimate packet was).
        expect(Object.keys(reasons).filter((r) => !['invalid-packet', 'too-short'].includes(r))).toEqual([])
        expect(reasons['invalid-packet']).toBeGreaterThan(0)
        expect((reasons['invalid-packet'] ?? 0) + (reasons['too-short'] ?? 0)).toBeLessThanOrEqual(spoofed)
        expect(b1!.tun.txDrops - b0!.tun.txDrops).toBeLessThanOrEqual(reasons['invalid-packet']!)
      }
      // Every legitimate datagram that reached b's socket was written to b's TUN. Besides them, only
      // garbage from the peer's own address can be (through the plain framer, a datagram whose bytes
      // happen to declare a well-formed IP packet is one; the kernel judges it after that).
      expect(written).toBeGreaterThanOrEqual(legit - lostInKernel)
      expect(written).toBeLessThanOrEqual(framer === 'header' ? legit : legit + spoofed)
      expect(written).toBeGreaterThanOrEqual(Math.ceil(bytes / MAX_TCP_PAYLOAD))
      expect(b1!.running).toBe(true)
      expect(b1!.closed).toBe('pending')
    })

    it('native Tunnel with learnPeer and a header framer: garbage from other addresses fails the header check and never moves the peer', async () => {
      const p = await start('floodlearn', { offload: 'auto', framer: 'header', learnPeer: true })
      const [, b0] = (await p.stats()) as NativeStats[]
      await flood(p, ['other-port', 'second-address'])
      const t = await p.transfer(128 * MiB, 4)
      const sent = await garbage!.stop()
      garbage = undefined
      const [, b1] = (await p.stats()) as NativeStats[]
      expect(t.sha256Received).toBe(t.sha256Sent)
      const reasons = diff(b1!.inbound.dropReasons, b0!.inbound.dropReasons)
      console.log(`native header learnPeer: garbage sent ${JSON.stringify(sent)}; drops at b ${JSON.stringify(reasons)}; peer ${JSON.stringify(b1!.peer)}`)
      // With learnPeer there is no source check: the header check is what stops the garbage.
      expect(reasons['wrong-source']).toBeUndefined()
      expect(reasons.mismatch).toBeGreaterThan(0)
      expect((reasons.mismatch ?? 0) + (reasons['too-short'] ?? 0)).toBeLessThanOrEqual(sent['other-port'] + sent['second-address'])
      expect(b1!.peer).toEqual({ address: p.lab.a.outer4, port: TUNNEL_PORT })
    })

    it('JS path (the README\'s loops), header framer: the inbound loop survives, garbage is dropped by the source and header checks', async () => {
      const bytes = 128 * MiB
      const p = await start('floodjs', { offload: 'auto', mode: 'js', framer: 'header' })
      const quiet = await p.transfer(bytes, 4)
      expect(quiet.sha256Received).toBe(quiet.sha256Sent)

      const [a0, b0] = (await p.stats()) as JsStats[]
      const k0 = udpSnmp(p, p.lab.b)
      const f = await flood(p, ['other-port', 'second-address', 'peer-address-and-port'])
      const t = await p.transfer(bytes, 4)
      const sent = await f.stop()
      garbage = undefined
      const [a1, b1] = (await p.stats()) as JsStats[]
      const k1 = udpSnmp(p, p.lab.b)
      console.log(`js header: ${quiet.gbps.toFixed(2)} Gbit/s without the flood, ${t.gbps.toFixed(2)} with it (${(t.gbps / quiet.gbps).toFixed(2)}x)`)

      expect(t.sha256Received).toBe(t.sha256Sent)
      expect(b1!.inboundLoop).toBe('running')
      const reasons = diff(b1!.inbound.dropReasons, b0!.inbound.dropReasons)
      const legit = a1!.udp.txDatagrams - a0!.udp.txDatagrams
      const written = b1!.inbound.packets - b0!.inbound.packets
      const lostInKernel = (k1.RcvbufErrors ?? 0) - (k0.RcvbufErrors ?? 0)
      console.log(`js header: garbage sent ${JSON.stringify(sent)}; drops at b ${JSON.stringify(reasons)}; legitimate datagrams ${legit}, written ${written}, lost to b's receive buffer ${lostInKernel}`)
      expect(b1!.inbound.dropped - b0!.inbound.dropped).toBe(sum(reasons))
      expect(reasons['wrong-source']).toBeGreaterThan(0)
      expect(reasons['wrong-source']).toBeLessThanOrEqual(sent['other-port'] + sent['second-address'])
      expect(reasons.mismatch).toBeGreaterThan(0)
      expect((reasons.mismatch ?? 0) + (reasons['too-short'] ?? 0)).toBeLessThanOrEqual(sent['peer-address-and-port'])
      expect(b1!.tun.txDrops - b0!.tun.txDrops).toBe(0)
      expect(written).toBeLessThanOrEqual(legit)
      expect(written).toBeGreaterThanOrEqual(legit - lostInKernel)
    })
  })

  describe('an endpoint killed mid-transfer (kill -9)', () => {
    it('leaves the other running with sane counters, no fd or memory growth; a restarted endpoint carries a new transfer', async () => {
      const p = await start('crash', { offload: 'auto' })
      const survivor = realPid(p.endpoints[0]!)
      const fds = () => readdirSync(`/proc/${survivor}/fd`).length
      const abort = new AbortController()
      const first = p.transfer(4096 * MiB, 4, 120, abort.signal)
      first.catch(() => {})
      // Mid-transfer: b has written some of it (bounded wait).
      for (let i = 0; i < 200; i++) {
        const b = (await p.statsOf(1)) as NativeStats
        if (b.inbound.packets > 20_000) break
        await sleep(25)
      }
      const fdsBefore = fds()
      const rssBefore = memory(survivor).rssMB
      const before = (await p.statsOf(0)) as NativeStats
      await p.kill(1)
      // The survivor's TCP sender keeps pushing into a tunnel whose peer is gone; add UDP through it too.
      const burst = p.lab.node(p.lab.a, 'lab/udpburst.js', ['send', '--to', `${p.lab.b.inner4}:7000`, '--trains', '200', '--segments', '20', '--size', '1200'])
      await waitForLine(burst, /(\{.*\})\n/, 30_000)
      abort.abort()
      await expect(first).rejects.toThrow()
      const during = (await p.statsOf(0)) as NativeStats
      expect(p.endpoints[0]!.exitCode).toBeNull()
      expect(during.running).toBe(true)
      expect(during.closed).toBe('pending')
      // It went on sending into the void: at least the UDP burst's 4,000 datagrams.
      expect(during.outbound.segments - before.outbound.segments).toBeGreaterThanOrEqual(4000)
      expect(during.inbound.packets).toBeGreaterThanOrEqual(before.inbound.packets)

      await p.restart(1)
      const t = await p.transfer(256 * MiB, 4)
      expect(t.bytes).toBe(256 * MiB)
      expect(t.sha256Received).toBe(t.sha256Sent)
      const after = (await p.statsOf(0)) as NativeStats
      expect(after.running).toBe(true)
      expect(after.closed).toBe('pending')
      const fdsAfter = fds()
      const rssAfter = memory(survivor).rssMB
      console.log(`crash: survivor fds ${fdsBefore} -> ${fdsAfter}, RSS ${rssBefore.toFixed(1)} -> ${rssAfter.toFixed(1)} MiB`)
      expect(fdsAfter).toBeLessThanOrEqual(fdsBefore)
      expect(rssAfter - rssBefore).toBeLessThan(32)
    })
  })
}
