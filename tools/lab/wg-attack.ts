/**
 * Hostile datagrams for a WireGuard or DTLS-record port, made from a capture of real traffic: exact
 * replays, truncated copies, copies with a counter ahead of the window and one bit of the tag flipped,
 * random bytes; for WireGuard also handshake initiations from a key the victim does not know, for DTLS
 * records of an epoch it does not have. Used by the WireGuard and DTLS tests; bounded in count and time.
 *
 *   node tools/dist/lab/wg-attack.js --pcap hub.pcap --to 198.18.1.2:51820 --victim-key BASE64 \
 *     [--protocol wireguard|dtls] [--from ADDRESS:PORT] [--per-kind 2000] [--seconds 20] [--seed 1]
 *
 * Sends from node:dgram (random bytes, copies of captured datagrams) and, for the initiations, from a
 * superpacket socket whose WireGuard framer holds a fresh key. Prints one JSON line with how many of each
 * kind it sent, and exits.
 * @internal
 * @module
 */
import { createSocket } from 'node:dgram'
import { readFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { generatePrivateKey, UdpSocket, wireguard } from 'superpacket'
import { hostPort } from './args.js'
import { udpDatagrams } from './pcap.js'
import { seededRandom } from './prng.js'

const { values: o } = parseArgs({
  options: {
    pcap: { type: 'string' },
    to: { type: 'string' },
    'victim-key': { type: 'string' },
    protocol: { type: 'string', default: 'wireguard' },
    // Where to send from (a spoofer namespace holding the peer's address sends as the peer itself).
    from: { type: 'string', default: '0.0.0.0:0' },
    'per-kind': { type: 'string', default: '2000' },
    seconds: { type: 'string', default: '20' },
    seed: { type: 'string', default: '1' },
  },
})

/** Transport data messages: type 4, then receiver index, counter, ciphertext and a 16-byte tag. */
const DATA_TYPE = 4
const TAG_LEN = 16
/** Counters far ahead of anything a test transfer reaches. */
const FORGED_COUNTER_BASE = 1n << 40n
/** DTLS record type of application data. */
const DTLS_APPLICATION_DATA = 23
/** Handshake initiations to send: each makes the victim run one Diffie-Hellman and drop it. */
const INITIATIONS = 20

const to = hostPort(o.to!)
const perKind = Number(o['per-kind'])
const deadline = Date.now() + Number(o.seconds) * 1000
const random = seededRandom(Number(o.seed))
const dtls = o.protocol === 'dtls'
/** Where the counter lies and how to write one: WireGuard LE u64 at 8; DTLS BE u48 at 5 (after type, version, epoch). */
const setCounter = dtls
  ? (d: Buffer, n: bigint) => d.writeUIntBE(Number(n & 0xffff_ffff_ffffn), 5, 6)
  : (d: Buffer, n: bigint) => d.writeBigUInt64LE(n, 8)
const captured = udpDatagrams(readFileSync(o.pcap!))
  .map((d) => d.payload)
  .filter((p) => (dtls ? p.length > 13 + TAG_LEN && p[0] === DTLS_APPLICATION_DATA : p.length > 32 && p.readUInt32LE(0) === DATA_TYPE))
if (captured.length === 0) throw new Error(`wg-attack: the capture holds no ${dtls ? 'DTLS records' : 'WireGuard data messages'}`)

const pick = () => captured[Math.floor(random() * captured.length)]!
const kinds: Record<string, () => Buffer> = {
  replay: () => pick(),
  truncated: () => {
    const d = pick()
    return d.subarray(0, 1 + Math.floor(random() * (d.length - 1)))
  },
  // A forged tag on a counter ahead of the victim's window (an old counter is refused before decryption).
  'forged-tag': () => {
    const d = Buffer.from(pick())
    setCounter(d, FORGED_COUNTER_BASE + BigInt(Math.floor(random() * 2 ** 30)))
    const at = d.length - 1 - Math.floor(random() * TAG_LEN)
    d[at]! ^= 1 << Math.floor(random() * 8)
    return d
  },
  ...(dtls
    ? {
        // An epoch the victim was never given.
        'unknown-epoch': () => {
          const d = Buffer.from(pick())
          d.writeUInt16BE((d.readUInt16BE(3) + 1000) & 0xffff, 3)
          return d
        },
      }
    : {}),
  random: () => {
    const d = Buffer.allocUnsafe(1 + Math.floor(random() * 1400))
    for (let i = 0; i < d.length; i++) d[i] = Math.floor(random() * 256)
    return d
  },
}

const sock = createSocket(to.address.includes(':') ? 'udp6' : 'udp4')
const from = hostPort(o.from!)
await new Promise<void>((resolve) => sock.bind(from.port, from.address, resolve))
const sent: Record<string, number> = {}
for (const [kind, make] of Object.entries(kinds)) {
  sent[kind] = 0
  for (let i = 0; i < perKind && Date.now() < deadline; i++) {
    await new Promise<void>((resolve) => sock.send(make(), to.port, to.address, () => resolve()))
    sent[kind]++
    // Paced so that the attack costs the victim's socket buffer nothing the legitimate traffic needs.
    if (i % 64 === 63) await sleep(1)
  }
}
sock.close()

if (dtls) {
  console.log(JSON.stringify(sent))
  process.exit(0)
}

// Initiations from keys the victim does not know: real initiators, each with a fresh key (one framer
// starts one handshake), aimed at the victim.
const v6 = to.address.includes(':')
const endpoint = `${v6 ? `[${to.address}]` : to.address}:${to.port}`
const udp = await UdpSocket.bind({ address: v6 ? '::' : '0.0.0.0', port: 0 })
sent['wrong-key-initiation'] = 0
for (let i = 0; i < INITIATIONS && Date.now() < deadline; i++) {
  const framer = wireguard({ privateKey: generatePrivateKey(), peers: [{ publicKey: o['victim-key']!, endpoint, allowedIPs: ['0.0.0.0/0'] }] })
  await udp.segmentWriter({ framer }).write(ipv4Probe())
  sent['wrong-key-initiation']++
  await sleep(20)
}
await udp.close()
console.log(JSON.stringify(sent))

/** A small IPv4/UDP frame (virtio header + packet) whose sending starts a handshake. */
function ipv4Probe(): Buffer {
  const ip = Buffer.alloc(28 + 8)
  ip[0] = 0x45
  ip.writeUInt16BE(ip.length, 2)
  ip[8] = 64
  ip[9] = 17
  Buffer.from([198, 18, 200, 1]).copy(ip, 12)
  Buffer.from([198, 18, 200, 2]).copy(ip, 16)
  ip.writeUInt16BE(9, 20)
  ip.writeUInt16BE(9, 22)
  ip.writeUInt16BE(16, 24)
  let sum = 0
  for (let i = 0; i < 20; i += 2) sum += ip.readUInt16BE(i)
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
  ip.writeUInt16BE(~sum & 0xffff, 10)
  return Buffer.concat([Buffer.alloc(10), ip])
}
