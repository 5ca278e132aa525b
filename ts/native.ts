/**
 * Loads the platform's native module (built by napi-rs into `native.cjs` and `superpacket.<triple>.node`).
 * @internal
 * @module
 */
import { createRequire } from 'node:module'
import { SuperpacketError } from './errors.js'

const require = createRequire(import.meta.url)

type Binding = typeof import('../native.cjs')

/** napi-rs target triples' CPU names as npm (process.arch) spells them. */
const NPM_ARCH: Readonly<Record<string, string>> = { x86_64: 'x64', aarch64: 'arm64' }

/** A napi-rs target triple as its npm platform package's suffix: `x86_64-unknown-linux-gnu` → `linux-x64-gnu`. */
function npmPlatform(triple: string): string {
  const [cpu = '', , os = '', abi] = triple.split('-')
  return [os === 'windows' ? 'win32' : os, NPM_ARCH[cpu] ?? cpu, abi].filter((p) => p !== undefined).join('-')
}

/** This machine's platform package suffix, as napi-rs names them. */
function hostPlatform(): string {
  const base = `${process.platform}-${process.arch}`
  if (process.platform === 'win32') return `${base}-msvc`
  if (process.platform !== 'linux') return base
  const report = process.report.getReport() as { header: { glibcVersionRuntime?: string } }
  return `${base}-${report.header.glibcVersionRuntime === undefined ? 'musl' : 'gnu'}`
}

/**
 * napi-rs's loader found no binary for this machine: says which package to install (or that there is none for
 * this platform) and lists the platforms that have one. The loader's own errors are kept as `cause`.
 */
function noBinaryError(cause: unknown): SuperpacketError {
  const pkg = require('../package.json') as { name: string; napi: { targets: string[] } }
  const platforms = pkg.napi.targets.map(npmPlatform)
  const host = hostPlatform()
  const wanted = `${pkg.name}-${host}`
  const list = `Platforms with a prebuilt package: ${platforms.join(', ')}.`
  let message: string
  if (!platforms.includes(host)) {
    message = `superpacket has no prebuilt native module for ${host}. ${list}`
  } else {
    let installed = true
    try {
      require.resolve(`${wanted}/package.json`)
    } catch {
      installed = false
    }
    message = installed
      ? `superpacket: the package ${wanted} is installed but its native module failed to load (see the cause). ${list}`
      : `superpacket: the native module for ${host} is missing: install the package ${wanted} ` +
        `(npm installs it with superpacket unless optional dependencies are omitted or the lockfile was made on another platform). ${list}`
  }
  return new SuperpacketError('ERR_SUPERPACKET_UNSUPPORTED', message, { cause })
}

function load(): Binding {
  try {
    return require('../native.cjs') as Binding
  } catch (e) {
    // The generated loader's message when no candidate loaded; anything else (a version mismatch) is its own.
    if (e instanceof Error && /^(Cannot find native binding|Failed to load native binding)/.test(e.message)) throw noBinaryError(e)
    throw e
  }
}

/** The native binding, typed by the `native.d.cts` that napi-rs generates. */
export const binding: Binding = load()

/**
 * The plain N-API callbacks: the sends JS makes most often (no class unwrap or borrow bookkeeping per
 * call) and the event-loop watches of reads.
 */
export const fast = binding.fastOps()
