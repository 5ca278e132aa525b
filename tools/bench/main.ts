/**
 * `npm run bench [-- --quick] [-- --only a,b,udp] [-- --profile b,e] [-- --soak 600]`: tunnel throughput and UDP packet
 * rates between two network namespaces, side by side with the kernel, node:dgram, a naive Node tunnel and
 * wireguard-go. Writes bench/results/<date>.json, latest.json, latest.md and latest.svg. Needs root.
 *
 * Every tunnel is measured with iperf3 (one TCP flow, each direction, median of 3 runs of 10 s; 4 flows
 * for b and f). The runs come in rounds: each round sets every scenario up, runs it once each way and
 * tears it down, so that drift over the bench's minutes does not favour the scenarios that run first. While iperf3 runs, the bench reads the tunnel processes' CPU time from /proc/<pid>/stat,
 * counts their system calls with `perf stat -e raw_syscalls:sys_enter -p` and samples their RSS.
 * @internal
 * @module
 */
import { execFileSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { isRoot, Lab, stop, waitForLine } from '../lab/netns.js'
import { countSyscalls, cpuSeconds, hostCpu, RssSampler } from './proc.js'
import { soak } from './soak.js'
import { markdown, median, ratios, readmeWithResults, round, svg, type Results, type Run } from './report.js'
import { direct, dtlsPair, REPO_ROOT, superpacket, track, wireguardPair, WORK_DIR, type Setup } from './setups.js'

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    profile: { type: 'string' },
    // Only rewrite the README's results from bench/results/latest.json.
    readme: { type: 'boolean', default: false },
    // Seconds of a soak run (soak.ts) instead of the benchmark.
    soak: { type: 'string' },
  },
})
const quick = args.quick!
const TCP_SECONDS = quick ? 3 : 10
const REPEATS = quick ? 1 : 3
const UDP_SECONDS = quick ? 2 : 5
const UDP_REPEATS = quick ? 1 : 3
const DATAGRAM = 1400
const RESULTS_DIR = join(REPO_ROOT, 'bench', 'results')
const only = args.only?.split(',')
const wanted = (id: string) => only === undefined || only.includes(id)

const t0 = Date.now()
function log(s: string): void {
  const secs = Math.round((Date.now() - t0) / 1000)
  process.stderr.write(`[${String(Math.floor(secs / 60)).padStart(2, '0')}:${String(secs % 60).padStart(2, '0')}] ${s}\n`)
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    log(`${sig}: stopping, removing namespaces`)
    process.exit(130) // exit hooks kill the children, then remove the namespaces
  })
}

interface Tunnel {
  id: string
  name: string
  flows: number
  setup: () => Promise<Setup>
}

const TUNNELS: Tunnel[] = [
  { id: 'a', name: 'a. direct veth, no tunnel', flows: 1, setup: async () => direct() },
  { id: 'b', name: 'b. superpacket native Tunnel, offloads on', flows: 1, setup: () => superpacket({ mode: 'native', offload: 'on' }) },
  { id: 'c', name: 'c. superpacket JS path, offloads on', flows: 1, setup: () => superpacket({ mode: 'js', offload: 'on' }) },
  {
    id: 'c0',
    name: 'c. superpacket JS path, offloads on, reuseBuffers off',
    flows: 1,
    setup: () => superpacket({ mode: 'js', offload: 'on', reuse: false }),
  },
  { id: 'd', name: 'd. superpacket native Tunnel, offloads off', flows: 1, setup: () => superpacket({ mode: 'native', offload: 'off' }) },
  { id: 'e', name: 'e. naive Node tunnel (per-packet TUN + node:dgram)', flows: 1, setup: () => superpacket({ mode: 'naive' }) },
  { id: 'f', name: 'f. wireguard-go (encrypts)', flows: 1, setup: () => wireguardPair(['wireguard-go', 'wireguard-go']) },
  { id: 'g', name: 'g. superpacket WireGuard, native Tunnel', flows: 1, setup: () => wireguardPair(['native', 'native']) },
  { id: 'h', name: 'h. superpacket WireGuard (a) with wireguard-go (b)', flows: 1, setup: () => wireguardPair(['native', 'wireguard-go']) },
  { id: 'i', name: 'i. superpacket WireGuard, JS path', flows: 1, setup: () => wireguardPair(['js', 'js']) },
  { id: 'j', name: 'j. superpacket DTLS records (chacha20-poly1305), native Tunnel', flows: 1, setup: () => dtlsPair('chacha20-poly1305') },
  { id: 'k', name: 'k. superpacket DTLS records (aes-256-gcm), native Tunnel', flows: 1, setup: () => dtlsPair('aes-256-gcm') },
  { id: 'l', name: 'l. the same records sealed by a JS framer (node:crypto), JS path', flows: 1, setup: () => dtlsPair('chacha20-poly1305', true) },
  { id: 'b4', name: 'b. superpacket native Tunnel, 4 flows', flows: 4, setup: () => superpacket({ mode: 'native', offload: 'on' }) },
  { id: 'f4', name: 'f. wireguard-go (encrypts), 4 flows', flows: 4, setup: () => wireguardPair(['wireguard-go', 'wireguard-go']) },
]

