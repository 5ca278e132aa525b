import { afterEach, describe, expect, it } from 'vitest'
import { generatePrivateKey, parseWireGuardConfig, publicKey, SuperpacketError, wireguard } from 'superpacket'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Lab, stop, waitForLine } from '../tools/dist/lab/netns.js'
import { startCapture, udpDatagrams } from '../tools/dist/lab/pcap.js'
import { tcpTransfer } from '../tools/dist/lab/transfer.js'
import {
  endpointOf,
  endpointStats,
  keyPair,
  startSuperpacketWg,
  startWireguardGo,
  wireguardGo,
  type WgEndpoint,
} from '../tools/dist/lab/wireguard.js'
import { privileged } from './helpers/privileged.js'

const MiB = 1 << 20
const BIG = 256 * MiB
const PORT = 51820
const INNER = ['198.18.100.0/24', '2001:db8:100::/64']

interface PeerStat {
  publicKey: string
  endpoint: string | null
  lastHandshake: number | null
  rxBytes: number
  txBytes: number
}
interface WgStats {
  peers: PeerStat[]
  inbound: { packets: number; dropReasons: Record<string, number> }
  outbound: { segments: number; segmentsPerSyscall: number }
  closed: string
}

describe('WireGuard keys and config files', () => {
  it('makes key pairs that wg accepts and agrees with', () => {
    const priv = generatePrivateKey()
    expect(Buffer.from(priv, 'base64')).toHaveLength(32)
    let wgPub: string
    try {
      wgPub = execFileSync('wg', ['pubkey'], { input: priv + '\n', encoding: 'utf8' }).trim()
    } catch (err) {
      // wireguard-tools is a test dependency (scripts/bootstrap.sh): its absence is a failure, not a skip.
      throw new Error(`wg is needed for this test: ${(err as Error).message}`)
    }
    expect(publicKey(priv)).toBe(wgPub)
  })

  it('parses a wg-quick file and names the line of a bad one', () => {
    const a = keyPair()
    const b = keyPair()
    const text = `# a comment
[Interface]
PrivateKey = ${a.privateKey}
ListenPort = 51820
Address = 198.18.77.1/24, 2001:db8:77::1/64
MTU = 1380
DNS = 198.18.77.53

[Peer]
PublicKey = ${b.publicKey}
AllowedIPs = 198.18.77.2/32
AllowedIPs = 2001:db8:77::2/128
Endpoint = [2001:db8:1::2]:51820
PersistentKeepalive = 25
`
    const f = parseWireGuardConfig(text)
    expect(f.privateKey).toBe(a.privateKey)
    expect(f.listenPort).toBe(51820)
    expect(f.addresses).toEqual(['198.18.77.1/24', '2001:db8:77::1/64'])
    expect(f.mtu).toBe(1380)
    expect(f.peers).toEqual([
      { publicKey: b.publicKey, endpoint: '[2001:db8:1::2]:51820', allowedIPs: ['198.18.77.2/32', '2001:db8:77::2/128'], persistentKeepalive: 25 },
    ])
    expect(f.ignored.join()).toMatch(/DNS/)
    const bad = text.replace('AllowedIPs = 198.18.77.2/32', 'AllowedIPs = 198.18.77.2/33')
    const err = (() => {
      try {
        parseWireGuardConfig(bad)
      } catch (e) {
        return e
      }
    })() as SuperpacketError
    expect(err).toBeInstanceOf(SuperpacketError)
    expect(err.code).toBe('ERR_SUPERPACKET_INVALID_ARGUMENT')
    expect(err.message).toMatch(/line 11/)
    expect(err.message).toMatch(/AllowedIPs/)
  })

  it('refuses bad keys and AllowedIPs naming the field', () => {
    const a = keyPair()
    const b = keyPair()
    const cases: [Parameters<typeof wireguard>[0], RegExp][] = [
      [{ privateKey: 'not-base64', peers: [] }, /privateKey/],
      [{ privateKey: a.privateKey, peers: [{ publicKey: b.publicKey.slice(4) }] }, /peers\[0\]\.publicKey/],
      [{ privateKey: a.privateKey, peers: [{ publicKey: b.publicKey, allowedIPs: ['198.18.0.0/40'] }] }, /peers\[0\]\.allowedIPs\[0\]/],
      [{ privateKey: a.privateKey, peers: [{ publicKey: b.publicKey, endpoint: 'example.invalid:1' }] }, /peers\[0\]\.endpoint/],
      [{ privateKey: a.privateKey, peers: [{ publicKey: a.publicKey }] }, /own public key/],
    ]
    for (const [config, field] of cases) {
      expect(() => wireguard(config)).toThrow(field)
      try {
        wireguard(config)
      } catch (e) {
        expect((e as SuperpacketError).code).toBe('ERR_SUPERPACKET_INVALID_ARGUMENT')
      }
    }
    const f = wireguard({ privateKey: a.privateKey, peers: [{ publicKey: b.publicKey, allowedIPs: ['198.18.77.0/24'] }] })
    expect(f.routes).toBe(true)
    expect(f.publicKey).toBe(a.publicKey)
    expect(f.peers().map((p) => p.publicKey)).toEqual([b.publicKey])
  })
})

