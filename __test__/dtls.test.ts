import dgram from 'node:dgram'
import { createCipheriv, createDecipheriv, randomBytes, type CipherGCMTypes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { coalescePackets, dtlsFramer, splitSuperpacket, SuperpacketError, UdpSocket, type DtlsCipher } from 'superpacket'
import { openDatagram } from '../dist/framer.js'
import { stop, waitForLine } from '../tools/dist/lab/netns.js'
import { startCapture, udpDatagrams } from '../tools/dist/lab/pcap.js'
import { Spoofer } from '../tools/dist/lab/spoofer.js'
import { TunnelPair } from '../tools/dist/lab/tunnel-pair.js'
import { FLOW, pattern, udp4 } from './helpers/packets.js'
import { privileged } from './helpers/privileged.js'

const CIPHERS: DtlsCipher[] = ['chacha20-poly1305', 'aes-128-gcm', 'aes-256-gcm']
const KEY_LEN: Record<DtlsCipher, number> = { 'chacha20-poly1305': 32, 'aes-128-gcm': 16, 'aes-256-gcm': 32 }
const IV_LEN: Record<DtlsCipher, number> = { 'chacha20-poly1305': 12, 'aes-128-gcm': 4, 'aes-256-gcm': 4 }
const HEADER = 13
const TAG = 16
const MiB = 1 << 20

interface Keys {
  key: Buffer
  iv: Buffer
}
const keysFor = (c: DtlsCipher): Keys => ({ key: randomBytes(KEY_LEN[c]), iv: randomBytes(IV_LEN[c]) })

/** epoch ‖ sequence as 8 bytes. */
function epochSeq(epoch: number, seq: number): Buffer {
  const b = Buffer.alloc(8)
  b.writeUInt16BE(epoch, 0)
  b.writeUIntBE(seq, 2, 6)
  return b
}

/** The AEAD nonce of RFC 7905 (ChaCha20-Poly1305) or RFC 5288 (AES-GCM), built here from the spec. */
function nonce(c: DtlsCipher, iv: Buffer, es: Buffer): Buffer {
  if (c === 'chacha20-poly1305') {
    const n = Buffer.from(iv)
    for (let i = 0; i < 8; i++) n[4 + i]! ^= es[i]!
    return n
  }
  return Buffer.concat([iv, es])
}

/** Seals one record with node:crypto, independently of the framer. */
function sealRecord(c: DtlsCipher, k: Keys, epoch: number, seq: number, plaintext: Buffer, prefix = Buffer.alloc(0)): Buffer {
  const es = epochSeq(epoch, seq)
  const aad = Buffer.concat([es, Buffer.from([23, 0xfe, 0xfd]), u16(plaintext.length)])
  const cipher =
    c === 'chacha20-poly1305'
      ? createCipheriv('chacha20-poly1305', k.key, nonce(c, k.iv, es), { authTagLength: TAG })
      : createCipheriv(c as CipherGCMTypes, k.key, nonce(c, k.iv, es))
  cipher.setAAD(aad, { plaintextLength: plaintext.length })
  const body = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()])
  const explicit = c === 'chacha20-poly1305' ? Buffer.alloc(0) : es
  const fragment = Buffer.concat([explicit, body])
  return Buffer.concat([prefix, Buffer.from([23, 0xfe, 0xfd]), es, u16(fragment.length), fragment])
}

/** Opens one record with node:crypto, independently of the framer: epoch, sequence and plaintext. */
function openRecord(c: DtlsCipher, k: Keys, datagram: Buffer, prefixLen = 0): { epoch: number; seq: number; plaintext: Buffer } {
  const r = datagram.subarray(prefixLen)
  expect([r[0], r[1], r[2]]).toEqual([23, 0xfe, 0xfd])
  const es = r.subarray(3, 11)
  const len = r.readUInt16BE(11)
  const fragment = r.subarray(HEADER, HEADER + len)
  expect(fragment.length).toBe(len)
  const explicitLen = c === 'chacha20-poly1305' ? 0 : 8
  if (explicitLen > 0) expect(fragment.subarray(0, 8)).toEqual(es)
  const ciphertext = fragment.subarray(explicitLen, len - TAG)
  const aad = Buffer.concat([es, Buffer.from([23, 0xfe, 0xfd]), u16(ciphertext.length)])
  const d =
    c === 'chacha20-poly1305'
      ? createDecipheriv('chacha20-poly1305', k.key, nonce(c, k.iv, es), { authTagLength: TAG })
      : createDecipheriv(c as CipherGCMTypes, k.key, nonce(c, k.iv, es))
  d.setAAD(aad, { plaintextLength: ciphertext.length })
  d.setAuthTag(fragment.subarray(len - TAG))
  const plaintext = Buffer.concat([d.update(ciphertext), d.final()])
  return { epoch: es.readUInt16BE(0), seq: es.readUIntBE(2, 6), plaintext }
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2)
  b.writeUInt16BE(n)
  return b
}