/** Collects a child's stdout; resolves with the last JSON line when it exits, fails after `ms`. */
function jsonOutput<T>(child: ChildProcess, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    let out = ''
    let err = ''
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`timed out after ${ms} ms; stderr: ${err.slice(-300)}`))
    }, ms)
    child.once('exit', (code) => {
      clearTimeout(timer)
      try {
        const start = out.indexOf('{')
        if (start < 0) throw new Error('no JSON')
        resolve(JSON.parse(out.slice(start)) as T)
      } catch {
        reject(new Error(`exit ${code}: ${(err || out).trim().slice(-300)}`))
      }
    })
  })
}

interface IperfResult {
  end: {
    sum_received: { bytes: number; bits_per_second: number; seconds: number }
    sum_sent: { retransmits?: number }
  }
  error?: string
}

async function iperf(setup: Setup, seconds: number, reverse: boolean, flows: number): Promise<IperfResult> {
  const args = ['-c', setup.server, '-t', String(seconds), '-J', '-P', String(flows), ...(reverse ? ['-R'] : [])]
  const j = await jsonOutput<IperfResult>(track(setup.lab.spawn(setup.lab.a, 'iperf3', args)), (seconds + 30) * 1000)
  if (j.error !== undefined) throw new Error(`iperf3: ${j.error}`)
  return j
}

interface Sample {
  gbps: number
  cpuSecPerGB?: number
  syscallsPerMB?: number
  retransmits?: number
  hostBusy: number
}

async function measured(setup: Setup, seconds: number, reverse: boolean, flows: number): Promise<Sample> {
  const cpu = () => setup.pids.reduce((s, p) => s + cpuSeconds(p), 0)
  const counter = countSyscalls(setup.pids)
  await sleep(300) // perf attaches
  const cpu0 = cpu()
  const host0 = hostCpu()
  const j = await iperf(setup, seconds, reverse, flows)
  const cpu1 = cpu()
  const host1 = hostCpu()
  const syscalls = await counter.stop()
  const bytes = j.end.sum_received.bytes
  const measuredProcs = setup.pids.length > 0
  return {
    gbps: j.end.sum_received.bits_per_second / 1e9,
    cpuSecPerGB: measuredProcs ? (cpu1 - cpu0) / (bytes / 1e9) : undefined,
    syscallsPerMB: measuredProcs && syscalls !== undefined ? syscalls / (bytes / 1e6) : undefined,
    retransmits: j.end.sum_sent.retransmits,
    hostBusy: (host1.busy - host0.busy) / Math.max(1, host1.total - host0.total),
  }
}

async function iperfServer(setup: Setup): Promise<ChildProcess> {
  const server = track(setup.lab.spawn(setup.lab.b, 'iperf3', ['-s', '-B', setup.server, '--forceflush']))
  await waitForLine(server, /listening/i, 5000).catch(() => sleep(500))
  return server
}

