/**
 * Checks that must run inside a namespace (so that a TUN never appears on the host), driven by the tests.
 * Each subcommand prints one JSON line.
 *
 *   node tools/dist/lab/probe.js open --offload auto|on|off [--queues n]   what the kernel granted, fds per queue
 *   node tools/dist/lab/probe.js offloads --offload auto|on|off             granted offloads and ethtool -k, both
 *   node tools/dist/lab/probe.js lifecycle --cycles 1000                    fd counts around open/close cycles
 *   node tools/dist/lab/probe.js close-during-read                          how a pending read ends on close
 * @internal
 * @module
 */
import { execFileSync } from 'node:child_process'
import { readdirSync, readlinkSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { SuperpacketError, Tun } from 'superpacket'

const { positionals, values: o } = parseArgs({
  allowPositionals: true,
  options: {
    offload: { type: 'string', default: 'auto' },
    queues: { type: 'string', default: '1' },
    cycles: { type: 'string', default: '1000' },
  },
})

function fdCount(): number {
  return readdirSync('/proc/self/fd').length
}

function tunFds(): number {
  let n = 0
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) === '/dev/net/tun') n++
    } catch {
      // The fd closed meanwhile.
    }
  }
  return n
}

function offloadOption(s: string | undefined): 'auto' | boolean {
  return s === 'auto' ? 'auto' : s === 'on'
}

async function main(): Promise<unknown> {
  switch (positionals[0]) {
    case 'open': {
      try {
        const tun = await Tun.open({ name: 'sp0', offload: offloadOption(o.offload), queues: Number(o.queues), ipv4: '198.18.200.1/24' })
        const r = { name: tun.name, queues: tun.queues, offloads: tun.offloads, tunFds: tunFds() }
        await tun.close()
        return { ...r, tunFdsAfterClose: tunFds() }
      } catch (err) {
        const e = err as SuperpacketError
        return { error: { name: e.name, code: e.code, errno: e.errno, syscall: e.syscall, message: e.message } }
      }
    }
    case 'offloads': {
      // ethtool runs while the device is open, so both describe the same state.
      const tun = await Tun.open({ name: 'sp0', offload: offloadOption(o.offload) })
      const features: Record<string, boolean> = {}
      for (const line of execFileSync('ethtool', ['-k', tun.name], { encoding: 'utf8' }).split('\n')) {
        const m = /^\s*([\w-]+): (on|off)/.exec(line)
        if (m) features[m[1]!] = m[2] === 'on'
      }
      const r = { offloads: tun.offloads, features }
      await tun.close()
      return r
    }
    case 'lifecycle': {
      const cycles = Number(o.cycles)
      // One warm-up cycle so that lazily created process-wide descriptors (the runtime's epoll) exist.
      await (await Tun.open({ name: 'sp0' })).close()
      const before = fdCount()
      for (let i = 0; i < cycles; i++) {
        const tun = await Tun.open({ name: 'sp0', offload: i % 2 === 0 ? 'auto' : false, queues: 1 + (i % 3) })
        await tun.close()
      }
      return { cycles, before, after: fdCount() }
    }
    case 'close-during-read': {
      const tun = await Tun.open({ name: 'sp0' })
      const t0 = Date.now()
      const iterated = (async () => {
        let n = 0
        for await (const _ of tun) n++
        return n
      })()
      const pendingRead = tun.read({ queue: 0 }).then(
        () => 'value',
        (e: SuperpacketError) => e.code,
      )
      // The reads wait on this thread's event loop, which watches a second descriptor of the queue.
      await new Promise((r) => setTimeout(r, 200))
      const tunFdsWaiting = tunFds()
      await tun.close()
      const [frames, readResult] = await Promise.all([iterated, pendingRead])
      // Nothing of the device is left open once close() resolved.
      return { iteratorEnded: true, frames, readResult, ms: Date.now() - t0, tunFdsWaiting, tunFdsAfter: tunFds() }
    }
    default:
      throw new Error(`unknown probe '${positionals[0]}'`)
  }
}

console.log(JSON.stringify(await main()))
process.exit(0)
