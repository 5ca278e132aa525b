// Independent packet builders and checkers for the tests (plain TypeScript, not the code under test).

/** RFC 1071 over big-endian 16-bit words. */
export function inetChecksum(...parts: Uint8Array[]): number {
  let sum = 0
  for (const p of parts) {
    for (let i = 0; i < p.length; i += 2) sum += ((p[i] ?? 0) << 8) | (p[i + 1] ?? 0)
  }
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
  return ~sum & 0xffff
}

export interface Flow4 {
  src: number[]
  dst: number[]
  sport: number
  dport: number
}

export const FLOW: Flow4 = { src: [198, 18, 0, 1], dst: [198, 18, 0, 2], sport: 40000, dport: 5201 }

function pseudo4(src: number[], dst: number[], proto: number, len: number): Uint8Array {
  return Uint8Array.from([...src, ...dst, 0, proto, len >> 8, len & 0xff])
}

/** A complete IPv4/TCP packet with valid checksums. */
export function tcp4(flow: Flow4, seq: number, ack: number, payload: Uint8Array, opts: { id?: number; flags?: number } = {}): Buffer {
  const ip = Buffer.alloc(20 + 20 + payload.length)
  ip[0] = 0x45
  ip.writeUInt16BE(ip.length, 2)
  ip.writeUInt16BE(opts.id ?? 1, 4)
  ip[6] = 0x40
  ip[8] = 64
  ip[9] = 6
  ip.set(flow.src, 12)
  ip.set(flow.dst, 16)
  ip.writeUInt16BE(inetChecksum(ip.subarray(0, 20)), 10)
  const t = ip.subarray(20)
  t.writeUInt16BE(flow.sport, 0)
  t.writeUInt16BE(flow.dport, 2)
  t.writeUInt32BE(seq >>> 0, 4)
  t.writeUInt32BE(ack >>> 0, 8)
  t[12] = 5 << 4
  t[13] = opts.flags ?? 0x10
  t.writeUInt16BE(65535, 14)
  t.set(payload, 20)
  t.writeUInt16BE(inetChecksum(pseudo4(flow.src, flow.dst, 6, t.length), t), 16)
  return ip
}

/** A complete IPv4/UDP packet with valid checksums. */
export function udp4(flow: Flow4, payload: Uint8Array, id = 1): Buffer {
  const ip = Buffer.alloc(28 + payload.length)
  ip[0] = 0x45
  ip.writeUInt16BE(ip.length, 2)
  ip.writeUInt16BE(id, 4)
  ip[8] = 64
  ip[9] = 17
  ip.set(flow.src, 12)
  ip.set(flow.dst, 16)
  ip.writeUInt16BE(inetChecksum(ip.subarray(0, 20)), 10)
  const u = ip.subarray(20)
  u.writeUInt16BE(flow.sport, 0)
  u.writeUInt16BE(flow.dport, 2)
  u.writeUInt16BE(u.length, 4)
  u.set(payload, 8)
  const c = inetChecksum(pseudo4(flow.src, flow.dst, 17, u.length), u)
  u.writeUInt16BE(c === 0 ? 0xffff : c, 6)
  return ip
}

/** Whether an IPv4 packet's header and L4 checksums verify. */
export function checksumsValid4(p: Uint8Array): boolean {
  const ihl = ((p[0] ?? 0) & 0xf) * 4
  if (inetChecksum(p.subarray(0, ihl)) !== 0) return false
  const proto = p[9] ?? 0
  const l4 = p.subarray(ihl)
  return inetChecksum(pseudo4([...p.subarray(12, 16)], [...p.subarray(16, 20)], proto, l4.length), l4) === 0
}

/** Deterministic bytes. */
export function pattern(n: number, seed = 1): Buffer {
  const b = Buffer.alloc(n)
  let x = seed
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0
    b[i] = x >>> 24
  }
  return b
}