function medianOf(samples: Sample[], key: keyof Sample): number | undefined {
  const v = samples.map((s) => s[key]).filter((x): x is number => x !== undefined)
  return v.length === samples.length && v.length > 0 ? median(v) : undefined
}

/** What the rounds of one tunnel scenario gathered. */
interface TunnelAcc {
  samples: Record<'a→b' | 'b→a', Sample[]>
  /** Peak RSS of the tunnel processes over every round, MiB. */
  peakMB: number
  /** RSS growth from the first to the last run of each round (each round sets the scenario up afresh). */
  growthMB: number[]
  error?: string
}

function newAcc(): TunnelAcc {
  return { samples: { 'a→b': [], 'b→a': [] }, peakMB: 0, growthMB: [] }
}

/** One round of a scenario: set it up, one measured run each way, tear it down. */
async function tunnelRound(t: Tunnel, round: number, acc: TunnelAcc): Promise<void> {
  log(`${t.name}: setting up (round ${round + 1}/${REPEATS})`)
  const setup = await t.setup()
  let server: ChildProcess | undefined
  try {
    server = await iperfServer(setup)
    await iperf(setup, 1, false, t.flows) // warm-up: neighbours, peer learning, thread pools
    const rss = new RssSampler(setup.pids)
    const afterRun: number[] = []
    for (const reverse of [false, true]) {
      const direction = reverse ? 'b→a' : 'a→b'
      const s = await measured(setup, TCP_SECONDS, reverse, t.flows)
      acc.samples[direction].push(s)
      afterRun.push(rss.sample())
      log(
        `${t.name} ${direction} run ${round + 1}/${REPEATS}: ${s.gbps.toFixed(2)} Gbit/s` +
          (s.cpuSecPerGB !== undefined ? `, ${s.cpuSecPerGB.toFixed(2)} CPU s/GB` : '') +
          (s.syscallsPerMB !== undefined ? `, ${s.syscallsPerMB.toFixed(1)} syscalls/MB` : '') +
          `, ${s.retransmits ?? '?'} retransmits, all CPUs ${Math.round(s.hostBusy * 100)}% busy`,
      )
    }
    rss.stop()
    if (setup.pids.length > 0) {
      acc.peakMB = Math.max(acc.peakMB, rss.peakMB())
      acc.growthMB.push(afterRun[afterRun.length - 1]! - afterRun[0]!)
    }
  } finally {
    if (server) await stop(server)
    await setup.close()
  }
}

/** The medians of a scenario's rounds, one run per direction. */
function tunnelRuns(t: Tunnel, acc: TunnelAcc): Run[] {
  const runs: Run[] = []
  for (const direction of ['a→b', 'b→a'] as const) {
    const samples = acc.samples[direction]
    if (samples.length === 0) continue
    runs.push({
      name: t.name,
      scenario: t.id,
      direction,
      flows: t.flows,
      gbps: round(median(samples.map((s) => s.gbps)), 3),
      cpuSecPerGB: opt(medianOf(samples, 'cpuSecPerGB'), 3),
      syscallsPerMB: opt(medianOf(samples, 'syscallsPerMB'), 1),
      retransmits: medianOf(samples, 'retransmits'),
      samples: samples.map((s) => round(s.gbps, 3)),
      hostCpuBusy: round(median(samples.map((s) => s.hostBusy)), 2),
    })
  }
  if (acc.growthMB.length > 0) {
    const peak = round(acc.peakMB, 1)
    const growth = round(Math.max(...acc.growthMB), 1)
    for (const r of runs) Object.assign(r, { rssMB: peak, rssGrowthMB: growth })
    log(`${t.name}: peak RSS ${peak} MiB, largest growth from first to last run of a round ${growth} MiB`)
  }
  return runs
}

function opt(x: number | undefined, digits: number): number | undefined {
  return x === undefined ? undefined : round(x, digits)
}