let closers: (() => Promise<void>)[] = []
let lab: Lab | undefined
afterEach(async () => {
  for (const c of closers.reverse()) await c().catch(() => {})
  closers = []
  lab?.destroy()
  lab = undefined
})

function track(e: WgEndpoint): WgEndpoint {
  closers.push(() => e.close())
  return e
}

if (privileged('WireGuard interop')) {
  describe('WireGuard between namespaces', () => {
    it('installs the pinned wireguard-go', () => {
      expect(wireguardGo()).toMatch(/wireguard$/)
    })

    it.each([
      ['superpacket initiates, inner IPv4, no preshared key', { spInitiates: true, family: 4, psk: false }],
      ['wireguard-go initiates, inner IPv6, preshared key', { spInitiates: false, family: 6, psk: true }],
    ] as const)('interoperates with wireguard-go, 256 MiB each way: %s', async (_name, c) => {
      lab = new Lab('wg')
      const sp = keyPair()
      const go = keyPair()
      const psk = c.psk ? generatePrivateKey() : undefined
      const dev = `wgt${process.pid % 100_000}`
      // Only the initiator knows the other's endpoint; the responder learns it from the handshake.
      track(
        await startWireguardGo(lab, lab.b, {
          privateKey: go.privateKey,
          listenPort: PORT,
          peers: [{ publicKey: sp.publicKey, allowedIPs: INNER, presharedKey: psk, ...(c.spInitiates ? {} : { endpoint: endpointOf(lab.a, PORT) }) }],
        }, dev),
      )
      const ep = track(
        await startSuperpacketWg(lab, lab.a, {
          privateKey: sp.privateKey,
          listenPort: PORT,
          peers: [{ publicKey: go.publicKey, allowedIPs: INNER, presharedKey: psk, ...(c.spInitiates ? { endpoint: endpointOf(lab.b, PORT) } : {}) }],
        }),
      )
      const [first, second] = c.spInitiates ? [lab.a, lab.b] : [lab.b, lab.a]
      const t1 = await tcpTransfer(lab, first, second, BIG, c.family)
      expect(t1.bytes).toBe(BIG)
      expect(t1.sha256Received).toBe(t1.sha256Sent)
      const t2 = await tcpTransfer(lab, second, first, BIG, c.family)
      expect(t2.bytes).toBe(BIG)
      expect(t2.sha256Received).toBe(t2.sha256Sent)
      const s = (await endpointStats(ep.process)) as unknown as WgStats
      const peer = s.peers[0]!
      expect(peer.publicKey).toBe(go.publicKey)
      expect(peer.endpoint).toBe(endpointOf(lab.b, PORT))
      expect(peer.lastHandshake).toBeGreaterThan(Date.now() - 600_000)
      expect(peer.rxBytes).toBeGreaterThan(BIG)
      expect(peer.txBytes).toBeGreaterThan(BIG)
      // Encrypted superpackets still leave as GSO trains.
      expect(s.outbound.segmentsPerSyscall).toBeGreaterThan(2)
      expect(s.closed).toBe('pending')
      // wireguard-go's view: it completed a handshake with our key.
      const shown = lab.exec(lab.b, 'wg', ['show', dev, 'latest-handshakes'])
      expect(shown).toContain(sp.publicKey)
    })

    it('rekeys in the middle of a transfer between two superpacket endpoints (2 queues each)', async () => {
      lab = new Lab('wgrk')
      const a = keyPair()
      const b = keyPair()
      const ea = track(
        await startSuperpacketWg(
          lab,
          lab.a,
          { privateKey: a.privateKey, listenPort: PORT, peers: [{ publicKey: b.publicKey, allowedIPs: INNER, endpoint: endpointOf(lab.b, PORT) }] },
          { queues: 2, rekeyAfter: 20_000 },
        ),
      )
      const eb = track(
        await startSuperpacketWg(
          lab,
          lab.b,
          { privateKey: b.privateKey, listenPort: PORT, peers: [{ publicKey: a.publicKey, allowedIPs: INNER, endpoint: endpointOf(lab.a, PORT) }] },
          { queues: 2 },
        ),
      )
      const t = await tcpTransfer(lab, lab.a, lab.b, 128 * MiB, 4)
      expect(t.sha256Received).toBe(t.sha256Sent)
      const sa = (await endpointStats(ea.process)) as unknown as WgStats
      const sb = (await endpointStats(eb.process)) as unknown as WgStats
      // 128 MiB is ~95,000 segments: at 20,000 packets per session a rekey happened several times.
      expect(sa.outbound.segments).toBeGreaterThan(80_000)
      // Every datagram that carried data verified on the other side: no replay or bad MAC across rekeys.
      expect(sb.inbound.dropReasons['bad-mac'] ?? 0).toBe(0)
      expect(sb.inbound.dropReasons['replay'] ?? 0).toBe(0)
      expect(sa.peers[0]!.lastHandshake).not.toBeNull()
    })

    it('routes three peers by AllowedIPs on 2 queues, and no counter repeats on the wire', async () => {
      lab = new Lab('wg3')
      const l = lab
      const hub = keyPair()
      const spokes = [1, 2, 3].map((k) => ({ k, keys: keyPair(), net: `198.18.10${k}`, port: PORT + k, tun: `sp${k}` }))
      // The hub's datagrams leave segmented in software, so the capture sees every one of them.
      l.exec(l.a, 'ethtool', ['-K', l.a.veth, 'tx-udp-segmentation', 'off'])
      const pcapDir = mkdtempSync(join(tmpdir(), 'sp-wg3-'))
      closers.push(async () => rmSync(pcapDir, { recursive: true, force: true }))
      const pcapFile = join(pcapDir, 'hub.pcap')
      const capture = await startCapture(l, l.a, pcapFile, `udp and src port ${PORT}`, 200)
      closers.push(() => stop(capture))
      const ehub = track(
        await startSuperpacketWg(
          l,
          l.a,
          {
            privateKey: hub.privateKey,
            listenPort: PORT,
            peers: spokes.map((s) => ({ publicKey: s.keys.publicKey, allowedIPs: [`${s.net}.0/24`], endpoint: endpointOf(l.b, s.port) })),
          },
          { queues: 2 },
        ),
      )
      const ends = []
      for (const s of spokes) {
        ends.push(
          track(
            await startSuperpacketWg(
              l,
              l.b,
              { privateKey: s.keys.privateKey, listenPort: s.port, peers: [{ publicKey: hub.publicKey, allowedIPs: ['198.18.100.0/24'], endpoint: endpointOf(l.a, PORT) }] },
              { tun: s.tun, inner4: `${s.net}.2/24`, inner6: `2001:db8:10${s.k}::2/64` },
            ),
          ),
        )
        // Replies from a spoke's address leave through its own TUN (three TUNs share namespace b).
        l.exec(l.a, 'ip', ['route', 'add', `${s.net}.0/24`, 'dev', 'sp0'])
        l.exec(l.b, 'ip', ['rule', 'add', 'from', `${s.net}.2`, 'table', String(100 + s.k)])
        l.exec(l.b, 'ip', ['route', 'add', '198.18.100.0/24', 'dev', s.tun, 'table', String(100 + s.k)])
      }
      const size = 16 * MiB
      for (const s of spokes) {
        const t = await tcpTransfer(l, l.a, { ...l.b, inner4: `${s.net}.2` }, size, 4)
        expect(t.sha256Received).toBe(t.sha256Sent)
      }
      const hubStats = (await endpointStats(ehub.process)) as unknown as WgStats
      for (const [i, s] of spokes.entries()) {
        const st = (await endpointStats(ends[i]!.process)) as unknown as WgStats
        // Each spoke got its own transfer and nothing of the others' (the TUN would have refused none of it,
        // but the spoke's AllowedIPs check would have dropped it).
        expect(st.inbound.packets).toBeGreaterThan(size / 1500)
        expect(st.inbound.packets).toBeLessThan((2 * size) / 1000)
        expect(st.inbound.dropReasons['not-allowed-source'] ?? 0).toBe(0)
        expect(st.inbound.dropReasons['replay'] ?? 0).toBe(0)
        const p = hubStats.peers.find((q) => q.publicKey === s.keys.publicKey)!
        expect(p.txBytes).toBeGreaterThan(size)
        expect(p.txBytes).toBeLessThan(2 * size)
      }
      await stop(capture)
      const seen = new Set<string>()
      let data = 0
      for (const d of udpDatagrams(readFileSync(pcapFile))) {
        // Transport data: type 4, receiver index (LE u32) at 4, counter (LE u64) at 8.
        if (d.payload.length < 32 || d.payload.readUInt32LE(0) !== 4) continue
        const key = `${d.dstPort}/${d.payload.readUInt32LE(4)}/${d.payload.readBigUInt64LE(8)}`
        expect(seen.has(key)).toBe(false)
        seen.add(key)
        data++
      }
      // Three 16 MiB transfers: ~36,000 data datagrams from the hub were captured, none twice.
      expect(data).toBeGreaterThan((3 * size) / 1500)
    })

    it('hostile datagrams at the port during a transfer are dropped by reason and cost no legitimate packet', async () => {
      lab = new Lab('wgatk')
      const l = lab
      const a = keyPair()
      const b = keyPair()
      l.exec(l.a, 'ethtool', ['-K', l.a.veth, 'tx-udp-segmentation', 'off'])
      const dir = mkdtempSync(join(tmpdir(), 'sp-wgatk-'))
      closers.push(async () => rmSync(dir, { recursive: true, force: true }))
      const pcapFile = join(dir, 'a.pcap')
      const capture = await startCapture(l, l.a, pcapFile, `udp and src port ${PORT}`)
      closers.push(() => stop(capture))
      track(await startSuperpacketWg(l, l.a, { privateKey: a.privateKey, listenPort: PORT, peers: [{ publicKey: b.publicKey, allowedIPs: INNER, endpoint: endpointOf(l.b, PORT) }] }))
      const eb = track(await startSuperpacketWg(l, l.b, { privateKey: b.privateKey, listenPort: PORT, peers: [{ publicKey: a.publicKey, allowedIPs: INNER, endpoint: endpointOf(l.a, PORT) }] }))
      // Real traffic to replay, cut and forge.
      const warm = await tcpTransfer(l, l.a, l.b, 4 * MiB, 4)
      expect(warm.sha256Received).toBe(warm.sha256Sent)
      await stop(capture)
      const before = (await endpointStats(eb.process)) as unknown as WgStats & { inbound: { drops: number } }
      const transfer = tcpTransfer(l, l.a, l.b, 64 * MiB, 4)
      const attacker = l.node(l.a, 'lab/wg-attack.js', ['--pcap', pcapFile, '--to', endpointOf(l.b, PORT), '--victim-key', b.publicKey, '--per-kind', '1500', '--seconds', '30'])
      closers.push(() => stop(attacker))
      const sent = JSON.parse((await waitForLine(attacker, /(\{.*\})\n/, 60_000))[1]!) as Record<string, number>
      const t = await transfer
      expect(t.bytes).toBe(64 * MiB)
      expect(t.sha256Received).toBe(t.sha256Sent)
      const after = (await endpointStats(eb.process)) as unknown as WgStats & { inbound: { drops: number }; tun: { txDrops: number } }
      const total = Object.values(sent).reduce((x, y) => x + y, 0)
      const reasons = after.inbound.dropReasons
      // Every kind was seen and dropped under its reason.
      expect(reasons['replay'] ?? 0).toBeGreaterThan(0)
      expect(reasons['bad-mac'] ?? 0).toBeGreaterThan(0)
      expect((reasons['too-short'] ?? 0) + (reasons['mismatch'] ?? 0)).toBeGreaterThan(0)
      expect(reasons['bad-handshake'] ?? 0).toBeGreaterThan(0)
      // Nothing dropped that the attack did not send: no legitimate datagram was lost to it.
      expect(after.inbound.drops - before.inbound.drops).toBeLessThanOrEqual(total)
      // Nothing of it reached the TUN, and the peer did not move to the attacker's port.
      expect(after.tun.txDrops).toBe(0)
      expect(after.peers[0]!.endpoint).toBe(endpointOf(l.a, PORT))
      expect(after.closed).toBe('pending')
    })

    it('a wrong key on one side makes no session and no crash; fixing it recovers', async () => {
      lab = new Lab('wgkey')
      const a = keyPair()
      const b = keyPair()
      const wrong = keyPair()
      const specA = { privateKey: a.privateKey, listenPort: PORT, peers: [{ publicKey: wrong.publicKey, allowedIPs: INNER, endpoint: endpointOf(lab.b, PORT) }] }
      const ea = track(await startSuperpacketWg(lab, lab.a, specA))
      track(
        await startSuperpacketWg(lab, lab.b, {
          privateKey: b.privateKey,
          listenPort: PORT,
          peers: [{ publicKey: a.publicKey, allowedIPs: INNER, endpoint: endpointOf(lab.a, PORT) }],
        }),
      )
      const ac = new AbortController()
      const timer = setTimeout(() => ac.abort(), 4000)
      await expect(tcpTransfer(lab, lab.a, lab.b, MiB, 4, 10, ac.signal)).rejects.toThrow()
      clearTimeout(timer)
      const s = (await endpointStats(ea.process)) as unknown as WgStats
      expect(s.peers[0]!.lastHandshake).toBeNull()
      expect(s.closed).toBe('pending')
      await ea.close()
      track(await startSuperpacketWg(lab, lab.a, { ...specA, peers: [{ ...specA.peers[0]!, publicKey: b.publicKey }] }))
      const t = await tcpTransfer(lab, lab.a, lab.b, 16 * MiB, 4)
      expect(t.sha256Received).toBe(t.sha256Sent)
    })
  })
}
