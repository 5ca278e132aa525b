/**
 * Errors thrown by superpacket. Every one is a {@link SuperpacketError} with a stable `code`.
 * @module
 */

/** The stable error codes. */
export type SuperpacketErrorCode =
  | 'ERR_SUPERPACKET_PERMISSION'
  | 'ERR_SUPERPACKET_UNSUPPORTED'
  | 'ERR_SUPERPACKET_CLOSED'
  | 'ERR_SUPERPACKET_INVALID_PACKET'
  | 'ERR_SUPERPACKET_INVALID_ARGUMENT'
  | 'ERR_SUPERPACKET_ABORTED'
  | 'ERR_SUPERPACKET_BUSY'
  | 'ERR_SUPERPACKET_OS'

/** An error with a stable `code`; `errno` and `syscall` are kept where a system call failed. */
export class SuperpacketError extends Error {
  /** The stable code, such as `ERR_SUPERPACKET_PERMISSION`. */
  readonly code: SuperpacketErrorCode
  /** For `ERR_SUPERPACKET_INVALID_PACKET`: why, such as `'truncated'` or `'gso-size-zero'`. */
  readonly reason?: string
  /** The OS error number, where a system call failed. */
  readonly errno?: number
  /** The failing system call, such as `'sendmsg'`. */
  readonly syscall?: string

  /** @internal */
  constructor(
    code: SuperpacketErrorCode,
    message: string,
    extra: { reason?: string; errno?: number; syscall?: string; cause?: unknown } = {},
  ) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause })
    this.name = 'SuperpacketError'
    this.code = code
    if (extra.reason !== undefined) this.reason = extra.reason
    if (extra.errno !== undefined) this.errno = extra.errno
    if (extra.syscall !== undefined) this.syscall = extra.syscall
  }
}

/**
 * How every abort rejects: Node's convention (`name` `'AbortError'`, `code` `'ABORT_ERR'`, the signal's
 * reason as `cause`), with superpacket's code in {@link SuperpacketAbortError.superpacketCode}.
 *
 * ```ts
 * try {
 *   await writer.write(batch, { signal })
 * } catch (err) {
 *   if (err instanceof SuperpacketAbortError) console.log('sent before the abort:', err.sent)
 * }
 * ```
 */
export class SuperpacketAbortError extends Error {
  /** Node's code for an aborted operation. */
  readonly code = 'ABORT_ERR' as const
  /** superpacket's code for it. */
  readonly superpacketCode = 'ERR_SUPERPACKET_ABORTED' as const
  /**
   * For a write: how many of the items it was given went out before the abort took effect, in the unit
   * of the call (frames, packets, datagrams, superpackets; each method's `signal` option says which). 0
   * means nothing of it was sent. Absent for reads.
   */
  readonly sent?: number

  /** @internal */
  constructor(reason: unknown, sent?: number) {
    super('The operation was aborted', { cause: reason })
    this.name = 'AbortError'
    if (sent !== undefined) this.sent = sent
  }
}

const DETAILS = / \[details:(\{.*\})\]$/

/**
 * Turns an error thrown by the native module into a {@link SuperpacketError}; anything else is returned as is.
 * @internal
 */
export function fromNative(err: unknown): unknown {
  if (!(err instanceof Error)) return err
  const m = DETAILS.exec(err.message)
  if (m?.[1] === undefined) return err
  let details: { code?: string; reason?: string; errno?: number; syscall?: string; sent?: number }
  try {
    details = JSON.parse(m[1]) as typeof details
  } catch {
    return err
  }
  if (typeof details.code !== 'string' || !details.code.startsWith('ERR_SUPERPACKET_')) return err
  const { code, sent, ...extra } = details
  // The native side stopped a write because its signal aborted; the caller knows the signal's reason.
  if (code === 'ERR_SUPERPACKET_ABORTED') return new SuperpacketAbortError(undefined, sent)
  return new SuperpacketError(code as SuperpacketErrorCode, err.message.slice(0, m.index), { ...extra, cause: err })
}

/**
 * Calls `fn`, rethrowing native errors as {@link SuperpacketError}.
 * @internal
 */
export function native<T>(fn: () => T): T {
  try {
    return fn()
  } catch (err) {
    throw fromNative(err)
  }
}

/**
 * Awaits `p`, rethrowing native errors as {@link SuperpacketError}.
 * @internal
 */
export async function nativeAsync<T>(p: Promise<T>): Promise<T> {
  try {
    return await p
  } catch (err) {
    throw fromNative(err)
  }
}

/** @internal */
export function closedError(what: string): SuperpacketError {
  return new SuperpacketError('ERR_SUPERPACKET_CLOSED', `${what} is closed`)
}

/** @internal */
export function abortedError(signal: AbortSignal, sent?: number): SuperpacketAbortError {
  return new SuperpacketAbortError(signal.reason, sent)
}

/** @internal */
export function busyError(message: string): SuperpacketError {
  return new SuperpacketError('ERR_SUPERPACKET_BUSY', message)
}

/** @internal */
export function invalidArgument(message: string): SuperpacketError {
  return new SuperpacketError('ERR_SUPERPACKET_INVALID_ARGUMENT', message)
}
