/**
 * The bench's output: the result shape, the ratios against the targets, a markdown table and an SVG chart.
 * @internal
 * @module
 */

/** One measured configuration. */
export interface Run {
  name: string
  /** a–f (tunnels), b4/f4 (4 flows), udp-send, udp-recv. */
  scenario: string
  /** Median Gbit/s (tunnels: iperf3 receiver; UDP: datagram payload). */
  gbps: number
  /** UDP: million datagrams per second (median). */
  mpps?: number
  /** CPU seconds of the tunnel processes per GB carried. */
  cpuSecPerGB?: number
  /** System calls of the tunnel processes per MB carried. */
  syscallsPerMB?: number
  /** Peak RSS (VmHWM) of the largest tunnel process, MiB. */
  rssMB?: number
  /** RSS growth of the largest tunnel process from the end of its first to its last run of one set-up (the largest over the rounds), MiB. */
  rssGrowthMB?: number
  /** TCP retransmits (median). */
  retransmits?: number
  /** tunnels: a→b (client sends) or b→a (iperf3 -R). */
  direction?: 'a→b' | 'b→a'
  flows?: number
  /** Share of all the machine's CPU time that was busy during the runs (median; 1 = every CPU busy). */
  hostCpuBusy?: number
  /** Every sample behind the median. */
  samples?: number[]
  note?: string
  error?: string
}

export interface Ratio {
  value: number | null
  target: string
  met: boolean | null
  detail?: string
}

