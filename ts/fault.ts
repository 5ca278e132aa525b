/**
 * Fault injection for the test suite: makes chosen system calls of the native layer fail with a chosen
 * errno a number of times, so the fallbacks and error paths can be exercised on demand. Not public API:
 * the package root does not export it, and it may change without notice.
 * @internal
 * @module
 */
import { binding } from './native.js'
import { setReadyWatches } from './reader.js'

/** A native system call that can be made to fail. @internal */
export type FaultSyscall = 'tunRead' | 'tunWrite' | 'sendGso' | 'sendmmsg' | 'recvmmsg'
/** The errnos an injected failure may carry. @internal */
export type FaultErrno = 'EIO' | 'EINVAL' | 'EMSGSIZE' | 'EAGAIN' | 'ENOBUFS' | 'EPERM'

/**
 * Makes the next `times` calls of `syscall` in this process fail with `errno`, after letting `after` calls
 * of it run (to fail one in the middle of a batch). Faults of one call queue up in the order injected.
 * @internal
 */
export function injectFault(syscall: FaultSyscall, errno: FaultErrno, times = 1, after = 0): void {
  binding.injectFault(syscall, errno, times, after)
}

/** Drops every pending fault. @internal */
export function clearFaults(): void {
  binding.clearFaults()
}

/**
 * Turns the event-loop watches of later reads off (they then wait through the native runtime, as where
 * there is no libuv) or back on. Reads that opened a watch keep it. @internal
 */
export function useReadyWatches(on: boolean): void {
  setReadyWatches(on)
}