/** perf record of the tunnel processes over one a→b run; the top of the report goes to bench/.work. */
async function profileScenario(t: Tunnel): Promise<void> {
  log(`${t.name}: profiling`)
  const setup = await t.setup()
  let server: ChildProcess | undefined
  try {
    server = await iperfServer(setup)
    await iperf(setup, 1, false, t.flows)
    mkdirSync(WORK_DIR, { recursive: true })
    const data = join(WORK_DIR, `perf-${t.id}.data`)
    const rec = track(setup.lab.spawn(setup.lab.a, 'perf', ['record', '-F', '999', '-g', '-o', data, '-p', setup.pids.join(',')]))
    await sleep(500)
    const s = await iperf(setup, TCP_SECONDS, false, t.flows)
    await stop(rec, 10_000)
    const report = execFileSync('perf', ['report', '-i', data, '--stdio', '--no-children', '--percent-limit', '0.7', '--sort', 'comm,dso,symbol', '-g', 'none'], {
      encoding: 'utf8',
      maxBuffer: 64 << 20,
      stdio: ['ignore', 'pipe', 'ignore'],
    })
    const out = join(WORK_DIR, `profile-${t.id}.txt`)
    writeFileSync(out, `${t.name}: ${(s.end.sum_received.bits_per_second / 1e9).toFixed(2)} Gbit/s while profiled\n\n${report}`)
    log(`${t.name}: profile in ${out}`)
    process.stderr.write(report.split('\n').filter((l) => l.trim() && !l.startsWith('#')).slice(0, 30).join('\n') + '\n')
  } finally {
    if (server) await stop(server)
    await setup.close()
  }
}

/** The C loop, built from bench/udpgso.c when missing or older than its source. */
function cTool(): string {
  const src = join(REPO_ROOT, 'bench', 'udpgso.c')
  const bin = join(WORK_DIR, 'udpgso')
  if (!existsSync(bin) || statSync(bin).mtimeMs < statSync(src).mtimeMs) {
    log('building bench/udpgso.c')
    mkdirSync(WORK_DIR, { recursive: true })
    execFileSync('cc', ['-O2', '-Wall', '-o', bin, src], { stdio: 'inherit' })
  }
  return bin
}

interface UdpResult {
  datagrams: number
  bytes: number
  seconds: number
  syscalls?: number
}

