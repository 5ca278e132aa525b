import { existsSync } from 'node:fs'
import { it } from 'vitest'

/**
 * Whether privileged tests (namespaces, TUN) can run. Outside CI without root they are skipped with a
 * printed reason; in CI (CI=true) a privileged test that cannot run is a failure, so a failing test stands
 * in for them.
 */
export function privileged(suite: string): boolean {
  const root = process.getuid?.() === 0
  const tun = existsSync('/dev/net/tun')
  if (root && tun) return true
  const why = root ? '/dev/net/tun is missing' : 'not running as root (needs CAP_NET_ADMIN)'
  if (process.env.CI === 'true') {
    it(`${suite}: privileged tests must run in CI`, () => {
      throw new Error(`${suite}: cannot run in CI: ${why}`)
    })
  } else {
    console.warn(`skipping ${suite}: ${why}`)
  }
  return false
}
