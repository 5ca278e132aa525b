/**
 * Abortable, close-aware reads shared by {@link Tun} and {@link UdpSocket}.
 * @internal
 * @module
 */
import { abortedError, busyError, fromNative, SuperpacketAbortError, SuperpacketError } from './errors.js'
import { fast } from './native.js'

/**
 * Runs one native read at a time. Aborting a read does not lose what the native read returns later: the
 * result is kept and handed to the next read. A read asked for while another runs waits for its turn and
 * gets the next batch (distinct data, never the same batch twice), unless the reads share one reused
 * buffer (`exclusive`): then it fails with `ERR_SUPERPACKET_BUSY`, since its data would overwrite what
 * the running read is about to hand out.
 * @internal
 */
export class ReadQueue<T> {
  /** The native read in flight; after an abort, its result waits here for the next read. */
  #pending: Promise<T> | undefined
  /** Whether a read holds the turn. */
  #busy = false
  /** Reads waiting for the turn, first come first served. */
  readonly #waiting: (() => void)[] = []

  constructor(
    private readonly start: () => Promise<T>,
    private readonly exclusive: boolean,
  ) {}

  read(signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) return Promise.reject(abortedError(signal))
    if (!this.#busy) {
      this.#busy = true
      return this.#run(signal)
    }
    if (this.exclusive) {
      return Promise.reject(
        busyError('another read of this queue is running; with reuseBuffers, reads of one queue or socket run one at a time'),
      )
    }
    return this.#turn(signal).then(() => this.#run(signal))
  }

  /** Resolves when the running read hands the turn over (the turn stays taken), rejects on abort. */
  #turn(signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const wake = (): void => {
        signal?.removeEventListener('abort', onAbort)
        resolve()
      }
      const onAbort = (): void => {
        const i = this.#waiting.indexOf(wake)
        if (i >= 0) this.#waiting.splice(i, 1)
        reject(abortedError(signal!))
      }
      this.#waiting.push(wake)
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  async #run(signal?: AbortSignal): Promise<T> {
    try {
      return await this.#once(signal)
    } finally {
      const next = this.#waiting.shift()
      if (next === undefined) this.#busy = false
      else next()
    }
  }

  async #once(signal?: AbortSignal): Promise<T> {
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
      if (err instanceof SuperpacketAbortError) {
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
 * Reused read buffers (`reuseBuffers`), each with how many writes still need its bytes after an `await`.
 * A read into a buffer that a write holds would change the bytes under that write, so it fails with
 * `ERR_SUPERPACKET_BUSY` instead.
 */
const holds = new WeakMap<ArrayBufferLike, number>()

/**
 * A buffer that reads of one queue or socket reuse: every read of it checks {@link checkNotHeld} first.
 * @internal
 */
export function reusedBuffer(size: number): Buffer {
  const b = Buffer.allocUnsafeSlow(size)
  holds.set(b.buffer, 0)
  return b
}

/**
 * Marks the reused buffers that `views` point into as held until the returned function is called (once).
 * Views of other memory are not tracked.
 * @internal
 */
export function hold(views: readonly Uint8Array[]): () => void {
  const held: ArrayBufferLike[] = []
  for (const v of views) {
    const n = holds.get(v.buffer)
    if (n !== undefined && !held.includes(v.buffer)) {
      holds.set(v.buffer, n + 1)
      held.push(v.buffer)
    }
  }
  return () => {
    for (const b of held.splice(0)) holds.set(b, Math.max(0, (holds.get(b) ?? 1) - 1))
  }
}

/**
 * Throws `ERR_SUPERPACKET_BUSY` if a write still holds `buf`.
 * @internal
 */
export function checkNotHeld(buf: Buffer): void {
  if ((holds.get(buf.buffer) ?? 0) > 0) {
    throw busyError(
      'a write still uses the data of the previous read from this reused buffer: await the write before the next read, or copy the data',
    )
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

/** Where a watch's callback finds the read waiting for it (holds nothing of the socket or device). */
interface Waker {
  wake: ((status: number) => void) | undefined
}

/**
 * The callback handed to the native watch. Made here, away from any socket's or device's closures, so
 * that the native reference to it keeps only the waker alive: a socket or device dropped without
 * `close()` is still collected (its watch and descriptor closed by the finalizer).
 */
function wakeCallback(waker: Waker): (status: number) => void {
  return (status) => {
    const w = waker.wake
    waker.wake = undefined
    w?.(status)
  }
}

/** Whether new watches open (off only in tests of the native waits they replace: see `fault.ts`). */
let watchesOn = true

/** @internal */
export function setReadyWatches(on: boolean): void {
  watchesOn = on
}

/**
 * A descriptor watched for readability on this thread's own event loop (libuv), so that the kernel wakes
 * the JS thread itself when data arrives, instead of a runtime thread that then signals the JS thread.
 * Opened by the first wait (nothing is watched for a socket or queue that is never read from JS).
 * @internal
 */
export class ReadyWatch {
  /** `undefined` until the first wait; `null` once closed, or where there is no watch. */
  #watch: object | undefined | null
  readonly #waker: Waker = { wake: undefined }

  constructor(private readonly open: (callback: (status: number) => void) => object | undefined) {}

  /**
   * Resolves when data may be ready to read (or the watch was closed: the read that follows says what
   * happened). Without a watch, or if libuv reports one broken, `fallback` (the native wait) does it.
   */
  ready(fallback: () => Promise<void>): Promise<void> {
    if (this.#watch === undefined && !watchesOn) this.#watch = null
    if (this.#watch === undefined) {
      try {
        this.#watch = this.open(wakeCallback(this.#waker)) ?? null
      } catch {
        // No descriptor left for it (EMFILE), or no watch on this platform.
        this.#watch = null
      }
    }
    const watch = this.#watch
    if (watch === null || !fast.watchArm(watch)) return fallback()
    const waker = this.#waker
    return new Promise((resolve, reject) => {
      waker.wake = (status) => (status < 0 ? fallback().then(resolve, reject) : resolve())
    })
  }

  /** Closes the watch and its descriptor; a read waiting on it looks again (and then finds it closed). */
  close(): void {
    if (this.#watch != null) fast.watchClose(this.#watch)
    this.#watch = null
    const w = this.#waker.wake
    this.#waker.wake = undefined
    w?.(0)
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
