/**
 * An independent check of split packets for the tests: IP lengths and L4 checksums recomputed here, in plain
 * TypeScript, not by the code under test.
 * @internal
 * @module
 */

function sum16(data: Uint8Array, acc = 0): number {
  for (let i = 0; i < data.length; i += 2) acc += ((data[i] ?? 0) << 8) | (data[i + 1] ?? 0)
  return acc
}

function fold(acc: number): number {
  while (acc > 0xffff) acc = (acc & 0xffff) + Math.floor(acc / 0x10000)
  return acc
}

/** Whether `p` is a whole IPv4/IPv6 TCP or UDP packet whose length fields and checksums are right. */
export function packetValid(p: Uint8Array): boolean {
  const version = (p[0] ?? 0) >> 4
  let l4: Uint8Array
  let pseudo: number
  let proto: number
  if (version === 4) {
    const ihl = ((p[0] ?? 0) & 0xf) * 4
    const total = ((p[2] ?? 0) << 8) | (p[3] ?? 0)
    if (total !== p.length || fold(sum16(p.subarray(0, ihl))) !== 0xffff) return false
    proto = p[9] ?? 0
    l4 = p.subarray(ihl)
    pseudo = sum16(p.subarray(12, 20)) + proto + l4.length
  } else if (version === 6) {
    const payload = ((p[4] ?? 0) << 8) | (p[5] ?? 0)
    if (payload + 40 !== p.length) return false
    proto = p[6] ?? 0
    if (proto !== 6 && proto !== 17) return true // extension headers: lengths checked, L4 not walked here
    l4 = p.subarray(40)
    pseudo = sum16(p.subarray(8, 40)) + proto + l4.length
  } else {
    return false
  }
  if (proto !== 6 && proto !== 17) return true
  if (proto === 17 && (((l4[4] ?? 0) << 8) | (l4[5] ?? 0)) !== l4.length) return false
  return fold(sum16(l4, pseudo)) === 0xffff
}