async function udpScenarios(): Promise<Run[]> {
  const bin = cTool()
  const lab = new Lab('bench-udp')
  const runs: Run[] = []
  const to = `${lab.b.outer4}:7000`
  const rate = (r: UdpResult) => (r.seconds > 0 ? r.datagrams / r.seconds : 0)
  try {
    const receiver = async (mode: string, seconds: number): Promise<ChildProcess> => {
      const c = track(
        mode === 'c'
          ? lab.spawn(lab.b, bin, ['recv', lab.b.outer4, '7000', String(seconds)])
          : lab.node(lab.b, 'bench/udp-peer.js', ['recv', '--mode', mode, '--listen', to, '--seconds', String(seconds)]),
      )
      await waitForLine(c, /listening/, 10_000)
      return c
    }
    const sender = (mode: string): ChildProcess =>
      track(
        mode === 'c'
          ? lab.spawn(lab.a, bin, ['send', lab.b.outer4, '7000', String(DATAGRAM), String(UDP_SECONDS)])
          : lab.node(lab.a, 'bench/udp-peer.js', ['send', '--mode', mode, '--to', to, '--size', String(DATAGRAM), '--seconds', String(UDP_SECONDS)]),
      )
    const limit = (UDP_SECONDS + 20) * 1000
    const record = (name: string, scenario: string, rates: number[], note: string) => {
      const mpps = median(rates) / 1e6
      runs.push({ name, scenario, mpps: round(mpps, 4), gbps: round((mpps * 1e6 * DATAGRAM * 8) / 1e9, 3), samples: rates.map((r) => round(r / 1e6, 4)), note })
      log(`UDP ${scenario} ${name}: ${mpps.toFixed(3)} Mpps (${note})`)
    }

    // Every repeat runs each mode once, in turn, so that the machine's drift over the minutes of the
    // section spreads over all modes alike instead of favouring the ones that run first.
    const sendModes = [
      ['dgram', 'node:dgram send loop'],
      ['sp-single', 'superpacket one by one (send, peer handle)'],
      ['sp-mmsg', 'superpacket sendBatch of 64 messages'],
      ['sp-batch', 'superpacket sendBatch(peer, buffer, 64 lengths), equal sizes'],
      ['sp-batch-mixed', 'superpacket sendBatch(peer, buffer, 64 lengths), alternating sizes'],
      ['sp-gso', 'superpacket GSO (sendSegments)'],
      ['c', 'C sendmsg(UDP_SEGMENT) loop'],
    ] as const
    const sendRates = sendModes.map(() => ({ rates: [] as number[], delivered: [] as number[] }))
    for (let i = 0; i < UDP_REPEATS; i++) {
      for (const [k, [mode]] of sendModes.entries()) {
        const sink = await receiver('c', UDP_SECONDS + 10)
        const sinkDone = jsonOutput<UdpResult>(sink, limit)
        const s = await jsonOutput<UdpResult>(sender(mode), limit)
        const r = await sinkDone
        sendRates[k]!.rates.push(rate(s))
        sendRates[k]!.delivered.push(s.datagrams > 0 ? r.datagrams / s.datagrams : 0)
      }
    }
    for (const [k, [, name]] of sendModes.entries()) {
      const { rates, delivered } = sendRates[k]!
      record(name, 'udp-send', rates, `sender rate; the C GRO sink received ${Math.round(median(delivered) * 100)}%`)
    }
    const recvModes = [
      ['dgram', 'node:dgram receive'],
      ['sp-gro', 'superpacket GRO receive'],
      ['sp-gro-reuse', 'superpacket GRO receive, reuseBuffers'],
      ['c', 'C recvmmsg(UDP_GRO) receive'],
    ] as const
    const recvRates = recvModes.map(() => [] as number[])
    for (let i = 0; i < UDP_REPEATS; i++) {
      for (const [k, [mode]] of recvModes.entries()) {
        const rx = await receiver(mode, UDP_SECONDS + 10)
        const rxDone = jsonOutput<UdpResult>(rx, limit)
        await jsonOutput<UdpResult>(sender('c'), limit)
        recvRates[k]!.push(rate(await rxDone))
      }
    }
    for (const [k, [, name]] of recvModes.entries()) record(name, 'udp-recv', recvRates[k]!, 'receiver rate, fed by the C GSO loop')
  } finally {
    lab.destroy()
  }
  return runs
}

function machine(): Record<string, unknown> {
  const cpus = os.cpus()
  let busiest = ''
  try {
    busiest = execFileSync('ps', ['-eo', 'pcpu,comm', '--sort=-pcpu', '--no-headers'], { encoding: 'utf8' }).split('\n').slice(0, 5).map((l) => l.trim()).join('; ')
  } catch {
    // ps missing: not essential.
  }
  return {
    date: new Date().toISOString(),
    quick,
    cpu: cpus[0]?.model.trim() ?? 'unknown',
    cpus: cpus.length,
    memGB: round(os.totalmem() / 2 ** 30, 1),
    kernel: os.release(),
    node: process.version,
    iperf3: firstLine('iperf3', ['--version']),
    loadStart: os.loadavg().map((x) => round(x, 2)).join(' '),
    busiestAtStart: busiest,
    tcpSeconds: TCP_SECONDS,
    repeats: REPEATS,
    udpSeconds: UDP_SECONDS,
    udpRepeats: UDP_REPEATS,
    syscallCounter: 'perf stat -e raw_syscalls:sys_enter -p <tunnel pids>',
  }
}

function firstLine(cmd: string, a: string[]): string {
  try {
    return execFileSync(cmd, a, { encoding: 'utf8' }).split('\n')[0]!.trim()
  } catch {
    return 'missing'
  }
}

