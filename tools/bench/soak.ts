/**
 * `npm run bench -- --soak <seconds>`: first, RATIO_ROUNDS rounds of RATIO_SECONDS of iperf3 without and
 * then with the garbage flood, for the throughput ratio of issue 11's target. Then a native Tunnel (offloads on, header
 * framer) carries one iperf3 TCP
 * flow a→b for the whole run while its receiving endpoint is flooded with garbage (~50k datagrams/s from
 * the peer's namespace on another port and address, and from the peer's own address and port). Every
 * SAMPLE_SECONDS it records each endpoint's RSS and open fds and the receiving endpoint's counters, and
 * writes bench/results/soak-latest.json and soak-latest.svg (RSS, fds, drops and throughput over time).
 * @internal
 * @module
 */
import type { ChildProcess } from 'node:child_process'
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Garbage } from '../lab/garbage.js'
import { stop, waitForLine } from '../lab/netns.js'
import { TUNNEL_PORT, TunnelPair } from '../lab/tunnel-pair.js'
import { memory, realPid } from './proc.js'
import { median, round } from './report.js'
import { REPO_ROOT, track } from './setups.js'

const SAMPLE_SECONDS = 5
/** Garbage datagrams per second, all sources together (the rate of issue 11's target). */
const GARBAGE_RATE = 50_000
/** Samples before this are warm-up: growth is measured from the first sample at or after it. */
const WARM_UP_SECONDS = 20
/** What "flat" allows between the first sample after warm-up and the last. */
const FLAT_RSS_MIB = 5
/** Rounds of (transfer without garbage, transfer with garbage), alternated so that load drift hits both. */
const RATIO_ROUNDS = 3
const RATIO_SECONDS = 5

interface EndpointCounters {
  tun: { txBytes: number; txDrops: number }
  inbound: { datagrams: number; packets: number; drops: number; dropReasons: Record<string, number> }
  outbound: { segments: number; drops: number }
  running: boolean
  closed: string
}

/** One sample of the run. */
export interface SoakSample {
  seconds: number
  rssMB: [number, number]
  fds: [number, number]
  /** Receiving endpoint (b): datagrams dropped so far, by reason. */
  dropReasons: Record<string, number>
  /** Receiving endpoint (b): packets written to its TUN so far. */
  packets: number
  /** Receiving endpoint (b): packets its TUN refused so far. */
  tunDrops: number
  /** Inner throughput since the previous sample (bytes b wrote to its TUN). */
  gbps: number
}

function fdCount(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length
  } catch {
    return 0
  }
}

export async function soak(seconds: number, log: (s: string) => void): Promise<void> {
  if (!(seconds >= SAMPLE_SECONDS * 2)) throw new Error(`--soak needs at least ${SAMPLE_SECONDS * 2} seconds`)
  log(`soak: ${seconds} s, native Tunnel, one TCP flow a→b, ${GARBAGE_RATE} garbage datagrams/s at b`)
  const pair = await TunnelPair.start('soak', { mode: 'native', offload: 'on', framer: 'header' })
  pair.endpoints.forEach(track)
  let garbage: Garbage | undefined
  const procs: ChildProcess[] = []
  try {
    const { a, b } = pair.lab
    const flood = (seconds: number) =>
      Garbage.start(pair.lab, { victim: b, port: TUNNEL_PORT, peer: a, sources: ['other-port', 'second-address', 'peer-address-and-port'], rate: GARBAGE_RATE, seconds, started: track })
    const pids = pair.endpoints.map(realPid) as [number, number]
    const server = track(pair.lab.spawn(b, 'iperf3', ['-s', '-B', b.inner4, '--forceflush']))
    procs.push(server)
    await waitForLine(server, /listening/i, 5000).catch(() => sleep(500))
    const ratio = await throughputRatio(pair, () => flood(RATIO_SECONDS + 60), log)
    garbage = await flood(seconds + 30)
    const client = track(pair.lab.spawn(a, 'iperf3', ['-c', b.inner4, '-t', String(seconds), '-J']))
    procs.push(client)
    const samples: SoakSample[] = []
    const t0 = Date.now()
    let lastBytes = 0
    let lastAt = t0
    for (let i = 0; i <= Math.ceil(seconds / SAMPLE_SECONDS); i++) {
      const due = t0 + i * SAMPLE_SECONDS * 1000
      await sleep(Math.max(0, due - Date.now()))
      const s = (await pair.statsOf(1)) as EndpointCounters
      const now = Date.now()
      const sample: SoakSample = {
        seconds: round((now - t0) / 1000, 1),
        rssMB: [round(memory(pids[0]).rssMB, 1), round(memory(pids[1]).rssMB, 1)],
        fds: [fdCount(pids[0]), fdCount(pids[1])],
        dropReasons: s.inbound.dropReasons,
        packets: s.inbound.packets,
        tunDrops: s.tun.txDrops,
        gbps: i === 0 ? 0 : round(((s.tun.txBytes - lastBytes) * 8) / ((now - lastAt) / 1000) / 1e9, 3),
      }
      lastBytes = s.tun.txBytes
      lastAt = now
      samples.push(sample)
      const drops = Object.entries(sample.dropReasons).map(([k, v]) => `${k} ${v}`).join(', ')
      log(`soak ${sample.seconds} s: RSS a ${sample.rssMB[0]} b ${sample.rssMB[1]} MiB, fds a ${sample.fds[0]} b ${sample.fds[1]}, ${sample.gbps} Gbit/s, drops at b: ${drops || 'none'}`)
      if (!s.running) throw new Error(`the receiving tunnel stopped: ${s.closed}`)
    }
    const sent = await garbage.stop()
    garbage = undefined
    const end = (await pair.statsOf(1)) as EndpointCounters
    const summary = summarize(samples, sent, end)
    const result = { date: new Date(t0).toISOString(), seconds, sampleSeconds: SAMPLE_SECONDS, garbageRate: GARBAGE_RATE, ratio, summary, samples }
    const dir = join(REPO_ROOT, 'bench', 'results')
    mkdirSync(dir, { recursive: true })
    writeFileSync(join(dir, 'soak-latest.json'), JSON.stringify(result, null, 2) + '\n')
    writeFileSync(join(dir, 'soak-latest.svg'), chart(samples, `${result.date}, ${seconds} s, ${GARBAGE_RATE} garbage datagrams/s`))
    process.stdout.write(JSON.stringify(summary, null, 2) + '\n')
    log('wrote bench/results/soak-latest.json and soak-latest.svg')
  } finally {
    await garbage?.stop().catch(() => {})
    await Promise.all(procs.map((p) => stop(p)))
    await pair.close()
  }
}

