/**
 * The tunnels the bench measures, each between the two namespaces of a fresh {@link Lab}: none (direct
 * veth), superpacket endpoints ({@link TunnelPair}), and wireguard-go configured with `wg`.
 * @internal
 * @module
 */
import type { ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Lab } from '../lab/netns.js'
import { TunnelPair, type PairOptions } from '../lab/tunnel-pair.js'
import { endpointOf, keyPair, startSuperpacketWg, startWireguardGo, type WgEndpoint } from '../lab/wireguard.js'
import { realPid } from './proc.js'

/** The repository's root, seen from the compiled tools/dist/bench/. */
export const REPO_ROOT = join(import.meta.dirname, '..', '..', '..')

/** Where the bench keeps what it builds and installs (git-ignored). */
export const WORK_DIR = join(REPO_ROOT, 'bench', '.work')


/** A tunnel (or none) between the lab's namespaces, ready for iperf3. */
export interface Setup {
  lab: Lab
  /** The iperf3 server address, in namespace b. */
  server: string
  /** The tunnel processes whose CPU, system calls and memory are measured. */
  pids: number[]
  close(): Promise<void>
}

/** Every child the bench starts, killed on exit (also on SIGINT) before the namespaces are removed. */
export const children = new Set<ChildProcess>()
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
})

/** Tracks a child until it exits. */
export function track<T extends ChildProcess>(c: T): T {
  children.add(c)
  c.once('exit', () => children.delete(c))
  return c
}

export function direct(): Setup {
  const lab = new Lab('bench')
  return { lab, server: lab.b.outer4, pids: [], close: async () => lab.destroy() }
}

export async function superpacket(options: PairOptions): Promise<Setup> {
  const pair = await TunnelPair.start('bench', options)
  pair.endpoints.forEach(track)
  return { lab: pair.lab, server: pair.lab.b.inner4, pids: pair.endpoints.map(realPid), close: () => pair.close() }
}

/**
 * superpacket endpoints with the DTLS-record framer and fresh random keys (`js`: the same ChaCha20-Poly1305
 * records sealed by a JS framer with node:crypto, on the JS path).
 */
export async function dtlsPair(cipher: 'chacha20-poly1305' | 'aes-256-gcm', js = false): Promise<Setup> {
  mkdirSync(WORK_DIR, { recursive: true })
  const keyFile = join(WORK_DIR, `dtls-keys-${process.pid}.json`)
  const hex = (n: number) => randomBytes(n).toString('hex')
  const ivLen = cipher === 'chacha20-poly1305' ? 12 : 4
  writeFileSync(keyFile, JSON.stringify({ cipher, epoch: 1, a: { key: hex(32), iv: hex(ivLen) }, b: { key: hex(32), iv: hex(ivLen) } }), { mode: 0o600 })
  try {
    const setup = await superpacket({ mode: js ? 'js' : 'native', offload: 'on', framer: js ? 'dtls-js' : 'dtls', dtlsKeys: keyFile })
    return { ...setup, close: async () => { await setup.close(); rmSync(keyFile, { force: true }) } }
  } catch (err) {
    rmSync(keyFile, { force: true })
    throw err
  }
}

/** One side of a WireGuard setup: wireguard-go, or a superpacket endpoint (native Tunnel or JS path). */
export type WgKind = 'wireguard-go' | 'native' | 'js'

/**
 * WireGuard between the namespaces, `kinds[0]` in a and `kinds[1]` in b, MTU 1420, fresh keys, each side's
 * endpoint on the veth, AllowedIPs the other side's inner addresses.
 */
export async function wireguardPair(kinds: [WgKind, WgKind]): Promise<Setup> {
  const lab = new Lab('bench-wg')
  const sides = [lab.a, lab.b] as const
  const keys = sides.map(() => keyPair())
  const started: WgEndpoint[] = []
  const close = async () => {
    await Promise.all(started.map((e) => e.close()))
    lab.destroy()
  }
  try {
    for (const [i, s] of sides.entries()) {
      const other = sides[1 - i]!
      const spec = {
        privateKey: keys[i]!.privateKey,
        listenPort: 51820,
        peers: [{ publicKey: keys[1 - i]!.publicKey, endpoint: endpointOf(other, 51820), allowedIPs: [`${other.inner4}/32`, `${other.inner6}/128`] }],
      }
      const kind = kinds[i]!
      const e =
        kind === 'wireguard-go'
          ? await startWireguardGo(lab, s, spec, `wgb${process.pid % 100_000}${'ab'[i]}`)
          : await startSuperpacketWg(lab, s, spec, { mode: kind })
      track(e.process)
      started.push(e)
    }
    return { lab, server: lab.b.inner4, pids: started.map((e) => realPid(e.process)), close }
  } catch (err) {
    await close()
    throw err
  }
}
