/**
 * What Tun and UdpSocket share: a native handle that is closed once.
 * @internal
 * @module
 */
import { closedError, nativeAsync } from './errors.js'

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
