/**
 * One tunnel endpoint, run inside a namespace by the demo, the tests and the benchmarks.
 *
 *   node tools/dist/demo/endpoint.js --tun sp0 --inner4 198.18.100.1/24 --inner6 2001:db8:100::1/64 \
 *     --listen 0.0.0.0:51820 --peer 198.18.1.2:51820 [--offload auto|on|off] [--mode native|js|naive]
 *     [--framer plain|header|wireguard --wg-config FILE|dtls --dtls-keys FILE --dtls-side a|b]
 *     [--mtu 1420] [--queues 1] [--learn-peer]
 *
 * `--mode js` runs the loops the README shows, unchanged: a failed `PacketWriter.write` ends the inbound loop
 * (reported in the stats as `inboundLoop`), as it would end a user's tunnel.
 *
 * `--mode naive` is the benchmark's baseline, a tunnel written the way Node users write one today: one TUN
 * read per packet, one node:dgram send per packet, one TUN write per received datagram (offloads off).
 *
 * Prints `ready {json}` once up, and `stats {json}` on SIGUSR2 and before it exits on SIGTERM/SIGINT.
 * @internal
 * @module
 */
import { parseArgs } from 'node:util'
import { hostPort } from '../lab/args.js'
import { NaiveTunnel } from '../lab/naive-tunnel.js'
import { packetValid } from '../lab/verify.js'
import { chooseFramer } from './framers.js'
import { Tun, Tunnel, UdpSocket, type Framer, type NativeFramer, type PacketWriter } from 'superpacket'

const { values: o } = parseArgs({
  options: {
    tun: { type: 'string', default: 'sp0' },
    inner4: { type: 'string' },
    inner6: { type: 'string' },
    listen: { type: 'string', default: '0.0.0.0:51820' },
    peer: { type: 'string' },
    offload: { type: 'string', default: 'auto' },
    mode: { type: 'string', default: 'native' },
    framer: { type: 'string', default: 'plain' },
    mtu: { type: 'string', default: '1420' },
    queues: { type: 'string', default: '1' },
    verify: { type: 'boolean', default: false },
    // --framer wireguard: the wg-format config file (keys, peers, endpoints, AllowedIPs).
    'wg-config': { type: 'string' },
    // --framer wireguard: start a new handshake after this many sealed packets (tests of rekeying).
    'rekey-after': { type: 'string' },
    // --framer dtls: the JSON key file and which side of it this endpoint is (SIGHUP rekeys).
    'dtls-keys': { type: 'string' },
    'dtls-side': { type: 'string' },
    // Native mode: the Tunnel's learnPeer (send to whoever last sent an accepted datagram).
    'learn-peer': { type: 'boolean', default: false },
    // JS mode: read and receive into reused buffers (see TunOptions.reuseBuffers).
    reuse: { type: 'string', default: 'on' },
  },
})


const naive = o.mode === 'naive'
const reuse = o.mode === 'js' && o.reuse === 'on'
const offload = naive ? false : o.offload === 'auto' ? 'auto' : o.offload === 'on'
const choice = chooseFramer(o.framer!, {
  wgConfig: o['wg-config'],
  rekeyAfterPackets: o['rekey-after'] === undefined ? undefined : Number(o['rekey-after']),
  dtlsKeys: o['dtls-keys'],
  dtlsSide: o['dtls-side'],
})
const framer: NativeFramer = choice.framer
const listen = hostPort(o.listen!)
const peer = o.peer ? hostPort(o.peer) : undefined

const tun = await Tun.open({
  name: o.tun!,
  mtu: choice.mtu ?? Number(o.mtu),
  ipv4: o.inner4,
  ipv6: o.inner6,
  offload,
  queues: o.mode === 'js' ? 1 : Number(o.queues),
  reuseBuffers: reuse,
})
// In naive mode node:dgram takes the listen port; this socket stays idle.
const sock = await UdpSocket.bind({ address: listen.address, port: naive ? 0 : listen.port, reuseBuffers: reuse })

