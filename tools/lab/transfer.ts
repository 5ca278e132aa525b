/**
 * A TCP transfer of random data between two sides of a {@link Lab}, hashed at both ends.
 * @internal
 * @module
 */
import type { ChildProcess } from 'node:child_process'
import { stop, waitForLine, type Lab, type Side } from './netns.js'

/** A transfer's result. */
export interface Transfer {
  bytes: number
  sha256Sent: string
  sha256Received: string
  seconds: number
  gbps: number
}

/**
 * Sends `bytes` of random data over TCP from `from` to `to`'s inner address (IPv4 or IPv6). `signal` stops
 * both TCP processes and rejects.
 */
export async function tcpTransfer(
  lab: Lab,
  from: Side,
  to: Side,
  bytes: number,
  family: 4 | 6 = 4,
  timeoutSeconds = 240,
  signal?: AbortSignal,
): Promise<Transfer> {
  const dst = family === 6 ? `[${to.inner6}]:5201` : `${to.inner4}:5201`
  const recv = lab.node(to, 'demo/tcp.js', ['recv', '--listen', dst, '--timeout', String(timeoutSeconds)])
  let send: ChildProcess | undefined
  const aborted = new Promise<never>((_, reject) => {
    const onAbort = () => reject(new Error('transfer aborted'))
    if (signal?.aborted) onAbort()
    signal?.addEventListener('abort', onAbort, { once: true })
  })
  aborted.catch(() => {})
  try {
    await Promise.race([waitForLine(recv, /listening\n/, 10_000), aborted])
    const done = waitForLine(recv, /(\{.*\})\n/, timeoutSeconds * 1000)
    done.catch(() => {})
    send = lab.node(from, 'demo/tcp.js', ['send', '--to', dst, '--bytes', String(bytes), '--timeout', String(timeoutSeconds)])
    const sent = await Promise.race([waitForLine(send, /(\{.*\})\n/, timeoutSeconds * 1000), aborted])
    const got = await Promise.race([done, aborted])
    const s = JSON.parse(sent[1]!) as { sha256: string }
    const r = JSON.parse(got[1]!) as { bytes: number; sha256: string; seconds: number }
    return { bytes: r.bytes, sha256Sent: s.sha256, sha256Received: r.sha256, seconds: r.seconds, gbps: (r.bytes * 8) / r.seconds / 1e9 }
  } finally {
    await Promise.all([stop(recv), send && stop(send)])
  }
}
