/**
 * The tunnels the bench measures, each between the two namespaces of a fresh {@link Lab}: none (direct
 * veth), superpacket endpoints ({@link TunnelPair}), and wireguard-go configured with `wg`.
 * @internal
 * @module
 */
import { execFileSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Lab, run, stop } from '../lab/netns.js'
import { TunnelPair, type PairOptions } from '../lab/tunnel-pair.js'
import { realPid } from './proc.js'

/** The repository's root, seen from the compiled tools/dist/bench/. */
export const REPO_ROOT = join(import.meta.dirname, '..', '..', '..')

/** Where the bench keeps what it builds and installs (git-ignored). */
export const WORK_DIR = join(REPO_ROOT, 'bench', '.work')

/** wireguard-go, pinned to the version measured here (built with Go 1.26); installed into WORK_DIR/bin when missing. */
const WIREGUARD_GO = 'golang.zx2c4.com/wireguard@v0.0.0-20260522210424-ecfc5a8d5446'

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
/** wireguard-go's UAPI sockets, which a killed wireguard-go leaves behind. */
const uapiSockets = new Set<string>()
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
  for (const path of uapiSockets) rmSync(path, { force: true })
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

/** Builds wireguard-go with the Go toolchain when it is not there yet; returns its path. */
export function wireguardGo(log: (s: string) => void): string {
  const bin = join(WORK_DIR, 'bin', 'wireguard')
  if (existsSync(bin)) return bin
  log(`installing ${WIREGUARD_GO} with go install (once)`)
  mkdirSync(join(WORK_DIR, 'bin'), { recursive: true })
  try {
    execFileSync('go', ['install', WIREGUARD_GO], {
      env: { ...process.env, GOBIN: join(WORK_DIR, 'bin') },
      stdio: ['ignore', 'ignore', 'inherit'],
      timeout: 600_000,
    })
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT'
    throw new Error(missing ? 'wireguard-go needs the Go toolchain (https://go.dev/dl) to be installed' : `go install failed: ${(err as Error).message}`)
  }
  return bin
}

/** wireguard-go in each namespace (MTU 1420), keys from `wg genkey`, peers on the veth. */
export async function wireguard(bin: string): Promise<Setup> {
  const lab = new Lab('bench-wg')
  const procs: ChildProcess[] = []
  const keyDir = join(WORK_DIR, `keys-${lab.a.ns}`)
  const close = async () => {
    await Promise.all(procs.map((p) => stop(p)))
    for (const path of uapiSockets) rmSync(path, { force: true })
    uapiSockets.clear()
    rmSync(keyDir, { recursive: true, force: true })
    lab.destroy()
  }
  try {
    mkdirSync(keyDir, { recursive: true, mode: 0o700 })
    const sides = [lab.a, lab.b] as const
    const keys = sides.map(() => {
      const priv = run('wg', ['genkey']).trim()
      const pub = execFileSync('wg', ['pubkey'], { input: priv, encoding: 'utf8' }).trim()
      return { priv, pub }
    })
    for (const [i, s] of sides.entries()) {
      // The UAPI socket (/var/run/wireguard/<name>.sock) is not per namespace: every interface needs its own name.
      const dev = `wgb${process.pid % 100_000}${'ab'[i]}`
      uapiSockets.add(`/var/run/wireguard/${dev}.sock`)
      const p = track(lab.spawn(s, bin, ['-f', dev]))
      let output = ''
      p.stderr?.on('data', (d: Buffer) => (output += d.toString()))
      p.stdout?.on('data', (d: Buffer) => (output += d.toString()))
      procs.push(p)
      // Bounded wait for the interface to appear.
      for (let t = 0; ; t++) {
        try {
          lab.exec(s, 'ip', ['link', 'show', dev])
          break
        } catch (err) {
          if (t >= 50 || p.exitCode !== null) throw new Error(`wireguard-go did not create its interface in ${s.ns} (exit ${p.exitCode}): ${output.slice(-300)} ${String(err)}`)
          await sleep(100)
        }
      }
      const other = sides[1 - i]!
      const keyFile = join(keyDir, `${i}.key`)
      writeFileSync(keyFile, keys[i]!.priv + '\n', { mode: 0o600 })
      lab.exec(s, 'wg', [
        'set', dev, 'private-key', keyFile, 'listen-port', '51820',
        'peer', keys[1 - i]!.pub, 'endpoint', `${other.outer4}:51820`, 'allowed-ips', '198.18.100.0/24,2001:db8:100::/64',
      ])
      lab.exec(s, 'ip', ['addr', 'add', `${s.inner4}/24`, 'dev', dev])
      lab.exec(s, 'ip', ['addr', 'add', `${s.inner6}/64`, 'dev', dev, 'nodad'])
      lab.exec(s, 'ip', ['link', 'set', dev, 'mtu', '1420', 'up'])
    }
    rmSync(keyDir, { recursive: true, force: true })
    return { lab, server: lab.b.inner4, pids: procs.map(realPid), close }
  } catch (err) {
    await close()
    throw err
  }
}