export interface Results {
  machine: Record<string, unknown>
  runs: Run[]
  ratios: Record<string, Ratio>
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  if (s.length === 0) return NaN
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

function find(runs: Run[], scenario: string, direction?: string): Run | undefined {
  return runs.find((r) => r.scenario === scenario && (direction === undefined || r.direction === direction) && r.error === undefined)
}

/** The targets (issues 4, 8, 9, 12), each computed in the direction where it is worst. */
export function ratios(runs: Run[]): Record<string, Ratio> {
  const out: Record<string, Ratio> = {}
  const dirs = ['a→b', 'b→a'] as const
  const tunnel = (key: string, num: string, den: string, metric: (r: Run) => number | undefined, ok: (v: number) => boolean, target: string) => {
    const vals = dirs.map((d) => {
      const n = find(runs, num, d)
      const q = find(runs, den, d)
      const a = n && metric(n)
      const b = q && metric(q)
      return a !== undefined && b !== undefined && b > 0 ? a / b : undefined
    })
    if (vals.some((v) => v === undefined)) return void (out[key] = { value: null, target, met: null, detail: 'not measured' })
    const v = vals as number[]
    const worst = v.reduce((w, x) => (ok(w) && !ok(x) ? x : ok(x) && !ok(w) ? w : Math.min(w, x)))
    out[key] = { value: round(worst, 3), target, met: v.every(ok), detail: dirs.map((d, i) => `${d} ${round(v[i]!, 3)}`).join(', ') }
  }
  const gbps = (r: Run) => r.gbps
  tunnel('b/a', 'b', 'a', gbps, (v) => v >= 0.3, '≥ 0.30')
  tunnel('b/e', 'b', 'e', gbps, (v) => v >= 15, '≥ 15')
  tunnel('c/b', 'c', 'b', gbps, (v) => v >= 0.7, '≥ 0.7')
  tunnel('b/d', 'b', 'd', gbps, (v) => v > 1, '> 1')
  tunnel('syscallsPerMB e/b', 'e', 'b', (r) => r.syscallsPerMB, (v) => v >= 20, '≥ 20 (b ≤ 1/20 of e)')
  // Offloads off against on (issue 12), encryption against wireguard-go (issues 8 and 9).
  tunnel('d/b', 'd', 'b', gbps, (v) => v >= 0.3, '≥ 0.3')
  tunnel('g/f', 'g', 'f', gbps, (v) => v >= 1.3, '≥ 1.3')
  tunnel('CPU s/GB g/f', 'g', 'f', (r) => r.cpuSecPerGB, (v) => v <= 0.6, '≤ 0.6')
  tunnel('h/f', 'h', 'f', gbps, (v) => v >= 0.9, '≥ 0.9')
  tunnel('i/g', 'i', 'g', gbps, (v) => v >= 0.6, '≥ 0.6')
  tunnel('j/f', 'j', 'f', gbps, (v) => v >= 1.3, '≥ 1.3')
  tunnel('k/f', 'k', 'f', gbps, (v) => v >= 1.3, '≥ 1.3')
  tunnel('j/l', 'j', 'l', gbps, (v) => v >= 3, '≥ 3')
  const udp = (name: string) => runs.find((r) => r.scenario === 'udp-send' && r.name === name && r.error === undefined)
  const dgram = 'node:dgram send loop'
  for (const [key, num, den, min] of [
    ['udpGso/dgram', 'superpacket GSO (sendSegments)', dgram, 8],
    ['udpGso/cLoop', 'superpacket GSO (sendSegments)', 'C sendmsg(UDP_SEGMENT) loop', 0.9],
    ['send/dgram', 'superpacket one by one (send, peer handle)', dgram, 1],
    ['sendBatch 64/dgram', 'superpacket sendBatch(peer, buffer, 64 lengths), equal sizes', dgram, 4],
    ['sendBatch 64 alternating/dgram', 'superpacket sendBatch(peer, buffer, 64 lengths), alternating sizes', dgram, 4],
  ] as const) {
    const n = udp(num)
    const base = udp(den)
    const v = n?.mpps !== undefined && base?.mpps ? n.mpps / base.mpps : undefined
    out[key] = v === undefined ? { value: null, target: `≥ ${min}`, met: null, detail: 'not measured' } : { value: round(v, 3), target: `≥ ${min}`, met: v >= min }
  }
  const recv = (name: string) => runs.find((r) => r.scenario === 'udp-recv' && r.name === name && r.error === undefined)
  const cRecv = recv('C recvmmsg(UDP_GRO) receive')
  for (const [key, name] of [
    ['groRecv/cLoop', 'superpacket GRO receive'],
    ['groRecv reuseBuffers/cLoop', 'superpacket GRO receive, reuseBuffers'],
  ] as const) {
    const n = recv(name)
    const v = n?.mpps !== undefined && cRecv?.mpps ? n.mpps / cRecv.mpps : undefined
    out[key] = v === undefined ? { value: null, target: '≥ 0.6', met: null, detail: 'not measured' } : { value: round(v, 3), target: '≥ 0.6', met: v >= 0.6 }
  }
  // One row per scenario (both directions share the endpoints and so the figures). The target is about
  // superpacket's endpoints; the baselines (e, the naive Node tunnel; c0, the JS path without
  // reuseBuffers) are shown beside it, not counted.
  const rss = (ids: string[]) => runs.filter((r) => ids.includes(r.scenario) && r.rssMB !== undefined && r.direction === 'a→b')
  const shown = (r: Run) => `${r.scenario} ${String(r.rssMB)} MiB (growth ${r.rssGrowthMB ?? '?'})`
  const baselines = rss(['e', 'c0', 'l'])
  const notCounted = baselines.length === 0 ? '' : `; not counted: ${baselines.map(shown).join(', ')}`
  const eps = rss(['b', 'c', 'd', 'b4', 'g', 'i', 'j', 'k'])
  if (eps.length > 0) {
    const peak = Math.max(...eps.map((r) => r.rssMB!))
    const growth = Math.max(...eps.map((r) => r.rssGrowthMB ?? 0))
    out['endpoint RSS MiB'] = {
      value: round(peak, 1),
      target: '≤ 100 and flat (growth ≤ 5 MiB)',
      met: peak <= 100 && growth <= 5,
      detail: eps.map(shown).join(', ') + notCounted,
    }
  }
  return out
}

export function round(x: number, digits = 2): number {
  const f = 10 ** digits
  return Math.round(x * f) / f
}

const fmt = (x: number | undefined, d = 2) => (x === undefined || Number.isNaN(x) ? '–' : x.toFixed(d))

/** The results as a markdown document. */
export function markdown(r: Results): string {
  const m = r.machine
  const lines = [
    `# superpacket benchmark (${String(m.date)}${m.quick ? ', --quick' : ''})`,
    '',
    `Machine: ${String(m.cpu)}, ${String(m.cpus)} CPUs, ${String(m.memGB)} GB, Linux ${String(m.kernel)}, Node ${String(m.node)}. ` +
      `Load average at start ${String(m.loadStart)}, at end ${String(m.loadEnd)}.`,
    '',
    `Tunnels: iperf3, one TCP flow unless said, ${String(m.tcpSeconds)} s per run, median of ${String(m.repeats)} rounds (each round runs every scenario once, in turn); inner MTU 1420. ` +
      'CPU and system calls are of the tunnel processes (both endpoints); syscalls counted with perf (raw_syscalls:sys_enter). ' +
      'b–e do not encrypt; f (wireguard-go) does.',
    '',
    '| Run | Dir | Gbit/s | Mpps | CPU s/GB | syscalls/MB | peak RSS MiB | RSS growth MiB | retransmits | host CPU busy |',
    '|---|---|--:|--:|--:|--:|--:|--:|--:|--:|',
  ]
  for (const x of r.runs) {
    if (x.error !== undefined) {
      lines.push(`| ${x.name} | ${x.direction ?? ''} | failed: ${x.error.replace(/\|/g, '/').slice(0, 120)} | | | | | | | |`)
      continue
    }
    lines.push(
      `| ${x.name} | ${x.direction ?? x.scenario.replace('udp-', '')} | ${fmt(x.gbps)} | ${fmt(x.mpps, 3)} | ${fmt(x.cpuSecPerGB)} | ${fmt(x.syscallsPerMB, 1)} | ${fmt(x.rssMB, 1)} | ${fmt(x.rssGrowthMB, 1)} | ${x.retransmits ?? '–'} | ${x.hostCpuBusy === undefined ? '–' : `${Math.round(x.hostCpuBusy * 100)}%`} |`,
    )
  }
  lines.push('', '| Target | Value | Wanted | Met | Detail |', '|---|--:|---|---|---|')
  for (const [k, v] of Object.entries(r.ratios)) {
    lines.push(`| ${k} | ${v.value ?? '–'} | ${v.target} | ${v.met === null ? '–' : v.met ? 'yes' : '**no**'} | ${v.detail ?? ''} |`)
  }
  lines.push('')
  return lines.join('\n')
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}

/** Horizontal bars: tunnel Gbit/s per direction, then UDP Mpps. */
export function svg(r: Results): string {
  const ok = r.runs.filter((x) => x.error === undefined)
  const tcpRows = ok.filter((x) => x.direction !== undefined).map((x) => ({
    label: `${x.name} ${x.direction}`,
    value: x.gbps,
    color: x.direction === 'a→b' ? '#3b6ea5' : '#7fa7d1',
    text: x.gbps.toFixed(2),
  }))
  const udpRows = ok.filter((x) => x.mpps !== undefined).map((x) => ({
    label: `${x.scenario === 'udp-send' ? 'send' : 'recv'}: ${x.name}`,
    value: x.mpps!,
    color: x.scenario === 'udp-send' ? '#c0703a' : '#5a9a5a',
    text: `${x.mpps!.toFixed(3)} Mpps, ${x.gbps.toFixed(2)} Gbit/s`,
  }))
  // The label column fits the longest label. Nothing measures text here, so its width is estimated from the
  // character count at a generous average advance for 12 px sans-serif.
  const LABEL_CHAR_PX = 7
  const longest = Math.max(0, ...[...tcpRows, ...udpRows].map((x) => [...x.label].length))
  const left = Math.max(120, 18 + Math.ceil(longest * LABEL_CHAR_PX))
  const barW = 480
  const W = left + barW + 190
  const rowH = 22
  const parts: string[] = []
  let y = 40
  const section = (title: string, rows: { label: string; value: number; color: string; text: string }[]) => {
    parts.push(`<text x="10" y="${y}" font-weight="bold" font-size="15">${esc(title)}</text>`)
    y += 12
    const max = Math.max(1e-9, ...rows.map((x) => x.value))
    for (const row of rows) {
      const w = Math.max(1, (row.value / max) * barW)
      parts.push(`<text x="${left - 8}" y="${y + 15}" text-anchor="end" font-size="12">${esc(row.label)}</text>`)
      parts.push(`<rect x="${left}" y="${y + 3}" width="${w.toFixed(1)}" height="${rowH - 6}" fill="${row.color}"/>`)
      parts.push(`<text x="${(left + w + 5).toFixed(1)}" y="${y + 15}" font-size="12">${esc(row.text)}</text>`)
      y += rowH
    }
    y += 26
  }
  section('Tunnel throughput, TCP (Gbit/s, median)', tcpRows)
  section('UDP, 1,400-byte datagrams between namespaces (Mpps, median)', udpRows)
  const m = r.machine
  const footer = `${String(m.cpu)}, ${String(m.cpus)} CPUs, Linux ${String(m.kernel)}, ${String(m.date)}${m.quick ? ' (--quick)' : ''}`
  parts.push(`<text x="10" y="${y}" font-size="11" fill="#555">${esc(footer)}</text>`)
  const H = y + 12
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="10" y="20" font-size="17" font-weight="bold">superpacket benchmark</text>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n')
}

/** Markers around the part of the README that full bench runs rewrite. */
export const README_START = '<!-- bench results: written by `npm run bench` (full run), do not edit by hand -->'
export const README_END = '<!-- end of bench results -->'

/**
 * `readme` with the text between the markers replaced by the run's table and the chart; unchanged (and
 * `undefined` returned) when the markers are missing.
 */
export function readmeWithResults(readme: string, r: Results): string | undefined {
  const start = readme.indexOf(README_START)
  const end = readme.indexOf(README_END)
  if (start < 0 || end < start) return undefined
  const body = markdown(r).replace(/^# superpacket benchmark \((.*)\)$/m, 'Full run of $1:')
  const section = `${README_START}\n${body.trimEnd()}\n\n![bench chart](bench/results/latest.svg)\n`
  return readme.slice(0, start) + section + readme.slice(end)
}
