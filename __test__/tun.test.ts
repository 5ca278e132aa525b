import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { run } from '../tools/dist/lab/netns.js'
import { privileged } from './helpers/privileged.js'

const PROBE = fileURLToPath(new URL('../tools/dist/lab/probe.js', import.meta.url))

/** A namespace of this test file, removed afterwards. */
const ns = `sp-tuntest-${process.pid}-${randomBytes(2).toString('hex')}`

function probe(args: string[], prefix: string[] = []): Record<string, unknown> {
  const out = execFileSync('ip', ['netns', 'exec', ns, ...prefix, process.execPath, PROBE, ...args], { encoding: 'utf8', timeout: 120_000 })
  return JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown>
}

if (privileged('TUN')) {
  describe('TUN devices (inside a namespace of the test)', () => {
    beforeAll(() => {
      run('ip', ['netns', 'add', ns])
    })
    afterAll(() => {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' })
    })

    it.each(['auto', 'on', 'off'])('reports the offloads the kernel shows (offload %s)', (offload) => {
      const r = probe(['offloads', '--offload', offload]) as { offloads: Record<string, boolean>; features: Record<string, boolean> }
      const { offloads: o, features: f } = r
      expect(f['tx-checksumming']).toBe(o.csum)
      expect(f['tx-tcp-segmentation']).toBe(o.tso4)
      expect(f['tx-tcp6-segmentation']).toBe(o.tso6)
      expect(f['tx-udp-segmentation']).toBe(o.uso4 && o.uso6)
      if (offload === 'off') expect(Object.values(o).every((v) => !v)).toBe(true)
      else expect(o.vnetHdr && o.csum && o.tso4 && o.tso6).toBe(true)
    })

    it('opens n queues with IFF_MULTI_QUEUE, one descriptor each, all closed on close()', () => {
      const r = probe(['open', '--queues', '4'])
      expect(r).toMatchObject({ queues: 4, tunFds: 4, tunFdsAfterClose: 0 })
    })

    it('1,000 open/close cycles leave the open descriptor count unchanged', () => {
      const r = probe(['lifecycle', '--cycles', '1000']) as { before: number; after: number; cycles: number }
      expect(r.cycles).toBe(1000)
      expect(r.after).toBe(r.before)
    })

    it('closing during a pending read ends the iterator cleanly and leaves no descriptor of the device open', () => {
      const r = probe(['close-during-read']) as { iteratorEnded: boolean; readResult: string; ms: number; tunFdsWaiting: number; tunFdsAfter: number }
      expect(r.iteratorEnded).toBe(true)
      // The queue and the duplicate the JS thread's event loop watches while the read waits; none after.
      expect(r.tunFdsWaiting).toBe(2)
      expect(r.tunFdsAfter).toBe(0)
      expect(['value', 'ERR_SUPERPACKET_CLOSED']).toContain(r.readResult)
      expect(r.ms).toBeLessThan(5000)
    })

    it('without CAP_NET_ADMIN, open fails with ERR_SUPERPACKET_PERMISSION and says what to do', () => {
      const r = probe(['open'], ['setpriv', '--inh-caps=-net_admin', '--bounding-set=-net_admin']) as { error?: { code: string; errno: number; message: string } }
      expect(r.error?.code).toBe('ERR_SUPERPACKET_PERMISSION')
      expect(r.error?.errno).toBe(1)
      expect(r.error?.message).toMatch(/CAP_NET_ADMIN/)
      expect(r.error?.message).toMatch(/--cap-add NET_ADMIN --device \/dev\/net\/tun/)
    })
  })
}