/** iperf3 a→b through the tunnel for `seconds`: the receiver's Gbit/s. */
async function iperfGbps(pair: TunnelPair, seconds: number): Promise<number> {
  const c = track(pair.lab.spawn(pair.lab.a, 'iperf3', ['-c', pair.lab.b.inner4, '-t', String(seconds), '-J']))
  let out = ''
  c.stdout?.on('data', (d: Buffer) => (out += d.toString()))
  const timer = setTimeout(() => c.kill('SIGKILL'), (seconds + 30) * 1000)
  await new Promise((resolve) => c.once('exit', resolve))
  clearTimeout(timer)
  const j = JSON.parse(out) as { end?: { sum_received?: { bits_per_second: number } }; error?: string }
  const bps = j.end?.sum_received?.bits_per_second
  if (bps === undefined) throw new Error(`iperf3: ${j.error ?? 'no result'}`)
  return bps / 1e9
}

/** iperf3 runs without and with garbage, alternated so that load drift hits both; the ratio of the medians. */
async function throughputRatio(pair: TunnelPair, flood: () => Promise<Garbage>, log: (s: string) => void): Promise<Record<string, unknown>> {
  const quiet: number[] = []
  const flooded: number[] = []
  await iperfGbps(pair, 1) // warm-up
  for (let i = 0; i < RATIO_ROUNDS; i++) {
    const q = await iperfGbps(pair, RATIO_SECONDS)
    const g = await flood()
    let f: number
    try {
      f = await iperfGbps(pair, RATIO_SECONDS)
    } finally {
      await g.stop()
    }
    quiet.push(round(q, 3))
    flooded.push(round(f, 3))
    log(`round ${i + 1}/${RATIO_ROUNDS}: ${q.toFixed(2)} Gbit/s without garbage, ${f.toFixed(2)} with it`)
  }
  const value = round(median(flooded) / median(quiet), 3)
  log(`throughput with garbage / without: ${value} (iperf3, median of ${RATIO_ROUNDS} runs of ${RATIO_SECONDS} s; target ≥ 0.8)`)
  return { quietGbps: quiet, floodedGbps: flooded, value, target: '≥ 0.8', met: value >= 0.8 }
}

function summarize(samples: SoakSample[], garbageSent: Record<string, number>, end: EndpointCounters): Record<string, unknown> {
  const warm = samples.find((s) => s.seconds >= WARM_UP_SECONDS) ?? samples[0]!
  const last = samples[samples.length - 1]!
  const after = samples.filter((s) => s.seconds >= warm.seconds)
  const range = (f: (s: SoakSample) => number) => [Math.min(...after.map(f)), Math.max(...after.map(f))]
  const rssGrowth = [round(last.rssMB[0] - warm.rssMB[0], 1), round(last.rssMB[1] - warm.rssMB[1], 1)]
  const fdsRange = [range((s) => s.fds[0]), range((s) => s.fds[1])]
  const gbps = after.filter((s) => s.gbps > 0).map((s) => s.gbps)
  return {
    rssMB: { afterWarmUp: warm.rssMB, last: last.rssMB, max: [Math.max(...samples.map((s) => s.rssMB[0])), Math.max(...samples.map((s) => s.rssMB[1]))], growth: rssGrowth },
    fds: { first: samples[0]!.fds, last: last.fds, rangeAfterWarmUp: fdsRange },
    garbageSentDuringSoak: garbageSent,
    dropsAtBSinceStart: end.inbound.dropReasons,
    tunDropsAtBSinceStart: end.tun.txDrops,
    packetsWrittenAtBSinceStart: end.inbound.packets,
    gbps: { min: Math.min(...gbps), max: Math.max(...gbps), mean: round(gbps.reduce((x, y) => x + y, 0) / Math.max(1, gbps.length), 3) },
    flat: rssGrowth.every((g) => g <= FLAT_RSS_MIB) && fdsRange.every(([lo, hi]) => lo === hi),
    flatMeans: `RSS growth after ${WARM_UP_SECONDS} s ≤ ${FLAT_RSS_MIB} MiB and an unchanging fd count, both endpoints`,
  }
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}

