/**
 * The framing hook: what wraps each segment before it is sent and unwraps each datagram after it arrives.
 *
 * Two kinds plug into the same writers and the {@link Tunnel}:
 * - native framers ({@link plainFramer}, {@link headerFramer}) run per segment in Rust, never entering JS;
 * - a {@link JsFramer} is called once per batch with views on one buffer, so a DTLS or WireGuard-style
 *   implementation written in TypeScript can seal and open in place.
 * @module
 */
import { invalidArgument, native } from './errors.js'
import { binding } from './native.js'

/** @internal the native framer object */
export type NativeFramerHandle = InstanceType<typeof binding.NativeFramer>

/**
 * A framer implemented in native code; build one with {@link plainFramer} or {@link headerFramer}.
 *
 * A framer object is one key, one set of counters and (for encrypting framers) one set of sessions:
 * give the same object to every writer and tunnel that should share them.
 */
export interface NativeFramer {
  /** Discriminates native framers from {@link JsFramer}s. */
  readonly kind: 'native'
  /** @internal the native framer */
  readonly native: NativeFramerHandle
  /** Bytes reserved before every segment. */
  readonly headroom: number
  /** Bytes reserved after every segment. */
  readonly tailroom: number
  /**
   * Whether the framer picks each superpacket's destination itself (WireGuard routes by the inner
   * destination): writers and tunnels with such a framer need no `peer`.
   */
  readonly routes: boolean
}

/** Segments laid out for a {@link JsFramer} to seal in place. */
export interface SealBatch {
  /** One buffer holding every slot at a fixed stride. */
  readonly buffer: Buffer
  /** For each segment, a view of its whole slot: `headroom` bytes, the IP packet, `tailroom` bytes. */
  readonly slots: readonly Buffer[]
  /**
   * The counter of the first slot; slot i has `counter + i` (use it as a nonce). Counters belong to the
   * framer object: every writer that uses the same object draws from one sequence, a block per
   * superpacket, so none repeats while the process runs. Across restarts, rekey.
   */
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

/** @internal wraps a native framer object */
export function wrapNativeFramer(n: NativeFramerHandle): NativeFramer {
  return { kind: 'native', native: n, headroom: n.headroom, tailroom: n.tailroom, routes: n.routes }
}

/**
 * No framing: IP packets travel as UDP payloads unchanged. Runs natively. Authenticates nothing: use an
 * encrypting framer on networks you do not control.
 */
export function plainFramer(): NativeFramer {
  return wrapNativeFramer(native(() => new binding.NativeFramer({ type: 'plain' })))
}

/**
 * A fixed header (such as a connection id) before every segment, checked and removed on open: datagrams
 * with another header are dropped. Runs natively. Authenticates nothing (anyone who sees one datagram
 * can forge the header): use an encrypting framer on networks you do not control.
 * @param header - 1 to 255 bytes
 */
export function headerFramer(header: Uint8Array): NativeFramer {
  if (header.length === 0 || header.length > 255) throw invalidArgument('headerFramer: the header must be 1 to 255 bytes')
  return wrapNativeFramer(native(() => new binding.NativeFramer({ type: 'header', header: Buffer.from(header) })))
}

/** @internal */
export function isNativeFramer(f: Framer): f is NativeFramer {
  return (f as NativeFramer).kind === 'native'
}

/** The native side of each JS framer: its slot layout and its counters, one per framer object. */
const jsFramerSlots = new WeakMap<JsFramer, NativeFramerHandle>()

/**
 * @internal the native framer that seals or (for a JS framer) lays out slots and hands out counters; the
 * plain framer when none is given
 */
export function nativeFramerOf(f: Framer | undefined): NativeFramerHandle {
  if (f === undefined) return native(() => new binding.NativeFramer({ type: 'plain' }))
  if (isNativeFramer(f)) return f.native
  let n = jsFramerSlots.get(f)
  if (n === undefined) {
    checkJsFramer(f)
    const { headroom, tailroom } = f
    n = native(() => new binding.NativeFramer({ type: 'reserve', headroom, tailroom }))
    jsFramerSlots.set(f, n)
  }
  return n
}

/** @internal checks a JS framer's declared sizes */
export function checkJsFramer(f: JsFramer): void {
  for (const [name, v] of [['headroom', f.headroom], ['tailroom', f.tailroom]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 1024) throw invalidArgument(`framer ${name} must be an integer from 0 to 1024`)
  }
  if (typeof f.seal !== 'function' || typeof f.open !== 'function') throw invalidArgument('a JS framer needs seal() and open()')
}

/**
 * @internal opens one datagram with a native framer outside any data path (tests): the inner packet, or
 * the reason it was dropped
 */
export function openDatagram(f: NativeFramer, datagram: Uint8Array, address: string, port: number): { packet?: Buffer; dropReason?: string } {
  const r = native(() => f.native.openDatagram(Buffer.from(datagram), address, port))
  return { ...(r.packet == null ? {} : { packet: r.packet }), ...(r.dropReason == null ? {} : { dropReason: r.dropReason }) }
}