describe('DTLS records against node:crypto', () => {
  it.each(CIPHERS)('%s: records on the wire decrypt with node:crypto, and node:crypto records open', async (c) => {
    const mine = keysFor(c)
    const theirs = keysFor(c)
    const prefix = Buffer.from('session-id-0001!')
    const framer = dtlsFramer({ cipher: c, epoch: 7, tx: mine, rx: theirs, prefix })
    expect(framer.headroom).toBe(prefix.length + HEADER + (c === 'chacha20-poly1305' ? 0 : 8))
    expect(framer.tailroom).toBe(TAG)

    // One USO superpacket of 20 segments, sealed natively and sent to a node:dgram socket on loopback.
    const packets = Array.from({ length: 20 }, (_, i) => udp4(FLOW, pattern(1200, i + 1), i + 1))
    const frames = coalescePackets(packets, { udp: true })
    expect(frames).toHaveLength(1)
    const receiver = dgram.createSocket('udp4')
    await new Promise<void>((r) => receiver.bind(0, '127.0.0.1', r))
    const got: Buffer[] = []
    const all = new Promise<void>((resolve) => receiver.on('message', (m) => got.push(m) === 40 && resolve()))
    const sock = await UdpSocket.bind({ address: '127.0.0.1', port: 0 })
    try {
      const out = sock.segmentWriter({ address: '127.0.0.1', port: receiver.address().port }, { framer })
      await out.write(frames[0]!)
      await out.write(frames[0]!)
      await Promise.race([all, new Promise((_, reject) => setTimeout(() => reject(new Error(`only ${got.length} of 40 datagrams`)), 5000))])
    } finally {
      receiver.close()
      await sock.close()
    }
    const expected = splitSuperpacket(frames[0]!)
    const seqs = got.map((d, i) => {
      expect(d.subarray(0, prefix.length)).toEqual(prefix)
      const r = openRecord(c, mine, d, prefix.length)
      expect(r.epoch).toBe(7)
      expect(r.plaintext).toEqual(expected[i % 20])
      return r.seq
    })
    // One block of sequence numbers per superpacket, from 0, none twice.
    expect(seqs).toEqual(Array.from({ length: 40 }, (_, i) => i))
    expect(framer.stats().sealed).toBe(40)

    // node:crypto seals as the peer would: the framer opens them; anything altered is dropped by reason.
    const p = packets[0]!
    const from = ['127.0.0.1', 9] as const
    const good = (seq: number) => sealRecord(c, theirs, 7, seq, p, prefix)
    expect(openDatagram(framer, good(5), ...from).packet).toEqual(p)
    expect(openDatagram(framer, good(5), ...from).dropReason).toBe('replay')
    const flipped = good(6)
    flipped[flipped.length - 3]! ^= 0x10
    expect(openDatagram(framer, flipped, ...from).dropReason).toBe('bad-mac')
    expect(openDatagram(framer, sealRecord(c, theirs, 8, 1, p, prefix), ...from).dropReason).toBe('unknown-session')
    expect(openDatagram(framer, sealRecord(c, theirs, 7, 9, p, Buffer.from('session-id-0002!')), ...from).dropReason).toBe('mismatch')
    expect(openDatagram(framer, good(10).subarray(0, prefix.length + 20), ...from).dropReason).toMatch(/too-short|mismatch/)
    // The record whose tag was flipped was not marked in the replay window: the genuine one still opens.
    expect(openDatagram(framer, good(6), ...from).packet).toEqual(p)
    const drops = framer.stats().dropReasons
    expect(drops['replay']).toBe(1)
    expect(drops['bad-mac']).toBe(1)
  })

  it('refuses bad keys naming the field, and rekeys to a greater epoch only', () => {
    const c: DtlsCipher = 'aes-128-gcm'
    const k = keysFor(c)
    const cases: [() => unknown, RegExp][] = [
      [() => dtlsFramer({ cipher: 'des' as DtlsCipher, epoch: 1, tx: k, rx: k }), /cipher/],
      [() => dtlsFramer({ cipher: c, epoch: 1, tx: { key: randomBytes(32), iv: k.iv }, rx: k }), /tx\.key/],
      [() => dtlsFramer({ cipher: c, epoch: 1, tx: k, rx: { key: k.key, iv: randomBytes(12) } }), /rx\.iv/],
      [() => dtlsFramer({ cipher: c, epoch: 70_000, tx: k, rx: k }), /epoch/],
      [() => dtlsFramer({ cipher: c, epoch: 1, tx: k, rx: k, prefix: Buffer.alloc(256) }), /prefix/],
    ]
    for (const [make, field] of cases) {
      let err: unknown
      try {
        make()
      } catch (e) {
        err = e
      }
      expect(err).toBeInstanceOf(SuperpacketError)
      expect((err as SuperpacketError).code).toBe('ERR_SUPERPACKET_INVALID_ARGUMENT')
      expect((err as Error).message).toMatch(field)
    }
    const f = dtlsFramer({ cipher: c, epoch: 3, tx: k, rx: k })
    expect(() => f.rekey({ epoch: 3, tx: k, rx: k })).toThrow(/epoch/)
    f.rekey({ epoch: 4, tx: keysFor(c), rx: keysFor(c) })
    expect(f.stats().epoch).toBe(4)
    expect(f.stats().previousEpoch).toBe(3)
  })
})

