/**
 * The package as a user gets it: `npm pack` of the root and of this machine's platform package (the built
 * binary copied in, as `napi artifacts` does before publishing), installed from the tarballs into an empty
 * project with `--offline` and no Rust toolchain on PATH; then ESM, CommonJS, TypeScript consumers and a
 * smoke run of the native module. Runs after `npm run build` (the test command builds first).
 */
import { execFileSync, spawnSync, type SpawnSyncReturns } from 'node:child_process'
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FLOW, pattern, tcp4, udp4 } from './helpers/packets.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc')
/** The packed root tarball's limit (issue 10). */
const MAX_TARBALL_BYTES = 100 * 1024

/** This machine's platform, from the binary the build left in the root (superpacket.<platform>.node). */
function builtPlatform(): string {
  const built = readdirSync(ROOT).filter((f) => /^superpacket\..+\.node$/.test(f))
  if (built.length !== 1) throw new Error(`expected one superpacket.<platform>.node in the root, found ${built.length}: run npm run build`)
  return built[0]!.slice('superpacket.'.length, -'.node'.length)
}

/** The environment of a user without Rust: no directory holding cargo or rustc on PATH, no npm_* of the test run. */
function userEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.toLowerCase().startsWith('npm_')) env[k] = v
  env.PATH = (process.env.PATH ?? '')
    .split(delimiter)
    .filter((d) => d !== '' && !existsSync(join(d, 'cargo')) && !existsSync(join(d, 'rustc')))
    .join(delimiter)
  return env
}

const platform = builtPlatform()
const env = userEnv()
let work = ''
let app = ''
let rootTarball = ''
let installSeconds = 0

function run(cmd: string, args: string[], cwd: string, timeout = 60_000): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout })
}

