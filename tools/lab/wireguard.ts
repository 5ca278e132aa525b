/**
 * WireGuard in the lab: wireguard-go (the real peer, pinned and built with `go install`) and superpacket
 * WireGuard endpoints in a {@link Lab}'s namespaces, configured from `wg`-format files.
 * @internal
 * @module
 */
import { execFileSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { generatePrivateKey, publicKey } from 'superpacket'
import { stop, waitForLine, type Lab, type Side } from './netns.js'

/** The repository's root, seen from the compiled tools/dist/lab/. */
const REPO_ROOT = join(import.meta.dirname, '..', '..', '..')

/** wireguard-go, pinned (scripts/wireguard-go.version, which scripts/bootstrap.sh installs too). */
export const WIREGUARD_GO_MODULE = readFileSync(join(REPO_ROOT, 'scripts', 'wireguard-go.version'), 'utf8').trim()

/** Where `go install` puts wireguard-go (git-ignored; scripts/bootstrap.sh installs it there too). */
export const WIREGUARD_GO_BIN = join(REPO_ROOT, 'bench', '.work', 'bin', 'wireguard')

/** Builds wireguard-go with the Go toolchain when it is not there yet; returns its path. */
export function wireguardGo(log: (s: string) => void = () => {}): string {
  if (existsSync(WIREGUARD_GO_BIN)) return WIREGUARD_GO_BIN
  log(`installing ${WIREGUARD_GO_MODULE} with go install (once)`)
  try {
    execFileSync('go', ['install', WIREGUARD_GO_MODULE], {
      env: { ...process.env, GOBIN: join(WIREGUARD_GO_BIN, '..') },
      stdio: ['ignore', 'ignore', 'inherit'],
      timeout: 600_000,
    })
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT'
    throw new Error(missing ? 'wireguard-go needs the Go toolchain (https://go.dev/dl) to be installed' : `go install failed: ${(err as Error).message}`)
  }
  return WIREGUARD_GO_BIN
}

/** A key pair, base64. */
export interface KeyPair {
  privateKey: string
  publicKey: string
}

/** A new key pair from the library's helpers. */
export function keyPair(): KeyPair {
  const privateKey = generatePrivateKey()
  return { privateKey, publicKey: publicKey(privateKey) }
}

/** One `[Peer]` section. */
export interface WgPeerSpec {
  publicKey: string
  presharedKey?: string
  endpoint?: string
  allowedIPs: string[]
  persistentKeepalive?: number
}

/** One interface: our key, our port, the peers. */
export interface WgInterfaceSpec {
  privateKey: string
  listenPort: number
  peers: WgPeerSpec[]
}

/** The `wg setconf` text for `spec`. */
export function wgConfigText(spec: WgInterfaceSpec): string {
  const lines = ['[Interface]', `PrivateKey = ${spec.privateKey}`, `ListenPort = ${spec.listenPort}`]
  for (const p of spec.peers) {
    lines.push('', '[Peer]', `PublicKey = ${p.publicKey}`, `AllowedIPs = ${p.allowedIPs.join(', ')}`)
    if (p.presharedKey !== undefined) lines.push(`PresharedKey = ${p.presharedKey}`)
    if (p.endpoint !== undefined) lines.push(`Endpoint = ${p.endpoint}`)
    if (p.persistentKeepalive !== undefined) lines.push(`PersistentKeepalive = ${p.persistentKeepalive}`)
  }
  return lines.join('\n') + '\n'
}

/** A running WireGuard endpoint in one namespace. */
export interface WgEndpoint {
  process: ChildProcess
  /** The interface name. */
  dev: string
  close(): Promise<void>
}

/** Writes `spec` to a private temporary file; returns its path and a remover. */
function configFile(spec: WgInterfaceSpec): { path: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'sp-wg-'))
  const path = join(dir, 'wg.conf')
  writeFileSync(path, wgConfigText(spec), { mode: 0o600 })
  return { path, remove: () => rmSync(dir, { recursive: true, force: true }) }
}

