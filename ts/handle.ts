/**
 * What Tun and UdpSocket share: a native handle that is closed once.
 * @internal
 * @module
 */
import { abortedError, closedError, fromNative, nativeAsync, SuperpacketAbortError } from './errors.js'
import { binding } from './native.js'

type NativeAbort = InstanceType<typeof binding.NativeAbort>

/** Options of a write or send. */
export interface WriteOptions {
  /**
   * Stops the write: it rejects with a {@link SuperpacketAbortError} whose `sent` says how much of it
   * went out. An abort takes effect between system calls: one already made, or waiting for room in the
   * socket, finishes first (so nothing is ever half sent, and the count is exact).
   */
  signal?: AbortSignal
}

/**
 * Runs a native write with `signal` wired to it: an abort before the start rejects with nothing sent
 * (`sent` 0); later, the native side stops before its next system call and reports what went out, to
 * which `sentBefore` (what the caller sent itself first) is added.
 * @internal
 */
export async function abortableWrite<T>(
  signal: AbortSignal | undefined,
  write: (abort: NativeAbort | undefined) => Promise<T>,
  sentBefore = 0,
): Promise<T> {
  if (signal === undefined) return nativeAsync(write(undefined))
  if (signal.aborted) throw abortedError(signal, sentBefore)
  const abort = new binding.NativeAbort()
  const onAbort = (): void => abort.abort()
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    return await write(abort)
  } catch (err) {
    const e = fromNative(err)
    if (e instanceof SuperpacketAbortError) throw abortedError(signal, sentBefore + (e.sent ?? 0))
    throw e
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}

/** A closable native object. */
export interface Closable {
  close(): Promise<void>
}

/**
 * Owns a native handle until {@link NativeHandle.close}; afterwards every use fails with
 * `ERR_SUPERPACKET_CLOSED`.
 */
export abstract class NativeHandle<N extends Closable> implements AsyncDisposable {
  #native: N | undefined
  readonly #what: string

  protected constructor(native: N, what: string) {
    this.#native = native
    this.#what = what
  }

  /** @internal the native handle, for writers and the tunnel */
  get native(): N {
    if (this.#native === undefined) throw closedError(this.#what)
    return this.#native
  }

  /**
   * Closes it: pending reads end (iterators finish cleanly) and the file descriptors are closed. Closing
   * twice is harmless.
   */
  async close(): Promise<void> {
    const n = this.#native
    this.#native = undefined
    if (n !== undefined) await nativeAsync(n.close())
  }

  /** Same as `close()`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close()
  }
}