/** Runs and returns stdout, failing with the output when the command fails. */
function ok(cmd: string, args: string[], cwd: string): string {
  const r = run(cmd, args, cwd)
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status ?? r.signal}:\n${r.stdout}\n${r.stderr}`)
  return r.stdout
}

function pack(dir: string): string {
  const out = JSON.parse(ok('npm', ['pack', '--json', '--pack-destination', work], dir)) as { filename: string }[]
  return join(work, out[0]!.filename)
}

/** An empty project with the given tarballs installed from disk only. */
function project(name: string, tarballs: string[], type: 'module' | 'commonjs'): string {
  const dir = join(work, name)
  mkdirSync(dir)
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true, type }))
  ok('npm', ['install', '--offline', '--no-audit', '--no-fund', '--loglevel=error', ...tarballs], dir)
  return dir
}

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'sp-packaging-'))
  rootTarball = pack(ROOT)
  const platformDir = join(work, `platform-${platform}`)
  cpSync(join(ROOT, 'npm', platform), platformDir, { recursive: true })
  copyFileSync(join(ROOT, `superpacket.${platform}.node`), join(platformDir, `superpacket.${platform}.node`))
  const platformTarball = pack(platformDir)
  // From the install to the first call returning: what a user waits for (reported, not asserted).
  const start = process.hrtime.bigint()
  app = project('app', [rootTarball, platformTarball], 'module')
  ok(process.execPath, ['--input-type=module', '-e', "import { coalescePackets } from 'superpacket'; coalescePackets([])"], app)
  installSeconds = Number(process.hrtime.bigint() - start) / 1e9
  console.log(`packaging: install-to-first-call ${installSeconds.toFixed(2)} s (offline, from tarballs)`)
}, 180_000)

afterAll(() => {
  if (work !== '') rmSync(work, { recursive: true, force: true })
})

describe('the packed package, installed offline without Rust', () => {
  it('runs with no cargo or rustc on PATH', () => {
    expect(run('cargo', ['--version'], work).error).toMatchObject({ code: 'ENOENT' })
    expect(run('rustc', ['--version'], work).error).toMatchObject({ code: 'ENOENT' })
  })

  it('the root tarball holds the library only and stays small', () => {
    const files = execFileSync('tar', ['-tzf', rootTarball], { encoding: 'utf8' }).trim().split('\n')
    const allowed = /^package\/(package\.json|README\.md|LICENSE|native\.cjs|native\.d\.cts|dist\/[\w-]+\.(js|d\.ts))$/
    expect(files.filter((f) => !allowed.test(f))).toEqual([])
    expect(files).toEqual(expect.arrayContaining(['package/dist/index.js', 'package/dist/index.d.ts', 'package/native.cjs', 'package/LICENSE']))
    expect(statSync(rootTarball).size).toBeLessThanOrEqual(MAX_TARBALL_BYTES)
  })

  it('ESM: coalesces a TCP flow into one superpacket and splits it back byte for byte', () => {
    const packets = Array.from({ length: 6 }, (_, i) => tcp4(FLOW, 1000 + i * 1448, 1, pattern(1448, i + 1), { id: i + 1 }))
    packets.push(udp4(FLOW, pattern(300)))
    writeFileSync(join(app, 'packets.json'), JSON.stringify(packets.map((p) => p.toString('hex'))))
    const script = `import { readFileSync } from 'node:fs'
      import { coalescePackets, splitSuperpacket } from 'superpacket'
      const packets = JSON.parse(readFileSync('packets.json', 'utf8')).map((h) => Buffer.from(h, 'hex'))
      const frames = coalescePackets(packets)
      const back = frames.flatMap((f) => splitSuperpacket(f))
      console.log(JSON.stringify({ frames: frames.length, back: back.map((b) => b.toString('hex')) }))`
    const out = JSON.parse(ok(process.execPath, ['--input-type=module', '-e', script], app)) as { frames: number; back: string[] }
    expect(out.frames).toBe(2) // the TCP run as one superpacket, the UDP datagram on its own
    expect(out.back).toEqual(packets.map((p) => p.toString('hex')))
  })

  it('ESM: a UDP GSO send on 127.0.0.1 arrives as a GRO batch with its segment size', () => {
    const script = `import { UdpSocket } from 'superpacket'
      const rx = await UdpSocket.bind({ address: '127.0.0.1', port: 0 })
      const tx = await UdpSocket.bind({ address: '127.0.0.1', port: 0 })
      const data = Buffer.alloc(8 * 1000 + 200).map((_, i) => i % 251)
      await tx.sendSegments(rx.address, data, 1000)
      const got = []
      let segmentSize = 0
      const signal = AbortSignal.timeout(5000)
      for await (const batch of rx.batches({ signal })) {
        for (const m of batch.messages) if (m.count > 1) segmentSize = Math.max(segmentSize, m.segmentSize)
        got.push(...batch.datagrams().map((d) => Buffer.from(d)))
        if (got.length >= 9) break
      }
      const capabilities = { gso: tx.capabilities.gso, gro: rx.capabilities.gro }
      await rx.close(); await tx.close()
      console.log(JSON.stringify({ ...capabilities, segmentSize, lengths: got.map((d) => d.length), intact: Buffer.concat(got).equals(data) }))`
    const out = JSON.parse(ok(process.execPath, ['--input-type=module', '-e', script], app))
    expect(out).toEqual({ gso: true, gro: true, segmentSize: 1000, lengths: [...Array(8).fill(1000), 200], intact: true })
  })

  it('CommonJS: require() loads it and calls into the native module', () => {
    const script = `const sp = require('superpacket')
      const frames = sp.splitSuperpacket(Buffer.concat([Buffer.alloc(10), Buffer.from(process.argv[1], 'hex')]))
      process.stdout.write([typeof sp.Tun, typeof sp.UdpSocket, frames.length, frames[0].toString('hex')].join(':'))`
    const datagram = udp4(FLOW, pattern(64)).toString('hex')
    const out = ok(process.execPath, ['-e', script, datagram], app)
    expect(out).toBe(`function:function:1:${datagram}`)
  })

  it.each([
    // An ES module imports it statically.
    ['nodenext, ESM', 'module', 'nodenext', `import { SuperpacketError, Tun, UdpSocket, coalescePackets, type Peer } from 'superpacket'`, ''],
    // TypeScript's node16 mode has no require() of an ES module: a CommonJS module imports it dynamically.
    [
      'node16, CommonJS',
      'commonjs',
      'node16',
      `import type { Peer, UdpSocket } from 'superpacket' with { 'resolution-mode': 'import' }`,
      `const { SuperpacketError, Tun, UdpSocket, coalescePackets } = await import('superpacket')`,
    ],
  ])('TypeScript consumer type-checks (%s)', (_name, type, module, imports, load) => {
    // Inside the project, so that its node_modules is found; the package.json sets the module format.
    const dir = join(app, `ts-${module}-${type}`)
    mkdirSync(dir)
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ type }))
    const consumer = `${imports}
      export async function main(peer: Peer): Promise<number> {
        ${load}
        const socket: UdpSocket = await UdpSocket.bind({ address: '127.0.0.1', port: 0 })
        await socket.sendSegments(peer, Buffer.alloc(2000), 1000)
        // @ts-expect-error the native handle is internal and not in the published types
        void socket.native
        const tun = await Tun.open({ mtu: 1420 }).catch((e: unknown) => (e instanceof SuperpacketError ? e.code : 'other'))
        return coalescePackets([]).length + (typeof tun === 'string' ? 0 : tun.mtu)
      }
    `
    writeFileSync(join(dir, 'consumer.ts'), consumer)
    const tsconfig = {
      compilerOptions: {
        module,
        moduleResolution: module,
        target: 'ES2022',
        strict: true,
        noEmit: true,
        // The consumer's own @types/node: the repository's, as the project has no network to install one.
        typeRoots: [join(ROOT, 'node_modules', '@types')],
        types: ['node'],
      },
      files: ['consumer.ts'],
    }
    writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify(tsconfig))
    const r = run(process.execPath, [TSC, '-p', dir], dir)
    expect(r.stdout + r.stderr).toBe('')
    expect(r.status).toBe(0)
  })

  it('without the platform package, loading names the package to install and the platforms that have one', () => {
    const bare = project('bare', [rootTarball], 'module')
    const script = `import('superpacket').then(() => console.log('{}'), (e) => console.log(JSON.stringify({ code: e.code, message: e.message })))`
    const out = JSON.parse(ok(process.execPath, ['--input-type=module', '-e', script], bare)) as { code?: string; message?: string }
    expect(out.code).toBe('ERR_SUPERPACKET_UNSUPPORTED')
    expect(out.message).toContain(`install the package superpacket-${platform}`)
    for (const p of readdirSync(join(ROOT, 'npm'))) expect(out.message).toContain(p)
  })
})
