/**
 * A native per-segment AEAD framer whose records are DTLS 1.2 application_data records, keyed from JS:
 * for protocols that bring their own handshake (lightway, nebula-style, OpenVPN's data channel).
 *
 * Each datagram is `prefix ‖ record`: the record header (type 23, version 0xFEFD, epoch, 48-bit sequence
 * number, length) and the AEAD fragment as TLS 1.2 uses it (RFC 5246 §6.2.3.3, RFC 6347 §4.1.2.1):
 * ChaCha20-Poly1305 by RFC 7905 (nonce = iv XOR epoch‖sequence), AES-GCM by RFC 5288 (an 8-byte explicit
 * nonce equal to epoch‖sequence after the header; nonce = salt ‖ explicit nonce). The crypto is ring's.
 *
 * ```ts
 * const framer = dtlsFramer({ cipher: 'chacha20-poly1305', epoch: 1, tx: { key, iv }, rx: { key, iv } })
 * const tunnel = await Tunnel.start({ tun, socket, peer, framer })
 * framer.rekey({ epoch: 2, tx, rx })   // epoch-1 records still open for the grace period
 * ```
 * @module
 */
import { native } from './errors.js'
import { wrapNativeFramer, type NativeFramer } from './framer.js'
import { binding } from './native.js'

/** The record ciphers. */
export type DtlsCipher = 'chacha20-poly1305' | 'aes-128-gcm' | 'aes-256-gcm'

/** Key material of one direction of one epoch. */
export interface DtlsKeys {
  /** 32 bytes for ChaCha20-Poly1305 and AES-256-GCM, 16 for AES-128-GCM. */
  key: Uint8Array
  /** 12 bytes for ChaCha20-Poly1305 (the nonce mask), the 4-byte salt for AES-GCM. */
  iv: Uint8Array
}

/** What {@link dtlsFramer} takes. */
export interface DtlsFramerConfig {
  /** The record cipher, fixed for the framer's life. */
  cipher: DtlsCipher
  /** The first epoch (0 to 65535). */
  epoch: number
  /** Keys for the records this side seals. */
  tx: DtlsKeys
  /** Keys for the records the peer seals. */
  rx: DtlsKeys
  /** Bytes before every record (a session id, say; at most 255); datagrams with another prefix are dropped. */
  prefix?: Uint8Array
  /** Replay window in records (at least 1024; default the framer's). */
  replayWindow?: number
  /** How long after a rekey records of the previous epoch still open, in ms (default two minutes). */
  gracePeriodMs?: number
}

/** Counters of a {@link DtlsFramer}. */
export interface DtlsStats {
  /** The epoch records are sealed with. */
  epoch: number
  /** The previous epoch while its grace period lasts, else null. */
  previousEpoch: number | null
  /** Records sealed. */
  sealed: number
  /** Records opened (authenticated and new). */
  opened: number
  /** Superpackets refused because the epoch's sequence numbers were used up. */
  exhausted: number
  /** Datagrams dropped by reason (`bad-mac`, `replay`, `unknown-session`, `mismatch`, `too-short` ...). */
  dropReasons: Record<string, number>
}

/** A DTLS-record framer; give one object to every tunnel and writer of one session. */
export interface DtlsFramer extends NativeFramer {
  /**
   * Moves both directions to a greater epoch with new keys: later records are sealed in `epoch` with
   * sequence numbers from 0; records of the replaced epoch still open for the grace period.
   */
  rekey(keys: { epoch: number; tx: DtlsKeys; rx: DtlsKeys }): void
  /** Current counters. */
  stats(): DtlsStats
}

/**
 * Makes a DTLS-record framer. Sequence numbers are unique per epoch across every queue and writer of the
 * framer, reserved in blocks per superpacket; sealing is refused (`ERR_SUPERPACKET_KEY_EXHAUSTED`) before
 * the 48-bit space wraps. A bad option throws `ERR_SUPERPACKET_INVALID_ARGUMENT` naming the field.
 */
export function dtlsFramer(config: DtlsFramerConfig): DtlsFramer {
  const keys = (k: DtlsKeys) => ({ key: Buffer.from(k.key), iv: Buffer.from(k.iv) })
  const n = native(() =>
    binding.dtlsFramer({
      cipher: config.cipher,
      epoch: config.epoch,
      tx: keys(config.tx),
      rx: keys(config.rx),
      prefix: config.prefix === undefined ? undefined : Buffer.from(config.prefix),
      replayWindow: config.replayWindow,
      gracePeriodMs: config.gracePeriodMs,
    }),
  )
  return {
    ...wrapNativeFramer(n),
    rekey: ({ epoch, tx, rx }) => native(() => n.dtlsRekey({ epoch, tx: keys(tx), rx: keys(rx) })),
    stats: () => {
      const s = native(() => n.dtlsStats())
      return { ...s, previousEpoch: s.previousEpoch ?? null }
    },
  }
}
