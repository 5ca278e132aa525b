/**
 * The framer an endpoint runs with, from its command line: plain, a fixed header, WireGuard from a
 * `wg`-format config file, or DTLS records keyed from a JSON key file.
 * @internal
 * @module
 */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import {
  dtlsFramer,
  headerFramer,
  parseWireGuardConfig,
  plainFramer,
  wireguard,
  type DtlsCipher,
  type DtlsKeys,
  type JsFramer,
  type NativeFramer,
  type WireGuardFramer,
} from 'superpacket'
import { jsDtlsFramer } from './js-dtls.js'

/** What the endpoint needs to know of its framer. */
export interface FramerChoice {
  /** The native framer (a native endpoint needs one). */
  framer: NativeFramer
  /** A JS framer to use instead on the JS path (`dtls-js`). */
  js?: JsFramer
  /** The WireGuard framer, for its peers' stats. */
  wireguard?: WireGuardFramer
  /** The MTU the config file asks for, if any. */
  mtu?: number
  /** DTLS: moves to the next epoch with keys both sides derive the same way; returns the new epoch. */
  rekey?: () => number
  /** DTLS: the framer's counters. */
  stats?: () => unknown
}

/** Where the framer's settings come from. */
export interface FramerSources {
  /** `wg`-format file for `wireguard`. */
  wgConfig?: string
  /** `wireguard`: start a new handshake after this many sealed packets. */
  rekeyAfterPackets?: number
  /** JSON key file for `dtls`: `{ cipher, epoch, prefix?, a: { key, iv }, b: { key, iv } }`, hex. */
  dtlsKeys?: string
  /** Which side of the key file this endpoint is (`a` seals with `a`, opens with `b`). */
  dtlsSide?: string
}

/** The keys of a DTLS key file. */
interface DtlsKeyFile {
  cipher: DtlsCipher
  epoch: number
  prefix?: string
  a: { key: string; iv: string }
  b: { key: string; iv: string }
}

/**
 * Builds the framer `name` names: `plain`, `header`, `wireguard`, `dtls`, or `dtls-js` (the same
 * ChaCha20-Poly1305 records sealed in TypeScript with node:crypto, for the JS path).
 */
export function chooseFramer(name: string, sources: FramerSources = {}): FramerChoice {
  if (name === 'header') return { framer: headerFramer(Buffer.from('superpkt')) }
  if (name === 'plain') return { framer: plainFramer() }
  if (name === 'wireguard') {
    if (sources.wgConfig === undefined) throw new Error('--framer wireguard needs --wg-config <file>')
    const file = parseWireGuardConfig(readFileSync(sources.wgConfig, 'utf8'))
    const wg = wireguard({ privateKey: file.privateKey, peers: file.peers, rekeyAfterPackets: sources.rekeyAfterPackets })
    return { framer: wg, wireguard: wg, ...(file.mtu === null ? {} : { mtu: file.mtu }) }
  }
  if (name === 'dtls' || name === 'dtls-js') {
    if (sources.dtlsKeys === undefined || (sources.dtlsSide !== 'a' && sources.dtlsSide !== 'b')) {
      throw new Error('--framer dtls needs --dtls-keys <file> and --dtls-side a|b')
    }
    const file = JSON.parse(readFileSync(sources.dtlsKeys, 'utf8')) as DtlsKeyFile
    const [mine, theirs] = sources.dtlsSide === 'a' ? [file.a, file.b] : [file.b, file.a]
    let epoch = file.epoch
    const at = (k: { key: string; iv: string }, e: number): DtlsKeys => ({
      key: derive(k.key, e, Buffer.from(k.key, 'hex').length),
      iv: derive(k.iv, e, Buffer.from(k.iv, 'hex').length),
    })
    const framer = dtlsFramer({
      cipher: file.cipher,
      epoch,
      tx: at(mine, epoch),
      rx: at(theirs, epoch),
      ...(file.prefix === undefined ? {} : { prefix: Buffer.from(file.prefix, 'hex') }),
    })
    if (name === 'dtls-js') {
      if (file.cipher !== 'chacha20-poly1305') throw new Error('--framer dtls-js seals ChaCha20-Poly1305 only')
      return { framer, js: jsDtlsFramer(epoch, at(mine, epoch), at(theirs, epoch)) }
    }
    const rekey = () => {
      epoch += 1
      framer.rekey({ epoch, tx: at(mine, epoch), rx: at(theirs, epoch) })
      return epoch
    }
    return { framer, rekey, stats: () => framer.stats() }
  }
  throw new Error(`unknown framer '${name}'`)
}

/** `len` bytes of key material for `epoch` from a base secret (hex): SHA-256(secret ‖ epoch). */
function derive(secretHex: string, epoch: number, len: number): Buffer {
  return createHash('sha256').update(Buffer.from(secretHex, 'hex')).update(String(epoch)).digest().subarray(0, len)
}