let tunnel: Tunnel | undefined
let jsInbound: PacketWriter | undefined
let naiveTunnel: NaiveTunnel | undefined
const verify = { superpackets: 0, gso: 0, bad: 0, maxSegments: 0 }
/** JS mode: what the packet writer reported, summed over writes, and how the inbound loop is doing. */
const inboundTotals = { writes: 0, packets: 0, dropped: 0 }
let inboundLoop = 'running'
let outboundErrors = 0
/** Native mode: how Tunnel.closed settled ('pending' while it runs). */
let closed = 'pending'
const loops: Promise<void>[] = []
if (naive) {
  if (peer === undefined) throw new Error('--mode naive needs --peer')
  naiveTunnel = await NaiveTunnel.start(tun, listen, peer)
} else if (o.mode === 'native') {
  tunnel = await Tunnel.start({ tun, socket: sock, peer, framer, learnPeer: o['learn-peer'] })
  tunnel.closed.then(
    () => (closed = 'stopped'),
    (err: Error & { code?: string }) => {
      closed = `rejected: ${err.code ?? ''} ${err.message}`
      console.error(`tunnel closed with an error: ${err.message}`)
    },
  )
} else {
  if (peer === undefined && !framer.routes) throw new Error('--mode js needs --peer')
  const f: Framer = choice.js ?? framer
  const writer = peer === undefined ? sock.segmentWriter({ framer }) : sock.segmentWriter(peer, { framer: f })
  // With the socket and the peer, a plaintext framer takes datagrams from the peer only (wrong-source).
  const inbound = tun.packetWriter({ framer: f, socket: sock, peer })
  loops.push(
    (async () => {
      // The loop the README shows: the async iterator of superpackets into the segmenting writer.
      for await (const sp of tun) {
        if (o.verify) {
          // Tests: every superpacket read from real traffic must split into valid packets.
          const segments = sp.split()
          verify.superpackets++
          if (segments.length !== sp.segmentCount || !segments.every(packetValid)) verify.bad++
          if (sp.gsoType !== 'none') verify.gso++
          verify.maxSegments = Math.max(verify.maxSegments, segments.length)
        }
        // A send the network refuses (the peer gone, say) loses that superpacket, as a lost datagram would.
        await writer.write(sp).catch(() => outboundErrors++)
      }
    })(),
    (async () => {
      // The README's loop, unguarded: garbage datagrams must cost it nothing.
      for await (const batch of sock) {
        const r = await inbound.write(batch)
        inboundTotals.writes++
        inboundTotals.packets += r.packets
        inboundTotals.dropped += r.dropped
      }
      inboundLoop = 'ended'
    })().catch((err: Error & { code?: string }) => {
      inboundLoop = `failed: ${err.code ?? ''} ${err.message}`
      console.error(`inbound loop failed: ${err.message}`)
    }),
  )
  jsInbound = inbound
}

function stats(): unknown {
  if (naiveTunnel !== undefined) return { tun: tun.stats(), naive: naiveTunnel.counts }
  if (tunnel !== undefined) return { ...tunnel.stats(), running: tunnel.running, closed, peer: tunnel.peer, peers: tunnel.peers(), framer: choice.stats?.() }
  const inbound = { ...inboundTotals, dropReasons: jsInbound?.dropReasons() ?? {} }
  const peers = choice.wireguard?.peers() ?? []
  return { tun: tun.stats(), udp: sock.stats(), verify, inbound, inboundLoop, outboundErrors, peers, memory: process.memoryUsage() }
}

// Used by the tests: the kernel then refuses GSO sends, and the run-time fallback must lose nothing.
// DTLS: SIGHUP moves to the next epoch (tests of rekeying in the middle of a transfer).
process.on('SIGHUP', () => console.log(`rekeyed ${choice.rekey?.() ?? 'nothing'}`))
process.on('SIGUSR1', () => {
  sock.setUdpChecksums(false)
  console.log('udp-checksums off')
})
process.on('SIGUSR2', () => console.log(`stats ${JSON.stringify(stats())}`))
let stopping = false
async function shutdown(): Promise<void> {
  if (stopping) return
  stopping = true
  console.log(`stats ${JSON.stringify(stats())}`)
  await tunnel?.stop()
  await tun.close()
  await naiveTunnel?.close()
  await sock.close()
  await Promise.all(loops)
  process.exit(0)
}
process.on('SIGTERM', () => void shutdown())
process.on('SIGINT', () => void shutdown())

// Last: whoever reads this line may signal at once (stdout to a pipe is written synchronously), so every
// handler above must be in place first.
console.log(`ready ${JSON.stringify({ tun: tun.name, offloads: tun.offloads, udp: naive ? { gso: false, gro: false, maxSegments: 1 } : sock.capabilities, mode: o.mode })}`)
