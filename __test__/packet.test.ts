import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { coalescePackets, splitSuperpacket, SuperpacketError } from 'superpacket'
import { checksumsValid4, FLOW, pattern, tcp4, udp4 } from './helpers/packets.js'

const MSS = 1448

function tcpRun(n: number, last = MSS): Buffer[] {
  const data = pattern(MSS * (n - 1) + last)
  return Array.from({ length: n }, (_, i) =>
    tcp4(FLOW, 1000 + i * MSS, 77, data.subarray(i * MSS, Math.min((i + 1) * MSS, data.length)), { id: 100 + i }),
  )
}

describe('coalescePackets + splitSuperpacket', () => {
  it('merges one TCP flow into one TSO frame and splits it back byte for byte', () => {
    const packets = tcpRun(10, 500)
    const frames = coalescePackets(packets)
    expect(frames).toHaveLength(1)
    const f = frames[0]!
    expect(f[0]).toBe(1) // NEEDS_CSUM
    expect(f[1]).toBe(1) // GSO_TCPV4
    expect(f.readUInt16LE(4)).toBe(MSS)
    expect(f.readUInt16LE(6)).toBe(20)
    expect(f.readUInt16LE(8)).toBe(16)
    expect(f.length).toBe(10 + 40 + MSS * 9 + 500)
    const segs = splitSuperpacket(f)
    expect(segs.map((s) => s.toString('hex'))).toEqual(packets.map((p) => p.toString('hex')))
    for (const s of segs) expect(checksumsValid4(s)).toBe(true)
  })

  it('keeps packets that cannot merge unchanged behind a zeroed header, in flow order', () => {
    const a = tcpRun(3)
    const other = udp4({ ...FLOW, sport: 1 }, pattern(100))
    const gap = tcp4(FLOW, 1000 + 10 * MSS, 77, pattern(MSS), { id: 103 })
    const frames = coalescePackets([a[0]!, other, a[1]!, a[2]!, gap])
    expect(frames).toHaveLength(3)
    expect(frames[1]!.subarray(0, 10).every((b) => b === 0)).toBe(true)
    expect(frames[1]!.subarray(10).equals(other)).toBe(true)
    expect(frames[2]!.subarray(10).equals(gap)).toBe(true)
  })

  it('merges UDP datagrams into USO frames unless udp is off', () => {
    const flow = { ...FLOW, dport: 9999 }
    const dgrams = Array.from({ length: 5 }, (_, i) => udp4(flow, pattern(1200, i + 1), 10 + i))
    const merged = coalescePackets(dgrams)
    expect(merged).toHaveLength(1)
    expect(merged[0]![1]).toBe(5)
    expect(splitSuperpacket(merged[0]!).map((b) => b.toString('hex'))).toEqual(dgrams.map((d) => d.toString('hex')))
    expect(coalescePackets(dgrams, { udp: false })).toHaveLength(5)
    expect(coalescePackets(tcpRun(4), { tcp: false })).toHaveLength(4)
  })

  it.each([
    ['truncated', Buffer.alloc(5), 'truncated'],
    ['gso size 0', (() => { const f = coalescePackets(tcpRun(2))[0]!; f.writeUInt16LE(0, 4); return f })(), 'gso-size-zero'],
    ['length mismatch', Buffer.concat([coalescePackets(tcpRun(2))[0]!, Buffer.alloc(3)]), 'length-mismatch'],
    ['gso type vs protocol', (() => { const f = coalescePackets(tcpRun(2))[0]!; f[1] = 4; return f })(), 'gso-type-mismatch'],
  ])('throws a coded error on a malformed frame: %s', (_name, frame, reason) => {
    let err: unknown
    try {
      splitSuperpacket(frame)
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(SuperpacketError)
    expect((err as SuperpacketError).code).toBe('ERR_SUPERPACKET_INVALID_PACKET')
    expect((err as SuperpacketError).reason).toBe(reason)
  })

  it('loads with require() in a CommonJS program', () => {
    // By the package's name, from its root, as a CommonJS user's require() would resolve it.
    const script = `const sp = require('superpacket');
      const frames = sp.coalescePackets([]); process.stdout.write(typeof sp.Tun + ':' + frames.length)`
    const out = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', cwd: fileURLToPath(new URL('..', import.meta.url)) })
    expect(out).toBe('function:0')
  })
})