interface Series {
  name: string
  color: string
  points: [number, number][]
}

/** One panel: a titled line chart of `series` against seconds. */
function panel(title: string, series: Series[], y: number, width: number, height: number, xMax: number): string {
  const left = 70
  const plotW = width - left - 180
  const top = y + 24
  const plotH = height - 50
  const yMax = Math.max(1e-9, ...series.flatMap((s) => s.points.map((p) => p[1]))) * 1.1
  const px = (x: number) => left + (x / Math.max(1e-9, xMax)) * plotW
  const py = (v: number) => top + plotH - (v / yMax) * plotH
  const parts = [
    `<text x="10" y="${y + 15}" font-weight="bold" font-size="14">${esc(title)}</text>`,
    `<line x1="${left}" y1="${top}" x2="${left}" y2="${top + plotH}" stroke="#888"/>`,
    `<line x1="${left}" y1="${top + plotH}" x2="${left + plotW}" y2="${top + plotH}" stroke="#888"/>`,
  ]
  for (const f of [0, 0.5, 1]) {
    const v = (yMax / 1.1) * f
    parts.push(`<text x="${left - 6}" y="${py(v) + 4}" text-anchor="end" font-size="11">${esc(formatNumber(v))}</text>`)
  }
  parts.push(`<text x="${left}" y="${top + plotH + 16}" font-size="11">0 s</text>`)
  parts.push(`<text x="${left + plotW}" y="${top + plotH + 16}" text-anchor="end" font-size="11">${Math.round(xMax)} s</text>`)
  series.forEach((s, i) => {
    const d = s.points.map(([x, v], k) => `${k === 0 ? 'M' : 'L'}${px(x).toFixed(1)},${py(v).toFixed(1)}`).join(' ')
    parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"/>`)
    parts.push(`<rect x="${left + plotW + 15}" y="${top + i * 18}" width="12" height="4" fill="${s.color}"/>`)
    parts.push(`<text x="${left + plotW + 32}" y="${top + i * 18 + 6}" font-size="11">${esc(s.name)}</text>`)
  })
  return parts.join('\n')
}

function formatNumber(v: number): string {
  return v >= 100 ? String(Math.round(v)) : v >= 1 ? v.toFixed(1) : v.toFixed(2)
}

/** RSS, fds, drops per second by reason and throughput, each over time. */
function chart(samples: SoakSample[], footer: string): string {
  const W = 1000
  const H = 200
  const xMax = samples[samples.length - 1]?.seconds ?? 1
  const colors = ['#3b6ea5', '#c0703a', '#5a9a5a', '#8a5aa5', '#a55a5a']
  const line = (name: string, color: string, f: (s: SoakSample) => number): Series => ({ name, color, points: samples.map((s) => [s.seconds, f(s)]) })
  const reasons = [...new Set(samples.flatMap((s) => Object.keys(s.dropReasons)))]
  const perSecond = (reason: string): Series => ({
    name: `${reason} /s`,
    color: colors[reasons.indexOf(reason) % colors.length]!,
    points: samples.slice(1).map((s, i) => [s.seconds, ((s.dropReasons[reason] ?? 0) - (samples[i]!.dropReasons[reason] ?? 0)) / Math.max(1e-9, s.seconds - samples[i]!.seconds)]),
  })
  const panels = [
    panel('RSS (MiB)', [line('endpoint a', colors[0]!, (s) => s.rssMB[0]), line('endpoint b', colors[1]!, (s) => s.rssMB[1])], 30, W, H, xMax),
    panel('Open file descriptors', [line('endpoint a', colors[0]!, (s) => s.fds[0]), line('endpoint b', colors[1]!, (s) => s.fds[1])], 30 + H, W, H, xMax),
    panel('Datagrams dropped at b, per second, by reason', [...reasons.map(perSecond), line('TUN refused (total)', '#444', (s) => s.tunDrops)], 30 + 2 * H, W, H, xMax),
    panel('Inner throughput a→b (Gbit/s)', [line('b wrote to its TUN', colors[2]!, (s) => s.gbps)], 30 + 3 * H, W, H, xMax),
  ]
  const height = 30 + 4 * H + 20
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" viewBox="0 0 ${W} ${height}" font-family="sans-serif">`,
    `<rect width="${W}" height="${height}" fill="white"/>`,
    `<text x="10" y="20" font-size="17" font-weight="bold">superpacket soak: native Tunnel under load and garbage</text>`,
    ...panels,
    `<text x="10" y="${height - 8}" font-size="11" fill="#555">${esc(footer)}</text>`,
    '</svg>',
    '',
  ].join('\n')
}
