import { afterEach, describe, expect, it } from 'vitest'
import { generatePrivateKey, parseWireGuardConfig, publicKey, SuperpacketError, wireguard } from 'superpacket'
import { execFileSync } from 'node:child_process'
import { Lab } from '../tools/dist/lab/netns.js'
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
