/**
 * The demo (`npm run demo`, as root): two network namespaces joined by a veth, a superpacket tunnel endpoint
 * in each (one Node process per namespace), and a TCP transfer through the tunnel: with offloads on, then
 * off, then encrypted with WireGuard (offloads on). Prints throughput, segments per system call and the
 * offload state.
 *
 *   npm run demo [-- --bytes 268435456]
 * @internal
 * @module
 */
import { parseArgs } from 'node:util'
import { isRoot, Lab } from '../lab/netns.js'
import { tcpTransfer, type Transfer } from '../lab/transfer.js'
import { TunnelPair } from '../lab/tunnel-pair.js'
import { endpointOf, endpointStats, keyPair, startSuperpacketWg, type WgEndpoint } from '../lab/wireguard.js'

interface Side {
  tun: { rxFrames: number; rxSegments: number; txFrames: number; txPackets: number }
  udp: { txDatagrams: number; txSyscalls: number; rxDatagrams: number; rxSyscalls: number; gsoFallbacks: number }
}

const { values: o } = parseArgs({ options: { bytes: { type: 'string', default: String(256 << 20) } } })
const bytes = Number(o.bytes)

if (!isRoot()) {
  console.error(
    'superpacket demo: needs root (it creates network namespaces, a veth pair and TUN devices).\n' +
      'Run it as: sudo npm run demo',
  )
  process.exit(1)
}

const per = (a: number, b: number) => (b === 0 ? 0 : a / b)
const rows: string[][] = []

/** Sends the transfer through a running pair of endpoints and prints and records what it took. */
async function measure(label: string, send: () => Promise<Transfer>, stats: () => Promise<unknown[]>): Promise<void> {
  console.log(`   sending ${(bytes / 2 ** 20).toFixed(0)} MiB over TCP from 198.18.100.1 to 198.18.100.2 through the tunnel ...`)
  const progress = setInterval(() => process.stdout.write('.'), 500)
  const t = await send().finally(() => clearInterval(progress))
  process.stdout.write('\n')
  const [a, b] = (await stats()) as Side[]
  const intact = t.sha256Received === t.sha256Sent && t.bytes === bytes
  console.log(`   ${intact ? 'arrived intact (SHA-256 equal)' : 'DATA MISMATCH'}: ${t.gbps.toFixed(2)} Gbit/s in ${t.seconds.toFixed(2)} s`)
  const segPerRead = per(a!.tun.rxSegments, a!.tun.rxFrames)
  const segPerSend = per(a!.udp.txDatagrams, a!.udp.txSyscalls)
  const dgPerRecv = per(b!.udp.rxDatagrams, b!.udp.rxSyscalls)
  const pktPerWrite = per(b!.tun.txPackets, b!.tun.txFrames)
  console.log(`   sender:   ${segPerRead.toFixed(1)} segments per TUN read, ${segPerSend.toFixed(1)} datagrams per UDP send`)
  console.log(`   receiver: ${dgPerRecv.toFixed(1)} datagrams per UDP receive, ${pktPerWrite.toFixed(1)} packets per TUN write`)
  rows.push([label, t.gbps.toFixed(2), segPerRead.toFixed(1), segPerSend.toFixed(1), dgPerRecv.toFixed(1), pktPerWrite.toFixed(1), intact ? 'yes' : 'NO'])
  if (!intact) process.exitCode = 1
}

for (const offload of ['auto', 'off'] as const) {
  const label = offload === 'auto' ? 'offloads on' : 'offloads off'
  console.log(`\n== ${label}: starting two tunnel endpoints in namespaces ...`)
  const pair = await TunnelPair.start('demo', { offload })
  try {
    const o = pair.info[0]!.ready
    const granted = Object.entries(o.offloads).filter(([, v]) => v).map(([k]) => k)
    console.log(`   TUN ${o.tun}: offloads ${granted.length ? granted.join(', ') : 'none'}; UDP GSO ${o.udp.gso ? 'on' : 'off'}, GRO ${o.udp.gro ? 'on' : 'off'}`)
    await measure(label, () => pair.transfer(bytes, 4), () => pair.stats())
  } finally {
    await pair.close()
  }
}

// WireGuard: fresh keys, each endpoint the other's peer, AllowedIPs the other's inner addresses.
console.log('\n== WireGuard, offloads on: starting two superpacket WireGuard endpoints ...')
const lab = new Lab('demowg')
const ends: WgEndpoint[] = []
try {
  const keys = [keyPair(), keyPair()]
  for (const [i, side] of [lab.a, lab.b].entries()) {
    const other = i === 0 ? lab.b : lab.a
    const peer = { publicKey: keys[1 - i]!.publicKey, endpoint: endpointOf(other, 51820), allowedIPs: [`${other.inner4}/32`, `${other.inner6}/128`] }
    ends.push(await startSuperpacketWg(lab, side, { privateKey: keys[i]!.privateKey, listenPort: 51820, peers: [peer] }))
  }
  await measure('WireGuard, offloads on', () => tcpTransfer(lab, lab.a, lab.b, bytes, 4), () => Promise.all(ends.map((e) => endpointStats(e.process))))
} finally {
  await Promise.all(ends.map((e) => e.close()))
  lab.destroy()
}

console.log('\n| mode | Gbit/s | segments/TUN read | datagrams/UDP send | datagrams/UDP recv | packets/TUN write | intact |')
console.log('|---|---|---|---|---|---|---|')
for (const r of rows) console.log(`| ${r.join(' | ')} |`)
