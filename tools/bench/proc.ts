/**
 * What the bench reads about a process: CPU time and memory from /proc, system calls from perf.
 * @internal
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'

/** Clock ticks per second of utime/stime in /proc/<pid>/stat (USER_HZ, 100 on Linux). */
const USER_HZ = 100

/** User + system CPU seconds of a process, all its threads (0 once it is gone). */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name, which may hold spaces: state is field 3, utime 14, stime 15.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(f[11]) + Number(f[12])) / USER_HZ
  } catch {
    return 0
  }
}

/** Resident and peak resident memory in MiB (VmRSS, VmHWM). */
export function memory(pid: number): { rssMB: number; peakMB: number } {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0)
    return { rssMB: kb('VmRSS') / 1024, peakMB: kb('VmHWM') / 1024 }
  } catch {
    return { rssMB: 0, peakMB: 0 }
  }
}

/** The process behind a child started with `ip netns exec` (which execs in place; followed if it forked). */
export function realPid(child: ChildProcess): number {
  const pid = child.pid
  if (pid === undefined) throw new Error('child has no pid')
  try {
    if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== 'ip') return pid
    const kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean)
    return kids.length > 0 ? Number(kids[0]) : pid
  } catch {
    return pid
  }
}

/**
 * Counts system calls (the raw_syscalls:sys_enter tracepoint, all threads that exist when it starts) of
 * `pids` until `stop()` is called. Resolves to undefined when perf is missing or the tracepoint unavailable.
 */
export function countSyscalls(pids: number[]): { stop: () => Promise<number | undefined> } {
  if (pids.length === 0) return { stop: async () => undefined }
  let perf: ChildProcess
  try {
    perf = spawn('perf', ['stat', '-x', ',', '-e', 'raw_syscalls:sys_enter', '-p', pids.join(',')], { stdio: ['ignore', 'ignore', 'pipe'] })
  } catch {
    return { stop: async () => undefined }
  }
  let err = ''
  perf.stderr?.on('data', (d: Buffer) => (err += d.toString()))
  const exited = new Promise<void>((resolve) => {
    perf.once('exit', () => resolve())
    perf.once('error', () => resolve())
  })
  return {
    async stop() {
      perf.kill('SIGINT')
      const t = setTimeout(() => perf.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(t)
      const m = /^(\d+),[^,]*,raw_syscalls:sys_enter/m.exec(err)
      return m ? Number(m[1]) : undefined
    },
  }
}

/** Samples the RSS of `pids` every `ms` until stopped. */
export class RssSampler {
  readonly samples: number[] = []
  readonly #timer: NodeJS.Timeout

  constructor(readonly pids: number[], ms = 500) {
    this.#timer = setInterval(() => this.sample(), ms)
  }

  /** Takes a sample now: the largest RSS of the processes, MiB. */
  sample(): number {
    const v = Math.max(0, ...this.pids.map((p) => memory(p).rssMB))
    this.samples.push(v)
    return v
  }

  stop(): void {
    clearInterval(this.#timer)
  }

  /** Largest peak RSS (VmHWM) of the processes, MiB. */
  peakMB(): number {
    return Math.max(0, ...this.pids.map((p) => memory(p).peakMB))
  }
}

/** Busy and total jiffies of all CPUs together (/proc/stat), for the machine's load during a run. */
export function hostCpu(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number)
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0)
  const idle = (f[3] ?? 0) + (f[4] ?? 0)
  return { busy: total - idle, total }
}
