/**
 * Abortable, close-aware reads shared by {@link Tun} and {@link UdpSocket}.
 * @internal
 * @module
 */
import { abortedError, fromNative, SuperpacketError } from './errors.js'

/**
 * Runs one native read at a time. Aborting a read does not lose what the native read returns later: the
 * result is kept and handed to the next read.
 * @internal
 */
export class ReadQueue<T> {
  #pending: Promise<T> | undefined

  constructor(private readonly start: () => Promise<T>) {}

  async read(signal?: AbortSignal): Promise<T> {
    signal?.throwIfAborted()
    const p = (this.#pending ??= this.start())
    const done = () => {
      if (this.#pending === p) this.#pending = undefined
    }
    if (signal === undefined) {
      try {
        return await p
      } catch (err) {
        throw fromNative(err)
      } finally {
        done()
      }
    }
    let onAbort!: () => void
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(abortedError(signal))
      signal.addEventListener('abort', onAbort, { once: true })
    })
    try {
      const value = await Promise.race([p, aborted])
      done()
      return value
    } catch (err) {
      if (err instanceof SuperpacketError && err.code === 'ERR_SUPERPACKET_ABORTED') {
        // Keep the native read; its result goes to the next read. Avoid an unhandled rejection meanwhile.
        p.catch(() => {})
        throw err
      }
      done()
      throw fromNative(err)
    } finally {
      signal.removeEventListener('abort', onAbort)
    }
  }
}

/**
 * Tries the synchronous native call first (no thread hop when data or room is there already) and falls
 * back to the asynchronous one; every `YIELD_EVERY`th call goes the asynchronous way regardless, so that a
 * busy loop still lets timers, signals and other I/O of the event loop run.
 * @internal
 */
export class SyncFirst {
  static readonly YIELD_EVERY = 32
  #streak = 0

  async run<T>(trySync: () => T | null, slow: () => Promise<T>): Promise<T> {
    if (++this.#streak < SyncFirst.YIELD_EVERY) {
      const v = trySync()
      if (v !== null) return v
    }
    this.#streak = 0
    return slow()
  }
}

/** @internal whether an error means the device or socket was closed */
export function isClosed(err: unknown): boolean {
  return err instanceof SuperpacketError && err.code === 'ERR_SUPERPACKET_CLOSED'
}

/**
 * Turns a batch reader into an async iterator of items that ends cleanly on close and throws on abort.
 * @internal
 */
export async function* iterate<B, T>(
  read: (signal?: AbortSignal) => Promise<B>,
  items: (batch: B) => Iterable<T>,
  signal?: AbortSignal,
): AsyncGenerator<T, void, undefined> {
  for (;;) {
    let batch: B
    try {
      batch = await read(signal)
    } catch (err) {
      if (isClosed(err)) return
      throw err
    }
    yield* items(batch)
  }
}