async function main(): Promise<void> {
  if (args.readme === true) {
    const latest = JSON.parse(readFileSync(join(RESULTS_DIR, 'latest.json'), 'utf8')) as Results
    writeFileSync(join(RESULTS_DIR, 'latest.svg'), svg(latest))
    return updateReadme(latest)
  }
  if (!isRoot()) throw new Error('the bench needs root (network namespaces, TUN devices, perf)')
  if (args.soak !== undefined) return soak(Number(args.soak), log)
  for (const tool of ['iperf3', 'ip', 'wg', 'perf', 'cc']) {
    if (firstLine('sh', ['-c', `command -v ${tool}`]) === 'missing') throw new Error(`${tool} is missing: run scripts/bootstrap.sh --bench`)
  }
  if (args.profile !== undefined) {
    for (const id of args.profile.split(',')) {
      const t = TUNNELS.find((x) => x.id === id)
      if (t === undefined) throw new Error(`no scenario ${id}`)
      await profileScenario(t)
    }
    return
  }
  const m = machine()
  log(`superpacket bench${quick ? ' --quick' : ''}: ${String(m.cpu)}, ${String(m.cpus)} CPUs, load ${String(m.loadStart)}`)
  const runs: Run[] = []
  // Every round runs each scenario once (set up afresh), in turn, so that the machine's drift over the
  // minutes of the bench spreads over all scenarios alike: the ratios between them are what is read.
  const tunnels = TUNNELS.filter((x) => wanted(x.id))
  const accs = tunnels.map(newAcc)
  for (let r = 0; r < REPEATS; r++) {
    for (const [k, t] of tunnels.entries()) {
      const acc = accs[k]!
      if (acc.error !== undefined) continue
      try {
        await tunnelRound(t, r, acc)
      } catch (err) {
        log(`${t.name}: FAILED ${(err as Error).message}`)
        acc.error = (err as Error).message.slice(0, 500)
      }
    }
  }
  for (const [k, t] of tunnels.entries()) {
    const acc = accs[k]!
    if (acc.error !== undefined) runs.push({ name: t.name, scenario: t.id, gbps: 0, error: acc.error })
    else runs.push(...tunnelRuns(t, acc))
  }
  if (wanted('udp')) {
    try {
      runs.push(...(await udpScenarios()))
    } catch (err) {
      log(`UDP: FAILED ${(err as Error).message}`)
      runs.push({ name: 'UDP packet rate', scenario: 'udp-send', gbps: 0, error: (err as Error).message.slice(0, 500) })
    }
  }
  m.loadEnd = os.loadavg().map((x) => round(x, 2)).join(' ')
  m.minutes = round((Date.now() - t0) / 60_000, 1)
  m.only = only
  const results: Results = { machine: m, runs, ratios: ratios(runs) }
  mkdirSync(RESULTS_DIR, { recursive: true })
  mkdirSync(WORK_DIR, { recursive: true })
  const stamp = String(m.date).slice(0, 16).replace(/:/g, '-') + (quick ? '-quick' : '') + (only ? `-only-${only.join('-')}` : '')
  const json = JSON.stringify(results, null, 2) + '\n'
  const md = markdown(results)
  process.stdout.write(md)
  if (only) {
    // A partial run does not replace the latest full picture.
    writeFileSync(join(WORK_DIR, `${stamp}.json`), json)
    return log(`wrote bench/.work/${stamp}.json (partial run: bench/results untouched)`)
  }
  writeFileSync(join(RESULTS_DIR, `${stamp}.json`), json)
  writeFileSync(join(RESULTS_DIR, 'latest.json'), json)
  writeFileSync(join(RESULTS_DIR, 'latest.md'), md)
  writeFileSync(join(RESULTS_DIR, 'latest.svg'), svg(results))
  log(`wrote bench/results/${stamp}.json, latest.json, latest.md, latest.svg`)
  if (!quick) updateReadme(results)
}

const README = join(REPO_ROOT, 'README.md')

/** Puts a full run's table and chart into the README between its markers. */
function updateReadme(results: Results): void {
  const next = readmeWithResults(readFileSync(README, 'utf8'), results)
  if (next === undefined) return log('README.md has no bench markers: not updated')
  writeFileSync(README, next)
  log('wrote the results into README.md')
}

await main().catch((err: Error) => {
  log(`bench failed: ${err.message}`)
  process.exitCode = 1
})
process.exit(process.exitCode ?? 0)
