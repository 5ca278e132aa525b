/**
 * The framing hook: what wraps each segment before it is sent and unwraps each datagram after it arrives.
 *
 * Two kinds plug into the same writers and the {@link Tunnel}:
 * - native framers ({@link plainFramer}, {@link headerFramer}) run per segment in Rust, never entering JS;
 * - a {@link JsFramer} is called once per batch with views on one buffer, so a DTLS or WireGuard-style
 *   implementation written in TypeScript can seal and open in place.
 * @module
 */
import { invalidArgument } from './errors.js'

/** A framer implemented in native code; build one with {@link plainFramer} or {@link headerFramer}. */
export interface NativeFramer {
  /** Discriminates native framers from {@link JsFramer}s. */
  readonly kind: 'native'
  /** @internal what the native side builds */
  readonly spec: { type: 'plain' } | { type: 'header'; header: Buffer }
  /** Bytes reserved before every segment. */
  readonly headroom: number
  /** Bytes reserved after every segment. */
  readonly tailroom: number
}

/** Segments laid out for a {@link JsFramer} to seal in place. */
export interface SealBatch {
  /** One buffer holding every slot at a fixed stride. */
  readonly buffer: Buffer
  /** For each segment, a view of its whole slot: `headroom` bytes, the IP packet, `tailroom` bytes. */
  readonly slots: readonly Buffer[]
  /** The per-segment counter of the first slot; slot i has `counter + i` (use it as a nonce). */
  readonly counter: bigint
}

/**
 * A framer written in TypeScript. `seal` must fill each slot completely (headroom + packet + tailroom
 * bytes become the datagram), so that every full-size segment leaves with one datagram size.
 */
export interface JsFramer {
  /** Discriminates JS framers from native ones. */
  readonly kind?: 'js'
  /** Bytes reserved before every segment (such as a header with a counter). */
  readonly headroom: number
  /** Bytes reserved after every segment (such as an authentication tag). */
  readonly tailroom: number
  /** Seals every slot of the batch in place. */
  seal(batch: SealBatch): void | Promise<void>
  /**
   * Opens received datagrams; returns, for each, the inner IP packet (a view into the datagram is best)
   * or `null` to drop it.
   */
  open(datagrams: readonly Buffer[]): readonly (Uint8Array | null)[] | Promise<readonly (Uint8Array | null)[]>
}

/** Any framer the writers and the tunnel accept. */
export type Framer = NativeFramer | JsFramer

/** No framing: IP packets travel as UDP payloads unchanged. Runs natively. */
export function plainFramer(): NativeFramer {
  return { kind: 'native', spec: { type: 'plain' }, headroom: 0, tailroom: 0 }
}

/**
 * A fixed header (such as a connection id) before every segment, checked and removed on open: datagrams
 * with another header are dropped. Runs natively.
 * @param header - 1 to 255 bytes
 */
export function headerFramer(header: Uint8Array): NativeFramer {
  if (header.length === 0 || header.length > 255) throw invalidArgument('headerFramer: the header must be 1 to 255 bytes')
  return { kind: 'native', spec: { type: 'header', header: Buffer.from(header) }, headroom: header.length, tailroom: 0 }
}

/** @internal */
export function isNativeFramer(f: Framer): f is NativeFramer {
  return (f as NativeFramer).kind === 'native'
}

/** @internal checks a JS framer's declared sizes */
export function checkJsFramer(f: JsFramer): void {
  for (const [name, v] of [['headroom', f.headroom], ['tailroom', f.tailroom]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 1024) throw invalidArgument(`framer ${name} must be an integer from 0 to 1024`)
  }
  if (typeof f.seal !== 'function' || typeof f.open !== 'function') throw invalidArgument('a JS framer needs seal() and open()')
}
