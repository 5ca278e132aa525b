/**
 * The DTLS-record framer written in TypeScript with node:crypto, record by record: the baseline the bench
 * compares the native DTLS framer with (same records on the wire, ChaCha20-Poly1305 by RFC 7905).
 * @internal
 * @module
 */
import { createCipheriv, createDecipheriv } from 'node:crypto'
import type { DtlsKeys, JsFramer, SealBatch } from 'superpacket'

const HEADER = 13
const TAG = 16
const TYPE_AND_VERSION = Buffer.from([23, 0xfe, 0xfd])

/** ChaCha20-Poly1305 DTLS records sealed and opened by node:crypto; sequence numbers from the writer's counters. */
export function jsDtlsFramer(epoch: number, tx: DtlsKeys, rx: DtlsKeys): JsFramer {
  const nonceFor = (iv: Uint8Array, es: Buffer) => {
    const n = Buffer.from(iv)
    for (let i = 0; i < 8; i++) n[4 + i]! ^= es[i]!
    return n
  }
  const epochSeq = (seq: bigint) => {
    const es = Buffer.alloc(8)
    es.writeBigUInt64BE((BigInt(epoch) << 48n) | seq)
    return es
  }
  const aad = (es: Buffer, len: number) => {
    const a = Buffer.alloc(13)
    es.copy(a, 0)
    TYPE_AND_VERSION.copy(a, 8)
    a.writeUInt16BE(len, 11)
    return a
  }
  return {
    headroom: HEADER,
    tailroom: TAG,
    seal(batch: SealBatch) {
      batch.slots.forEach((slot, i) => {
        const es = epochSeq(batch.counter + BigInt(i))
        const len = slot.length - HEADER - TAG
        const c = createCipheriv('chacha20-poly1305', tx.key, nonceFor(tx.iv, es), { authTagLength: TAG })
        c.setAAD(aad(es, len), { plaintextLength: len })
        const body = Buffer.concat([c.update(slot.subarray(HEADER, HEADER + len)), c.final()])
        body.copy(slot, HEADER)
        c.getAuthTag().copy(slot, HEADER + len)
        TYPE_AND_VERSION.copy(slot, 0)
        es.copy(slot, 3)
        slot.writeUInt16BE(len + TAG, 11)
      })
    },
    open(datagrams: readonly Buffer[]) {
      return datagrams.map((d) => {
        if (d.length <= HEADER + TAG || d[0] !== 23) return null
        const es = d.subarray(3, 11)
        const len = d.length - HEADER - TAG
        try {
          const c = createDecipheriv('chacha20-poly1305', rx.key, nonceFor(rx.iv, es), { authTagLength: TAG })
          c.setAAD(aad(es, len), { plaintextLength: len })
          c.setAuthTag(d.subarray(d.length - TAG))
          return Buffer.concat([c.update(d.subarray(HEADER, HEADER + len)), c.final()])
        } catch {
          return null
        }
      })
    },
  }
}