/**
 * wireguard-go in `side`'s namespace with `spec`, the side's inner addresses and MTU 1420. The UAPI socket
 * (/var/run/wireguard/<dev>.sock) is not per namespace, so every interface needs a name of its own.
 */
export async function startWireguardGo(lab: Lab, side: Side, spec: WgInterfaceSpec, dev: string): Promise<WgEndpoint> {
  const bin = wireguardGo()
  const uapi = `/var/run/wireguard/${dev}.sock`
  const p = lab.spawn(side, bin, ['-f', dev])
  let output = ''
  p.stderr?.on('data', (d: Buffer) => (output += d.toString()))
  p.stdout?.on('data', (d: Buffer) => (output += d.toString()))
  const file = configFile(spec)
  const close = async () => {
    await stop(p)
    rmSync(uapi, { force: true })
    file.remove()
  }
  try {
    // Bounded wait for the interface to appear.
    for (let t = 0; ; t++) {
      try {
        lab.exec(side, 'ip', ['link', 'show', dev])
        break
      } catch (err) {
        if (t >= 50 || p.exitCode !== null) throw new Error(`wireguard-go did not create ${dev} in ${side.ns} (exit ${p.exitCode}): ${output.slice(-300)} ${String(err)}`)
        await sleep(100)
      }
    }
    lab.exec(side, 'wg', ['setconf', dev, file.path])
    lab.exec(side, 'ip', ['addr', 'add', `${side.inner4}/24`, 'dev', dev])
    lab.exec(side, 'ip', ['addr', 'add', `${side.inner6}/64`, 'dev', dev, 'nodad'])
    lab.exec(side, 'ip', ['link', 'set', dev, 'mtu', '1420', 'up'])
    return { process: p, dev, close }
  } catch (err) {
    await close()
    throw err
  }
}

/** How a superpacket WireGuard endpoint runs. */
export interface SuperpacketWgOptions {
  mode?: 'native' | 'js'
  queues?: number
  offload?: 'auto' | 'on' | 'off'
  /** Start a new handshake after this many sealed packets. */
  rekeyAfter?: number
  /** TUN name (default `sp0`): several endpoints in one namespace need their own. */
  tun?: string
  /** Inner IPv4 address/prefix (default the side's, /24). */
  inner4?: string
  /** Inner IPv6 address/prefix (default the side's, /64). */
  inner6?: string
}

/** A superpacket endpoint with the WireGuard framer in `side`'s namespace, TUN `sp0`. */
export async function startSuperpacketWg(lab: Lab, side: Side, spec: WgInterfaceSpec, options: SuperpacketWgOptions = {}): Promise<WgEndpoint> {
  const file = configFile(spec)
  const tun = options.tun ?? 'sp0'
  const p = lab.node(side, 'demo/endpoint.js', [
    '--tun', tun,
    '--inner4', options.inner4 ?? `${side.inner4}/24`,
    '--inner6', options.inner6 ?? `${side.inner6}/64`,
    '--listen', `0.0.0.0:${spec.listenPort}`,
    '--framer', 'wireguard',
    '--wg-config', file.path,
    '--mode', options.mode ?? 'native',
    '--queues', String(options.queues ?? 1),
    '--offload', options.offload ?? 'auto',
    ...(options.rekeyAfter === undefined ? [] : ['--rekey-after', String(options.rekeyAfter)]),
  ])
  const close = async () => {
    await stop(p)
    file.remove()
  }
  try {
    await waitForLine(p, /ready (\{.*\})\n/, 20_000)
    return { process: p, dev: tun, close }
  } catch (err) {
    await close()
    throw err
  }
}

/** Asks an endpoint process (tools/demo/endpoint.ts) for its counters. */
export async function endpointStats(p: ChildProcess): Promise<Record<string, unknown>> {
  const line = waitForLine(p, /stats (\{.*\})\n/, 5000)
  p.kill('SIGUSR2')
  return JSON.parse((await line)[1]!) as Record<string, unknown>
}

/** The lab's side addresses on the veth, as WireGuard endpoints. */
export function endpointOf(side: Side, port: number, family: 4 | 6 = 4): string {
  return family === 6 ? `[${side.outer6}]:${port}` : `${side.outer4}:${port}`
}