let pair: TunnelPair | undefined
let dir: string | undefined
afterEach(async () => {
  await pair?.close()
  pair = undefined
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
  dir = undefined
})

if (privileged('DTLS tunnels')) {
  describe('DTLS tunnels between namespaces', () => {
    it.each(CIPHERS)('%s: 256 MiB intact on 2 queues across a rekey, no (epoch, sequence) twice on the wire', async (c) => {
      dir = mkdtempSync(join(tmpdir(), 'sp-dtls-'))
      const keyFile = join(dir, 'keys.json')
      const hex = (n: number) => randomBytes(n).toString('hex')
      writeFileSync(keyFile, JSON.stringify({ cipher: c, epoch: 1, a: { key: hex(KEY_LEN[c]), iv: hex(IV_LEN[c]) }, b: { key: hex(KEY_LEN[c]), iv: hex(IV_LEN[c]) } }), { mode: 0o600 })
      pair = await TunnelPair.start('dtls', { framer: 'dtls', dtlsKeys: keyFile, queues: 2 })
      const l = pair.lab
      // a's datagrams leave segmented in software, so the capture sees each record (b's, which use other
      // keys, are left out).
      l.exec(l.a, 'ethtool', ['-K', l.a.veth, 'tx-udp-segmentation', 'off'])
      const pcapFile = join(dir, 'a.pcap')
      const capture = await startCapture(l, l.a, pcapFile, `udp and src host ${l.a.outer4} and src port 51820`, 64)
      try {
        const transfer = pair.transfer(256 * MiB, 4)
        // Rekey once a good part of the data has gone through epoch 1 (bounded wait).
        for (let t = 0; ; t++) {
          const s = (await pair.statsOf(1)) as { framer: { opened: number } }
          if (s.framer.opened > 20_000) break
          if (t > 200) throw new Error('the transfer did not start within 20 s')
          await new Promise((r) => setTimeout(r, 100))
        }
        // The receiving side first, so that few records arrive under an epoch it does not know yet.
        for (const i of [1, 0] as const) {
          const rekeyed = waitForLine(pair.endpoints[i]!, /rekeyed 2\n/, 5000)
          pair.endpoints[i]!.kill('SIGHUP')
          await rekeyed
        }
        const t = await transfer
        expect(t.bytes).toBe(256 * MiB)
        expect(t.sha256Received).toBe(t.sha256Sent)
      } finally {
        await stop(capture)
      }
      const [sa, sb] = (await pair.stats()) as { framer: { epoch: number; sealed: number; opened: number; dropReasons: Record<string, number> } }[]
      expect(sa!.framer.epoch).toBe(2)
      expect(sb!.framer.epoch).toBe(2)
      expect(sb!.framer.opened).toBeGreaterThan((256 * MiB) / 1500)
      expect(sb!.framer.dropReasons['bad-mac'] ?? 0).toBe(0)
      expect(sb!.framer.dropReasons['replay'] ?? 0).toBe(0)
      const seen = new Set<string>()
      const epochs = new Set<number>()
      for (const d of udpDatagrams(readFileSync(pcapFile))) {
        if (d.payload.length < HEADER || d.payload[0] !== 23) continue
        const key = d.payload.subarray(3, 11).toString('hex')
        expect(seen.has(key)).toBe(false)
        seen.add(key)
        epochs.add(d.payload.readUInt16BE(3))
      }
      expect(seen.size).toBeGreaterThan((256 * MiB) / 1500)
      expect([...epochs].sort()).toEqual([1, 2])
    })

    it('hostile records at the port during a transfer are dropped by reason and cost no legitimate packet', async () => {
      const c: DtlsCipher = 'chacha20-poly1305'
      dir = mkdtempSync(join(tmpdir(), 'sp-dtls-atk-'))
      const keyFile = join(dir, 'keys.json')
      const hex = (n: number) => randomBytes(n).toString('hex')
      writeFileSync(keyFile, JSON.stringify({ cipher: c, epoch: 1, a: { key: hex(32), iv: hex(12) }, b: { key: hex(32), iv: hex(12) } }), { mode: 0o600 })
      pair = await TunnelPair.start('dtlsatk', { framer: 'dtls', dtlsKeys: keyFile })
      const l = pair.lab
      l.exec(l.a, 'ethtool', ['-K', l.a.veth, 'tx-udp-segmentation', 'off'])
      const pcapFile = join(dir, 'a.pcap')
      const capture = await startCapture(l, l.a, pcapFile, `udp and src host ${l.a.outer4} and src port 51820`)
      try {
        const warm = await pair.transfer(4 * MiB, 4)
        expect(warm.sha256Received).toBe(warm.sha256Sent)
      } finally {
        await stop(capture)
      }
      const [, before] = (await pair.stats()) as { framer: { dropReasons: Record<string, number> } }[]
      const transfer = pair.transfer(64 * MiB, 4)
      // From the peer's own address and port (a spoofer namespace): the tunnel's source check lets these
      // through to the framer, which has to tell them apart by their records.
      const spoofer = new Spoofer(l, l.b, l.a)
      const attacker = l.node(spoofer.side, 'lab/wg-attack.js', ['--protocol', 'dtls', '--pcap', pcapFile, '--from', `${l.a.outer4}:51820`, '--to', `${l.b.outer4}:51820`, '--per-kind', '1500', '--seconds', '30'])
      try {
        const sent = JSON.parse((await waitForLine(attacker, /(\{.*\})\n/, 60_000))[1]!) as Record<string, number>
        const t = await transfer
        expect(t.bytes).toBe(64 * MiB)
        expect(t.sha256Received).toBe(t.sha256Sent)
        const [, after] = (await pair.stats()) as { framer: { dropReasons: Record<string, number> }; tun: { txDrops: number }; closed: string }[]
        const delta = (r: string) => (after!.framer.dropReasons[r] ?? 0) - (before!.framer.dropReasons[r] ?? 0)
        expect(delta('replay')).toBeGreaterThan(0)
        expect(delta('bad-mac')).toBeGreaterThan(0)
        expect(delta('unknown-session')).toBeGreaterThan(0)
        expect(delta('too-short') + delta('mismatch')).toBeGreaterThan(0)
        // Nothing dropped beyond what the attack sent, nothing of it written to the TUN, the tunnel runs.
        const dropped = Object.keys(after!.framer.dropReasons).reduce((n, r) => n + delta(r), 0)
        expect(dropped).toBeLessThanOrEqual(Object.values(sent).reduce((x, y) => x + y, 0))
        expect(after!.tun.txDrops).toBe(0)
        expect(after!.closed).toBe('pending')
      } finally {
        await stop(attacker)
        spoofer.destroy()
      }
    })
  })
}
