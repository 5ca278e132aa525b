import { afterEach, describe, expect, it } from 'vitest'
import { stop, waitForLine } from '../tools/dist/lab/netns.js'
import { TunnelPair, type PairOptions } from '../tools/dist/lab/tunnel-pair.js'
import { privileged } from './helpers/privileged.js'

const MiB = 1 << 20
const BIG = 256 * MiB

interface EndpointStats {
  tun: { rxFrames: number; rxSegments: number; txFrames: number; txPackets: number; txFallbacks: number }
  udp: { txDatagrams: number; txSyscalls: number; gsoFallbacks: number; rxDatagrams: number }
}

let pair: TunnelPair | undefined
afterEach(async () => {
  await pair?.close()
  pair = undefined
})

async function start(tag: string, options: PairOptions): Promise<TunnelPair> {
  pair = await TunnelPair.start(tag, options)
  return pair
}

if (privileged('tunnel end to end')) {
  describe('tunnel end to end (two namespaces, a tunnel endpoint process in each)', () => {
    it.each([
      ['IPv4 in IPv4, offloads auto', { offload: 'auto', outer: 4 }, 4],
      ['IPv6 in IPv6, offloads auto', { offload: 'auto', outer: 6 }, 6],
      ['IPv6 in IPv4, offloads off', { offload: 'off', outer: 4 }, 6],
      ['IPv4 in IPv6, offloads off', { offload: 'off', outer: 6 }, 4],
    ] as const)('256 MiB over TCP arrive intact: %s', async (_name, options, family) => {
      const p = await start('e2e', options)
      const t = await p.transfer(BIG, family)
      expect(t.bytes).toBe(BIG)
      expect(t.sha256Received).toBe(t.sha256Sent)
      const [a] = (await p.stats()) as EndpointStats[]
      if (options.offload === 'auto') {
        // Superpackets: the TUN read fewer frames than the segments they stood for, and sends carried many.
        expect(a!.tun.rxSegments).toBeGreaterThan(2 * a!.tun.rxFrames)
        expect(a!.udp.txDatagrams).toBeGreaterThan(2 * a!.udp.txSyscalls)
      } else {
        expect(a!.tun.rxSegments).toBe(a!.tun.rxFrames)
        expect(p.info[0]!.ready.offloads.vnetHdr).toBe(false)
        // Without TSO the tunnel still batches: packets read together leave as GSO trains.
        expect(a!.udp.txDatagrams).toBeGreaterThan(1.5 * a!.udp.txSyscalls)
      }
    })

    it('loses nothing when the kernel starts refusing GSO sends mid-transfer', async () => {
      const p = await start('gsooff', { offload: 'auto', outer: 4 })
      const sender = p.endpoints[0]!
      const transfer = p.transfer(BIG, 4)
      await new Promise((r) => setTimeout(r, 300))
      const switched = waitForLine(sender, /udp-checksums off\n/, 5000)
      sender.kill('SIGUSR1')
      await switched
      const t = await transfer
      expect(t.sha256Received).toBe(t.sha256Sent)
      const [a] = (await p.stats()) as EndpointStats[]
      expect(a!.udp.gsoFallbacks).toBe(1)
    })

    it.each([
      ['reused read buffers', true],
      ['a fresh buffer per read', false],
    ])('runs the JS data path (superpacket iterator + segmenting writer + packet writer) with a header framer, %s', async (_name, reuse) => {
      const p = await start('js', { offload: 'auto', mode: 'js', framer: 'header', verify: true, reuse })
      const t = await p.transfer(64 * MiB, 4)
      expect(t.sha256Received).toBe(t.sha256Sent)
      const [a, b] = (await p.stats()) as (EndpointStats & { verify: { superpackets: number; gso: number; bad: number; maxSegments: number } })[]
      // Superpackets read from real TCP traffic split into valid packets (checked independently).
      expect(a!.verify.bad).toBe(0)
      expect(a!.verify.gso).toBeGreaterThan(0)
      expect(a!.verify.maxSegments).toBeGreaterThan(1)
      expect(a!.tun.rxSegments).toBeGreaterThan(a!.tun.rxFrames)
      // The receiving side wrote coalesced superpackets.
      expect(b!.tun.txPackets).toBeGreaterThan(b!.tun.txFrames)
    })

    it('carries UDP GSO trains through the tunnel as USO superpackets, every datagram in order', async () => {
      const p = await start('uso', { offload: 'auto' })
      const { a, b } = p.lab
      const trains = 50
      const segments = 20
      const recv = p.lab.node(b, 'lab/udpburst.js', ['recv', '--listen', `${b.inner4}:7000`, '--expect', String(trains * segments)])
      try {
        await waitForLine(recv, /listening\n/, 10_000)
        const result = waitForLine(recv, /(\{.*\})\n/, 30_000)
        const send = p.lab.node(a, 'lab/udpburst.js', ['send', '--to', `${b.inner4}:7000`, '--trains', String(trains), '--segments', String(segments), '--size', '1200'])
        const sent = JSON.parse((await waitForLine(send, /(\{.*\})\n/, 30_000))[1]!) as { count: number; sha256: string }
        const got = JSON.parse((await result)[1]!) as { count: number; sha256: string; inOrder: boolean }
        expect(got.count).toBe(sent.count)
        expect(got.inOrder).toBe(true)
        expect(got.sha256).toBe(sent.sha256)
        const [ea] = (await p.stats()) as EndpointStats[]
        // The TUN handed the endpoint USO superpackets (several datagrams per read).
        expect(ea!.tun.rxSegments).toBeGreaterThan(2 * ea!.tun.rxFrames)
      } finally {
        await stop(recv)
      }
    })
  })
}
