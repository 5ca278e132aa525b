/**
 * Test hosts for the demo, the tests and the benchmarks: network namespaces joined by a veth pair, made
 * and removed by the process that uses them. Addresses come only from 198.18.0.0/15 and 2001:db8::/32.
 * @internal
 * @module
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'

/** Runs a command and returns its stdout; throws with stderr on failure. */
export function run(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  } catch (err) {
    const e = err as { stderr?: string; message: string }
    throw new Error(`${cmd} ${args.join(' ')}: ${e.stderr?.trim() || e.message}`)
  }
}

/** Whether this process may make namespaces and TUN devices. */
export function isRoot(): boolean {
  return process.getuid?.() === 0
}

/** Outer (veth) and inner (tunnel) addresses of one side. */
export interface Side {
  /** Namespace name. */
  ns: string
  /** veth interface name in the namespace. */
  veth: string
  outer4: string
  outer6: string
  inner4: string
  inner6: string
}

/** Two namespaces joined by a veth pair. Call {@link Lab.destroy} (it is also run on process exit). */
export class Lab {
  readonly a: Side
  readonly b: Side
  #alive = true
  readonly #onExit = () => this.destroy()

  constructor(tag: string) {
    const id = `${tag}-${process.pid}-${randomBytes(2).toString('hex')}`
    this.a = { ns: `spa-${id}`, veth: 'va', outer4: '198.18.1.1', outer6: '2001:db8:1::1', inner4: '198.18.100.1', inner6: '2001:db8:100::1' }
    this.b = { ns: `spb-${id}`, veth: 'vb', outer4: '198.18.1.2', outer6: '2001:db8:1::2', inner4: '198.18.100.2', inner6: '2001:db8:100::2' }
    process.once('exit', this.#onExit)
    try {
      for (const s of [this.a, this.b]) {
        run('ip', ['netns', 'add', s.ns])
        this.exec(s, 'ip', ['link', 'set', 'lo', 'up'])
      }
      this.exec(this.a, 'ip', ['link', 'add', 'va', 'type', 'veth', 'peer', 'name', 'vb', 'netns', this.b.ns])
      for (const s of [this.a, this.b]) {
        this.exec(s, 'ip', ['addr', 'add', `${s.outer4}/24`, 'dev', s.veth])
        this.exec(s, 'ip', ['addr', 'add', `${s.outer6}/64`, 'dev', s.veth, 'nodad'])
        this.exec(s, 'ip', ['link', 'set', s.veth, 'up'])
      }
    } catch (err) {
      this.destroy()
      throw err
    }
  }

  /** Runs a command inside a namespace and returns its stdout. */
  exec(side: Side, cmd: string, args: string[]): string {
    return run('ip', ['netns', 'exec', side.ns, cmd, ...args])
  }

  /** Starts a long-running command inside a namespace. */
  spawn(side: Side, cmd: string, args: string[]): ChildProcess {
    return spawn('ip', ['netns', 'exec', side.ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  }

  /** Starts a Node script of this package (a path relative to tools/dist/) inside a namespace. */
  node(side: Side, script: string, args: string[]): ChildProcess {
    const path = fileURLToPath(new URL(`../${script}`, import.meta.url))
    return this.spawn(side, process.execPath, [path, ...args])
  }

  /** Removes both namespaces (and so the veth pair and any TUN inside). Safe to call twice. */
  destroy(): void {
    if (!this.#alive) return
    this.#alive = false
    process.off('exit', this.#onExit)
    for (const s of [this.a, this.b]) {
      try {
        execFileSync('ip', ['netns', 'del', s.ns], { stdio: 'ignore' })
      } catch {
        // Already gone.
      }
    }
  }
}

/** Waits for a line matching `pattern` on a child's stdout, or fails after `ms` or when it exits. */
export function waitForLine(child: ChildProcess, pattern: RegExp, ms: number): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let buf = ''
    let err = ''
    const timer = setTimeout(() => finish(new Error(`timed out after ${ms} ms waiting for ${pattern}; stderr: ${err}`)), ms)
    const onData = (d: Buffer) => {
      buf += d.toString()
      const m = pattern.exec(buf)
      if (m) finish(undefined, m)
    }
    const onErr = (d: Buffer) => {
      err += d.toString()
    }
    const onExit = (code: number | null) => finish(new Error(`exited (${code}) before ${pattern}; stderr: ${err}`))
    function finish(e?: Error, m?: RegExpExecArray) {
      clearTimeout(timer)
      child.stdout?.off('data', onData)
      child.stderr?.off('data', onErr)
      child.off('exit', onExit)
      if (e) reject(e)
      else resolve(m!)
    }
    child.stdout?.on('data', onData)
    child.stderr?.on('data', onErr)
    child.on('exit', onExit)
  })
}

/** Sends SIGTERM, then SIGKILL after `ms`, and resolves when the child is gone. */
export function stop(child: ChildProcess, ms = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), ms)
    child.once('exit', () => {
      clearTimeout(t)
      resolve()
    })
    child.kill('SIGTERM')
  })
}
